"""Write a book notebook that follows the contract (DESIGN §2) from a list of cells.

Chapters are authored as small Python scripts that call ``write_notebook``; the notebook (outputs
empty, kernelspec ``python3``, Colab cell first, ``parameters`` cell tagged) is what gets committed.

    from tools.notebook import write_notebook, md, code
    write_notebook("book/privacy/01_dp_basics.ipynb", [
        md("# DP basics ..."),
        code("QUICK = False\nSEED = 0", tags=["parameters"]),
        ...
    ])
"""

from __future__ import annotations

import pathlib
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.book_meta import colab_setup_source  # noqa: E402


def md(source: str, *, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def code(source: str, *, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def write_notebook(path: str | pathlib.Path, cells: list[nbformat.NotebookNode]) -> pathlib.Path:
    """Prepend the Colab cell and write ``path`` with the book's kernelspec and no outputs."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.cells = [code(colab_setup_source(), tags=["remove-cell"]), *cells]
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    path = ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(notebook)
    nbformat.write(notebook, path)
    return path
