"""The workshop plan (front page) and the environments behind its numbers."""

from __future__ import annotations

import pathlib

from tools import envs, workshop_table

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_workshop_plan_lists_every_notebook_with_its_measured_times():
    text = workshop_table.PAGE.read_text()
    times = workshop_table.current_times(text)
    assert workshop_table.render(text, times) == text, "run: python -m tools.workshop_table"
    for part in workshop_table.SESSIONS:
        for name in workshop_table.notebooks(part):
            assert f"{{doc}}`{name}`" in text, f"{name} is missing from the workshop plan"
    assert set(workshop_table.PLAN) <= set(times), "a notebook of the plan has no measured install and run time"


def test_every_session_leaves_slack_and_has_core_notebooks():
    text = workshop_table.PAGE.read_text()
    slack = workshop_table.slack(text)
    assert set(slack) == set(workshop_table.SESSIONS.values())
    assert all(minutes >= workshop_table.MIN_SLACK_MIN for minutes in slack.values()), slack
    for part in workshop_table.SESSIONS:
        assert any(workshop_table.PLAN.get(n, workshop_table.NEW_CHAPTER)[0] for n in workshop_table.notebooks(part))


def test_the_plan_adds_install_and_run_time_to_the_pairs_work():
    times = {"privacy/00_overview": {"install_s": 60, "run_s": 120}}
    assert workshop_table.minutes("privacy/00_overview", times) == workshop_table.PLAN["privacy/00_overview"][1] + 3
    assert workshop_table.minutes("privacy/01_dp_basics", times) is None


def test_the_latest_environment_executes_the_run_it_yourself_commands():
    commands = envs.page_commands()
    assert commands[0].startswith("git clone https://github.com/") and commands[-1] == "jupyter lab book/"
    assert 'pip install -e ".[lab]"' in commands, "the page installs the lab extra (JupyterLab + widgets)"
    assert all(not c.startswith("#") for c in commands)


def test_the_colab_environment_preinstalls_colabs_versions():
    pins = dict(p.split("==") for p in envs.COLAB_PREINSTALLED)
    assert pins["ipywidgets"] == "7.7.1" and pins["numpy"] == "2.0.2" and pins["pandas"] == "2.2.2"
    assert pins["ipykernel"].startswith("6.17") and pins["ipython"].startswith("7.34")
    assert pins["matplotlib"].startswith("3.10") and pins["plotly"].startswith("5.24")


def test_a_notebook_that_failed_in_colab_gives_no_time():
    result = {"parts": {"fairness": {"install_s": 8.2, "notebooks": [
        {"notebook": "book/fairness/00_overview.ipynb", "ok": True, "quick_s": 12.9},
        {"notebook": "book/fairness/06_dp_disparate_impact.ipynb", "ok": False, "quick_s": 7.3}]}}}
    assert workshop_table.measured(result) == {"fairness/00_overview": {"install_s": 8, "run_s": 13}}
