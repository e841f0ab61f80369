"""Lint the whole repository with the project's ruff rules, chapters included, and type-check trustml.

    python -m tools.lint          # ruff on trustml/ tests/ tools/ and the chapters, the chapters' trustml
                                  # imports, then mypy on trustml/

Ruff reads the generated notebooks (its notebook mode knows cell semantics: a display expression at the end
of a cell, a trailing ``;``); each finding in a chapter is reported at the line of its source
``book/<part>/NN_name.md``, which is what a contributor edits. Exit status 1 on any finding.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys

from tools.sync import notebook_path, read_source, sources

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bin(name: str) -> str:
    return str(pathlib.Path(sys.executable).parent / name)


def cell_lines(source: pathlib.Path) -> list[int]:
    """For each cell of the generated notebook, the 1-based line of the source where its text starts
    (0 for the Colab cell, which has no source line)."""
    text = source.read_text()
    starts, cursor = [0], 0
    for cell in read_source(source).cells:
        at = text.find(cell.source, cursor) if cell.source else cursor
        if at < 0:
            raise ValueError(f"{source}: cannot locate a cell's text in the source")
        starts.append(text.count("\n", 0, at) + 1)
        cursor = at + len(cell.source)
    return starts


def ruff_findings(root: pathlib.Path = ROOT) -> list[str]:
    """``path:line:col: CODE message`` for every ruff finding under ``root`` (chapters mapped to their sources)."""
    run = subprocess.run([_bin("ruff"), "check", "--no-cache", "--output-format", "json", "."], cwd=root,
                         capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed: {run.stderr}")
    by_notebook = {str(notebook_path(s).resolve()): s for s in sources(root)}
    lines = []
    for finding in json.loads(run.stdout or "[]"):
        path, row, column = finding["filename"], finding["location"]["row"], finding["location"]["column"]
        if path in by_notebook and finding.get("cell"):
            source = by_notebook[path]
            path, row = str(source), cell_lines(source)[finding["cell"] - 1] + row - 1
        rel = pathlib.Path(path).resolve().relative_to(root.resolve())
        lines.append(f"{rel}:{row}:{column}: {finding['code']} {finding['message']}")
    return sorted(lines)


def missing_imports(chapter) -> list[str]:
    """Names a chapter imports from trustml that trustml does not have (a renamed function fails here, not only
    when papermill reaches the cell)."""
    found = []
    for index, cell in enumerate(chapter.cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%")))
        except SyntaxError as error:
            found.append(f"cell {index}: syntax error {error.msg} (line {error.lineno})")
            continue
        for node in ast.walk(tree):
            modules = [(node.module, [a.name for a in node.names])] if isinstance(node, ast.ImportFrom) else \
                [(a.name, []) for a in node.names] if isinstance(node, ast.Import) else []
            for module, names in modules:
                if not module or module.split(".")[0] != "trustml":
                    continue
                try:
                    imported = importlib.import_module(module)
                except ImportError as error:
                    found.append(f"cell {index}: import {module} fails ({error})")
                    continue
                missing = [n for n in names if n != "*" and not hasattr(imported, n)
                           and importlib.util.find_spec(f"{module}.{n}") is None]
                found += [f"cell {index}: {module} has no {name!r}" for name in missing]
    return found


def mypy_findings(root: pathlib.Path = ROOT) -> list[str]:
    """mypy's errors on ``root/trustml`` with the project's configuration (pyproject.toml's [tool.mypy])."""
    run = subprocess.run([_bin("mypy"), "--no-incremental", "trustml"], cwd=root, capture_output=True, text=True)
    return [] if run.returncode == 0 else [line for line in run.stdout.splitlines() if ": error:" in line] or [
        run.stdout + run.stderr]


def main() -> int:
    found = ruff_findings()
    found += [f"{s.relative_to(ROOT)}: {m}" for s in sources() for m in missing_imports(read_source(s))]
    print("\n".join(found) if found else "ruff: no findings")
    typed = mypy_findings()
    print("\n".join(typed) if typed else "mypy: no findings")
    return 1 if found or typed else 0


if __name__ == "__main__":
    sys.exit(main())
