"""``ActivityFedAvg``: Flower's FedAvg with trustml's device selection (Flower 1.41 Message API).

Flower's ``FedAvg.configure_train`` samples nodes uniformly (``random.sample``). This subclass
selects them with ``trustml.federated.selection`` — uniform, activity ∝ n^γ or top-m, with or without
replacement — using the same per-round random generator (``round_rng(seed, round)``) as the in-process
loop, so both pick the same devices. Activity is learned from the devices themselves: before the first
round the strategy sends every node a QUERY message and each ClientApp replies its ``partition-id`` and
``num-examples``; train replies then keep ``num-examples`` current.

Aggregation uses FedAvg's weighted average with ``weighted_by_key="aggregation-weight"``: the server
computes each selected device's weight (n-weighted, or the plain mean for the unbiased scheme), sends it
in the train config and the ClientApp echoes it in its reply.

Flower node ids are 64-bit unsigned integers: they stay Python ints here (never numpy arrays, whose
int64 would overflow and float64 would round them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from trustml.federated.selection import Selection, check_devices_per_round, collapse, round_rng

WEIGHT_KEY = "aggregation-weight"


@dataclasses.dataclass
class DeviceInfo:
    partition_id: int
    num_examples: int


class ActivityFedAvg(FedAvg):
    """FedAvg whose ``configure_train`` selects ``devices_per_round`` devices with a trustml ``Selection``.

    ``expected_nodes`` is how many nodes to wait for before querying their activity (default:
    ``devices_per_round``). ``selected`` records, per round, the partition ids trained and their weights.
    """

    def __init__(self, *, devices_per_round: int, selection: Selection = Selection("activity"), seed: int = 0,
                 expected_nodes: int | None = None, query_timeout: float = 120.0, **fedavg_options):
        fedavg_options.setdefault("fraction_evaluate", 0.0)  # centralized evaluation (evaluate_fn) by default
        super().__init__(weighted_by_key=WEIGHT_KEY, min_train_nodes=devices_per_round,
                         min_available_nodes=expected_nodes or devices_per_round, **fedavg_options)
        if isinstance(devices_per_round, bool) or not isinstance(devices_per_round, int) or devices_per_round < 1:
            raise ValueError(f"devices_per_round must be an int >= 1, got {devices_per_round}")
        self.devices_per_round = devices_per_round
        self.selection = selection
        self.seed = seed
        self.query_timeout = query_timeout
        self.devices: dict[int, DeviceInfo] = {}  # node id -> device
        self.selected: dict[int, tuple[list[int], list[float]]] = {}

    def summary(self) -> None:
        log(INFO, "\t├──> Device selection: %s, %d devices per round", self.selection.label, self.devices_per_round)
        super().summary()

    # ---------------------------------------------------------------------------------- activity
    def learn_activity(self, grid: Grid) -> dict[int, DeviceInfo]:
        """QUERY every connected node for its ``partition-id`` and ``num-examples``."""
        deadline = time.monotonic() + self.query_timeout
        while len(node_ids := list(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(node_ids)} of {self.min_available_nodes} nodes connected "
                                   f"within query_timeout={self.query_timeout} s")
            log(INFO, "Waiting for nodes: %d of %d connected", len(node_ids), self.min_available_nodes)
            time.sleep(1)
        queries = [Message(RecordDict({"config": ConfigRecord({"ask": "activity"})}), message_type=MessageType.QUERY,
                           dst_node_id=node_id) for node_id in node_ids]
        for reply in grid.send_and_receive(queries, timeout=self.query_timeout):
            if reply.has_error():
                log(INFO, "QUERY to node %d failed: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            metrics = reply.content["metrics"]
            self.devices[reply.metadata.src_node_id] = DeviceInfo(int(metrics["partition-id"]),
                                                                  int(metrics["num-examples"]))
        if not self.devices:
            raise RuntimeError("no node answered the activity QUERY")
        log(INFO, "Activity of %d devices learned (total %d examples)", len(self.devices),
            sum(d.num_examples for d in self.devices.values()))
        return self.devices

    def ordered_nodes(self) -> tuple[list[int], np.ndarray, list[int]]:
        """Node ids (Python ints) sorted by partition id, their activity, and the partition ids."""
        node_ids = sorted(self.devices, key=lambda n: self.devices[n].partition_id)
        counts = np.array([self.devices[n].num_examples for n in node_ids], dtype=np.int64)
        return node_ids, counts, [self.devices[n].partition_id for n in node_ids]

    # ------------------------------------------------------------------------------------ rounds
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        if not self.devices:
            self.learn_activity(grid)
        node_ids, counts, partition_ids = self.ordered_nodes()
        check_devices_per_round(self.devices_per_round, int(np.count_nonzero(counts)), replace=self.selection.replace)
        drawn = self.selection.select(counts, self.devices_per_round, round_rng(self.seed, server_round))
        chosen, weights = collapse(drawn, self.selection.weights(drawn, counts))
        self.selected[server_round] = ([partition_ids[int(i)] for i in chosen], [float(w) for w in weights])
        log(INFO, "configure_train: devices %s (weights %s)", self.selected[server_round][0],
            [round(float(w), 3) for w in weights])
        messages = []
        for index, weight in zip(chosen, weights):
            node_config = ConfigRecord(dict(config))
            node_config.update({"server-round": server_round, "seed": self.seed, WEIGHT_KEY: float(weight)})
            messages.append(Message(RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config}),
                                    message_type=MessageType.TRAIN, dst_node_id=node_ids[int(index)]))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:  # activity from train replies stays current
            node_id = reply.metadata.src_node_id
            if not reply.has_error() and node_id in self.devices:
                metrics = next(iter(reply.content.metric_records.values()))
                self.devices[node_id].num_examples = int(metrics["num-examples"])
        return super().aggregate_train(server_round, replies)
