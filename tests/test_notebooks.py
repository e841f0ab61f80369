"""The notebook contract (CONTRIBUTING.md), checked on every chapter source and every generated notebook under
book/, and a papermill run of each notebook with ``QUICK=True``. Parametrised over a glob: a new chapter is
tested without editing this file."""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from tools.book_meta import book_version, colab_install_target, colab_ref, repository_url
from tools.contract import source_violations, violations
from tools.site import execute_quick, notebooks
from tools.sync import read_source, sources

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks()
IDS = [str(p.relative_to(ROOT / "book")) for p in NOTEBOOKS]
SOURCES = sources()


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_notebooks_in_every_part():
    parts = {p.relative_to(ROOT / "book").parts[0] for p in NOTEBOOKS}
    assert {"privacy", "federated", "fairness"} <= parts
    assert [p.with_suffix(".md") for p in NOTEBOOKS] == SOURCES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_contract(path: pathlib.Path):
    assert violations(load(path), path.parent.name) == []


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT / "book")) for p in SOURCES])
def test_source_contract(path: pathlib.Path):
    assert source_violations(read_source(path), path.parent.name) == []


def _replace_everywhere(old: str, new: str):
    return lambda nb: [c.update(source=c["source"].replace(old, new)) for c in nb["cells"]]


def _replace_in_colab_cell(old: str, new: str):
    return lambda nb: nb["cells"][0].update(source=nb["cells"][0]["source"].replace(old, new))


BREACHES = {
    "kernelspec must be python3": lambda nb: nb["metadata"]["kernelspec"].update(name="ir"),
    "first cell must be the Colab setup": lambda nb: nb["cells"][0]["metadata"].update(tags=[]),
    "guarded": _replace_in_colab_cell('if "google', 'if not "google'),
    "the Colab cell must install": _replace_in_colab_cell("@v", "@main-"),
    "exactly one cell must be tagged": lambda nb: [c["metadata"].update(tags=[]) for c in nb["cells"][1:]],
    "QUICK = False": _replace_everywhere("QUICK = False", "QUICK = True"),
    "papermill cannot read": _replace_everywhere("QUICK = False", "QUICK = False  # tests: QUICK = True"),
    "outputs must be stripped": lambda nb: nb["cells"][2].update(execution_count=3),
    "learning objectives": _replace_everywhere("Learning objectives", "Goals"),
    "dropdown solution": _replace_everywhere(":class: dropdown", ""),
    "assert its key result": _replace_everywhere("assert ", "print("),
    "Summary": _replace_everywhere("## Summary", "## What to remember"),
    "numbers typed into a table": lambda nb: nb["cells"].append(
        {"cell_type": "markdown", "metadata": {}, "source": "| ε | accuracy |\n|---|---|\n| 8 | 0.847 |"}),
    "plotly slider twin": _replace_everywhere("slider_figure(", "print("),
}


@pytest.mark.parametrize("reason", BREACHES)
def test_contract_checker_catches_each_breach(reason):
    import nbformat

    notebook = nbformat.read(ROOT / "book" / "privacy" / "00_overview.ipynb", as_version=4)
    assert violations(notebook) == []
    BREACHES[reason](notebook)
    assert any(reason in found for found in violations(notebook)), violations(notebook)


def test_source_checker_refuses_a_colab_cell_in_the_source():
    chapter = read_source(ROOT / "book" / "privacy" / "00_overview.md")
    assert source_violations(chapter, "privacy") == []
    chapter.cells[0].source = 'import sys\nif "google.colab" in sys.modules:\n    pass'
    assert any("must not contain the Colab cell" in found for found in source_violations(chapter, "privacy"))


def test_colab_line_uses_the_one_version():
    import trustml

    assert book_version() == trustml.__version__
    assert colab_ref() == f"v{trustml.__version__}", "Colab opens and installs the release tag of this version"
    assert colab_install_target("fairness") == f"trustml[fairness] @ git+{repository_url()}@v{trustml.__version__}"
    assert repository_url().startswith("https://github.com/")


@pytest.mark.notebook
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_quick(path: pathlib.Path):
    start = time.perf_counter()
    execute_quick(path)  # the executed copy is reused by the site tests (tests/test_site.py)
    # Timings are recorded, not asserted (shared machines are noisy); pytest-timeout only guards hangs.
    record = ROOT / "test-artifacts" / "notebook-times.jsonl"
    record.parent.mkdir(exist_ok=True)
    with record.open("a") as handle:
        elapsed = round(time.perf_counter() - start, 1)
        handle.write(json.dumps({"notebook": str(path.relative_to(ROOT)), "quick_s": elapsed}) + "\n")
