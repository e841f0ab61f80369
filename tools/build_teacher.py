"""Teacher build: the same site without the exercise solutions, written to _build/teacher/html.

    python tools/build_teacher.py          # after `bash tools/build-book.sh` has set up .venv

It copies _config.yml with sphinx-exercise's ``hide_solutions: true`` and builds with it; the notebooks
are not executed again: their outputs come from the execution cache the normal build filled.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def teacher_config(text: str) -> str:
    updated, count = re.subn(r"^(\s*hide_solutions:\s*)false\s*$", r"\1true", text, flags=re.MULTILINE)
    if count != 1:
        raise ValueError("_config.yml must contain exactly one 'hide_solutions: false' line")
    return updated


def main() -> int:
    # Beside _config.yml, because jupyter-book resolves the config's relative paths (local_extensions) from it.
    config = ROOT / "_config.teacher.yml"
    config.write_text(teacher_config((ROOT / "_config.yml").read_text()))
    command = [str(pathlib.Path(sys.executable).parent / "jupyter-book"), "build", "--all", "-W", "-n",
               "--keep-going", "--config", str(config), "--path-output", str(ROOT / "_build" / "teacher"), str(ROOT)]
    try:
        return subprocess.call(command, cwd=ROOT)  # the cache path in _config.yml is relative
    finally:
        config.unlink()


if __name__ == "__main__":
    sys.exit(main())
