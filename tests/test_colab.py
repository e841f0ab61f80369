"""The Colab path: each notebook's first cell installs its part's extra at the ref its Colab button opens; a
failed install stops with one line saying what to do; the release step checks and creates that ref."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from tools import release
from tools.book_meta import PARTS, colab_install_target, colab_notebook_url, colab_ref, colab_setup_source
from tools.site import notebooks

ROOT = pathlib.Path(__file__).resolve().parents[1]


def first_cell(path: pathlib.Path) -> str:
    return "".join(json.loads(path.read_text())["cells"][0]["source"])


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: str(p.relative_to(ROOT / "book")))
def test_each_notebook_installs_its_part_at_the_ref_its_colab_button_opens(path):
    part = path.parent.name
    assert f'TRUSTML = "trustml[{part}] @ git+' in first_cell(path)
    assert first_cell(path).count(f"@{colab_ref()}\"") == 1
    assert colab_notebook_url(str(path.relative_to(ROOT))).split("/blob/")[1].startswith(f"{colab_ref()}/book/")


def test_the_colab_ref_is_the_release_tag_of_this_version():
    import trustml

    assert colab_ref() == f"v{trustml.__version__}"
    with pytest.raises(ValueError, match="part must be one of"):
        colab_install_target("encoder")


FAKE_COLAB = """
import sys, types
colab = types.ModuleType("google.colab")
colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: None)
sys.modules["google"] = types.ModuleType("google"); sys.modules["google.colab"] = colab
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
result = shell.run_cell(sys.stdin.read())
print("SUCCESS" if result.success else "STOPPED")
"""


@pytest.mark.parametrize("part", PARTS)
def test_a_failed_install_stops_the_notebook_with_one_line_saying_what_to_do(part, tmp_path):
    cell = colab_setup_source(part).replace(colab_install_target(part), f"trustml[{part}] @ file://{tmp_path}/missing")
    run = subprocess.run([sys.executable, "-c", FAKE_COLAB], input=cell, capture_output=True, text=True, timeout=120)
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert lines[-1] == "STOPPED", run.stdout + run.stderr
    assert len(lines) == 2 and lines[0].startswith(f"Could not install trustml[{part}] @ file://"), lines
    assert "internet access" in lines[0] and "run-it-yourself.html" in lines[0] and "Traceback" not in run.stdout


def test_the_colab_cell_does_nothing_outside_colab():
    from IPython.core.interactiveshell import InteractiveShell

    assert InteractiveShell.instance().run_cell(colab_setup_source("privacy")).success


# --- the release step --------------------------------------------------------------------------------


def scratch_repository(tmp_path: pathlib.Path, version: str = "0.3.0", branch: str = "v0.3.0") -> pathlib.Path:
    (tmp_path / "trustml").mkdir()
    (tmp_path / "trustml" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    config = (ROOT / "_config.yml").read_text().replace(f"branch: {colab_ref()}", f"branch: {branch}")
    (tmp_path / "_config.yml").write_text(config)
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(tmp_path), *command], check=True, capture_output=True)
    return tmp_path


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_release_tags_a_clean_tree_whose_colab_ref_matches_the_version(tmp_path):
    root = scratch_repository(tmp_path)
    assert release.problems(root) == []
    assert release.tag(root) == "v0.3.0"
    tags = subprocess.run(["git", "-C", str(root), "tag"], capture_output=True, text=True).stdout.split()
    assert tags == ["v0.3.0"]
    assert any("exists already" in p for p in release.problems(root))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_release_refuses_a_mismatched_ref_or_a_dirty_tree_and_bump_fixes_the_ref(tmp_path):
    root = scratch_repository(tmp_path, branch="main")
    assert any("repository.branch is 'main'" in p for p in release.problems(root))
    with pytest.raises(RuntimeError, match="cannot release"):
        release.tag(root)
    release.bump("0.4.0", root)
    assert release.version_of(root) == "0.4.0" and colab_ref((root / "_config.yml").read_text()) == "v0.4.0"
    assert any("uncommitted changes" in p for p in release.problems(root))
    with pytest.raises(ValueError, match="1.2.3"):
        release.bump("0.4", root)
