"""Federated learning: FedNLP partitions, device selection, a fast in-process loop, and a Flower app.

- ``partition``: IID, label/quantity/feature skew (FedNLP), natural, heavy-tailed — flwr-datasets
  partitioners (``num_partitions``, ``load_partition(i)``);
- ``selection``: uniform, activity ∝ n^γ, top-m; aggregation weights;
- ``simulate``: FedAvg/FedProx (static and continual, optionally DP) in one process, for notebooks;
- ``flower``: the same method as a Flower 1.41 app (ServerApp, ClientApp, ``ActivityFedAvg``) —
  import ``trustml.federated.flower`` explicitly (it loads Flower).
"""

from trustml.federated.partition import (
    PARTITIONERS, label_counts, make_partitioner, partition, partition_rows, plot_label_distributions,
    sentence_embeddings, to_hf_dataset,
)
from trustml.federated.selection import (
    Selection, aggregation_weights, round_rng, sample_devices, selection_probabilities, top_devices,
    unbiased_activity,
)
from trustml.federated.simulate import (
    DeviceDP, FederatedData, FLResult, FlatModel, LocalTraining, continual_data, dp_epsilon, embedding_model,
    local_update, run_continual, run_federated, train_centralized,
)

__all__ = [
    "PARTITIONERS", "DeviceDP", "FLResult", "FederatedData", "FlatModel", "LocalTraining", "Selection",
    "aggregation_weights", "continual_data", "dp_epsilon", "embedding_model", "label_counts", "local_update",
    "make_partitioner", "partition", "partition_rows", "plot_label_distributions", "round_rng", "run_continual",
    "run_federated", "sample_devices", "selection_probabilities", "sentence_embeddings", "to_hf_dataset",
    "top_devices", "train_centralized", "unbiased_activity",
]
