"""The notebook contract (DESIGN §2), checked on every notebook under book/, and a papermill run of each
with ``QUICK=True``. Both are parametrised over a glob: a new notebook is tested without editing this file."""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from tools.book_meta import book_version, colab_install_target, repository_url
from tools.contract import violations
from tools.site import execute_quick, notebooks

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks()
IDS = [str(p.relative_to(ROOT / "book")) for p in NOTEBOOKS]


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_notebooks_in_every_part():
    parts = {p.relative_to(ROOT / "book").parts[0] for p in NOTEBOOKS}
    assert {"privacy", "federated", "fairness"} <= parts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_contract(path: pathlib.Path):
    assert violations(load(path)) == []


BREACHES = {
    "kernelspec must be python3": lambda nb: nb["metadata"]["kernelspec"].update(name="ir"),
    "first cell must be the Colab setup": lambda nb: nb["cells"][0]["metadata"].update(tags=[]),
    "guarded": lambda nb: nb["cells"][0].update(source=nb["cells"][0]["source"].replace("if \"google", "if not \"google")),
    "the Colab cell must install": lambda nb: nb["cells"][0].update(source=nb["cells"][0]["source"].replace("@v", "@main-")),
    "exactly one cell must be tagged": lambda nb: [c["metadata"].update(tags=[]) for c in nb["cells"][1:]],
    "QUICK = False": lambda nb: [c.update(source=c["source"].replace("QUICK = False", "QUICK = True")) for c in nb["cells"]],
    "outputs must be stripped": lambda nb: nb["cells"][2].update(execution_count=3),
    "learning objectives": lambda nb: [c.update(source=c["source"].replace("Learning objectives", "Goals")) for c in nb["cells"]],
    "dropdown solution": lambda nb: [c.update(source=c["source"].replace(":class: dropdown", "")) for c in nb["cells"]],
    "assert its key result": lambda nb: [c.update(source=c["source"].replace("assert ", "print(")) for c in nb["cells"]],
    "plotly slider twin": lambda nb: [c.update(source=c["source"].replace("slider_figure(", "print(")) for c in nb["cells"]],
}


@pytest.mark.parametrize("reason", BREACHES)
def test_contract_checker_catches_each_breach(reason):
    import nbformat

    notebook = nbformat.read(ROOT / "book" / "privacy" / "00_overview.ipynb", as_version=4)
    assert violations(notebook) == []
    BREACHES[reason](notebook)
    assert any(reason in found for found in violations(notebook)), violations(notebook)


def test_colab_line_uses_the_one_version():
    import trustml

    assert book_version() == trustml.__version__
    assert colab_install_target() == f"trustml[encoder] @ git+{repository_url()}@v{trustml.__version__}"
    assert repository_url().startswith("https://github.com/")


@pytest.mark.notebook
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_quick(path: pathlib.Path):
    start = time.perf_counter()
    execute_quick(path)  # the executed copy is reused by the site tests (tests/site)
    # Timings are recorded, not asserted (shared machines are noisy); pytest-timeout only guards hangs.
    record = ROOT / "test-artifacts" / "notebook-times.jsonl"
    record.parent.mkdir(exist_ok=True)
    with record.open("a") as handle:
        elapsed = round(time.perf_counter() - start, 1)
        handle.write(json.dumps({"notebook": str(path.relative_to(ROOT)), "quick_s": elapsed}) + "\n")
