"""The Flower ServerApp: FedAvg with activity-based device selection on the smart-speaker corpus.

``make_server_app(config, on_result=...)`` builds a ServerApp (``on_result`` receives a
``FlowerRunResult`` — handy in a notebook, where the simulation engine runs the ServerApp in this
process); ``app`` is the one ``flwr run`` loads. With ``dp-noise-multiplier > 0`` the strategy is wrapped
in Flower's ``DifferentialPrivacyServerSideFixedClipping`` (device-level DP: clip each update, noise the
average). With ``result-path`` set, a JSON summary is written there (selected devices per round,
accuracy per round, how far the weights moved) — that is how a deployment's result leaves the
ServerApp process.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from trustml.federated.flower.strategy import ActivityFedAvg
from trustml.federated.flower.task import (
    load_federated_task, params_of, resolve_config, selection_of, state_dict_of,
)


@dataclasses.dataclass
class FlowerRunResult:
    initial_params: torch.Tensor
    final_params: torch.Tensor
    selected: dict[int, list[int]]  # round -> partition ids trained
    weights: dict[int, list[float]]
    accuracy: dict[int, float]  # round -> centralized test accuracy (round 0 = initial model)
    config: dict

    def summary(self) -> dict:
        return {
            "rounds": len(self.selected), "selected": {str(r): d for r, d in self.selected.items()},
            "weights": {str(r): w for r, w in self.weights.items()},
            "accuracy": {str(r): a for r, a in self.accuracy.items()},
            "initial_norm": float(self.initial_params.norm()),
            "change_norm": float((self.final_params - self.initial_params).norm()),
            "config": self.config,
        }


def run_server(grid: Grid, config: Mapping) -> FlowerRunResult:
    """Query activity, run ``num-server-rounds`` rounds of ActivityFedAvg and evaluate centrally."""
    federated = load_federated_task(config)
    model = federated.new_model(seed=int(config["seed"]))
    initial = model.flatten()
    strategy = ActivityFedAvg(devices_per_round=int(config["devices-per-round"]), selection=selection_of(config),
                              seed=int(config["seed"]), query_timeout=float(config["query-timeout"]),
                              expected_nodes=int(config["expected-nodes"]) or None)
    runner = strategy
    if float(config["dp-noise-multiplier"]) > 0:
        runner = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=float(config["dp-noise-multiplier"]),
            clipping_norm=float(config["dp-clipping-norm"]), num_sampled_clients=int(config["devices-per-round"]))
    accuracy: dict[int, float] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = model.evaluate(params_of(model, arrays.to_torch_state_dict()), federated.task.test)
        accuracy[server_round] = metrics["accuracy"]
        return MetricRecord(metrics)

    result = runner.start(grid=grid, initial_arrays=ArrayRecord(torch_state_dict=state_dict_of(model, initial)),
                          num_rounds=int(config["num-server-rounds"]), train_config=ConfigRecord({}),
                          evaluate_fn=evaluate)
    final = params_of(model, result.arrays.to_torch_state_dict())
    return FlowerRunResult(initial, final, {r: d for r, (d, _) in strategy.selected.items()},
                           {r: w for r, (_, w) in strategy.selected.items()}, accuracy, dict(config))


def make_server_app(config: Mapping | None = None, *,
                    on_result: Callable[[FlowerRunResult], None] | None = None) -> ServerApp:
    """A ServerApp whose run configuration is ``config`` over the defaults (the run's own config wins)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = resolve_config(config, context.run_config)
        result = run_server(grid, settings)
        if settings["result-path"]:
            path = pathlib.Path(str(settings["result-path"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(result.summary(), indent=1))
            partial.replace(path)  # atomic: a reader never sees half a file
        if on_result is not None:
            on_result(result)

    return app


#: The ServerApp that ``flwr run`` loads (``trustml.federated.flower.server_app:app``).
app = make_server_app()
