"""trustml's on-disk cache: where it lives, what it holds, how to check, write, inspect and clear it.

The cache folder is ``$TRUSTML_CACHE`` or ``~/.cache/trustml``. Everything in it can be deleted at any time:
it is rebuilt on next use (CLINC150 is downloaded again, vectors are recomputed). Its parts (:data:`PARTS`):

- ``embeddings`` — ``embeddings.sqlite``: MiniLM token states of every context the association tests encode
  (fairness/02, fairness/03). The bulk: about 760 MB after a full book build (measured for issue #15).
- ``sentence-vectors`` — ``sentence_vectors/*.npy``: MiniLM sentence vectors for feature-skew partitions
  (federated/02 with ``"minilm"``); 1.5 kB per distinct text (35 MB for all of CLINC150).
- ``clinc150`` — ``clinc150/``: the CLINC150 download (2.5 MB).
- ``set-aside`` — ``*.corrupt-*``: unreadable cache files moved aside (as large as what was moved).

From a shell::

    python -m trustml.cache info                   # where the cache is and what each part takes
    python -m trustml.cache clear                  # delete every part
    python -m trustml.cache clear embeddings set-aside

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a crash never
leaves a half-written cache file under its final name; a cache file that is unreadable anyway is moved aside
with a :class:`CacheRecoveredWarning` naming both paths, and rebuilt.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import os
import pathlib
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence

import numpy as np

CACHE_ENV = "TRUSTML_CACHE"


class CacheRecoveredWarning(UserWarning):
    """A cache file was unreadable: it was moved aside (or removed) and is being rebuilt."""


class ChecksumMismatch(ValueError):
    """A file's SHA-256 is not the pinned one: a corrupted or different file (never a reason to skip quietly)."""

    def __init__(self, file: str | os.PathLike[str], *, expected: str, actual: str, hint: str = ""):
        self.file, self.expected, self.actual = str(file), expected, actual
        super().__init__(f"{file} has SHA-256 {actual}, expected {expected}" + (f"; {hint}" if hint else ""))


def default_cache_dir() -> pathlib.Path:
    """``$TRUSTML_CACHE`` or ``~/.cache/trustml`` (absolute; the folder need not exist yet)."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return pathlib.Path.home() / ".cache" / "trustml"
    if not value.strip():
        raise ValueError(f"{CACHE_ENV} is set but empty; unset it (default ~/.cache/trustml) or name a folder")
    return pathlib.Path(value).expanduser().resolve()


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike[str], expected: str, *, hint: str = "") -> None:
    """Raise :class:`ChecksumMismatch` (naming ``path``) unless the file's SHA-256 is ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumMismatch(path, expected=expected, actual=actual, hint=hint)


# ---------------------------------------------------------------------------------------------- atomic files
def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> pathlib.Path:
    """``np.save`` to ``path`` atomically: write a temporary file beside it, then ``os.replace`` it into place
    (readers see the old file or the complete new one, never a truncated one)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.save(out, array, allow_pickle=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_npy(path: str | os.PathLike[str], *, rows: int | None = None) -> np.ndarray | None:
    """The array cached at ``path``, or ``None`` when there is none or it is unreadable (then the file is
    removed with a :class:`CacheRecoveredWarning`, so the caller recomputes it). ``rows`` checks the length."""
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
        if rows is not None and (array.ndim == 0 or array.shape[0] != rows):
            raise ValueError(f"has shape {array.shape}, expected {rows} rows")
    except (OSError, ValueError, EOFError) as error:
        path.unlink(missing_ok=True)
        warnings.warn(f"cache file {path} was unreadable ({error}); removed it, recomputing",
                      CacheRecoveredWarning, stacklevel=2)
        return None
    return array


def move_aside(path: str | os.PathLike[str], *, siblings: Sequence[str] = ()) -> pathlib.Path:
    """Rename an unreadable cache file to ``<name>.corrupt-<UTC time>`` (and ``<name><suffix>`` for each of
    ``siblings``, e.g. SQLite's ``-wal`` and ``-shm``); returns the new path of ``path``."""
    path = pathlib.Path(path)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    path.replace(aside)
    for suffix in siblings:
        sibling = path.with_name(path.name + suffix)
        if sibling.exists():
            sibling.replace(aside.with_name(aside.name + suffix))
    return aside


# ---------------------------------------------------------------------------------------------- info and clear
@dataclasses.dataclass(frozen=True)
class CachePart:
    """One kind of thing in the cache folder: the glob ``patterns`` (relative to it) that make it up."""

    name: str
    description: str
    patterns: tuple[str, ...]

    def paths(self, cache_dir: pathlib.Path) -> list[pathlib.Path]:
        return sorted({p for pattern in self.patterns for p in cache_dir.glob(pattern)})


#: The parts of the cache, by name (what ``python -m trustml.cache clear NAME`` accepts).
PARTS: dict[str, CachePart] = {part.name: part for part in (
    CachePart("embeddings", "MiniLM token states for the association tests (fairness/02, 03)",
              ("embeddings.sqlite", "embeddings.sqlite-wal", "embeddings.sqlite-shm", "embeddings.sqlite-journal")),
    CachePart("sentence-vectors", "MiniLM sentence vectors for feature-skew partitions (federated/02)",
              ("sentence_vectors",)),
    CachePart("clinc150", "the CLINC150 download", ("clinc150",)),
    CachePart("set-aside", "unreadable cache files moved aside", ("*.corrupt-*",)),
)}


def _size(path: pathlib.Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_symlink() or f.is_file())


def _parts(names: Sequence[str] | None) -> list[CachePart]:
    if names is None or len(names) == 0:
        return list(PARTS.values())
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise ValueError(f"parts must be among {sorted(PARTS)}, got {unknown}")
    return [PARTS[n] for n in dict.fromkeys(names)]


def cache_info(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Bytes on disk per part of the cache (0 for a part that is absent)."""
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return {part.name: sum(_size(p) for p in part.paths(root)) for part in PARTS.values()}


def clear_cache(parts: Sequence[str] | None = None, *, cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Delete ``parts`` of the cache (all of them by default); returns the bytes freed.

    Only trustml's own files are touched, so a ``$TRUSTML_CACHE`` that points at a shared folder keeps the rest.
    """
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    freed = 0
    for part in _parts(parts):
        for path in part.paths(root):
            freed += _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return freed


def format_bytes(n: int) -> str:
    """``1536`` → ``"1.5 kB"`` (decimal units, as ``du --si``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0 bytes, got {n}")
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustml.cache", description="Inspect or clear trustml's cache.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="where the cache is and how much each part takes")
    clear = commands.add_parser("clear", help="delete parts of the cache (all by default)")
    clear.add_argument("parts", nargs="*", metavar="PART", help=f"one or more of {', '.join(PARTS)} (default: all)")
    args = parser.parse_args(argv)
    if args.command == "clear":
        try:
            _parts(args.parts)
        except ValueError as error:
            parser.error(str(error))
    root = default_cache_dir()
    if args.command == "info":
        sizes = cache_info(root)
        print(f"trustml cache: {root}" + ("" if root.exists() else " (does not exist yet)"))
        for name, part in PARTS.items():
            print(f"  {name:<17} {format_bytes(sizes[name]):>9}  {part.description}")
        print(f"  {'total':<17} {format_bytes(sum(sizes.values())):>9}  (about 760 MB after a full book build)")
        return 0
    freed = clear_cache(args.parts or None, cache_dir=root)
    print(f"removed {format_bytes(freed)} from {root} ({', '.join(args.parts) or 'every part'})")
    return 0


__all__ = [
    "CACHE_ENV", "PARTS", "CachePart", "CacheRecoveredWarning", "ChecksumMismatch", "cache_info", "check_sha256",
    "clear_cache", "default_cache_dir", "format_bytes", "load_npy", "move_aside", "save_npy_atomic", "sha256_of",
]

if __name__ == "__main__":
    sys.exit(main())
