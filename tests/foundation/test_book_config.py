"""The book's configuration: what the site promises its readers (Colab button, exercises, statistics)."""

import pathlib

import pytest
import yaml

from tools.build_teacher import teacher_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def test_colab_launch_buttons():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["path_to_book"] == ""
    assert CONFIG["repository"]["branch"] and CONFIG["repository"]["url"].startswith("https://github.com/")


def test_sphinx_settings():
    sphinx = CONFIG["sphinx"]
    assert "sphinx_exercise" in sphinx["extra_extensions"]
    assert "mystnb.unknown_mime_type" in sphinx["config"]["suppress_warnings"]
    assert sphinx["config"]["nb_execution_show_tb"] is True
    assert CONFIG["execute"]["execute_notebooks"] == "cache" and CONFIG["execute"]["timeout"] > 0
    # the cache the pre-execution fills is the one the build reads; the build script empties it first
    build = (ROOT / "tools" / "build-book.sh").read_text()
    assert f"rm -rf _build/html _build/.doctrees _build/jupyter_execute {CONFIG['execute']['cache']}" in build
    assert build.index("tools.execute_book") < build.index("jupyter-book build")
    assert CONFIG["copyright"]


def test_toc_covers_every_part_and_the_statistics_page():
    toc = (ROOT / "_toc.yml").read_text()
    for part in ("privacy", "federated", "fairness"):
        assert f"glob: book/{part}/*" in toc
    assert "book/execution-statistics" in toc
    assert "{nb-exec-table}" in (ROOT / "book" / "execution-statistics.md").read_text()


def test_teacher_build_hides_solutions():
    teacher = yaml.safe_load(teacher_config((ROOT / "_config.yml").read_text()))
    assert teacher["sphinx"]["config"]["hide_solutions"] is True
    assert CONFIG["sphinx"]["config"]["hide_solutions"] is False
    with pytest.raises(ValueError, match="hide_solutions"):
        teacher_config("title: x\n")


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("bash tools/run-tests.sh", "bash tools/test-envs.sh", "bash tools/build-book.sh"):
        assert command in readme and command in ci
    assert "jupyter-book build --all -W -n --keep-going ." in (ROOT / "tools" / "build-book.sh").read_text()
    assert '"torch==2.13.0"' in (ROOT / "tools" / "setup-env.sh").read_text()


def test_github_workflow_runs_the_readme_commands_only():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]
    commands = [run for run in steps if "tools/" in run]
    assert commands == ["bash tools/run-tests.sh", "bash tools/test-envs.sh", "bash tools/build-book.sh"]
    uses = [step.get("uses", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]
    assert any(u.startswith("actions/deploy-pages") for u in uses)


def test_teacher_table_lists_every_notebook_and_exercise():
    from tools.teacher_table import PAGE, current_times, render

    text = PAGE.read_text()
    assert render(text, current_times(text)) == text, "run: python -m tools.teacher_table"
