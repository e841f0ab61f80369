"""What the Flower apps train: the run configuration, the data of a device, the model and conversions.

Every process of a Flower run (the ServerApp, each ClientApp) rebuilds the same deterministic corpus
from the run configuration (``[tool.flwr.app.config]`` in the app's ``pyproject.toml``, overridable with
``flwr run --run-config``) and keeps the part it is entitled to: a ClientApp the data of the device
named by its node config's ``partition-id``; the ServerApp only the test split (for centralized
evaluation) — devices send updates, never data.

The run configuration is resolved **once**, strictly, into a frozen ``RunConfig``: an unknown key, a value of
the wrong type (``replace = "false"`` — a string, not a boolean; ``num-server-rounds = 2.7``) or out of range
(``dp-noise-multiplier = -1`` or NaN) is an error naming the key and what it accepts. Nothing is coerced.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trustml.data.text import IntentTask
from trustml.federated.plans import ServerAdam
from trustml.federated.selection import AGGREGATIONS, SCHEMES, Selection
from trustml.federated.simulate import FederatedData, FlatModel, LocalTraining, embedding_model

#: Defaults of the run configuration (keys as in ``[tool.flwr.app.config]``).
DEFAULT_RUN_CONFIG: dict[str, bool | int | float | str] = {
    "num-server-rounds": 3,
    "devices-per-round": 2,
    "selection": "activity",  # uniform | activity | top
    "gamma": 1.0,
    "replace": False,
    "aggregation": "weighted",  # weighted | mean
    "local-epochs": 1,
    "batch-size": 16,
    "lr": 0.5,
    "proximal-mu": 0.0,  # > 0: FedProx
    "server-optimizer": "fedavg",  # fedavg | fedadam (FedOpt with Flower's FedAdam)
    "server-lr": 0.1,  # FedAdam's eta
    "server-beta-1": 0.9,
    "server-beta-2": 0.99,
    "server-tau": 0.001,
    "seed": 0,
    "n-devices": 20,  # corpus size: devices of the synthetic smart-speaker corpus
    "mean-utterances": 30.0,
    "activity-tail": 1.2,
    "preference-concentration": 1.0,
    "corpus-seed": 0,
    "dp-noise-multiplier": 0.0,  # > 0: Flower's server-side fixed-clipping DP (uniform selection, equal weights)
    "dp-clipping-norm": 1.0,
    "dp-delta": 1e-4,  # δ of the ε the ServerApp reports under DP
    "min-replies": 0,  # fewest train replies a round accepts (0: every selected device must reply)
    "secagg": False,  # true: SecAgg+ (Flower's SecAggPlusWorkflow + secaggplus_mod)
    "secagg-num-shares": 3,
    "secagg-threshold": 2,
    "secagg-clipping-range": 8.0,
    "secagg-timeout": 300.0,
    "fail-partitions": "",  # fault injection: comma-separated partition ids whose train raises (tests, demos)
    "result-path": "",  # where the ServerApp writes a JSON summary (empty: nowhere)
    "query-timeout": 120.0,
    "expected-nodes": 0,  # nodes to wait for before querying activity (0: devices-per-round)
}

SERVER_OPTIMIZERS = ("fedavg", "fedadam")


def _integer(key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"run config {key!r} must be an integer >= {low}, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"run config {key!r} must be an integer >= {low}, got {value}")
    return int(value)


def _number(key: str, value: object, *, low: float, strict: bool = False, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"run config {key!r} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    bound = f"{'>' if strict else '>='} {low:g}" + ("" if high == math.inf else f" and < {high:g}")
    if not math.isfinite(value) or (value <= low if strict else value < low) or value >= high:
        raise ValueError(f"run config {key!r} must be a finite number {bound}, got {value}")
    return value


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"run config {key!r} must be true or false (a TOML boolean, unquoted), got {value!r} "
                         f"({type(value).__name__})")
    return bool(value)


def _choice(key: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"run config {key!r} must be one of {list(choices)}, got {value!r}")
    return value


def _text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"run config {key!r} must be a string, got {value!r} ({type(value).__name__})")
    return value


def _partition_list(key: str, value: object) -> tuple[int, ...]:
    text = _text(key, value).strip()
    if not text:
        return ()
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() for item in items):
        raise ValueError(f"run config {key!r} must be comma-separated partition ids (e.g. '1,3'), got {value!r}")
    return tuple(sorted({int(item) for item in items}))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run configuration, parsed and checked once (see ``resolve_config``); field = key with ``_`` for ``-``."""

    num_server_rounds: int
    devices_per_round: int
    selection: str
    gamma: float
    replace: bool
    aggregation: str
    local_epochs: int
    batch_size: int
    lr: float
    proximal_mu: float
    server_optimizer: str
    server_lr: float
    server_beta_1: float
    server_beta_2: float
    server_tau: float
    seed: int
    n_devices: int
    mean_utterances: float
    activity_tail: float
    preference_concentration: float
    corpus_seed: int
    dp_noise_multiplier: float
    dp_clipping_norm: float
    dp_delta: float
    min_replies: int
    secagg: bool
    secagg_num_shares: int
    secagg_threshold: int
    secagg_clipping_range: float
    secagg_timeout: float
    fail_partitions: tuple[int, ...]
    result_path: str
    query_timeout: float
    expected_nodes: int

    @classmethod
    def parse(cls, values: Mapping[str, object]) -> RunConfig:
        """Check every key of a complete run configuration (kebab-case keys) and build the ``RunConfig``."""
        v = values
        return cls(
            num_server_rounds=_integer("num-server-rounds", v["num-server-rounds"], 1),
            devices_per_round=_integer("devices-per-round", v["devices-per-round"], 1),
            selection=_choice("selection", v["selection"], SCHEMES),
            gamma=_number("gamma", v["gamma"], low=0.0),
            replace=_boolean("replace", v["replace"]),
            aggregation=_choice("aggregation", v["aggregation"], sorted(AGGREGATIONS)),
            local_epochs=_integer("local-epochs", v["local-epochs"], 1),
            batch_size=_integer("batch-size", v["batch-size"], 1),
            lr=_number("lr", v["lr"], low=0.0, strict=True),
            proximal_mu=_number("proximal-mu", v["proximal-mu"], low=0.0),
            server_optimizer=_choice("server-optimizer", v["server-optimizer"], SERVER_OPTIMIZERS),
            server_lr=_number("server-lr", v["server-lr"], low=0.0, strict=True),
            server_beta_1=_number("server-beta-1", v["server-beta-1"], low=0.0, high=1.0),
            server_beta_2=_number("server-beta-2", v["server-beta-2"], low=0.0, high=1.0),
            server_tau=_number("server-tau", v["server-tau"], low=0.0, strict=True),
            seed=_integer("seed", v["seed"], 0),
            n_devices=_integer("n-devices", v["n-devices"], 1),
            mean_utterances=_number("mean-utterances", v["mean-utterances"], low=0.0, strict=True),
            activity_tail=_number("activity-tail", v["activity-tail"], low=0.0),
            preference_concentration=_number("preference-concentration", v["preference-concentration"], low=0.0,
                                             strict=True),
            corpus_seed=_integer("corpus-seed", v["corpus-seed"], 0),
            dp_noise_multiplier=_number("dp-noise-multiplier", v["dp-noise-multiplier"], low=0.0),
            dp_clipping_norm=_number("dp-clipping-norm", v["dp-clipping-norm"], low=0.0, strict=True),
            dp_delta=_number("dp-delta", v["dp-delta"], low=0.0, strict=True, high=1.0),
            min_replies=_integer("min-replies", v["min-replies"], 0),
            secagg=_boolean("secagg", v["secagg"]),
            secagg_num_shares=_integer("secagg-num-shares", v["secagg-num-shares"], 3),
            secagg_threshold=_integer("secagg-threshold", v["secagg-threshold"], 2),
            secagg_clipping_range=_number("secagg-clipping-range", v["secagg-clipping-range"], low=0.0, strict=True),
            secagg_timeout=_number("secagg-timeout", v["secagg-timeout"], low=0.0, strict=True),
            fail_partitions=_partition_list("fail-partitions", v["fail-partitions"]),
            result_path=_text("result-path", v["result-path"]),
            query_timeout=_number("query-timeout", v["query-timeout"], low=0.0, strict=True),
            expected_nodes=_integer("expected-nodes", v["expected-nodes"], 0),
        )

    def to_dict(self) -> dict[str, Any]:
        """The configuration with its run-config keys (what ``resolve_config`` accepts back)."""
        values = {field.name.replace("_", "-"): getattr(self, field.name) for field in dataclasses.fields(self)}
        values["fail-partitions"] = ",".join(map(str, self.fail_partitions))
        return values

    # What the keys mean, decoded here and nowhere else.
    @property
    def selection_rule(self) -> Selection:
        return Selection(self.selection, gamma=self.gamma, replace=self.replace, aggregation=self.aggregation)

    @property
    def training(self) -> LocalTraining:
        return LocalTraining(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr, mu=self.proximal_mu)

    @property
    def server_adam(self) -> ServerAdam | None:
        if self.server_optimizer == "fedavg":
            return None
        return ServerAdam(eta=self.server_lr, beta_1=self.server_beta_1, beta_2=self.server_beta_2,
                          tau=self.server_tau)

    @property
    def corpus_key(self) -> tuple[int, float, float, float, int]:
        return (self.n_devices, self.mean_utterances, self.activity_tail, self.preference_concentration,
                self.corpus_seed)

    @property
    def dp(self) -> bool:
        return self.dp_noise_multiplier > 0

    @property
    def required_replies(self) -> int:
        """Fewest successful train replies a round accepts (``min-replies``; 0 means all selected devices)."""
        return self.min_replies or self.devices_per_round


def resolve_config(*configs: Mapping | RunConfig | None) -> RunConfig:
    """Defaults overridden by each of ``configs`` in turn, checked strictly; unknown keys are an error (typos)."""
    merged: dict[str, object] = dict(DEFAULT_RUN_CONFIG)
    for config in configs:
        items = config.to_dict() if isinstance(config, RunConfig) else dict(config or {})
        for key, value in items.items():
            if key not in DEFAULT_RUN_CONFIG:
                raise KeyError(f"unknown run-config key {key!r}; known keys: {sorted(DEFAULT_RUN_CONFIG)}")
            merged[key] = value
    return RunConfig.parse(merged)


def selection_of(config: RunConfig) -> Selection:
    return config.selection_rule


def training_of(config: RunConfig) -> LocalTraining:
    return config.training


@dataclasses.dataclass
class FederatedTask:
    """The intent task split by device (natural partition: one Flower partition per corpus device)."""

    task: IntentTask
    data: FederatedData

    def new_model(self, seed: int) -> FlatModel:
        return embedding_model(self.task.tokenizer.vocab_size, self.task.num_classes, seed=seed)


@functools.lru_cache(maxsize=4)
def _load(key: tuple[int, float, float, float, int]) -> FederatedTask:
    from trustml.data import load_intent_task

    n_devices, mean_utterances, activity_tail, preference_concentration, seed = key
    task = load_intent_task(n_devices=n_devices, mean_utterances=mean_utterances, activity_tail=activity_tail,
                            preference_concentration=preference_concentration, seed=seed)
    return FederatedTask(task, FederatedData.by_column(task.train, task.train_frame, column="device_id"))


def load_federated_task(config: RunConfig | Mapping) -> FederatedTask:
    """The (cached) task of a run configuration."""
    return _load(resolve_config(config).corpus_key)


def state_dict_of(model: FlatModel, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named tensors (the module's ``state_dict`` layout) of a flat parameter vector."""
    return {name: tensor.detach().clone() for name, tensor in model.unflatten(params).items()}


def params_of(model: FlatModel, state: Mapping[str, object]) -> torch.Tensor:
    """The flat parameter vector of named arrays/tensors (in the module's parameter order)."""
    missing = [n for n in model.names if n not in state]
    if missing:
        raise KeyError(f"arrays lack the parameters {missing}")
    return torch.cat([torch.as_tensor(np.asarray(state[n]), dtype=torch.float32).reshape(-1) for n in model.names])
