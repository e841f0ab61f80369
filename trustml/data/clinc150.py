"""CLINC150 (Larson et al., EMNLP 2019; CC BY 3.0): 150 intents in 10 domains plus out-of-scope queries.

The data are never shipped in trustml. :func:`find_clinc150` is the one place that decides where a copy comes
from, in this order:

1. ``path=`` — a folder holding ``data_full.json`` and ``domains.json`` (or the ``data_full.json`` file);
2. ``$TRUSTML_CLINC150`` — the same, from the environment;
3. a ``shared/data/clinc150`` folder in the source checkout trustml is imported from, or in any folder above it;
4. the cache, ``$TRUSTML_CACHE/clinc150`` (see :mod:`trustml.cache`);
5. a download of both files from the dataset's repository at a pinned commit into that cache (``timeout``
   seconds per file at most).

Both files are checked against their pinned SHA-256 (:data:`CLINC150_FILES`): a mismatch raises
:class:`~trustml.cache.ChecksumMismatch`. When no copy is found and none can be downloaded (offline, timed out,
``download=False``), :class:`Clinc150Unavailable` is raised — the one error a chapter may catch to skip its
CLINC150 section. A ``path=`` or ``$TRUSTML_CLINC150`` that names no copy is a ``FileNotFoundError``: asked for
a copy that is not there, trustml does not quietly use another one.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import pathlib
import time
import urllib.request

import pandas as pd

from trustml.cache import ChecksumMismatch, check_sha256, default_cache_dir, sha256_of

CLINC150_COMMIT = "828f8093932c8fe6ca7936c3d2e52903b1c523de"
CLINC150_BASE_URL = f"https://raw.githubusercontent.com/clinc/oos-eval/{CLINC150_COMMIT}/data/"
CLINC150_URL = CLINC150_BASE_URL + "data_full.json"
CLINC150_SHA256 = "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0"
#: Every file the loader reads, with its SHA-256 at :data:`CLINC150_COMMIT`.
CLINC150_FILES = {
    "data_full.json": CLINC150_SHA256,
    "domains.json": "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a",
}
CLINC150_ENV = "TRUSTML_CLINC150"
#: Seconds a download of one file may take (connecting, every read, and the whole transfer).
DOWNLOAD_TIMEOUT = 30.0
SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")


class Clinc150Unavailable(OSError):
    """No CLINC150 copy was found and none could be downloaded: the data are missing, not wrong."""


def _folder_of(location: str | os.PathLike[str], origin: str) -> pathlib.Path:
    """The folder of a copy named by ``origin`` (``path=`` or the environment variable); it must hold both files."""
    folder = pathlib.Path(location).expanduser()
    folder = folder.parent if folder.name == "data_full.json" else folder
    missing = [name for name in CLINC150_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{origin}: no CLINC150 copy at {folder} (missing {', '.join(missing)}; a copy is a folder holding "
            f"{' and '.join(CLINC150_FILES)}, from {CLINC150_BASE_URL})")
    return folder


def checkout_copies() -> list[pathlib.Path]:
    """``shared/data/clinc150`` in the source checkout trustml is imported from and in each folder above it
    (empty for an installed trustml, which is not in a checkout)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        return []
    return [folder / "shared" / "data" / "clinc150" for folder in (root, *root.parents)]


def cached_folder(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Where a downloaded copy lives: ``<cache_dir or $TRUSTML_CACHE>/clinc150``."""
    return (pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "clinc150"


def _download(url: str, file: pathlib.Path, *, expected: str, timeout: float) -> None:
    """Fetch ``url`` to ``file`` within ``timeout`` seconds; the file appears only complete and verified."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f".{file.name}.{os.getpid()}.part")
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while block := response.read1(1 << 16):  # what has arrived: the deadline is checked between reads
                if time.monotonic() > deadline:
                    raise TimeoutError(f"took longer than timeout={timeout} s")
                out.write(block)
    except (OSError, http.client.HTTPException) as error:  # URLError, HTTPError, timeouts, resets
        partial.unlink(missing_ok=True)
        raise Clinc150Unavailable(
            f"could not download {url} ({error}); set {CLINC150_ENV} or pass path= to a local copy") from error
    actual = sha256_of(partial)
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise ChecksumMismatch(url, expected=expected, actual=actual, hint="the download was not the pinned file")
    partial.replace(file)


def find_clinc150(
    path: str | os.PathLike[str] | None = None, *, cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True, timeout: float = DOWNLOAD_TIMEOUT, verify: bool = True,
    base_url: str = CLINC150_BASE_URL,
) -> pathlib.Path:
    """The folder of a verified CLINC150 copy, looked up in the order of this module's docstring.

    ``download=False`` never touches the network; ``timeout`` (seconds, > 0) bounds each file's download;
    ``verify=False`` skips the SHA-256 check of a *local* copy (downloads are always checked); ``base_url`` is
    the folder URL the two files are fetched from (a mirror).
    """
    if isinstance(timeout, bool) or not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if not (base_url.startswith(("https://", "http://")) and base_url.endswith("/")):
        raise ValueError(f"base_url must be an http(s) folder URL ending in '/', got {base_url!r}")
    if path is not None:
        folder = _folder_of(path, "path")
    elif os.environ.get(CLINC150_ENV, "").strip():
        folder = _folder_of(os.environ[CLINC150_ENV], f"${CLINC150_ENV}")
    else:
        cached = cached_folder(cache_dir)
        local = [f for f in checkout_copies() if (f / "data_full.json").is_file()]
        if local:
            folder = _folder_of(local[0], f"the checkout's copy {local[0]}")
        elif all((cached / name).is_file() for name in CLINC150_FILES):
            folder = cached
        elif not download:
            raise Clinc150Unavailable(
                f"no CLINC150 copy: ${CLINC150_ENV} is unset, no shared/data/clinc150 beside the checkout, nothing "
                f"in {cached}, and download=False")
        else:
            for name, expected in CLINC150_FILES.items():
                if not (cached / name).is_file():
                    _download(base_url + name, cached / name, expected=expected, timeout=timeout)
            folder = cached
    if verify:
        hint = f"not the CLINC150 file at commit {CLINC150_COMMIT[:10]} (modified or corrupted)"
        if folder == cached_folder(cache_dir):
            hint += "; `python -m trustml.cache clear clinc150` removes the cached copy (downloaded again on next use)"
        for name, expected in CLINC150_FILES.items():
            check_sha256(folder / name, expected, hint=hint)
    return folder


def load_clinc150(
    split: str = "train", *, path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None, download: bool = True, timeout: float = DOWNLOAD_TIMEOUT,
    verify: bool = True,
) -> pd.DataFrame:
    """One split of CLINC150 as a DataFrame with columns ``text``, ``intent``, ``domain``.

    ``split`` is one of ``SPLITS``; out-of-scope rows have intent and domain ``"oos"``. The copy comes from
    :func:`find_clinc150` (same keywords).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = find_clinc150(path, cache_dir=cache_dir, download=download, timeout=timeout, verify=verify)
    data = json.loads((folder / "data_full.json").read_text())
    domains = json.loads((folder / "domains.json").read_text())
    frame = pd.DataFrame(data[split], columns=["text", "intent"])
    if split.startswith("oos"):
        frame["domain"] = "oos"
        return frame
    intent_domain = {intent: domain for domain, intents in domains.items() for intent in intents}
    unmapped = sorted(set(frame["intent"]) - set(intent_domain))
    if unmapped:
        raise ValueError(f"{folder / 'domains.json'} gives no domain for intents {unmapped[:5]} ({len(unmapped)})")
    frame["domain"] = frame["intent"].map(intent_domain)
    return frame


__all__ = [
    "CLINC150_BASE_URL", "CLINC150_COMMIT", "CLINC150_ENV", "CLINC150_FILES", "CLINC150_SHA256", "CLINC150_URL",
    "DOWNLOAD_TIMEOUT", "SPLITS", "Clinc150Unavailable", "cached_folder", "checkout_copies", "find_clinc150",
    "load_clinc150",
]
