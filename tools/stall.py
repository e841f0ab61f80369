"""The stock-papermill stall check (jupyter/nbclient#312): a notebook with a slow live explorer (its compute
sleeps 2 s and prints progress), run by the ``papermill`` command of an environment, ten times, each with a
timeout. Used by tests/test_stock_papermill.py (the test environment) and tools/envs.py (the Colab-pins and
latest environments, whose ipykernel, ipywidgets and pyzmq differ)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import nbformat

RUNS = 10
TIMEOUT_S = 90  # a run takes ~5 s; a stall never ends
COMPUTE = '''import time

import pandas as pd

from trustml.viz import live_explorer


def compute(a=1.0):
    time.sleep(2)
    for step in range(20):  # what a training loop prints while the explorer redraws
        print(f"step {step}", flush=True)
    return pd.DataFrame({"x": [0, 1, 2], "y": [0.0, a, 2 * a]})'''
EXPLORER = 'live_explorer(compute, x="x", y="y", a=(0.0, 2.0, 0.5))'
LAST = 'print("finished")'


def slow_explorer_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_code_cell("QUICK = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(COMPUTE),
        nbformat.v4.new_code_cell(EXPLORER),
        nbformat.v4.new_code_cell(LAST),
    ]
    return notebook


def run_stock_papermill(papermill: list[str], folder: pathlib.Path, *, runs: int = RUNS,
                        env: dict[str, str] | None = None) -> dict:
    """Run the notebook ``runs`` times with the ``papermill`` command line; returns stalls, failures, durations."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "slow_explorer.ipynb"
    nbformat.write(slow_explorer_notebook(), source)
    stalls, failures, durations = [], [], []
    for run in range(runs):
        target = folder / f"run{run}.ipynb"
        start = time.perf_counter()
        try:
            done = subprocess.run([*papermill, str(source), str(target), "-p", "QUICK", "True", "--no-progress-bar"],
                                  capture_output=True, text=True, timeout=TIMEOUT_S, env=env or dict(os.environ))
        except subprocess.TimeoutExpired:
            stalls.append(run)
            continue
        durations.append(round(time.perf_counter() - start, 1))
        cells = {cell.source: cell for cell in nbformat.read(target, as_version=4).cells} if target.exists() else {}
        finished = LAST in cells and cells[LAST].outputs and cells[LAST].outputs[0].get("text") == "finished\n"
        widget = EXPLORER in cells and any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                           for o in cells[EXPLORER].outputs)
        if done.returncode or not finished or not widget:
            failures.append(f"run {run}: exit {done.returncode}, finished={finished}, widget={widget}: "
                            f"{done.stderr[-1500:]}")
    return {"runs": runs, "stalls": stalls, "failures": failures, "durations_s": durations}
