"""Stock papermill runs a notebook with a slow live explorer to the end, every time (jupyter/nbclient#312).

``live_explorer`` used to redraw inside an ``ipywidgets.Output``; nbclient mimics that widget by sending comm
messages on the shell channel while it awaits the cell's reply on the same socket, and with pyzmq 27 the
reply's wake-up is lost: the kernel is idle, papermill waits forever. The notebook (tools/stall.py) is the
reader's case — a compute that takes 2 s and prints progress — run by the ``papermill`` command itself (no
patch, no harness) in a subprocess with a timeout, ten times. tools/envs.py runs the same check in the
Colab-pins and latest environments.

The stall is a race (the reply must arrive while nbclient sends), so a stalled run cannot be forced; the
second test checks its cause deterministically: running the explorer's cell, nbclient sends nothing to
the kernel (the old explorer made it send one comm message per captured output).
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest
from nbclient import NotebookClient
from nbclient.output_widget import OutputWidget

from tools.stall import RUNS, TIMEOUT_S, run_stock_papermill, slow_explorer_notebook

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
@pytest.mark.timeout(RUNS * TIMEOUT_S + 60)
def test_stock_papermill_never_stalls_on_a_slow_live_explorer(tmp_path):
    papermill = [str(pathlib.Path(sys.executable).parent / "papermill")]
    result = run_stock_papermill(papermill, tmp_path, env=_env())
    assert not result["failures"], "\n".join(result["failures"])
    assert not result["stalls"], (f"papermill stalled (no end within {TIMEOUT_S} s) in runs {result['stalls']}; "
                                  f"the others took {result['durations_s']} s")


def test_running_an_explorer_makes_nbclient_send_nothing_to_the_kernel(monkeypatch):
    sent = []
    original = OutputWidget._publish_msg
    monkeypatch.setattr(OutputWidget, "_publish_msg", lambda self, *a, **k: (sent.append(a), original(self, *a, **k)))
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    notebook = slow_explorer_notebook()
    notebook.cells[1].source = notebook.cells[1].source.replace("time.sleep(2)", "time.sleep(0)")
    NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    assert notebook.cells[-1].outputs[0]["text"] == "finished\n"
    assert sent == [], f"nbclient sent {len(sent)} comm messages on the shell channel while the cell ran"
