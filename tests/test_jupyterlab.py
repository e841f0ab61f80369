"""The live explorers in a real frontend: JupyterLab on loopback, driven by headless Chromium (Playwright).

Every chapter is opened at QUICK size (a copy whose parameters cell papermill has set, nothing executed),
run with *Run → Run All Cells*, and each control of its live explorer is moved once (one keyboard step,
the next option, or a checkbox's click): the explorer's figure must change, no error may appear (no
traceback, no explorer error line), and the seconds from the move to the new figure are recorded in
test-artifacts/explorer-moves.json.
``python -m tools.explorer_table --moves test-artifacts/explorer-moves.json`` writes them into the "Run it
yourself" page; a test here checks that the page lists every explorer control.

Moves are timed on whatever machine runs the tests (shared CI machines are noisy); a move slower than
``MOVE_LIMIT_S`` fails as a hang, the 3 s target is judged on the table.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tools.explorer_table import PAGE, current_moves, explorer_controls, render
from tools.site import ARTIFACTS, ROOT, notebooks

MOVE_LIMIT_S = float(os.environ.get("TRUSTML_MOVE_LIMIT_S", 120))
RUN_LIMIT_S = 600
NOTEBOOKS = [p for p in notebooks() if explorer_controls(p)]
DIALOGS: list[str] = []  # dialogs JupyterLab showed (written to the record, for the curious)
RERUNS: list[str] = []  # notebooks whose Run All had to be repeated (same record)
#: Only the notebooks whose path contains this (debugging one chapter: TRUSTML_LAB_ONLY=fairness/01).
ONLY = os.environ.get("TRUSTML_LAB_ONLY", "")


def test_the_run_it_yourself_page_lists_every_explorer_control():
    text = PAGE.read_text()
    assert len(NOTEBOOKS) >= 10, "every chapter has a live explorer"
    for notebook in NOTEBOOKS:
        for control in explorer_controls(notebook):
            row = f"| {notebook.relative_to(ROOT / 'book').with_suffix('')} | `{control}` | "
            assert row in text, f"{row} missing: run python -m tools.explorer_table"
    assert render(text, current_moves(text)) == text, "run: python -m tools.explorer_table"


# --- JupyterLab in Chromium -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on loopback serving QUICK copies of the notebooks (``book/<part>/`` kept, so relative paths
    resolve as in the book); every cell rendered (no windowing) so the test sees the whole notebook."""
    jupyter = pathlib.Path(sys.executable).parent / "jupyter"
    if not (pathlib.Path(sys.executable).parent / "jupyter-lab").exists():
        pytest.skip("JupyterLab is not installed (pip install -e '.[lab]')")
    import papermill

    home = tmp_path_factory.mktemp("lab")
    for notebook in NOTEBOOKS:
        target = home / notebook.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(notebook), str(target), parameters={"QUICK": True}, prepare_only=True,
                                   progress_bar=False, kernel_name="python3")
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the page; start the notebook's own kernel without asking (under load JupyterLab would
    # otherwise show "Select Kernel" while a slow kernel starts)
    (settings / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True}))
    port = free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    clinc = ROOT.parent / "shared" / "data" / "clinc150"
    if (clinc / "data_full.json").is_file():
        env.setdefault("TRUSTML_CLINC150", str(clinc))
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={home}",
         "--IdentityProvider.token=", "--ServerApp.disable_check_xsrf=True", "--allow-root", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(ARTIFACTS / "jupyterlab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                pytest.fail("JupyterLab did not start; see test-artifacts/jupyterlab.log")
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)


def shut_down_kernels(url: str) -> None:
    with urllib.request.urlopen(f"{url}/api/kernels") as reply:
        kernels = json.loads(reply.read())
    for kernel in kernels:
        request = urllib.request.Request(f"{url}/api/kernels/{kernel['id']}", method="DELETE")
        urllib.request.urlopen(request).close()


CELL_STATE = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
  const errors = [...document.querySelectorAll(stderr)]
    .map(o => o.innerText).filter(t => t.includes('Traceback') || /^\\w*(Error|Exception)\\b/m.test(t));
  return {idle: !indicator || indicator.getAttribute('data-status') === 'idle', cells: prompts.length,
          running: prompts.filter(p => p === '[*]:').length,
          done: prompts.filter(p => /^\\[\\d+\\]:$/.test(p)).length, errors: errors.map(t => t.slice(-800))};
}"""


def run_all(page, name: str) -> float:
    """*Run → Run All Cells*; returns the seconds until every code cell has run (raises on an error or a stall)."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60000)
    page.wait_for_function("""() => { const i = document.querySelector('.jp-Notebook-ExecutionIndicator');
                                       return i && i.getAttribute('data-status') === 'idle'; }""", timeout=120000)
    start = time.perf_counter()
    for _attempt in range(3):  # a click before the kernel session is wired up does nothing: try again
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # e.g. JupyterLab asks for a kernel while a slow one starts: take its default
            DIALOGS.append(f"{name}: {dialog.first.inner_text()[:300]!r}")
            page.keyboard.press("Enter")
            page.wait_for_timeout(2000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        started = page.evaluate(CELL_STATE)
        for _ in range(30):
            if started["running"] or started["done"]:
                break
            page.wait_for_timeout(1000)
            started = page.evaluate(CELL_STATE)
        if started["running"] or started["done"]:
            break
    quiet = reruns = 0
    while time.perf_counter() - start < RUN_LIMIT_S:
        page.wait_for_timeout(1000)
        state = page.evaluate(CELL_STATE)
        if state["errors"]:
            raise AssertionError(f"{name}: a cell failed in JupyterLab:\n{state['errors'][0]}")
        if state["idle"] and state["done"] == state["cells"]:
            return round(time.perf_counter() - start, 1)
        quiet = quiet + 1 if state["idle"] and not state["running"] else 0
        if quiet >= 20:  # idle for 20 s with cells not run: Run All stopped
            if reruns >= 1:
                raise AssertionError(f"{name}: Run All stopped after {state['done']} of {state['cells']} cells")
            # seen when the kernel session was still being set up as the run began: run everything again
            RERUNS.append(f"{name}: Run All stopped after {state['done']} of {state['cells']} cells; ran it again")
            reruns, quiet = reruns + 1, 0
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    raise AssertionError(f"{name}: not finished within {RUN_LIMIT_S} s")


def figure_of(explorer) -> str:
    return explorer.locator("img").first.get_attribute("src") or ""


def redraw_count(explorer) -> str | None:
    """The explorer's count of answered moves (``data-redraw`` of its status line), None before the first."""
    mark = explorer.locator("[data-redraw]")
    return mark.first.get_attribute("data-redraw") if mark.count() else None


def label_of(control) -> str:
    """The name a control shows (a checkbox shows it next to the box, other widgets in their label)."""
    beside_box = control.locator(".widget-label-basic")
    return (beside_box if beside_box.count() else control.locator(".widget-label")).first.inner_text().strip()


def move_once(page, explorer, control) -> str:
    """Move one control by one step (a slider: the arrow key; a dropdown: the next option; a checkbox: a
    click); returns how."""
    box = control.locator("input[type=checkbox]")
    if box.count():
        box.click()
        return "toggle"
    select = control.locator("select")
    if select.count():
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.selectedIndex")
        choice = options[(current + 1) % len(options)]
        select.select_option(label=choice)
        return f"→ {choice}"
    handle = control.locator(".noUi-handle, .ui-slider-handle").first
    now, top = (float(handle.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemax"))
    handle.focus()
    key = "ArrowLeft" if now >= top else "ArrowRight"
    page.keyboard.press(key)
    return key


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_live_explorer_answers_each_move_in_jupyterlab(lab, browser):
    shots = ARTIFACTS / "jupyterlab"
    shots.mkdir(parents=True, exist_ok=True)
    moves, problems = [], []
    for notebook in [p for p in NOTEBOOKS if ONLY in str(p)]:
        name = str(notebook.relative_to(ROOT / "book").with_suffix(""))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
        # ?reset: a fresh workspace, so the previous chapter is not reopened (with a kernel of its own)
        page.goto(f"{lab}/lab/tree/{notebook.relative_to(ROOT)}?reset", wait_until="domcontentloaded")
        try:
            run_s = run_all(page, name)
            explorer = page.locator(".trustml-live-explorer").first
            explorer.wait_for(timeout=30000)
            explorer.scroll_into_view_if_needed()
            controls = explorer.locator(".widget-slider, .widget-dropdown, .widget-checkbox")
            labels = [label_of(c) for c in controls.all()]
            assert labels == explorer_controls(notebook), f"{name}: controls {labels}"
            for label, control in zip(labels, controls.all()):
                before = figure_of(explorer)
                start = time.perf_counter()
                steps = 0
                while steps < 3:  # one step; a step that redraws the same figure is followed by another
                    steps += 1
                    answered = redraw_count(explorer)
                    how = move_once(page, explorer, control)
                    page.wait_for_function(
                        """([box, answered]) => {
                             const mark = box.querySelector('[data-redraw]');
                             return (mark && mark.getAttribute('data-redraw') !== answered) ||
                                    box.querySelector('.trustml-explorer-error') !== null; }""",
                        arg=[explorer.element_handle(), answered], timeout=MOVE_LIMIT_S * 1000, polling=100)
                    failed = explorer.locator(".trustml-explorer-error")
                    assert failed.count() == 0, f"{name}: moving {label} failed: {failed.first.inner_text()}"
                    if figure_of(explorer) != before:
                        break
                seconds = round(time.perf_counter() - start, 2)
                assert figure_of(explorer) != before, f"{name}: {steps} moves of {label} did not change the figure"
                moves.append({"notebook": name, "control": label, "move": how, "steps": steps, "seconds": seconds,
                              "run_s": run_s})
            label_widths = explorer.evaluate("""b => [...b.querySelectorAll('.widget-label')].map(
                l => l.scrollWidth <= l.clientWidth + 1)""")
            assert all(label_widths), f"{name}: a control's label is cut off"
            assert not errors, f"{name}: JavaScript errors {errors}"
        except Exception as error:  # record and go on, so one chapter does not hide the others
            problems.append(f"{name}: {error}")
        finally:
            shot = str(shots / f"{name.replace('/', '__')}.png")
            explorer = page.locator(".trustml-live-explorer")
            (explorer.first.screenshot if explorer.count() else page.screenshot)(path=shot)
            page.close()
            shut_down_kernels(lab)
    (ARTIFACTS / "explorer-moves.json").write_text(json.dumps(moves, indent=1) + "\n")
    (ARTIFACTS / "jupyterlab-dialogs.txt").write_text("\n".join(DIALOGS + RERUNS) + "\n")
    assert not problems, "\n".join(problems)
    expected = {str(p.relative_to(ROOT / "book").with_suffix("")) for p in NOTEBOOKS if ONLY in str(p)}
    assert {m["notebook"] for m in moves} == expected
