"""``ActivityFedAvg``: Flower's FedAvg with trustml's device selection (Flower 1.41 Message API).

Flower's ``FedAvg.configure_train`` samples nodes uniformly (``random.sample``). This subclass
selects them with ``trustml.federated.selection`` — uniform, activity ∝ n^γ or top-m, with or without
replacement — using the same per-round random generator (``round_rng(seed, round)``) as the in-process
loop, so both pick the same devices. Activity is learned from the devices themselves: before the first
round the strategy sends every node a QUERY message and each ClientApp replies its ``partition-id`` and
``num-examples``; train replies then keep ``num-examples`` current.

Aggregation uses FedAvg's weighted average with ``weighted_by_key="aggregation-weight"``: the server
computes each selected device's weight (n-weighted, or the plain mean for the unbiased scheme), sends it
in the train config and the ClientApp echoes it in its reply. ``aggregate_train`` is Flower's own
(``FedAvg``'s, or ``FedAdam``'s for ``ActivityFedAdam``): the strategies only choose who trains.

``RequireReplies`` wraps any strategy (outermost, around Flower's DP wrapper too): it records per round which
devices were asked, which replied and which failed (an error reply or no reply), and fails the round with a
clear error when fewer than ``min_replies`` devices replied — instead of averaging over whoever answered
while reporting every selected device as trained.

Flower node ids are 64-bit unsigned integers: they stay Python ints here (never numpy arrays, whose
int64 would overflow and float64 would round them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, Strategy
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
            metrics = reply.content.metric_records["metrics"]
            self.devices[reply.metadata.src_node_id] = DeviceInfo(_int(metrics["partition-id"]),
                                                                  _int(metrics["num-examples"]))
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
    def choose(self, server_round: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """This round's devices: node ids (Python ints), aggregation weights, and how often each was drawn."""
        node_ids, counts, partition_ids = self.ordered_nodes()
        check_devices_per_round(self.devices_per_round, int(np.count_nonzero(counts)), replace=self.selection.replace)
        drawn = self.selection.select(counts, self.devices_per_round, round_rng(self.seed, server_round))
        chosen, weights = collapse(drawn, self.selection.weights(drawn, counts))
        _, draws = collapse(drawn, np.ones(len(drawn)))
        self.selected[server_round] = ([partition_ids[int(i)] for i in chosen], [float(w) for w in weights])
        log(INFO, "configure_train: devices %s (weights %s)", self.selected[server_round][0],
            [round(float(w), 3) for w in weights])
        return [node_ids[int(i)] for i in chosen], weights, draws

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        if not self.devices:
            self.learn_activity(grid)
        messages = []
        for node_id, weight, _ in zip(*self.choose(server_round)):
            node_config = ConfigRecord(dict(config))
            node_config.update({"server-round": server_round, "seed": self.seed, WEIGHT_KEY: float(weight)})
            messages.append(Message(RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config}),
                                    message_type=MessageType.TRAIN, dst_node_id=node_id))
        return messages

    def partition_of(self, node_id: int) -> int:
        """The partition id of a node that answered the activity query."""
        if node_id not in self.devices:
            raise KeyError(f"node {node_id} never answered the activity query")
        return self.devices[node_id].partition_id


class ActivityFedAdam(ActivityFedAvg, FedAdam):
    """FedOpt with Flower's ``FedAdam`` server optimiser and trustml's device selection.

    ``FedAdam`` options (``eta``, ``beta_1``, ``beta_2``, ``tau``) are keyword arguments; aggregation is
    ``FedAdam.aggregate_train`` unchanged (the in-process ``FedOptPlan`` computes the same step).
    """

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        # What FedOpt.configure_train records (the selection above replaces the rest of it).
        self.current_arrays = {k: array.numpy() for k, array in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"expected an integer in the reply, got {value!r}")
    return int(value)


@dataclasses.dataclass
class RoundReplies:
    """Who was asked to train in a round, who replied, and why the others failed (partition ids)."""

    asked: list[int]
    trained: list[int]
    failed: dict[int, str]


def short_reason(reason: object) -> str:
    """The last line of an error reply's reason (the exception message; the traceback stays in the logs)."""
    lines = [line.strip() for line in str(reason).splitlines() if line.strip().strip("'>")]
    return lines[-1].rstrip("'>")[-300:] if lines else "error reply without a reason"


class FewRepliesError(RuntimeError):
    """A round received fewer successful train replies than the run requires."""


class RequireReplies(Strategy):
    """Wrap ``strategy``: record each round's replies and fail a round with fewer than ``min_replies`` of them.

    ``partition_of(node_id)`` names devices in the records and errors (partition ids, not 64-bit node ids).
    """

    def __init__(self, strategy: Strategy, *, min_replies: int, partition_of=lambda node_id: node_id):
        if isinstance(min_replies, bool) or not isinstance(min_replies, int) or min_replies < 1:
            raise ValueError(f"min_replies must be an int >= 1, got {min_replies!r}")
        self.strategy = strategy
        self.min_replies = min_replies
        self.partition_of = partition_of
        self.rounds: dict[int, RoundReplies] = {}
        self._asked: dict[int, list[int]] = {}

    def summary(self) -> None:
        log(INFO, "\t├──> A round needs %d successful train replies", self.min_replies)
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._asked[server_round] = [m.metadata.dst_node_id for m in messages]
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        asked = self._asked.pop(server_round, [])
        failed: dict[int, str] = {}
        for reply in replies:
            if reply.has_error():
                failed[reply.metadata.src_node_id] = short_reason(reply.error.reason)
        answered = {reply.metadata.src_node_id for reply in replies}
        for node_id in asked:
            if node_id not in answered:
                failed[node_id] = "no reply within the timeout"
        trained = [n for n in asked if n not in failed]
        name = self.partition_of
        self.rounds[server_round] = RoundReplies([name(n) for n in asked], [name(n) for n in trained],
                                                 {name(n): reason for n, reason in failed.items()})
        for node_id, reason in failed.items():
            log(WARNING, "round %d: device %s failed to train: %s", server_round, name(node_id), reason)
        if len(trained) < self.min_replies:
            details = "; ".join(f"device {name(n)}: {r}" for n, r in failed.items())
            raise FewRepliesError(f"round {server_round}: {len(trained)} of {len(asked)} selected devices replied, "
                                  f"fewer than the {self.min_replies} required (min-replies); failures: {details}")
        # Flower's aggregation only sees the successful replies (its DP wrapper would skip the round otherwise).
        return self.strategy.aggregate_train(server_round, [r for r in replies if not r.has_error()])

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                           ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
