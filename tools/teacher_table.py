"""Regenerate the teacher's table in book/run-it-yourself.md: each notebook, its exercises, its runtimes.

    python -m tools.teacher_table [--times test-artifacts/notebook-times.jsonl]

Exercise labels are read from the notebooks; QUICK runtimes from the test run's timing file (if given),
full-size runtimes are on the execution-statistics page of the built site. A test checks the table
lists every notebook and exercise, so the page cannot drift from the book.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

from tools.book_meta import replace_block

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "run-it-yourself.md"


def notebook_summary(path: pathlib.Path) -> tuple[str, list[str]]:
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in cells if c["cell_type"] == "markdown")
    title = re.search(r"^# (.+)$", text, re.MULTILINE)
    return (title.group(1).strip() if title else path.stem), re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", text)


def table(times: dict[str, float]) -> str:
    rows = ["| Notebook | Exercises (labels) | QUICK run (s) |", "|---|---|---|"]
    parts = ["privacy", "federated", "fairness"]
    for path in sorted((ROOT / "book").rglob("*.ipynb"), key=lambda p: (parts.index(p.parent.name), p.name)):
        if ".ipynb_checkpoints" in path.parts:
            continue
        relative = path.relative_to(ROOT)
        title, exercises = notebook_summary(path)
        doc = str(path.relative_to(ROOT / "book").with_suffix(""))
        quick = times.get(str(relative))
        rows.append(f"| {{doc}}`{title} <{doc}>` | {', '.join(exercises)} | {quick if quick is not None else '—'} |")
    return "\n".join(rows)


def current_times(page_text: str) -> dict[str, float]:
    """QUICK times already in the page, so a run without a timing file keeps them."""
    times = {}
    for match in re.finditer(r"<([^>]+)>` \| [^|]* \| ([0-9.]+) \|", page_text):
        times[f"book/{match.group(1)}.ipynb"] = float(match.group(2))
    return times


def render(page_text: str, times: dict[str, float]) -> str:
    return replace_block(page_text, "teacher-table", table(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=pathlib.Path, help="notebook-times.jsonl written by the test run")
    args = parser.parse_args()
    text = PAGE.read_text()
    times = current_times(text)
    if args.times:
        for line in args.times.read_text().splitlines():
            record = json.loads(line)
            times[record["notebook"]] = record["quick_s"]
    PAGE.write_text(render(text, times))


if __name__ == "__main__":
    main()
