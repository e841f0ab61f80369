"""Federated learning: FedNLP partitions, device selection, a fast in-process loop, and a Flower app.

- ``partition``: IID, label/quantity/feature skew (FedNLP), natural, heavy-tailed — flwr-datasets
  partitioners (``num_partitions``, ``load_partition(i)``);
- ``selection``: uniform, activity ∝ n^γ, top-m; aggregation weights;
- ``aggregation`` and ``plans``: aggregation as pure functions; a round's plan (sampling + aggregation):
  FedAvg, DP-FedAvg and FedOpt (FedAdam) as wrappers, as Flower's strategies;
- ``simulate``: the one in-process round loop (static and continual) for notebooks;
- ``flower``: the same method as a Flower 1.41 app (ServerApp, ClientApp, ``ActivityFedAvg``) —
  import ``trustml.federated.flower`` explicitly (it loads Flower).
"""

import importlib

from trustml.federated.aggregation import adam_server_step, noised_clipped_mean, weighted_average
from trustml.federated.plans import DeviceDPPlan, FedAvgPlan, FedOptPlan, Plan, ServerAdam, make_plan
from trustml.federated.selection import (
    Selection, aggregation_weights, round_rng, sample_devices, selection_probabilities, top_devices,
    unbiased_activity,
)
from trustml.federated.simulate import (
    DeviceDP, FederatedData, FLResult, FlatModel, LocalTraining, continual_data, dp_epsilon, embedding_model,
    local_update, run_continual, run_federated, train_centralized,
)

# The partitioners import Hugging Face ``datasets`` and flwr-datasets (seconds): loaded on first use, so that the
# Flower ClientApp — a fresh process per message in a deployment — starts without them.
_PARTITION_NAMES = ("PARTITIONERS", "label_counts", "make_partitioner", "partition", "partition_rows",
                    "plot_label_distributions", "sentence_embeddings", "to_hf_dataset")


def __getattr__(name: str) -> object:
    if name in _PARTITION_NAMES:
        module = importlib.import_module("trustml.federated.partition")
        # Bind every name now; the function ``partition`` replaces the submodule the import just bound to it.
        values = {key: getattr(module, key) for key in _PARTITION_NAMES}
        globals().update(values)
        return values[name]
    raise AttributeError(f"module 'trustml.federated' has no attribute {name!r}")

__all__ = [
    "PARTITIONERS", "DeviceDP", "DeviceDPPlan", "FLResult", "FedAvgPlan", "FedOptPlan", "FederatedData", "FlatModel",
    "LocalTraining", "Plan", "Selection", "ServerAdam", "adam_server_step", "aggregation_weights", "continual_data",
    "dp_epsilon", "embedding_model", "label_counts", "local_update", "make_partitioner", "make_plan",
    "noised_clipped_mean", "partition", "partition_rows", "plot_label_distributions", "round_rng", "run_continual",
    "run_federated", "sample_devices", "selection_probabilities", "sentence_embeddings", "to_hf_dataset",
    "top_devices", "train_centralized", "unbiased_activity", "weighted_average"
]
