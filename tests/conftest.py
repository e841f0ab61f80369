import os
import pathlib
import shutil

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


# --- headless Chromium for the browser tests (test_site, test_jupyterlab) ------------------------------

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                  "--no-first-run", "--disable-component-update", "--disable-sync"]


def chromium_executable() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and pathlib.Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; skips (saying why) where either is missing."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); the browser tests need it")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
