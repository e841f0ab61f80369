"""The live explorers' table on the "Run it yourself" page: every control of every explorer, and the seconds a
move took in JupyterLab (headless Chromium, tests/test_jupyterlab.py).

    python -m tools.explorer_table [--moves test-artifacts/explorer-moves.json]

Controls are read from the notebooks (the keyword arguments of each ``live_explorer(...)`` call); times
from the browser test's record, if given, else the ones already in the page. A test checks that the table
lists every control, so a new chapter's explorer cannot be left out.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import re

from tools.book_meta import replace_block

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "run-it-yourself.md"
BEGIN, END = "<!-- explorer-table:begin -->", "<!-- explorer-table:end -->"
#: live_explorer's own keyword arguments; every other keyword is a control.
OPTIONS = {"x", "y", "hue", "title", "logx"}
TARGET_S = 3.0


def explorer_controls(notebook: pathlib.Path) -> list[str]:
    """The controls of the notebook's live explorer(s), in the order the explorer shows them."""
    controls = []
    for cell in json.loads(notebook.read_text())["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or "live_explorer(" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            called = getattr(node, "func", None)
            if isinstance(node, ast.Call) and getattr(called, "id", getattr(called, "attr", "")) == "live_explorer":
                controls += [k.arg for k in node.keywords if k.arg and k.arg not in OPTIONS]
    return controls


def notebooks() -> list[pathlib.Path]:
    parts = ["privacy", "federated", "fairness"]
    return sorted((p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts),
                  key=lambda p: (parts.index(p.parent.name), p.name))


def table(moves: dict[tuple[str, str], tuple[float, int]]) -> str:
    """One row per control: seconds per move (a move that redrew the same figure counts as a move too)."""
    rows = ["| Notebook | Control | Seconds per move |", "|---|---|---|"]
    for notebook in notebooks():
        name = str(notebook.relative_to(ROOT / "book").with_suffix(""))
        for control in explorer_controls(notebook):
            seconds, steps = moves.get((name, control), (None, 1))
            notes = ([] if seconds is None or seconds <= TARGET_S else ["over 3 s"]) + (
                [f"the figure changed after {steps} steps"] if steps > 1 else [])
            shown = "—" if seconds is None else f"{seconds:.1f}" + (f" ({'; '.join(notes)})" if notes else "")
            rows.append(f"| {name} | `{control}` | {shown} |")
    return "\n".join(rows)


def current_moves(page_text: str) -> dict[tuple[str, str], tuple[float, int]]:
    """Times already in the page, so a run without a record keeps them."""
    start, stop = page_text.index(BEGIN), page_text.index(END)
    row = r"^\| (\S+) \| `([^`]+)` \| ([0-9.]+)(?:[^|]*after (\d+) steps)?"
    return {(m.group(1), m.group(2)): (float(m.group(3)), int(m.group(4) or 1))
            for m in re.finditer(row, page_text[start:stop], re.MULTILINE)}


def render(page_text: str, moves: dict[tuple[str, str], tuple[float, int]]) -> str:
    return replace_block(page_text, "explorer-table", table(moves))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=pathlib.Path, help="explorer-moves.json written by tests/test_jupyterlab.py")
    args = parser.parse_args()
    text = PAGE.read_text()
    moves = current_moves(text)
    if args.moves:
        for record in json.loads(args.moves.read_text()):
            steps = record.get("steps", 1)
            moves[(record["notebook"], record["control"])] = (round(record["seconds"] / steps, 2), steps)
    PAGE.write_text(render(text, moves))


if __name__ == "__main__":
    main()
