import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Offline everywhere: no hub look-ups, no Flower telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def _clinc150_dir() -> pathlib.Path | None:
    candidates = [os.environ.get("TRUSTML_CLINC150"), ROOT.parent / "shared" / "data" / "clinc150"]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "data_full.json").is_file():
            return pathlib.Path(candidate)
    return None


@pytest.fixture(scope="session")
def clinc150_dir() -> pathlib.Path:
    """The test copy of CLINC150 (../shared/data/clinc150, or $TRUSTML_CLINC150)."""
    path = _clinc150_dir()
    if path is None:
        pytest.skip("CLINC150 test copy not found: set TRUSTML_CLINC150 or place it in ../shared/data/clinc150")
    return path
