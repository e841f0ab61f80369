"""The book's parallel pre-execution (tools/execute_book.py): what it caches is what the site build reads."""

from __future__ import annotations

import nbformat
import pytest
from jupyter_cache import get_cache

from tools.execute_book import execute


def write_notebook(path, *sources):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


@pytest.mark.timeout(300)
def test_notebooks_run_in_their_folder_and_the_build_finds_their_outputs(tmp_path, capsys):
    fine = write_notebook(tmp_path / "part" / "fine.ipynb", "import pathlib\npathlib.Path('ran-here').touch()",
                          "print(6 * 7)")
    broken = write_notebook(tmp_path / "other" / "broken.ipynb", "raise ValueError('no such corpus')")
    cache_dir = tmp_path / "cache"

    assert execute([fine, broken], cache_dir=cache_dir, jobs=2, timeout=120) == 1
    printed = capsys.readouterr()
    assert "ValueError" in printed.err and "no such corpus" in printed.err  # the failure says why
    assert (fine.parent / "ran-here").exists()  # each notebook runs in its own folder, as in a serial build

    # myst-nb's cache mode matches the notebook as read from disk (outputs empty) by its code
    cache = get_cache(str(cache_dir))
    record = cache.match_cache_notebook(nbformat.read(fine, as_version=4))
    _, merged = cache.merge_match_into_notebook(nbformat.read(fine, as_version=4))
    assert record.data["execution_seconds"] > 0
    assert merged.cells[1].outputs[0]["text"] == "42\n"
    with pytest.raises(KeyError):
        cache.match_cache_notebook(nbformat.read(broken, as_version=4))

    # a second run executes only what is not cached: the broken notebook again, not the fine one
    (fine.parent / "ran-here").unlink()
    assert execute([fine, broken], cache_dir=cache_dir, jobs=1, timeout=120) == 1
    assert not (fine.parent / "ran-here").exists()
    assert "1 already cached" in capsys.readouterr().out


def test_a_job_count_below_one_is_refused(monkeypatch):
    import sys

    from tools import execute_book

    monkeypatch.setattr(sys, "argv", ["execute_book", "--jobs", "0"])
    with pytest.raises(SystemExit) as stop:
        execute_book.main()
    assert stop.value.code == 2
