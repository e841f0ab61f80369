"""trustml's Flower app (Flower 1.41 Message API): ServerApp, ClientApp and ``ActivityFedAvg``.

Three ways to run it:

1. in a notebook, through Flower's simulation runtime: ``run_flower_simulation(config)`` starts a local SuperLink
   in simulation mode and ``flwr run``s the app template against it (``loopback.LoopbackFederation``);
2. ``flwr run <app_dir()>`` against a local simulation SuperLink yourself;
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


def run_flower_simulation(config: RunConfig | Mapping | None = None, *,
                          num_supernodes: int | None = None) -> FlowerRunResult:
    """Run the app in Flower's simulation runtime and return the ServerApp's result.

    As Flower documents it (1.42 deprecates the in-process ``run_simulation``): a local SuperLink in simulation
    mode and ``flwr run`` of the app template, with one virtual SuperNode per corpus device unless
    ``num_supernodes`` is given. The ServerApp's error is raised here (``FewRepliesError``, ``ValueError``, …).
    """
    from trustml.federated.flower.loopback import LoopbackFederation

    settings = resolve_config(config)
    nodes = num_supernodes or load_federated_task(settings).data.num_devices
    run_config = {**settings.to_dict(), "expected-nodes": settings.expected_nodes or nodes}
    with LoopbackFederation(nodes, simulation=True) as federation:
        return FlowerRunResult.from_summary(federation.run(run_config, timeout=600))


__all__ = [
    "DEFAULT_RUN_CONFIG", "ActivityFedAdam", "ActivityFedAvg", "DeviceInfo", "FewRepliesError", "FlowerRunResult",
    "RequireReplies", "RoundReplies", "RunConfig", "app_dir", "check_dp_config", "load_federated_task",
    "make_client_app", "make_server_app", "resolve_config", "run_flower_simulation", "run_server",
]
