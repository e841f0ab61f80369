"""What the Flower apps train: the run configuration, the data of a device, the model and conversions.

Every process of a Flower run (the ServerApp, each ClientApp) rebuilds the same deterministic corpus
from the run configuration (``[tool.flwr.app.config]`` in the app's ``pyproject.toml``, overridable with
``flwr run --run-config``) and keeps the part it is entitled to: a ClientApp the data of the device
named by its node config's ``partition-id``; the ServerApp only the test split (for centralized
evaluation) — devices send updates, never data.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np
import torch

from trustml.federated.selection import Selection
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
    "seed": 0,
    "n-devices": 20,  # corpus size: devices of the synthetic smart-speaker corpus
    "mean-utterances": 30.0,
    "activity-tail": 1.2,
    "preference-concentration": 1.0,
    "corpus-seed": 0,
    "dp-noise-multiplier": 0.0,  # > 0: wrap the strategy in Flower's server-side fixed-clipping DP
    "dp-clipping-norm": 1.0,
    "result-path": "",  # where the ServerApp writes a JSON summary (empty: nowhere)
    "query-timeout": 120.0,
    "expected-nodes": 0,  # nodes to wait for before querying activity (0: devices-per-round)
}


def resolve_config(*configs: Mapping | None) -> dict:
    """Defaults overridden by each of ``configs`` in turn; unknown keys are an error (typos)."""
    merged = dict(DEFAULT_RUN_CONFIG)
    for config in configs:
        for key, value in (config or {}).items():
            if key not in DEFAULT_RUN_CONFIG:
                raise KeyError(f"unknown run-config key {key!r}; known keys: {sorted(DEFAULT_RUN_CONFIG)}")
            merged[key] = value
    return merged


def selection_of(config: Mapping) -> Selection:
    return Selection(str(config["selection"]), gamma=float(config["gamma"]), replace=bool(config["replace"]),
                     aggregation=str(config["aggregation"]))


def training_of(config: Mapping) -> LocalTraining:
    return LocalTraining(epochs=int(config["local-epochs"]), batch_size=int(config["batch-size"]),
                         lr=float(config["lr"]), mu=float(config["proximal-mu"]))


@dataclasses.dataclass
class FederatedTask:
    """The intent task split by device (natural partition: one Flower partition per corpus device)."""

    task: object  # trustml.data.IntentTask
    data: FederatedData

    def new_model(self, seed: int) -> FlatModel:
        return embedding_model(self.task.tokenizer.vocab_size, self.task.num_classes, seed=seed)


def _corpus_key(config: Mapping) -> tuple:
    return (int(config["n-devices"]), float(config["mean-utterances"]), float(config["activity-tail"]),
            float(config["preference-concentration"]), int(config["corpus-seed"]))


@functools.lru_cache(maxsize=4)
def _load(key: tuple) -> FederatedTask:
    from trustml.data import load_intent_task

    n_devices, mean_utterances, activity_tail, preference_concentration, seed = key
    task = load_intent_task(n_devices=n_devices, mean_utterances=mean_utterances, activity_tail=activity_tail,
                            preference_concentration=preference_concentration, seed=seed)
    return FederatedTask(task, FederatedData.by_column(task.train, task.train_frame, column="device_id"))


def load_federated_task(config: Mapping) -> FederatedTask:
    """The (cached) task of a run configuration."""
    return _load(_corpus_key(resolve_config(config)))


def state_dict_of(model: FlatModel, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named tensors (the module's ``state_dict`` layout) of a flat parameter vector."""
    return {name: tensor.detach().clone() for name, tensor in model.unflatten(params).items()}


def params_of(model: FlatModel, state: Mapping[str, object]) -> torch.Tensor:
    """The flat parameter vector of named arrays/tensors (in the module's parameter order)."""
    missing = [n for n in model.names if n not in state]
    if missing:
        raise KeyError(f"arrays lack the parameters {missing}")
    return torch.cat([torch.as_tensor(np.asarray(state[n]), dtype=torch.float32).reshape(-1) for n in model.names])
