"""The Flower ServerApp: FedAvg (or FedAdam) with activity-based device selection on the smart-speaker corpus.

``make_server_app(config, on_result=...)`` builds a ServerApp (``on_result`` receives a ``FlowerRunResult`` —
handy in a notebook, where the simulation engine runs the ServerApp in this process); ``app`` is the one
``flwr run`` loads. With ``result-path`` set, a JSON summary is written there (devices asked and trained per
round, failures, accuracy per round, how far the weights moved, ε under DP, time and messages) — that is how a
deployment's result leaves the ServerApp process.

Three ways a round can run:

- plain: ``ActivityFedAvg`` / ``ActivityFedAdam`` (Flower's Message API strategies);
- ``dp-noise-multiplier > 0``: wrapped in Flower's ``DifferentialPrivacyServerSideFixedClipping``. Its noise
  σC/m assumes each of exactly m devices weighs 1/m, so the run must select uniformly, average plainly
  (``aggregation = "mean"``, no replacement) and hear from every selected device; anything else is refused.
  The ε reported is ``fixed_sample_epsilon`` (a fixed-size sample, no amplification);
- ``secagg = true``: Flower's SecAgg+ (``SecAggPlusWorkflow`` with the legacy ``DefaultWorkflow``, the
  ClientApp's ``secaggplus_mod``): devices send masked, quantised updates and the server only learns their
  weighted sum.

Every round goes through ``RequireReplies``: fewer successful train replies than ``min-replies`` fail the run
with the devices and reasons; the result lists per round the devices asked, trained and failed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from trustml.federated.flower.strategy import ActivityFedAdam, ActivityFedAvg, RequireReplies, RoundReplies
from trustml.federated.flower.task import FederatedTask, RunConfig, load_federated_task, params_of, resolve_config
from trustml.federated.flower.task import state_dict_of
from trustml.federated.simulate import FlatModel, fixed_sample_epsilon


@dataclasses.dataclass
class FlowerRunResult:
    initial_params: torch.Tensor
    final_params: torch.Tensor
    selected: dict[int, list[int]]  # round -> partition ids asked to train
    weights: dict[int, list[float]]
    accuracy: dict[int, float]  # round -> centralized test accuracy (round 0 = initial model)
    config: dict
    trained: dict[int, list[int]] = dataclasses.field(default_factory=dict)  # round -> partition ids that replied
    failed: dict[int, dict[int, str]] = dataclasses.field(default_factory=dict)  # round -> {partition id: reason}
    epsilon: float | None = None  # under DP: fixed_sample_epsilon at dp-delta
    seconds: float = 0.0  # wall time of the rounds (server side)
    messages: dict[str, int] = dataclasses.field(default_factory=dict)  # sent / replies / error replies

    def summary(self) -> dict:
        return {
            "rounds": len(self.selected), "selected": {str(r): d for r, d in self.selected.items()},
            "weights": {str(r): w for r, w in self.weights.items()},
            "trained": {str(r): d for r, d in self.trained.items()},
            "failed": {str(r): {str(k): v for k, v in f.items()} for r, f in self.failed.items()},
            "accuracy": {str(r): a for r, a in self.accuracy.items()},
            "initial_norm": float(self.initial_params.norm()),
            "change_norm": float((self.final_params - self.initial_params).norm()),
            "initial_params": self.initial_params.tolist(), "final_params": self.final_params.tolist(),
            "epsilon": self.epsilon, "seconds": self.seconds, "messages": self.messages,
            "config": self.config,
        }

    @classmethod
    def from_summary(cls, summary: Mapping) -> FlowerRunResult:
        """The result back from :meth:`summary` (JSON keys are strings; rounds and partition ids are ints)."""
        def by_round(values: Mapping) -> dict:
            return {int(r): v for r, v in values.items()}

        return cls(initial_params=torch.tensor(summary["initial_params"]),
                   final_params=torch.tensor(summary["final_params"]),
                   selected=by_round(summary["selected"]), weights=by_round(summary["weights"]),
                   accuracy=by_round(summary["accuracy"]), config=dict(summary["config"]),
                   trained=by_round(summary["trained"]),
                   failed={int(r): {int(k): why for k, why in f.items()} for r, f in summary["failed"].items()},
                   epsilon=summary["epsilon"], seconds=summary["seconds"], messages=dict(summary["messages"]))


class CountingGrid:
    """The ServerApp's grid, counting the messages it sends and the replies (and error replies) it gets back."""

    def __init__(self, grid: Grid):
        self._grid = grid
        self.counts = {"sent": 0, "replies": 0, "error_replies": 0}

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.counts["sent"] += len(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.counts["replies"] += len(replies)
        self.counts["error_replies"] += sum(reply.has_error() for reply in replies)
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def check_dp_config(config: RunConfig) -> None:
    """Refuse a DP run whose weights or selection do not match the noise Flower adds (σC/m on a 1/m-mean)."""
    if not config.dp:
        return
    problems = []
    if config.selection != "uniform":
        problems.append(f"selection={config.selection!r} (the chance of taking part would depend on the data; "
                        "use 'uniform')")
    if config.aggregation != "mean" or config.replace:
        problems.append(f"aggregation={config.aggregation!r}, replace={config.replace} (weights n_k/Σn make one "
                        "device's influence C·max w_k > C/m; use aggregation='mean' without replacement)")
    if config.min_replies not in (0, config.devices_per_round):
        problems.append(f"min-replies={config.min_replies} (a round averaged over fewer than m devices has "
                        "sensitivity above C/m; every selected device must reply)")
    if config.secagg:
        problems.append("secagg=true (server-side clipping needs each update in the clear)")
    if problems:
        raise ValueError("dp-noise-multiplier > 0 needs equal weights 1/m over a uniform fixed-size sample, as "
                         "Flower's DifferentialPrivacyServerSideFixedClipping assumes; refusing: "
                         + "; ".join(problems))


def _strategy(config: RunConfig) -> ActivityFedAvg:
    options: dict[str, Any] = dict(devices_per_round=config.devices_per_round, selection=config.selection_rule,
                                   seed=config.seed, query_timeout=config.query_timeout,
                                   expected_nodes=config.expected_nodes or None)
    adam = config.server_adam
    if adam is None:
        return ActivityFedAvg(**options)
    return ActivityFedAdam(**options, eta=adam.eta, beta_1=adam.beta_1, beta_2=adam.beta_2, tau=adam.tau)


def run_server(grid: Grid, config: RunConfig | Mapping, *, context: Context | None = None) -> FlowerRunResult:
    """Query activity, run ``num-server-rounds`` rounds and evaluate centrally after each (``context``: the
    ServerApp's, which SecAgg+'s legacy workflow needs)."""
    config = resolve_config(config)
    check_dp_config(config)
    federated = load_federated_task(config)
    model = federated.new_model(seed=config.seed)
    initial = model.flatten()
    strategy = _strategy(config)
    counting = CountingGrid(grid)
    accuracy: dict[int, float] = {}
    start = time.perf_counter()
    if config.secagg:
        from trustml.federated.flower.secagg import run_secagg

        final, rounds = run_secagg(counting, config, federated, model, initial, strategy, accuracy, context)
    else:
        final, rounds = _run_message_api(counting, config, federated, model, initial, strategy, accuracy)
    seconds = time.perf_counter() - start
    epsilon = (fixed_sample_epsilon(noise_multiplier=config.dp_noise_multiplier, rounds=config.num_server_rounds,
                                    delta=config.dp_delta) if config.dp else None)
    return FlowerRunResult(
        initial, final, {r: d for r, (d, _) in strategy.selected.items()},
        {r: w for r, (_, w) in strategy.selected.items()}, accuracy, config.to_dict(),
        trained={r: x.trained for r, x in rounds.items()}, failed={r: x.failed for r, x in rounds.items()},
        epsilon=epsilon, seconds=seconds, messages=dict(counting.counts))


def _run_message_api(grid: CountingGrid, config: RunConfig, federated: FederatedTask, model: FlatModel,
                     initial: torch.Tensor, strategy: ActivityFedAvg, accuracy: dict[int, float]
                     ) -> tuple[torch.Tensor, dict[int, RoundReplies]]:
    inner: Strategy = strategy
    if config.dp:
        inner = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=config.dp_noise_multiplier, clipping_norm=config.dp_clipping_norm,
            num_sampled_clients=config.devices_per_round)
    runner = RequireReplies(inner, min_replies=config.required_replies, partition_of=strategy.partition_of)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = model.evaluate(params_of(model, arrays.to_torch_state_dict()), federated.task.test)
        accuracy[server_round] = metrics["accuracy"]
        return MetricRecord({"accuracy": metrics["accuracy"], "loss": metrics["loss"]})

    result = runner.start(grid=grid, initial_arrays=ArrayRecord(torch_state_dict=state_dict_of(model, initial)),  # type: ignore[arg-type]  # a Grid by duck typing
                          num_rounds=config.num_server_rounds, train_config=ConfigRecord({}), evaluate_fn=evaluate)
    return params_of(model, result.arrays.to_torch_state_dict()), runner.rounds


def write_result(path: str, result: FlowerRunResult) -> None:
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(result.summary(), indent=1))
    partial.replace(target)  # atomic: a reader never sees half a file


def make_server_app(config: RunConfig | Mapping | None = None, *,
                    on_result: Callable[[FlowerRunResult], None] | None = None,
                    on_error: Callable[[BaseException], None] | None = None) -> ServerApp:
    """A ServerApp whose run configuration is ``config`` over the defaults (the run's own config wins);
    ``on_result`` receives its result, ``on_error`` the error that stopped it (then it is raised too)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            settings = resolve_config(config, context.run_config)
            result = run_server(grid, settings, context=context)
        except Exception as error:  # the deployment's caller reads the result file: tell it what went wrong
            if on_error is not None:
                on_error(error)
            path = context.run_config.get("result-path", "")
            if isinstance(path, str) and path:
                target = pathlib.Path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.with_suffix(".error").write_text(json.dumps({"type": type(error).__name__,
                                                                    "message": str(error)}))
            raise
        if settings.result_path:
            write_result(settings.result_path, result)
        if on_result is not None:
            on_result(result)

    return app


#: The ServerApp that ``flwr run`` loads (``trustml.federated.flower.server_app:app``).
app = make_server_app()

__all__ = ["CountingGrid", "FlowerRunResult", "app", "check_dp_config", "make_server_app", "run_server",
           "write_result"]
