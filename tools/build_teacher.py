"""Teacher build: the same site without the exercise solutions, written to _build/teacher/html.

    python tools/build_teacher.py          # after `bash tools/build-book.sh` has set up .venv

It copies _config.yml with sphinx-exercise's ``hide_solutions: true`` and builds with it; the notebooks
are executed as in the normal build.
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
    config = ROOT / "_build" / "_config_teacher.yml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(teacher_config((ROOT / "_config.yml").read_text()))
    command = ["jupyter-book", "build", "--all", "-W", "-n", "--keep-going", "--config", str(config),
               "--path-output", str(ROOT / "_build" / "teacher"), str(ROOT)]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
