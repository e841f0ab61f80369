"""trustml's Flower app (Flower 1.41 Message API): ServerApp, ClientApp and ``ActivityFedAvg``.

Three ways to run it:

1. in a notebook, through Flower's simulation engine: ``run_flower_simulation(config)``;
2. ``flwr run <app_dir()>`` against a local simulation SuperLink (``flwr run`` starts one);
3. a real deployment: ``flower-superlink`` + one ``flower-supernode`` per device, then ``flwr run`` with
   a SuperLink connection pointing at it (see ``app_dir()/README.md``).

``app_dir()`` is the Flower app template shipped with trustml (``pyproject.toml`` with
``[tool.flwr.app]``, and a package whose components re-export ``server_app.app`` and ``client_app.app``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from trustml.federated.flower.client_app import make_client_app
from trustml.federated.flower.server_app import FlowerRunResult, check_dp_config, make_server_app, run_server
from trustml.federated.flower.strategy import (
    ActivityFedAdam, ActivityFedAvg, DeviceInfo, FewRepliesError, RequireReplies, RoundReplies,
)
from trustml.federated.flower.task import DEFAULT_RUN_CONFIG, RunConfig, load_federated_task, resolve_config


def app_dir() -> pathlib.Path:
    """The Flower app template (a folder with ``pyproject.toml``): ``flwr run <app_dir()>``."""
    return pathlib.Path(__file__).resolve().parent / "app"


def run_flower_simulation(config: RunConfig | Mapping | None = None, *, num_supernodes: int | None = None,
                          backend_config: dict | None = None, verbose: bool = False) -> FlowerRunResult:
    """Run the app in Flower's simulation engine (Ray) in this process and return the ServerApp's result.

    One virtual SuperNode per corpus device unless ``num_supernodes`` is given.
    """
    from flwr.simulation import run_simulation

    settings = resolve_config(config)
    results: list[FlowerRunResult] = []
    errors: list[BaseException] = []
    nodes = num_supernodes or load_federated_task(settings).data.num_devices
    run_simulation(server_app=make_server_app(settings, on_result=results.append, on_error=errors.append),
                   client_app=make_client_app(settings), num_supernodes=nodes,
                   backend_config=backend_config or {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                   verbose_logging=verbose)
    if errors:  # the engine logs a failed ServerApp and returns; raise its error here
        raise errors[0]
    if not results:
        raise RuntimeError("the Flower simulation ended without a result: see its log above")
    return results[0]


__all__ = [
    "DEFAULT_RUN_CONFIG", "ActivityFedAdam", "ActivityFedAvg", "DeviceInfo", "FewRepliesError", "FlowerRunResult",
    "RequireReplies", "RoundReplies", "RunConfig", "app_dir", "check_dp_config", "load_federated_task",
    "make_client_app", "make_server_app", "resolve_config", "run_flower_simulation", "run_server",
]
