"""The notebook contract (CONTRIBUTING.md, "The notebook contract") as a checker.

``violations(notebook)`` lists every way a generated ``.ipynb`` breaks it; ``source_violations(chapter)``
does the same for a chapter source (``tools.sync.read_source``), which must not carry the Colab cell
itself (``python -m tools.sync`` inserts it). tests/test_notebooks.py runs both on the whole book and
tests that each breach is caught.
"""

from __future__ import annotations

import re

from tools.book_meta import PARTS, colab_install_target


def cell_tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def unread_parameters(cell_source: str) -> list[str]:
    """Names the parameters cell assigns that papermill does not read. Papermill parses one assignment per
    line and skips a line with a second "=" (even in a comment): ``papermill --help-notebook`` would not list
    it and ``-p QUICK True`` would warn "Passed unknown parameter" (the injected value still wins, but a
    reader is told it was ignored)."""
    import ast

    from papermill.translators import PythonTranslator

    assigned = [target.id for node in ast.parse(cell_source).body if isinstance(node, ast.Assign | ast.AnnAssign)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)]
    read = {parameter.name for parameter in PythonTranslator.inspect({"source": cell_source})}
    return [name for name in assigned if name not in read]


def typed_table_numbers(markdown: str) -> list[str]:
    """Table rows of the prose that type a result (a decimal or a percentage) instead of gluing it from a computed
    output: text and results could drift apart. Header rows, inline code, maths and glue roles are not counted."""
    typed, in_body = [], False
    for line in markdown.splitlines():
        if not line.lstrip().startswith("|"):
            in_body = False
            continue
        if re.fullmatch(r"\s*\|[\s:|-]+\|?\s*", line):
            in_body = True
            continue
        plain = re.sub(r"\{glue[^}]*\}`[^`]*`|`[^`]*`|\$[^$]*\$", "", line)
        if in_body and re.search(r"(?<![\w.])\d+\.\d+|\d\s?%", plain):
            typed.append(line.strip())
    return typed


def violations(notebook: dict, part: str | None = None) -> list[str]:
    """Every way ``notebook`` (parsed JSON) breaks the contract; empty when it keeps it. With ``part``, its Colab
    cell must install that part's extra; without, any part's."""
    found = []
    cells = notebook.get("cells", [])
    if notebook.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec must be python3")
    first = cells[0] if cells else {"cell_type": None}
    if first["cell_type"] != "code" or "remove-cell" not in cell_tags(first):
        found.append("first cell must be the Colab setup, tagged remove-cell")
    if not re.search(r'^if "google\.colab" in sys\.modules:', source(first), re.MULTILINE):
        found.append("the Colab cell must be guarded by `if \"google.colab\" in sys.modules:`")
    targets = [colab_install_target(p) for p in ([part] if part else PARTS)]
    if not any(f'TRUSTML = "{target}"' in source(first) for target in targets):
        found.append(f"the Colab cell must install {' or '.join(targets)}")
    parameters = [c for c in cells if "parameters" in cell_tags(c)]
    if len(parameters) != 1:
        found.append("exactly one cell must be tagged 'parameters'")
    else:
        if not re.search(r"^QUICK\s*=\s*False\b", source(parameters[0]), re.MULTILINE):
            found.append("the parameters cell must set QUICK = False")
        if not re.search(r"^SEED\s*=", source(parameters[0]), re.MULTILINE):
            found.append("the parameters cell must set SEED")
        unread = unread_parameters(source(parameters[0]))
        if unread:
            found.append(f"papermill cannot read the parameter(s) {unread}: one '=' per line, none in comments")
    if any(c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None) for c in cells):
        found.append("outputs must be stripped")
    markdown = "\n".join(source(c) for c in cells if c["cell_type"] == "markdown")
    code = "\n".join(source(c) for c in cells if c["cell_type"] == "code")
    if not re.search(r"learning objectives", markdown, re.IGNORECASE):
        found.append("learning objectives at the top")
    if not re.search(r"runtime", markdown, re.IGNORECASE):
        found.append("an expected-runtime note")
    if "```{exercise}" not in markdown or not re.search(r"```\{solution\}[^\n]*\n:class: dropdown", markdown):
        found.append("at least one exercise with a dropdown solution")
    if not re.search(r"^## Summary\s*$", markdown, re.MULTILINE):
        found.append("a closing '## Summary' section (what to remember)")
    typed = typed_table_numbers(markdown)
    if typed:
        found.append(f"numbers typed into a table, glue them from a computed output: {typed[:2]}")
    if not re.search(r"^\s*assert ", code, re.MULTILINE):
        found.append("the chapter must assert its key result")
    # A live widget has its plotly twin (readable without a kernel) and a static figure before both.
    if "live_explorer(" in code:
        static, twin, live = (code.find(call) for call in ("static_figure(", "slider_figure(", "live_explorer("))
        if not (0 <= static < live and 0 <= twin < live):
            found.append("a live explorer needs a static figure and a plotly slider twin before it")
    return found


def source_violations(chapter: dict, part: str) -> list[str]:
    """Every way a chapter source breaks the contract, judged on the notebook ``tools.sync`` makes of it."""
    from tools.sync import build_notebook

    found = []
    if any("google.colab" in source(c) for c in chapter.get("cells", [])):
        found.append("the source must not contain the Colab cell: python -m tools.sync inserts it")
    return found + violations(build_notebook(chapter, part), part)
