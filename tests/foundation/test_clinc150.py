"""The one CLINC150 lookup (``find_clinc150``): order, hashes of both files, downloads with a time limit, and the
typed "unavailable" error that is the only one a chapter may swallow. Downloads go to a real HTTP server on
loopback; nothing here reaches the internet."""

import ast
import contextlib
import functools
import http.server
import json
import math
import pathlib
import socket
import threading
import time

import pytest

import trustml.data.clinc150 as clinc150_module
from tools.sync import read_source, sources
from trustml.cache import ChecksumMismatch
from trustml.data import Clinc150Unavailable, find_clinc150, load_clinc150, load_intent_task
from trustml.data.clinc150 import CLINC150_ENV, CLINC150_FILES, cached_folder, checkout_copies

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No copy anywhere: no $TRUSTML_CLINC150, an empty cache, and no shared/ copy beside the checkout."""
    monkeypatch.delenv(CLINC150_ENV, raising=False)
    monkeypatch.setenv("TRUSTML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(clinc150_module, "checkout_copies", lambda: [])
    return tmp_path


def copy_of(clinc150_dir: pathlib.Path, folder: pathlib.Path, **replace: bytes) -> pathlib.Path:
    """A copy of the test data in ``folder``, with some files' bytes replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CLINC150_FILES:
        (folder / name).write_bytes(replace.get(name.replace(".", "_"), (clinc150_dir / name).read_bytes()))
    return folder


def moved_intent(clinc150_dir: pathlib.Path) -> bytes:
    """domains.json with one intent moved to another domain: valid JSON, wrong data."""
    domains = json.loads((clinc150_dir / "domains.json").read_text())
    first, second = list(domains)[:2]
    domains[second].append(domains[first].pop())
    return json.dumps(domains, indent=4).encode()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@contextlib.contextmanager
def serve(folder: pathlib.Path):
    """An HTTP server on loopback serving ``folder``; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _Dripping(http.server.BaseHTTPRequestHandler):
    """Answers, then sends one byte every 50 ms: no single read ever times out, the whole transfer would."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)

    def log_message(self, *args):
        pass


# ------------------------------------------------------------------------------------------------ lookup order
def test_explicit_path_then_environment_then_checkout(clinc150_dir, isolated, monkeypatch):
    mine = copy_of(clinc150_dir, isolated / "mine")
    from_env = copy_of(clinc150_dir, isolated / "from_env")
    assert find_clinc150(mine) == mine
    assert find_clinc150(mine / "data_full.json") == mine  # the file names its folder
    monkeypatch.setenv(CLINC150_ENV, str(from_env))
    assert find_clinc150() == from_env
    assert find_clinc150(mine) == mine  # path= wins over the environment
    monkeypatch.setenv(CLINC150_ENV, "")  # set but empty counts as unset
    monkeypatch.setattr(clinc150_module, "checkout_copies", lambda: [isolated / "nothing", mine])
    assert find_clinc150(download=False) == mine


def test_checkout_copies_are_beside_this_checkout():
    copies = checkout_copies()
    assert copies[0] == ROOT / "shared" / "data" / "clinc150"
    assert copies[1] == ROOT.parent / "shared" / "data" / "clinc150"


def test_a_copy_asked_for_must_exist(clinc150_dir, isolated, monkeypatch):
    with pytest.raises(FileNotFoundError, match="path: no CLINC150 copy"):
        find_clinc150(isolated / "missing")
    monkeypatch.setenv(CLINC150_ENV, str(isolated / "missing"))
    with pytest.raises(FileNotFoundError, match=r"\$TRUSTML_CLINC150: no CLINC150 copy"):
        find_clinc150()
    # Not "unavailable": a chapter must not skip quietly when the copy it was pointed at is not there.
    with pytest.raises(FileNotFoundError) as raised:
        find_clinc150()
    assert not isinstance(raised.value, Clinc150Unavailable)


def test_domains_file_is_required(clinc150_dir, isolated):
    """Before: without domains.json every in-scope row got domain "unknown", silently."""
    only_data = isolated / "only_data"
    only_data.mkdir()
    (only_data / "data_full.json").write_bytes((clinc150_dir / "data_full.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="missing domains.json"):
        load_clinc150("train", path=only_data)


def test_domains_file_is_hashed(clinc150_dir, isolated):
    """Before: a domains.json with an intent moved to another domain was read unchecked."""
    tampered = copy_of(clinc150_dir, isolated / "tampered", domains_json=moved_intent(clinc150_dir))
    with pytest.raises(ChecksumMismatch, match="domains.json has SHA-256"):
        load_clinc150("train", path=tampered)
    # verify=False reads a deliberately modified copy (and shows the move).
    moved = load_clinc150("train", path=tampered, verify=False)
    genuine = load_clinc150("train", path=clinc150_dir)
    assert (moved["domain"] != genuine["domain"]).any()


def test_a_hash_mismatch_is_not_unavailable(clinc150_dir, isolated):
    """The error chapters catch (Clinc150Unavailable) never covers a wrong file."""
    tampered = copy_of(clinc150_dir, isolated / "tampered", data_full_json=b"{}")
    with pytest.raises(ChecksumMismatch) as raised:
        find_clinc150(tampered)
    assert isinstance(raised.value, ValueError) and not isinstance(raised.value, Clinc150Unavailable)
    assert "data_full.json" in str(raised.value)


def test_domains_cover_every_in_scope_intent(clinc150_dir):
    for split in ("train", "val", "test"):
        frame = load_clinc150(split, path=clinc150_dir)
        assert frame["domain"].nunique() == 10 and "unknown" not in set(frame["domain"])
    assert set(load_clinc150("oos_val", path=clinc150_dir)["domain"]) == {"oos"}


def test_intent_task_takes_path_only_for_clinc150(clinc150_dir):
    with pytest.raises(TypeError, match="path applies to source='clinc150'"):
        load_intent_task("synthetic", path=clinc150_dir)


# ------------------------------------------------------------------------------------------------ downloads
def test_download_lands_verified_in_the_cache(clinc150_dir, isolated):
    with serve(clinc150_dir) as url:
        folder = find_clinc150(base_url=url, timeout=10)
    assert folder == cached_folder() == isolated / "cache" / "clinc150"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CLINC150_FILES)  # no partial files left
    # The server is gone: the cached copy is used, without a network.
    assert find_clinc150(download=False) == folder
    assert len(load_clinc150("test", download=False)) == 4500


def test_a_partial_cache_fetches_only_what_is_missing(clinc150_dir, isolated):
    """An older trustml cached data_full.json alone; the lookup downloads domains.json next to it."""
    cached = cached_folder()
    cached.mkdir(parents=True)
    (cached / "data_full.json").write_bytes((clinc150_dir / "data_full.json").read_bytes())
    before = (cached / "data_full.json").stat().st_mtime_ns
    with pytest.raises(Clinc150Unavailable, match="download=False"):
        find_clinc150(download=False)
    only_domains = copy_of(clinc150_dir, isolated / "served")
    (only_domains / "data_full.json").unlink()  # served: domains.json only
    with serve(only_domains) as url:
        assert find_clinc150(base_url=url, timeout=10) == cached
    assert (cached / "data_full.json").stat().st_mtime_ns == before


def test_a_download_with_the_wrong_bytes_never_lands(clinc150_dir, isolated):
    served = copy_of(clinc150_dir, isolated / "served", domains_json=moved_intent(clinc150_dir))
    with serve(served) as url, pytest.raises(ChecksumMismatch, match="domains.json"):
        find_clinc150(base_url=url, timeout=10)
    assert not (cached_folder() / "domains.json").exists()
    assert not [p for p in cached_folder().iterdir() if p.name.endswith(".part")]


def test_unreachable_server_is_unavailable(isolated):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Clinc150Unavailable, match="could not download"):
        find_clinc150(base_url=f"http://127.0.0.1:{port}/", timeout=5)
    with pytest.raises(Clinc150Unavailable, match="download=False"):
        find_clinc150(download=False)


def test_a_silent_server_times_out(isolated):
    """Before: urlretrieve without a timeout waited forever on a server that accepts and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts connections; nobody ever answers
        start = time.monotonic()
        with pytest.raises(Clinc150Unavailable, match="timed out"):
            find_clinc150(base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.5)
    assert time.monotonic() - start < 5


def test_a_dripping_server_hits_the_total_time_limit(isolated):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dripping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        with pytest.raises(Clinc150Unavailable, match="timeout=0.5"):
            find_clinc150(base_url=f"http://127.0.0.1:{server.server_address[1]}/", timeout=0.5)
        assert time.monotonic() - start < 4
    finally:
        server.shutdown()
        server.server_close()
    assert not (cached_folder() / "data_full.json").exists()


@pytest.mark.parametrize("base_url", ["ftp://example.org/data/", "https://example.org/data", "data/"])
def test_base_url_must_be_an_http_folder(isolated, base_url):
    with pytest.raises(ValueError, match="base_url must be an http"):
        find_clinc150(base_url=base_url)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "30"])
def test_timeout_must_be_positive_seconds(isolated, timeout):
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        find_clinc150(timeout=timeout)


# ------------------------------------------------------------------------------------------------ chapters
def _catches(source: pathlib.Path) -> list[tuple[int, str]]:
    """``(cell, exception names)`` of every ``except`` in the cells of ``source`` that load CLINC150."""
    found = []
    for index, cell in enumerate(read_source(source).cells):
        if cell.cell_type != "code" or "clinc150" not in cell.source.lower():
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ExceptHandler):
                found.append((index, ast.unparse(node.type) if node.type is not None else "everything"))
    return found


def test_chapters_catch_only_unavailable():
    """Before: privacy/03 caught (ConnectionError, OSError, ValueError), which also swallowed a hash mismatch."""
    loading = [s for s in sources(ROOT) if "clinc150" in s.read_text().lower()]
    assert any("privacy" in str(s) for s in loading)
    for source in loading:
        for index, caught in _catches(source):
            assert caught == "Clinc150Unavailable", f"{source} cell {index} catches {caught}"
