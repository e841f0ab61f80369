"""Flower on 127.0.0.1, run the way Flower documents it: a ``flower-superlink`` and ``flwr run``.

Two modes. A real deployment: one ``flower-superlink`` and one ``flower-supernode`` per device — the processes a
lab deployment runs, on one machine, for tests and for measuring what SecAgg+ costs::

    with LoopbackFederation(num_supernodes=4) as federation:
        plain = federation.run({"n-devices": 4, "devices-per-round": 4, "selection": "uniform"})
        secure = federation.run({..., "secagg": True})

And Flower's simulation runtime (``simulation=True``): a SuperLink started with ``--simulation`` runs the
``num_supernodes`` virtual SuperNodes itself (Ray). This is what ``run_flower_simulation`` uses: Flower 1.42
deprecates the in-process ``flwr.simulation.run_simulation`` in favour of ``flwr run``.

``run`` starts one ``flwr run`` of the app template (``app_dir()``) with the given run config and returns the
ServerApp's JSON summary (``FlowerRunResult.summary()``), raising the ServerApp's error if it failed (as the same
exception type for trustml's and Python's own errors). Every process started here is torn down by PID with its
descendants (SuperExec, app processes), also when something fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

from trustml.federated.flower.task import resolve_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "") + "'"
    return repr(value)


def run_config_text(config: Mapping[str, object]) -> str:
    """``--run-config`` text for ``flwr run`` (TOML values: booleans unquoted, strings single-quoted)."""
    return " ".join(f"{key}={_toml_value(value)}" for key, value in config.items())


def _server_error(error: Mapping[str, str]) -> Exception:
    """The ServerApp's error as its own type where the caller can catch it (trustml's and built-in errors)."""
    from trustml.federated.flower.strategy import FewRepliesError

    known: dict[str, type[Exception]] = {"FewRepliesError": FewRepliesError, "ValueError": ValueError,
                                         "TypeError": TypeError, "KeyError": KeyError}
    kind = known.get(error["type"], RuntimeError)
    return kind(error["message"] if kind is not RuntimeError else f"the ServerApp failed: {error['type']}: "
                f"{error['message']}")


class LoopbackFederation:
    """A SuperLink and ``num_supernodes`` SuperNodes (partition ids 0..n-1) on 127.0.0.1 — real processes, or with
    ``simulation=True`` virtual ones in the SuperLink's simulation runtime."""

    def __init__(self, num_supernodes: int, *, simulation: bool = False, workdir: str | os.PathLike | None = None,
                 startup_timeout: float = 60):
        if isinstance(num_supernodes, bool) or not isinstance(num_supernodes, int) or num_supernodes < 1:
            raise ValueError(f"num_supernodes must be an int >= 1, got {num_supernodes!r}")
        self.num_supernodes, self.simulation = num_supernodes, simulation
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="trustml-flower-") if workdir is None else None
        self.workdir = pathlib.Path(workdir if workdir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.logs = self.workdir / "logs"
        self.started: list[subprocess.Popen] = []
        self.runs = 0
        bin_dir = pathlib.Path(sys.executable).parent
        self.bin = bin_dir
        self.env = dict(os.environ)
        self.env.update(FLWR_HOME=str(self.workdir / "flwr-home"), FLWR_TELEMETRY_ENABLED="0",
                        FLWR_DISABLE_UPDATE_CHECK="1", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
                        HF_HUB_OFFLINE="1",
                        # SuperLink/SuperNode start flower-superexec, flwr-serverapp, ... from PATH: this venv first.
                        PATH=f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}")

    # ------------------------------------------------------------------------------- processes
    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen([str(self.bin / args[0]), *args[1:]], env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def __enter__(self) -> LoopbackFederation:
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.port = _free_port()
            link = self._start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1",
                               "--port", str(self.port), *(["--simulation"] if self.simulation else []))
            self._wait_healthy(link)
            for partition_id in range(0 if self.simulation else self.num_supernodes):
                self._start(f"supernode-{partition_id}", "flower-supernode", "--insecure",
                            "--superlink", f"127.0.0.1:{self.port}", "--port", str(_free_port()),
                            "--node-config", f"partition-id={partition_id} num-partitions={self.num_supernodes}")
            home = pathlib.Path(self.env["FLWR_HOME"])
            home.mkdir(parents=True, exist_ok=True)
            (home / "config.toml").write_text(
                f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{self.port}"\n'
                "insecure = true\n")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_healthy(self, process: subprocess.Popen) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {process.returncode}\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=0.5).is_success:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"flower-superlink did not become healthy\n{self.log_tail()}")

    def stop(self) -> None:
        import psutil

        tree = []
        for process in self.started:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(process.pid)
                tree += [*parent.children(recursive=True), parent]
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.terminate()
        _, alive = psutil.wait_procs(tree, timeout=10)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=5)
        self.started = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log_tail(self, characters: int = 3000) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-characters:]}"
                         for f in sorted(self.logs.glob("*.log")))

    # ------------------------------------------------------------------------------------ runs
    def run(self, config: Mapping[str, object], *, timeout: float = 180.0) -> dict:
        """One ``flwr run`` with ``config`` (over the template's defaults); the ServerApp's JSON summary.

        ``expected-nodes`` defaults to every SuperNode and ``result-path`` to a file of this federation."""
        from trustml.federated.flower import app_dir

        self.runs += 1
        result_path = self.workdir / f"run-{self.runs}.json"
        settings = {"expected-nodes": self.num_supernodes, **config, "result-path": str(result_path)}
        resolve_config(settings)  # a bad key or value fails here, not in a process
        started = time.perf_counter()
        federation = ["--federation-config", f"num-supernodes={self.num_supernodes}"] if self.simulation else []
        done = subprocess.run([str(self.bin / "flwr"), "run", str(app_dir()), "loopback", "--run-config",
                               run_config_text(settings), *federation], env=self.env, capture_output=True, text=True,
                              timeout=90)
        if done.returncode != 0 or "Successfully started run" not in done.stdout:
            raise RuntimeError(f"flwr run failed:\n{done.stdout}\n{done.stderr}")
        error_path = result_path.with_suffix(".error")
        deadline = started + timeout
        while not result_path.is_file():
            if error_path.is_file():
                raise _server_error(json.loads(error_path.read_text()))
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no result after {timeout} s\n{self.log_tail()}")
            time.sleep(0.2)
        result = json.loads(result_path.read_text())
        result["wall_seconds"] = time.perf_counter() - started  # flwr run to result, as the operator waits
        return result


__all__ = ["LoopbackFederation", "run_config_text"]
