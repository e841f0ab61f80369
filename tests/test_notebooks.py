"""The notebook contract (DESIGN §2), checked on every notebook under book/, and a papermill run of each
with ``QUICK=True``. Both are parametrised over a glob: a new notebook is tested without editing this file."""

from __future__ import annotations

import json
import pathlib
import re
import time

import pytest

from tools.book_meta import book_version, colab_install_target, repository_url
from tools.site import execute_quick, notebooks

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks()
IDS = [str(p.relative_to(ROOT / "book")) for p in NOTEBOOKS]


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def cell_tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def test_there_are_notebooks_in_every_part():
    parts = {p.relative_to(ROOT / "book").parts[0] for p in NOTEBOOKS}
    assert {"privacy", "federated", "fairness"} <= parts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_contract(path: pathlib.Path):
    nb = load(path)
    cells = nb["cells"]
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", "kernelspec must be python3"
    first = cells[0]
    assert first["cell_type"] == "code" and "remove-cell" in cell_tags(first), "first cell: tagged remove-cell"
    assert re.search(r'^if "google\.colab" in sys\.modules:', source(first), re.MULTILINE), "Colab cell unguarded"
    assert f'%pip install -q "{colab_install_target()}"' in source(first), "Colab install line off the book version"
    parameters = [c for c in cells if "parameters" in cell_tags(c)]
    assert len(parameters) == 1, "exactly one cell tagged 'parameters'"
    assert re.search(r"^QUICK\s*=\s*False\b", source(parameters[0]), re.MULTILINE), "parameters cell sets QUICK = False"
    assert re.search(r"^SEED\s*=", source(parameters[0]), re.MULTILINE), "parameters cell sets SEED"
    for cell in cells:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, "outputs must be stripped"
    markdown = "\n".join(source(c) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"learning objectives", markdown, re.IGNORECASE), "learning objectives at the top"
    assert re.search(r"runtime", markdown, re.IGNORECASE), "an expected-runtime note"
    assert "```{exercise}" in markdown and re.search(r"```\{solution\}[^\n]*\n:class: dropdown", markdown), \
        "at least one exercise with a dropdown solution"
    code_text = "\n".join(source(c) for c in cells if c["cell_type"] == "code")
    assert re.search(r"^\s*assert ", code_text, re.MULTILINE), "the chapter asserts its key result"
    # DESIGN §2.5: a live widget has its plotly twin (readable without a kernel) and a static figure before both.
    if "live_explorer(" in code_text:
        static, twin, live = (code_text.find(call) for call in ("static_figure(", "slider_figure(", "live_explorer("))
        assert 0 <= static < live and 0 <= twin < live, "a live explorer needs a static figure and a slider twin first"


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
