"""CLINC150 (Larson et al., EMNLP 2019; CC BY 3.0): 150 intents in 10 domains plus out-of-scope queries.

``load_clinc150()`` downloads ``data_full.json`` once to a cache and checks its SHA-256; pass ``path=`` to
use a local copy (a file, or a folder holding ``data_full.json``). The data are never shipped in trustml.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import urllib.request

import pandas as pd

CLINC150_URL = (
    "https://raw.githubusercontent.com/clinc/oos-eval/828f8093932c8fe6ca7936c3d2e52903b1c523de/data/data_full.json"
)
CLINC150_SHA256 = "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0"
SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")


def default_cache_dir() -> pathlib.Path:
    """``$TRUSTML_CACHE`` or ``~/.cache/trustml``."""
    return pathlib.Path(os.environ.get("TRUSTML_CACHE", pathlib.Path.home() / ".cache" / "trustml"))


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(path: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> pathlib.Path:
    if path is not None:
        file = pathlib.Path(path)
        file = file / "data_full.json" if file.is_dir() else file
        if not file.is_file():
            raise FileNotFoundError(f"path: no CLINC150 file at {file} (expected data_full.json or its folder)")
        return file
    file = pathlib.Path(cache_dir or default_cache_dir()) / "clinc150" / "data_full.json"
    if not file.is_file():
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(".part")
        try:
            urllib.request.urlretrieve(CLINC150_URL, partial)
        except OSError as error:
            raise ConnectionError(
                f"could not download CLINC150 from {CLINC150_URL} ({error}); pass path= to a local copy"
            ) from error
        partial.replace(file)
    return file


def load_clinc150(
    split: str = "train", *, path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> pd.DataFrame:
    """One split of CLINC150 as a DataFrame with columns ``text``, ``intent``, ``domain``.

    ``split`` is one of ``SPLITS``; out-of-scope rows have intent and domain ``"oos"``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    file = _resolve(path, cache_dir)
    if verify and (actual := sha256_of(file)) != CLINC150_SHA256:
        raise ValueError(f"CLINC150 file {file} has SHA-256 {actual}, expected {CLINC150_SHA256}")
    data = json.loads(file.read_text())
    domains_file = file.with_name("domains.json")
    intent_domain = {}
    if domains_file.is_file():
        intent_domain = {i: d for d, intents in json.loads(domains_file.read_text()).items() for i in intents}
    frame = pd.DataFrame(data[split], columns=["text", "intent"])
    frame["domain"] = frame["intent"].map(intent_domain).fillna("oos" if split.startswith("oos") else "unknown")
    return frame
