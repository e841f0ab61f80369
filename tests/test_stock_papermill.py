"""Stock papermill runs a notebook with a slow live explorer to the end, every time (jupyter/nbclient#312).

``live_explorer`` used to redraw inside an ``ipywidgets.Output``; nbclient mimics that widget by sending comm
messages on the shell channel while it awaits the cell's reply on the same socket, and with pyzmq 27 the
reply's wake-up is lost: the kernel is idle, papermill waits forever. The notebook below is the reader's
case — a compute that takes 2 s and prints progress — run by the ``papermill`` command itself (no patch, no
harness) in a subprocess with a timeout, ten times.

The stall is a race (the reply must arrive while nbclient sends), so a stalled run cannot be forced; the
second test checks its cause deterministically: running the explorer's cell, nbclient sends nothing to
the kernel (the old explorer made it send one comm message per captured output).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.output_widget import OutputWidget

ROOT = pathlib.Path(__file__).resolve().parents[1]
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


def slow_explorer_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_code_cell("QUICK = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(COMPUTE),
        nbformat.v4.new_code_cell('live_explorer(compute, x="x", y="y", a=(0.0, 2.0, 0.5))'),
        nbformat.v4.new_code_cell('print("finished")'),
    ]
    return notebook


@pytest.mark.slow
@pytest.mark.timeout(RUNS * TIMEOUT_S + 60)
def test_stock_papermill_never_stalls_on_a_slow_live_explorer(tmp_path):
    source = tmp_path / "slow_explorer.ipynb"
    nbformat.write(slow_explorer_notebook(), source)
    papermill = pathlib.Path(sys.executable).parent / "papermill"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    stalls, durations = [], []
    for run in range(RUNS):
        target = tmp_path / f"run{run}.ipynb"
        start = time.perf_counter()
        try:
            done = subprocess.run([str(papermill), str(source), str(target), "-p", "QUICK", "True",
                                   "--no-progress-bar"], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            stalls.append(run)
            continue
        durations.append(round(time.perf_counter() - start, 1))
        assert done.returncode == 0, done.stderr[-3000:]
        cells = {cell.source: cell for cell in nbformat.read(target, as_version=4).cells}
        assert cells['print("finished")'].outputs[0]["text"] == "finished\n"
        explorer = cells['live_explorer(compute, x="x", y="y", a=(0.0, 2.0, 0.5))'].outputs
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in explorer)
    assert not stalls, f"papermill stalled (no end within {TIMEOUT_S} s) in runs {stalls}; others took {durations} s"


def test_running_an_explorer_makes_nbclient_send_nothing_to_the_kernel(monkeypatch):
    sent = []
    original = OutputWidget._publish_msg
    monkeypatch.setattr(OutputWidget, "_publish_msg", lambda self, *a, **k: (sent.append(a), original(self, *a, **k)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = slow_explorer_notebook()
    notebook.cells[1].source = notebook.cells[1].source.replace("time.sleep(2)", "time.sleep(0)")
    NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    assert notebook.cells[-1].outputs[0]["text"] == "finished\n"
    assert sent == [], f"nbclient sent {len(sent)} comm messages on the shell channel while the cell ran"
