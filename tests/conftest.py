import os
import pathlib

import pytest

# Offline everywhere: no hub look-ups, no Flower telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


@pytest.fixture(scope="session")
def clinc150_dir() -> pathlib.Path:
    """A verified CLINC150 copy, found by the package's one lookup (``find_clinc150``: $TRUSTML_CLINC150,
    shared/data/clinc150 beside the checkout, the cache) — never downloaded by the tests. Skips when there is none;
    a wrong $TRUSTML_CLINC150 or a copy with the wrong SHA-256 is an error, not a skip."""
    from trustml.data.clinc150 import Clinc150Unavailable, find_clinc150

    try:
        return find_clinc150(download=False)
    except Clinc150Unavailable as error:
        pytest.skip(f"CLINC150 test copy not found ({error})")
