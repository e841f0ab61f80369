"""A fast in-process federated learning loop (no Ray, no messages) for notebooks and widgets.

One round (``run_rounds``), the same for every method:

1. the **plan** samples devices (``trustml.federated.plans``: a ``Selection`` — uniform, ∝ n^γ, top-m —
   or DP-FedAvg's Poisson sampling);
2. each sampled device k runs local SGD from the global weights ``w_t`` on its own data only (FedAvg;
   FedProx with ``LocalTraining(mu > 0)``: local loss + μ/2‖w − w_t‖²);
3. the plan aggregates: FedAvg's ``Σ_i a_i w^{(i)}``; DP-FedAvg's ``w_t + (Σ_k clip(Δ_k) + N(0, σ²C²)) / (qK)``
   (McMahan et al. 2018; clipping and noise scale as Flower's, checked in the tests; ε from Opacus' RDP
   accountant); FedOpt's server Adam step on ``w̄ − w_t`` (Reddi et al. 2021; as Flower's ``FedAdam``).

**Continual** FL (``run_continual``): time periods t = 1..T; in period t every device holds only the
data it produced in t (older data is deleted), training starts from the previous period's global
model, and each period gets the same number of rounds. ``keep_old_data=True`` is the "all data at
once" baseline where devices keep everything they have seen.

Why it is fast: the data are encoded once and grouped by device (a device's data is a slice of one
tensor); the model is a flat parameter vector, the embedding classifier's forward is one
``embedding_bag`` and two matrix products, and local SGD updates that vector in place. The Flower
ClientApp calls the same ``local_update``, so both paths train identically (the parity test).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trustml.federated.aggregation import clip_update
from trustml.federated.plans import DeviceDP, Plan, ServerAdam, make_plan
from trustml.federated.selection import Selection, round_rng
from trustml.models import EmbeddingClassifier, fit
from trustml.threads import limit_threads

# ------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class FederatedData:
    """Encoded training data grouped by device: device k owns rows ``offsets[k]:offsets[k+1]``.

    ``device_ids`` are the natural ids (e.g. the corpus' ``device_id``); the index k (0..K-1) is the
    partition id used for seeding and by Flower's ``partition-id``.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    offsets: np.ndarray
    device_ids: np.ndarray

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"inputs has {len(self.inputs)} rows, labels {len(self.labels)}")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.labels) or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must rise from 0 to the number of rows")
        if len(self.device_ids) != len(self.offsets) - 1:
            raise ValueError("device_ids must have one entry per device")

    @property
    def num_devices(self) -> int:
        return len(self.device_ids)

    @property
    def counts(self) -> np.ndarray:
        """Samples per device (the activity ``n_k``)."""
        return np.diff(self.offsets)

    def device(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return self.inputs[a:b], self.labels[a:b]

    def pooled(self) -> TensorDataset:
        """All devices' data in one dataset (centralized training)."""
        return TensorDataset(self.inputs, self.labels)

    @classmethod
    def from_partitions(cls, dataset: TensorDataset, rows: Sequence[np.ndarray],
                        device_ids: Sequence | np.ndarray | None = None) -> FederatedData:
        """One device per entry of ``rows`` (row indices into ``dataset``, e.g. from ``partition_rows``)."""
        rows = [np.asarray(r, dtype=np.int64) for r in rows]
        if not rows:
            raise ValueError("rows must hold at least one partition")
        order = torch.as_tensor(np.concatenate(rows) if sum(map(len, rows)) else np.zeros(0, dtype=np.int64))
        inputs, labels = dataset.tensors[0][order], dataset.tensors[1][order]
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        ids = np.arange(len(rows)) if device_ids is None else np.asarray(device_ids)
        return cls(inputs, labels, offsets, ids)

    @classmethod
    def by_column(cls, dataset: TensorDataset, frame: pd.DataFrame, *, column: str = "device_id",
                  ids: Sequence | None = None, keep: np.ndarray | None = None) -> FederatedData:
        """The natural partition: one device per value of ``frame[column]`` (rows aligned with ``dataset``).

        ``ids`` fixes the device list and order (devices without rows get n_k = 0); ``keep`` is an
        optional boolean row mask (e.g. one time period).
        """
        values = frame[column].to_numpy()
        device_ids = np.unique(values) if ids is None else np.asarray(ids)
        mask = np.ones(len(values), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
        position = pd.Index(device_ids).get_indexer(values)
        if np.any(position[mask] < 0):
            raise ValueError(f"frame[{column!r}] has values outside ids")
        selected = np.flatnonzero(mask)
        selected = selected[np.argsort(position[selected], kind="stable")]
        counts = np.bincount(position[selected], minlength=len(device_ids))
        rows = np.split(selected, np.cumsum(counts)[:-1])
        return cls.from_partitions(dataset, rows, device_ids=device_ids)


def continual_data(dataset: TensorDataset, frame: pd.DataFrame, *, period: str = "period", column: str = "device_id",
                   keep_old_data: bool = False) -> list[FederatedData]:
    """One ``FederatedData`` per period over the same device list: the new data of each period, or with
    ``keep_old_data=True`` everything up to it (the "all data" baseline)."""
    ids = np.unique(frame[column].to_numpy())
    periods = np.sort(frame[period].unique())
    values = frame[period].to_numpy()
    return [FederatedData.by_column(dataset, frame, column=column, ids=ids,
                                    keep=(values <= t) if keep_old_data else (values == t)) for t in periods]


# ------------------------------------------------------------------------------------------ model


class FlatModel:
    """A model as one flat float32 parameter vector plus a functional ``forward(params, inputs)``.

    ``EmbeddingClassifier`` (without dropout) gets a fused forward (``embedding_bag``: the masked mean of
    the token embeddings in one call); any other module goes through ``torch.func.functional_call``.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.names = [name for name, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.sizes = [p.numel() for _, p in module.named_parameters()]
        self._fused = isinstance(module, EmbeddingClassifier) and module.dropout.p == 0.0
        embedding = module.embedding if isinstance(module, EmbeddingClassifier) else None
        self._padding_idx: int | None = None if embedding is None else embedding.padding_idx

    @property
    def num_parameters(self) -> int:
        return sum(self.sizes)

    def flatten(self, module: nn.Module | None = None) -> torch.Tensor:
        module = self.module if module is None else module
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).to(torch.float32).clone()

    def unflatten(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: piece.view(shape) for name, piece, shape in
                zip(self.names, torch.split(params, self.sizes), self.shapes)}

    def load(self, params: torch.Tensor, module: nn.Module | None = None) -> nn.Module:
        """Copy ``params`` into ``module`` (default: the wrapped one) and return it."""
        module = self.module if module is None else module
        torch.nn.utils.vector_to_parameters(params.detach().clone(), module.parameters())
        return module

    def forward(self, params: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self._fused:
            embedding, w1, b1, w2, b2 = (p.view(s) for p, s in zip(torch.split(params, self.sizes), self.shapes))
            pooled = F.embedding_bag(inputs, embedding, mode="mean", padding_idx=self._padding_idx)
            return F.linear(torch.relu(F.linear(pooled, w1, b1)), w2, b2)
        return torch.func.functional_call(self.module, self.unflatten(params), (inputs,))

    @torch.no_grad()
    def evaluate(self, params: torch.Tensor, dataset: TensorDataset, *, batch_size: int = 8192) -> dict[str, float]:
        """Accuracy and mean cross-entropy of ``params`` on ``dataset``."""
        inputs, labels = dataset.tensors[0], dataset.tensors[1]
        correct, loss = 0.0, 0.0
        for a in range(0, len(labels), batch_size):
            logits = self.forward(params, inputs[a : a + batch_size])
            correct += (logits.argmax(-1) == labels[a : a + batch_size]).sum().item()
            loss += F.cross_entropy(logits, labels[a : a + batch_size], reduction="sum").item()
        n = max(1, len(labels))
        return {"accuracy": correct / n, "loss": loss / n}


def embedding_model(vocab_size: int, num_classes: int, *, seed: int = 0, **options) -> FlatModel:
    """The book's intent model (``EmbeddingClassifier``) with a seeded initialisation, as a ``FlatModel``."""
    torch.manual_seed(seed)
    return FlatModel(EmbeddingClassifier(vocab_size, num_classes, **options))


# ------------------------------------------------------------------------------- local training


@dataclasses.dataclass(frozen=True)
class LocalTraining:
    """Local SGD on a device: ``epochs`` passes in shuffled mini-batches of ``batch_size`` with step ``lr``;
    ``mu > 0`` adds FedProx' proximal term μ/2‖w − w_t‖² (μ = 0 is FedAvg)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.5
    mu: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.mu >= 0:
            raise ValueError(f"mu must be >= 0 (0 = FedAvg), got {self.mu}")


def device_seed(seed: int, server_round: int, device: int) -> np.random.SeedSequence:
    """The seed of device ``device``'s local training in ``server_round`` (shared with the Flower client)."""
    return np.random.SeedSequence([int(seed), 2, int(server_round), int(device)])


def local_update(model: FlatModel, params: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, *,
                 training: LocalTraining, seed: np.random.SeedSequence | int) -> tuple[torch.Tensor, float]:
    """Local SGD from ``params`` on one device's data; returns the new parameters and the mean training loss
    (cross-entropy, averaged over the local epochs)."""
    n = len(labels)
    if n == 0:
        raise ValueError("local_update: the device holds no data (n_k = 0); such devices must not be selected")
    rng = np.random.default_rng(seed)
    anchor = params.detach()
    w = params.detach().clone().requires_grad_(True)
    lr, mu, batch = training.lr, training.mu, training.batch_size

    def batches(epoch: int):
        order = torch.from_numpy(rng.permutation(n)) if n > batch else None
        for a in range(0, n, batch):
            yield order[a : a + batch] if order is not None else slice(None)

    def sgd_step(losses: torch.Tensor) -> None:  # plain SGD on the flat vector, with FedProx' proximal term
        loss = losses.mean()
        objective = loss + 0.5 * mu * (w - anchor).pow(2).sum() if mu else loss
        (gradient,) = torch.autograd.grad(objective, w)
        with torch.no_grad():
            w.sub_(gradient, alpha=lr)

    def loss(_, index) -> torch.Tensor:
        return F.cross_entropy(model.forward(w, inputs[index]), labels[index], reduction="none")

    history = fit(None, batches, loss=loss, update=sgd_step, epochs=training.epochs)
    return w.detach(), float(np.mean(history))


# ------------------------------------------------------------------------------------------ DP


def dp_epsilon(*, noise_multiplier: float, devices_per_round: int, num_devices: int, rounds: int,
               delta: float) -> float:
    """ε of DP-FedAvg after ``rounds`` rounds with Poisson device sampling, rate q = m/K (Opacus RDP accountant)."""
    from trustml.privacy.accounting import get_epsilon

    return get_epsilon(noise_multiplier=noise_multiplier, sample_rate=devices_per_round / num_devices,
                       steps=rounds, delta=delta, accountant="rdp")


def fixed_sample_epsilon(*, noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` rounds of DP-FedAvg that sample a **fixed number** m of devices (Flower's
    ``DifferentialPrivacyServerSideFixedClipping`` with equal weights 1/m and noise σC/m on the mean), counted
    without amplification by sampling: the device may be in every round.

    With a fixed-size sample, a device that leaves frees its slot for another device, so neighbouring
    federations differ by a *replacement*: the clipped sum moves by up to 2C (two updates of norm C pointing
    apart), and the noise σC is σ/2 times that sensitivity. Each round is then a Gaussian mechanism with noise
    multiplier σ/2, composed ``rounds`` times (Opacus' RDP accountant with sample rate 1: no amplification).
    Flower's own no-amplification accountant composes σ instead (add/remove with sensitivity C: a departed
    device's slot left empty), which is not what a fixed-size sample does.
    """
    from trustml.privacy.accounting import get_epsilon

    if isinstance(noise_multiplier, bool) or not math.isfinite(noise_multiplier) or not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier}")
    return get_epsilon(noise_multiplier=noise_multiplier / 2, sample_rate=1.0, steps=rounds, delta=delta,
                       accountant="rdp")


# ----------------------------------------------------------------------------------------- runs


@dataclasses.dataclass
class FLResult:
    """Final parameters, a per-evaluation history, and the devices selected in each round."""

    params: torch.Tensor
    history: pd.DataFrame
    selected: list[np.ndarray]
    weights: list[np.ndarray]

    @property
    def final_accuracy(self) -> float:
        return float(self.history["accuracy"].iloc[-1])


@dataclasses.dataclass
class Rounds:
    """What ``run_rounds`` returns: the final parameters, per-round devices and weights, and the plan's state
    (the server optimiser's moments) to continue from."""

    params: torch.Tensor
    selected: list[np.ndarray]
    weights: list[np.ndarray]
    state: Any = None


def run_rounds(model: FlatModel, data: FederatedData, params: torch.Tensor, *, rounds: int, devices_per_round: int,
               plan: Plan, training: LocalTraining, seed: int, first_round: int = 1, state: Any = None,
               test: TensorDataset | None = None, eval_every: int = 0,
               on_eval: Callable[[int, dict], None] | None = None, progress: bool | str = False,
               threads: int | None = 1) -> Rounds:
    """``rounds`` FL rounds of ``plan`` on ``data`` from ``params`` (and the plan's ``state``).

    Each round: the plan samples devices, each trains locally (``local_update``), the plan aggregates.
    ``threads``: torch intra-op threads during the loop (default 1: its tensors are tiny; ``trustml.threads``)."""
    counts = data.counts
    plan.check(counts, devices_per_round)
    selected_log, weight_log = [], []
    bar = tqdm(range(first_round, first_round + rounds), desc=progress if isinstance(progress, str) else "rounds",
               disable=not progress, leave=False)
    with limit_threads(threads):
        for server_round in bar:
            rng = round_rng(seed, server_round)
            devices, weights = plan.sample(counts, devices_per_round, rng)
            models = []
            for k in devices:
                x, y = data.device(int(k))
                if len(y) == 0:  # only DP's Poisson sampling draws such a device: it returns a zero update
                    models.append(params)
                    continue
                new, _ = local_update(model, params, x, y, training=training,
                                      seed=device_seed(seed, server_round, int(k)))
                models.append(new)
            params, state = plan.aggregate(params, models, weights, server_round=server_round,
                                           devices_per_round=devices_per_round, rng=rng, state=state)
            selected_log.append(np.asarray(devices))
            weight_log.append(np.asarray(weights))
            if test is not None and eval_every and (server_round - first_round + 1) % eval_every == 0 and on_eval:
                on_eval(server_round, model.evaluate(params, test))
    return Rounds(params, selected_log, weight_log, state)


def run_federated(model: FlatModel, data: FederatedData, *, rounds: int, devices_per_round: int,
                  selection: Selection = Selection("uniform"), training: LocalTraining = LocalTraining(),
                  test: TensorDataset | None = None, eval_every: int = 1, seed: int = 0,
                  params: torch.Tensor | None = None, dp: DeviceDP | None = None,
                  server_optimizer: ServerAdam | None = None, plan: Plan | None = None,
                  progress: bool = True) -> FLResult:
    """FedAvg/FedProx for ``rounds`` rounds with ``devices_per_round`` devices chosen by ``selection``.

    ``dp`` wraps it in DP-FedAvg, ``server_optimizer`` in FedOpt (``make_plan``); or pass a ``plan`` directly
    (then ``selection``, ``dp`` and ``server_optimizer`` must be left at their defaults).

    ``history`` has one row per evaluation (every ``eval_every`` rounds, and round 0): round, accuracy,
    loss and the cumulative number of local samples processed.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds}")
    plan = _resolve_plan(plan, selection, dp, server_optimizer)
    params = model.flatten() if params is None else params.detach().clone()
    rows = []
    if test is not None:
        rows.append({"round": 0, **model.evaluate(params, test)})
    done = run_rounds(model, data, params, rounds=rounds, devices_per_round=devices_per_round, plan=plan,
                      training=training, seed=seed, test=test, eval_every=eval_every,
                      on_eval=lambda r, metrics: rows.append({"round": r, **metrics}), progress=progress)
    history = pd.DataFrame(rows)
    if len(history):
        seen = np.cumsum([0] + [int(data.counts[s].sum()) for s in done.selected])
        history["samples"] = seen[history["round"].to_numpy()]
    return FLResult(done.params, history, done.selected, done.weights)


def _resolve_plan(plan: Plan | None, selection: Selection, dp: DeviceDP | None,
                  server_optimizer: ServerAdam | None) -> Plan:
    if plan is None:
        return make_plan(selection, dp=dp, server_optimizer=server_optimizer)
    if selection != Selection("uniform") or dp is not None or server_optimizer is not None:
        raise ValueError("pass either plan or selection/dp/server_optimizer, not both")
    return plan


def run_continual(model: FlatModel, periods: Sequence[FederatedData], *, rounds_per_period: int,
                  devices_per_round: int, selection: Selection = Selection("uniform"),
                  training: LocalTraining = LocalTraining(),
                  tests: Sequence[TensorDataset] | TensorDataset | None = None, seed: int = 0,
                  params: torch.Tensor | None = None, server_optimizer: ServerAdam | None = None,
                  plan: Plan | None = None, progress: bool = True) -> FLResult:
    """Continual FL: ``rounds_per_period`` rounds on each period's data in turn, each period starting from
    the previous global model. ``tests`` is one test set per period (or one for all); the history has one
    row per period (evaluated at its end)."""
    if not periods:
        raise ValueError("periods must not be empty")
    if not isinstance(rounds_per_period, int) or rounds_per_period < 1:
        raise ValueError(f"rounds_per_period must be an int >= 1, got {rounds_per_period}")
    if isinstance(tests, TensorDataset):
        tests = [tests] * len(periods)
    if tests is not None and len(tests) != len(periods):
        raise ValueError(f"tests has {len(tests)} entries, periods {len(periods)}")
    plan = _resolve_plan(plan, selection, None, server_optimizer)
    params = model.flatten() if params is None else params.detach().clone()
    rows, selected, weights, state = [], [], [], None
    for t, data in enumerate(tqdm(periods, desc="periods", disable=not progress, leave=False)):
        done = run_rounds(model, data, params, rounds=rounds_per_period, devices_per_round=devices_per_round,
                          plan=plan, training=training, seed=seed, first_round=1 + t * rounds_per_period,
                          state=state)  # the server (and its optimiser's moments) carries on across periods
        params, state = done.params, done.state
        selected += done.selected
        weights += done.weights
        if tests is not None:
            rows.append({"period": t, "round": (t + 1) * rounds_per_period, **model.evaluate(params, tests[t]),
                         "samples": int(sum(data.counts[x].sum() for x in done.selected))})
    return FLResult(params, pd.DataFrame(rows), selected, weights)


def train_centralized(model: FlatModel, dataset: TensorDataset, *, epochs: int,
                      training: LocalTraining = LocalTraining(), seed: int = 0,
                      params: torch.Tensor | None = None) -> torch.Tensor:
    """Plain SGD on pooled data with the same local optimiser (the centralized reference)."""
    params = model.flatten() if params is None else params
    step = dataclasses.replace(training, epochs=epochs, mu=0.0)
    params, _ = local_update(model, params, dataset.tensors[0], dataset.tensors[1], training=step,
                             seed=np.random.SeedSequence([seed, 3]))
    return params


__all__ = [
    "DeviceDP", "FLResult", "FederatedData", "FlatModel", "LocalTraining", "Rounds", "ServerAdam", "clip_update",
    "continual_data", "device_seed", "dp_epsilon", "embedding_model", "fixed_sample_epsilon", "local_update",
    "run_continual", "run_federated", "run_rounds", "train_centralized",
]
