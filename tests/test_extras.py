"""Each part installs only its extra (``trustml[privacy]``, ``[federated]``, ``[fairness]``): its modules, and the
shared ``data``/``models``/``viz``, import nothing that only another part's extra brings.

Each check runs in a fresh interpreter whose import system refuses the blocked libraries, and imports every
module of the part and every module those modules import inside functions (read from their source: a lazy
``from trustml.privacy import DPSGD`` in a fairness function needs Opacus as much as a top-level one). The
Colab-pins environment runs each part's notebooks with only its extra installed (``python -m tools.envs colab``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

from tools.book_meta import PARTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SHARED = ["trustml.data", "trustml.models", "trustml.viz", "trustml.threads"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; @]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def extra_distributions(extra: str) -> set[str]:
    """Distributions an extra adds (its own ``trustml[...]`` references followed)."""
    found: set[str] = set()
    for requirement in PROJECT["optional-dependencies"][extra]:
        inner = re.match(r"trustml\[([^\]]+)\]", requirement)
        if inner:
            for name in inner.group(1).split(","):
                found |= extra_distributions(name.strip())
        else:
            found.add(_name(requirement))
    return found


def modules_of(distributions: set[str]) -> set[str]:
    """Top-level import names of installed ``distributions``."""
    modules = importlib.metadata.packages_distributions()
    return {module for module, dists in modules.items()
            if any(d.lower().replace("_", "-") in distributions for d in dists) and not module.startswith("_")}


def part_modules(part: str) -> list[str]:
    package = ROOT / "trustml" / part
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in package.rglob("*.py"))


def imported_anywhere(modules: list[str]) -> set[str]:
    """Every module the source of ``modules`` imports, at the top or inside a function (absolute imports)."""
    found: set[str] = set()
    for module in modules:
        path = ROOT / pathlib.Path(*module.split("."))
        source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} belongs to another part's extra")
sys.meta_path.insert(0, Refuse())
for module in sys.argv[2].split(","):
    __import__(module)
print("imported", len(sys.argv[2].split(",")), "modules")
"""


def run_blocked(blocked: set[str], modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), ",".join(modules)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_core_dependencies_are_not_in_any_part_extra():
    core = {_name(r) for r in PROJECT["dependencies"]}
    for part in PARTS:
        assert extra_distributions(part) and not extra_distributions(part) & core
    assert extra_distributions("all") == set().union(*(extra_distributions(p) for p in PARTS))


@pytest.mark.parametrize("part", ["shared", *PARTS])
def test_a_part_imports_only_its_own_extra(part):
    own = extra_distributions(part) if part != "shared" else set()
    others = extra_distributions("all") - own
    blocked = modules_of(others)
    assert blocked, "the other parts' libraries must be installed here for this test to mean anything"
    modules = SHARED + (part_modules(part) if part != "shared" else [])
    lazy = imported_anywhere(modules)
    assert not {m.split(".")[0] for m in lazy} & blocked, (
        f"trustml.{part} imports {sorted(m for m in lazy if m.split('.')[0] in blocked)} from another part's extra")
    run = run_blocked(blocked, modules + sorted(m for m in lazy if m.startswith("trustml")))
    assert run.returncode == 0, f"trustml.{part} needs another part's extra:\n{run.stderr[-2000:]}"


def test_the_blocker_does_block():
    run = run_blocked({"opacus"}, ["trustml.privacy"])
    assert run.returncode != 0 and "belongs to another part's extra" in run.stderr
