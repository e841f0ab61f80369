"""The reader's two other environments, built from scratch, each running every notebook at QUICK size.

    python -m tools.envs colab latest      # both (CI: bash tools/test-envs.sh)
    python -m tools.envs colab --parts fairness

``colab``   Google Colab as a workshop participant meets it: Colab's preinstalled versions first
            (``COLAB_PREINSTALLED``: ipywidgets 7.7.1, numpy 2.0.2, pandas 2.2.2, matplotlib 3.10, ipykernel
            6.17, ipython 7.34, plotly 5.24, with torch and the other libraries Colab ships), then for each part
            a runtime of its own that installs the package exactly as that part's Colab cell does
            (``pip install -q "trustml[<part>] @ ..."``, no constraints file) and runs the part's notebooks.
            The cell installs from GitHub at the release tag; CI has no GitHub access, so here the same
            requirement points at the local checkout (``trustml[<part>] @ file://...``). The install time
            is measured with the preinstalled packages present, as in Colab. Colab runs Python 3.12; CI has 3.11.
``latest``  the "Run it yourself" page's local commands, executed (``git clone`` of this checkout, a venv,
            ``pip install -e ".[lab]"``: the package's lower bounds only, so pip takes the newest release of
            everything; ``jupyter lab book/`` must answer and list the widget extension), then every notebook.
            torch is the one exception: the ``torch==2.13.0`` CPU wheel first, because the newest torch from
            the index is a multi-GB CUDA build (the page tells CPU-only readers to do the same).

Notebooks run with the stock ``papermill`` command (the reader's), in the environment's own kernel.
Results (resolved versions, install and run times, failures) go to test-artifacts/envs/<env>.json; the
last line is "envs: N passed, N failed". tools/workshop_table.py turns the colab results into the
workshop plan's times.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from tools.book_meta import PARTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENVS = ROOT / ".envs"
RESULTS = ROOT / "test-artifacts" / "envs"
PAGE = ROOT / "book" / "run-it-yourself.md"
#: What Colab has before a notebook's first cell runs (Colab's current versions of the libraries the book uses).
COLAB_PREINSTALLED = [
    "torch==2.13.0",  # Colab ships a CUDA torch 2.x; here the CPU wheel of the CI
    "numpy==2.0.2", "pandas==2.2.2", "matplotlib==3.10.0", "ipykernel==6.17.1", "ipython==7.34.0",
    "ipywidgets==7.7.1", "plotly==5.24.1",
    "scipy==1.16.3", "scikit-learn==1.6.1", "tokenizers==0.22.1", "transformers==4.57.1", "tqdm==4.67.1",
]
#: The torch of the CI (README): the CPU wheel, installed before the package in every environment.
TORCH = "torch==2.13.0"
#: The harness, not the reader's environment: the papermill command that runs each notebook.
HARNESS = ["papermill>=2.5"]
KEY_PACKAGES = ["python", "trustml", "torch", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "plotly",
                "ipywidgets", "ipykernel", "ipython", "jupyter_client", "nbclient", "pyzmq", "papermill", "opacus",
                "flwr", "flwr-datasets", "ray", "fairlearn", "transformers", "tokenizers", "jupyterlab",
                "jupyterlab_widgets"]
NOTEBOOK_TIMEOUT_S = 600


def notebooks(part: str | None = None) -> list[pathlib.Path]:
    parts = [part] if part else list(PARTS)
    return [p for name in parts for p in sorted((ROOT / "book" / name).glob("*.ipynb"))]


def reader_environment() -> dict[str, str]:
    """The variables a notebook run gets: offline hub and Flower, no PYTHONPATH (the env's own trustml)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    clinc = ROOT.parent / "shared" / "data" / "clinc150"
    if "TRUSTML_CLINC150" not in env and (clinc / "data_full.json").is_file():
        env["TRUSTML_CLINC150"] = str(clinc)
    return env


def run(command: list[str], *, cwd: pathlib.Path = ROOT, timeout: float | None = None) -> float:
    """Run ``command`` (raising with its output on failure); returns its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=reader_environment(), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def site_packages(venv: pathlib.Path) -> pathlib.Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def new_venv(venv: pathlib.Path) -> pathlib.Path:
    """A fresh venv (with the pip that ``venv`` bundles, as a reader's would have); returns its python."""
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    return venv / "bin" / "python"


def install_kernel(python: pathlib.Path) -> None:
    """The env's python as the ``python3`` kernel of its own prefix (papermill -k python3 finds it first)."""
    run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"])


def versions(python: pathlib.Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, platform, sys; names = json.loads(sys.argv[1]); "
            "out = {'python': platform.python_version()}\n"
            "for n in names[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    done = subprocess.run([str(python), "-c", code, json.dumps(KEY_PACKAGES)], capture_output=True, text=True,
                          env=reader_environment(), check=True)
    return json.loads(done.stdout)


def env_label(python: pathlib.Path) -> str:
    """``colab-privacy``, ``latest``, ...: the folder of ``.envs`` the interpreter lives in."""
    return python.relative_to(ENVS).parts[0] if python.is_relative_to(ENVS) else str(python)


def run_notebook(python: pathlib.Path, notebook: pathlib.Path, out_dir: pathlib.Path,
                 root: pathlib.Path = ROOT) -> dict:
    """One notebook at QUICK with the stock papermill command of ``python``'s environment."""
    target = out_dir / notebook.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [str(python), "-m", "papermill", str(notebook), str(target), "-p", "QUICK", "True", "-k", "python3",
               "--cwd", str(notebook.parent), "--no-progress-bar", "--execution-timeout", str(NOTEBOOK_TIMEOUT_S)]
    record: dict = {"notebook": str(notebook.relative_to(root))}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=reader_environment(), capture_output=True, text=True,
                              timeout=NOTEBOOK_TIMEOUT_S + 120)
        record["ok"] = done.returncode == 0
        if not record["ok"]:
            record["error"] = (done.stderr or done.stdout)[-2500:]
    except subprocess.TimeoutExpired:
        record.update(ok=False, error=f"papermill did not finish within {NOTEBOOK_TIMEOUT_S + 120} s (a stall?)")
    record["quick_s"] = round(time.perf_counter() - start, 1)
    status = "ok  " if record["ok"] else "FAIL"
    print(f"  [{env_label(python)}] {status} {record['notebook']} ({record['quick_s']} s)", flush=True)
    return record


def stall_check(python: pathlib.Path, folder: pathlib.Path) -> dict:
    """tools/stall.py in this environment: its papermill, ten runs of a slow live explorer, none may stall.
    The kernel starts in ``folder`` (not the checkout), so it imports the environment's installed trustml."""
    from tools.stall import run_stock_papermill

    folder.mkdir(parents=True, exist_ok=True)
    command = [str(python), "-m", "papermill", "--cwd", str(folder)]
    result = run_stock_papermill(command, folder, env=reader_environment())
    print(f"  [{env_label(python)}] stall check: {len(result['stalls'])} stalls, "
          f"{len(result['failures'])} failures in {result['runs']} runs ({result['durations_s']} s)", flush=True)
    return result


def colab(parts: list[str]) -> dict:
    """Colab's preinstalled versions, then one runtime per part installing that part as its Colab cell does."""
    base = ENVS / "colab-base"
    print(f"colab: preinstalling Colab's packages into {base}", flush=True)
    base_python = new_venv(base)
    base_s = run([str(base_python), "-m", "pip", "install", "-q", *COLAB_PREINSTALLED, *HARNESS], timeout=1800)
    result: dict = {"env": "colab", "preinstalled": COLAB_PREINSTALLED, "preinstall_s": base_s, "parts": {}}
    for part in parts:
        venv = ENVS / f"colab-{part}"
        python = new_venv(venv)
        # Colab's preinstalled packages are visible to the runtime's pip and python, as in Colab.
        (site_packages(venv) / "_colab_preinstalled.pth").write_text(str(site_packages(base)) + "\n")
        requirement = f"trustml[{part}] @ {ROOT.as_uri()}"
        print(f"colab/{part}: pip install -q \"{requirement}\"", flush=True)
        install_s = run([str(python), "-m", "pip", "install", "-q", requirement], timeout=1800)
        install_kernel(python)
        shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' build folder of the non-editable install
        records = [run_notebook(python, notebook, RESULTS / "colab" / part) for notebook in notebooks(part)]
        result["parts"][part] = {"install": f'pip install -q "{requirement}"', "install_s": install_s,
                                 "versions": versions(python), "notebooks": records}
        if part == parts[0]:  # once per environment: the stack is the same for every part
            result["stall_check"] = stall_check(python, RESULTS / "colab" / "stall")
        shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    return result


def jupyterlab_serves_widgets(venv: pathlib.Path, checkout: pathlib.Path) -> dict:
    """``jupyter lab book/`` as the page says (no browser, loopback): it answers, and lists the widget extension."""
    extensions = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"], capture_output=True,
                                text=True, env=reader_environment())
    listed = "@jupyter-widgets/jupyterlab-manager" in extensions.stdout + extensions.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(venv / "bin" / "jupyter"), "lab", "book/", "--no-browser", "--ip=127.0.0.1",
                               f"--port={port}", "--IdentityProvider.token=", "--allow-root"],
                              cwd=checkout, env=reader_environment(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    answered = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not answered:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as page:
                    answered = page.status == 200 and b"JupyterLab" in page.read()
            except OSError:
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"widget_extension_listed": listed, "lab_answered": answered}


def page_commands(page: pathlib.Path = PAGE) -> list[str]:
    """The shell commands of the "Run it yourself" page's local section (its first ``bash`` block), comments cut."""
    text = page.read_text()
    block = text[text.index("## Locally"):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def latest() -> dict:
    """The "Run it yourself" page's commands, executed: a clone (of this checkout: CI has no GitHub), a venv,
    ``pip install -e ".[lab]"`` (newest releases above the package's lower bounds), ``jupyter lab book/``
    (started on loopback, checked, stopped); then every notebook at QUICK in that venv. Before the page's
    first pip command the CPU torch wheel is installed (``TORCH``): a reader on a GPU-less machine does the
    same (the page says how); here the newest torch from the index is a multi-GB CUDA build."""
    home = ENVS / "latest"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    commands = page_commands()
    if not (commands[0].startswith("git clone ") and commands[-1] == "jupyter lab book/"):
        raise ValueError(f"{PAGE.name}: the local commands must start with git clone and end with jupyter lab book/")
    clone = commands[0].split()[2]
    name = clone.rstrip("/").split("/")[-1].removesuffix(".git")
    script = ["set -euo pipefail", commands[0].replace(clone, f"{ROOT} {name}")]
    for command in commands[1:-1]:
        if command.startswith("pip install") and TORCH not in " ".join(script):
            script.append(f"pip install -q {TORCH}")
        script.append(command)
    print("latest: " + " ; ".join(script[1:]), flush=True)
    install_s = run(["bash", "-c", "\n".join(script)], cwd=home, timeout=2400)
    checkout = home / name
    venv = checkout / ".venv"
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", *HARNESS])
    install_kernel(python)
    lab = jupyterlab_serves_widgets(venv, checkout)
    records = [run_notebook(python, checkout / notebook.relative_to(ROOT), RESULTS / "latest", checkout)
               for notebook in notebooks()]
    result = {"env": "latest", "commands": script[1:], "install_s": install_s, "versions": versions(python),
              "jupyterlab": lab, "notebooks": records,
              "stall_check": stall_check(python, RESULTS / "latest" / "stall")}
    shutil.rmtree(home, ignore_errors=True)
    return result


def outcomes(result: dict) -> list[tuple[str, bool]]:
    """(check, passed) for every notebook run and environment check of one result."""
    records = result.get("notebooks", []) + [r for p in result.get("parts", {}).values() for r in p["notebooks"]]
    found = [(f"{result['env']}: {r['notebook']}", r["ok"]) for r in records]
    if "jupyterlab" in result:
        found += [(f"{result['env']}: jupyter lab {k}", v) for k, v in result["jupyterlab"].items()]
    if "stall_check" in result:
        check = result["stall_check"]
        found.append((f"{result['env']}: stock papermill, {check['runs']} runs of a slow live explorer",
                      not check["stalls"] and not check["failures"]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.envs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("envs", nargs="+", choices=["colab", "latest"])
    parser.add_argument("--parts", default=",".join(PARTS), help="colab: the parts to run (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="environments built and run at once (default 1: "
                        "sequential, so the times measured are not skewed by each other)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> dict:
        start = time.perf_counter()
        try:
            result = colab(args.parts.split(",")) if name == "colab" else latest()
        except Exception as error:  # an install that fails is a failed environment, reported like a notebook
            result = {"env": name, "error": str(error)[-5000:], "notebooks": [
                {"notebook": f"(environment setup) {str(error).splitlines()[0][:200]}", "ok": False, "quick_s": 0}]}
        result["total_s"] = round(time.perf_counter() - start, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name}: {result['total_s']} s in all; results in {RESULTS / (name + '.json')}", flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, args.envs))
    checks = [check for result in results for check in outcomes(result)]
    failed = [check for check, ok in checks if not ok]
    for check in failed:
        print(f"FAILED {check}")
    print(f"envs: {len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
