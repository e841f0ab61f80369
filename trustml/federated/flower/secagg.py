"""SecAgg+ rounds for the ServerApp: Flower's ``SecAggPlusWorkflow`` (Bell et al. 2020) with trustml's selection.

In Flower 1.41 SecAgg+ runs inside the legacy ``DefaultWorkflow``, which drives a legacy strategy
(``configure_fit`` / ``aggregate_fit``). ``SecAggSelection`` is that strategy: it chooses devices exactly as
``ActivityFedAvg`` does (same selection, same per-round generator, so the same devices as a plain run), sends
each its integer weight (n_k for n-weighting, its draw count for the plain mean), and receives from the workflow
only the **sum** of the devices' masked, quantised, weighted updates — never one device's update. It adds that
mean update to the global model, records who took part, and fails the run when fewer than ``min-replies``
devices survived a round (or when SecAgg+ halted it: too few devices left to unmask).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Context, RecordDict
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

from trustml.federated.flower.strategy import ActivityFedAvg, FewRepliesError, RoundReplies
from trustml.federated.flower.task import FederatedTask, RunConfig
from trustml.federated.simulate import FlatModel


def integer_weights(strategy: ActivityFedAvg, node_ids: list[int], draws: np.ndarray) -> list[int]:
    """SecAgg+ weighs each update by an integer (its ``num_examples``): n_k for n-weighting, the draw count for the
    plain mean — proportional to the aggregation weights, which SecAgg+ normalises by their (secure) sum."""
    if strategy.selection.aggregation == "weighted":
        return [strategy.devices[n].num_examples for n in node_ids]
    return [int(c) for c in draws]


class SecAggSelection(LegacyFedAvg):
    """The legacy strategy under ``SecAggPlusWorkflow``: trustml's device choice, update-sum aggregation."""

    def __init__(self, activity: ActivityFedAvg, model: FlatModel, initial: torch.Tensor, *, evaluate,
                 min_replies: int):
        super().__init__(fraction_evaluate=0.0, min_available_clients=activity.min_available_nodes,
                         initial_parameters=ndarrays_to_parameters(self._arrays(model, initial)))
        self.activity, self.model, self.evaluate_model, self.min_replies = activity, model, evaluate, min_replies
        self.current: list[np.ndarray] = []
        self.rounds: dict[int, RoundReplies] = {}
        self._asked: dict[int, list[int]] = {}

    @staticmethod
    def _arrays(model: FlatModel, params: torch.Tensor) -> list[np.ndarray]:
        return [t.detach().numpy().copy() for t in model.unflatten(params).values()]

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        node_ids, weights, draws = self.activity.choose(server_round)
        proxies = {proxy.node_id: proxy for proxy in client_manager.all().values()}
        missing = [n for n in node_ids if n not in proxies]
        if missing:
            raise RuntimeError(f"round {server_round}: selected nodes {missing} are not connected")
        self.current = parameters_to_ndarrays(parameters)
        self._asked[server_round] = node_ids
        instructions = []
        for node_id, weight, integer in zip(node_ids, weights, integer_weights(self.activity, node_ids, draws)):
            config: dict[str, bool | bytes | float | int | str] = {
                "server-round": server_round, "seed": self.activity.seed, "aggregation-weight": float(weight),
                "secagg-weight": int(integer)}
            instructions.append((proxies[node_id], FitIns(parameters, config)))
        return instructions

    def aggregate_fit(self, server_round: int, results, failures):
        asked = self._asked.pop(server_round)
        trained = {proxy.node_id for proxy, _ in results}
        name = self.activity.partition_of
        self.rounds[server_round] = RoundReplies(
            [name(n) for n in asked], [name(n) for n in asked if n in trained],
            {name(n): "dropped out of the SecAgg+ round" for n in asked if n not in trained})
        if len(trained) < self.min_replies:
            raise FewRepliesError(f"round {server_round}: {len(trained)} of {len(asked)} selected devices completed "
                                  f"SecAgg+, fewer than the {self.min_replies} required (min-replies)")
        # Every result carries the same parameters: the workflow's unmasked weighted mean of the updates.
        mean_update = parameters_to_ndarrays(results[0][1].parameters)
        new = [w + u.astype(w.dtype) for w, u in zip(self.current, mean_update)]
        return ndarrays_to_parameters(new), {}

    def evaluate(self, server_round: int, parameters: Parameters):
        params = torch.cat([torch.as_tensor(a, dtype=torch.float32).reshape(-1)
                            for a in parameters_to_ndarrays(parameters)])
        metrics = self.evaluate_model(server_round, params)
        return metrics["loss"], {"accuracy": metrics["accuracy"]}


class CheckedSecAggPlus(SecAggPlusWorkflow):
    """``SecAggPlusWorkflow`` that fails the run when it halts a round (Flower logs it and moves on)."""

    def __init__(self, strategy: SecAggSelection, **options):
        super().__init__(**options)
        self.strategy = strategy

    def __call__(self, grid, context) -> None:
        super().__call__(grid, context)
        current_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        if current_round not in self.strategy.rounds:
            raise FewRepliesError(f"round {current_round}: SecAgg+ halted (too few devices left to reconstruct "
                                  "the masks; see the log above)")


def run_secagg(grid, config: RunConfig, federated: FederatedTask, model: FlatModel, initial: torch.Tensor,
               activity: ActivityFedAvg, accuracy: dict[int, float], context: Context | None = None
               ) -> tuple[torch.Tensor, dict[int, RoundReplies]]:
    """``num-server-rounds`` SecAgg+ rounds; returns the final parameters and each round's replies."""
    activity.learn_activity(grid)
    final = {"params": initial}

    def evaluate(server_round: int, params: torch.Tensor) -> dict[str, float]:
        final["params"] = params
        metrics = model.evaluate(params, federated.task.test)
        accuracy[server_round] = metrics["accuracy"]
        return metrics

    strategy = SecAggSelection(activity, model, initial, evaluate=evaluate, min_replies=config.required_replies)
    counts = [d.num_examples for d in activity.devices.values()]
    max_weight = float(max(counts) if activity.selection.aggregation == "weighted" else config.devices_per_round)
    workflow = CheckedSecAggPlus(strategy, num_shares=config.secagg_num_shares,
                                 reconstruction_threshold=config.secagg_threshold, max_weight=max_weight,
                                 clipping_range=config.secagg_clipping_range, timeout=config.secagg_timeout)
    if context is None:  # outside a ServerApp (tests): a blank one
        context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.num_server_rounds),
                           strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    return final["params"], strategy.rounds
