"""A fast in-process federated learning loop (no Ray, no messages) for notebooks and widgets.

One round of FedAvg (McMahan et al. 2017) — or FedProx (Li et al. 2020, local loss + μ/2‖w − w_t‖²):

1. select ``m`` devices with a ``Selection`` (uniform, activity ∝ n^γ, top-m; see ``selection``);
2. each selected device k runs local SGD from the global weights ``w_t`` on its own data only;
3. the server averages: ``w_{t+1} = Σ_i a_i w^{(i)}`` with the selection's aggregation weights.

Optionally with device-level differential privacy (DP-FedAvg, McMahan et al. 2018): devices are
Poisson-sampled with rate q, each update ``Δ_k = w^{(k)} − w_t`` is clipped to norm C, and
``w_{t+1} = w_t + (Σ_k clip(Δ_k) + N(0, σ²C²)) / (qK)`` — the clipping and the noise scale are
Flower's (``flwr.supercore.differential_privacy``, checked in the tests); ε comes from Opacus' RDP
accountant through ``trustml.privacy.accounting``.

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
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trustml.federated.selection import Selection, check_devices_per_round, collapse, round_rng
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
                        device_ids: Sequence | None = None) -> FederatedData:
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
        ids = np.unique(values) if ids is None else np.asarray(ids)
        mask = np.ones(len(values), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
        position = pd.Index(ids).get_indexer(values)
        if np.any(position[mask] < 0):
            raise ValueError(f"frame[{column!r}] has values outside ids")
        selected = np.flatnonzero(mask)
        selected = selected[np.argsort(position[selected], kind="stable")]
        counts = np.bincount(position[selected], minlength=len(ids))
        rows = np.split(selected, np.cumsum(counts)[:-1])
        return cls.from_partitions(dataset, rows, device_ids=ids)


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
        self._padding_idx = module.embedding.padding_idx if self._fused else None

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
        correct, loss = 0, 0.0
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


@dataclasses.dataclass(frozen=True)
class DeviceDP:
    """Device-level DP for FedAvg: clip each update to ``max_grad_norm`` (C) and add N(0, σ²C²) to the sum."""

    noise_multiplier: float
    max_grad_norm: float

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")


def clip_update(update: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Δ · min(1, C/‖Δ‖₂) — as Flower's ``compute_clip_model_update``."""
    norm = torch.linalg.vector_norm(update).item()
    return update * min(1.0, max_grad_norm / norm) if norm > 0 else update


def dp_epsilon(*, noise_multiplier: float, devices_per_round: int, num_devices: int, rounds: int,
               delta: float) -> float:
    """ε of DP-FedAvg after ``rounds`` rounds with device sampling rate q = m/K (Opacus RDP accountant)."""
    from trustml.privacy.accounting import get_epsilon

    return get_epsilon(noise_multiplier=noise_multiplier, sample_rate=devices_per_round / num_devices,
                       steps=rounds, delta=delta, accountant="rdp")


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


def _aggregate(global_params: torch.Tensor, updates: list[torch.Tensor], weights: np.ndarray) -> torch.Tensor:
    aggregated = torch.zeros_like(global_params)
    for params, weight in zip(updates, weights):
        aggregated += params * float(weight)
    return aggregated


def run_rounds(model: FlatModel, data: FederatedData, params: torch.Tensor, *, rounds: int, devices_per_round: int,
               selection: Selection, training: LocalTraining, seed: int, first_round: int = 1,
               dp: DeviceDP | None = None, test: TensorDataset | None = None, eval_every: int = 0,
               on_eval: Callable[[int, dict], None] | None = None, progress: bool | str = False,
               threads: int | None = 1) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    """``rounds`` FL rounds on ``data`` from ``params``; returns the final params, selections and weights.

    ``threads``: torch intra-op threads during the loop (default 1: its tensors are tiny; ``trustml.threads``)."""
    with limit_threads(threads):
        return _run_rounds(model, data, params, rounds=rounds, devices_per_round=devices_per_round,
                           selection=selection, training=training, seed=seed, first_round=first_round, dp=dp,
                           test=test, eval_every=eval_every, on_eval=on_eval, progress=progress)


def _run_rounds(model, data, params, *, rounds, devices_per_round, selection, training, seed, first_round, dp, test,
                eval_every, on_eval, progress):
    counts = data.counts
    if dp is None:
        check_devices_per_round(devices_per_round, int(np.count_nonzero(counts)), replace=selection.replace)
    else:
        if selection.scheme != "uniform":
            raise ValueError("dp: device-level DP accounting needs uniform (Poisson) device sampling; "
                             f"got selection scheme {selection.scheme!r}")
        check_devices_per_round(devices_per_round, data.num_devices, replace=False)
    selected_log, weight_log = [], []
    bar = tqdm(range(first_round, first_round + rounds), desc=progress if isinstance(progress, str) else "rounds",
               disable=not progress, leave=False)
    for server_round in bar:
        rng = round_rng(seed, server_round)
        if dp is None:
            selected = selection.select(counts, devices_per_round, rng)
            devices, weights = collapse(selected, selection.weights(selected, counts))
        else:  # Poisson sampling with rate q = m/K; devices without data contribute a zero update
            q = devices_per_round / data.num_devices
            devices = np.flatnonzero(rng.random(data.num_devices) < q)
            weights = np.full(len(devices), 1.0 / (q * data.num_devices))
        updates = []
        for k in devices:
            x, y = data.device(int(k))
            if dp is not None and len(y) == 0:
                updates.append(params)
                continue
            new, _ = local_update(model, params, x, y, training=training, seed=device_seed(seed, server_round, k))
            updates.append(new)
        if dp is None:
            params = _aggregate(params, updates, weights)
        else:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            total = torch.zeros_like(params)
            for new in updates:
                total += clip_update(new - params, dp.max_grad_norm)
            noise = torch.normal(0.0, dp.noise_multiplier * dp.max_grad_norm, params.shape, generator=generator)
            params = params + (total + noise) / (q * data.num_devices)
        selected_log.append(np.asarray(devices))
        weight_log.append(np.asarray(weights))
        if test is not None and eval_every and (server_round - first_round + 1) % eval_every == 0 and on_eval:
            on_eval(server_round, model.evaluate(params, test))
    return params, selected_log, weight_log


def run_federated(model: FlatModel, data: FederatedData, *, rounds: int, devices_per_round: int,
                  selection: Selection = Selection("uniform"), training: LocalTraining = LocalTraining(),
                  test: TensorDataset | None = None, eval_every: int = 1, seed: int = 0,
                  params: torch.Tensor | None = None, dp: DeviceDP | None = None, progress: bool = True) -> FLResult:
    """FedAvg/FedProx for ``rounds`` rounds with ``devices_per_round`` devices chosen by ``selection``.

    ``history`` has one row per evaluation (every ``eval_every`` rounds, and round 0): round, accuracy,
    loss and the cumulative number of local samples processed.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds}")
    params = model.flatten() if params is None else params.detach().clone()
    rows = []
    if test is not None:
        rows.append({"round": 0, **model.evaluate(params, test)})
    params, selected, weights = run_rounds(
        model, data, params, rounds=rounds, devices_per_round=devices_per_round, selection=selection,
        training=training, seed=seed, dp=dp, test=test, eval_every=eval_every,
        on_eval=lambda r, metrics: rows.append({"round": r, **metrics}), progress=progress)
    history = pd.DataFrame(rows)
    if len(history):
        seen = np.cumsum([0] + [int(data.counts[s].sum()) for s in selected])
        history["samples"] = seen[history["round"].to_numpy()]
    return FLResult(params, history, selected, weights)


def run_continual(model: FlatModel, periods: Sequence[FederatedData], *, rounds_per_period: int,
                  devices_per_round: int, selection: Selection = Selection("uniform"),
                  training: LocalTraining = LocalTraining(),
                  tests: Sequence[TensorDataset] | TensorDataset | None = None, seed: int = 0,
                  params: torch.Tensor | None = None, progress: bool = True) -> FLResult:
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
    params = model.flatten() if params is None else params.detach().clone()
    rows, selected, weights = [], [], []
    for t, data in enumerate(tqdm(periods, desc="periods", disable=not progress, leave=False)):
        params, s, w = run_rounds(model, data, params, rounds=rounds_per_period, devices_per_round=devices_per_round,
                                  selection=selection, training=training, seed=seed,
                                  first_round=1 + t * rounds_per_period)
        selected += s
        weights += w
        if tests is not None:
            rows.append({"period": t, "round": (t + 1) * rounds_per_period, **model.evaluate(params, tests[t]),
                         "samples": int(sum(data.counts[x].sum() for x in s))})
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
    "DeviceDP", "FLResult", "FederatedData", "FlatModel", "LocalTraining", "clip_update", "continual_data",
    "device_seed", "dp_epsilon", "embedding_model", "local_update", "run_continual", "run_federated",
    "run_rounds", "train_centralized",
]
