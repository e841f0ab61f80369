"""The federated chapters' experiments as functions: each returns a long-format table (one row per
point) ready for ``trustml.viz`` (static figure, slider twin, live explorer).

Every experiment repeats over ``seeds`` (model initialisation, device selection and local shuffling
change with the seed; the corpus does not) so that notebooks can assert on seed averages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trustml.federated.partition import partition
from trustml.federated.plans import FedAvgPlan, ServerAdam
from trustml.federated.selection import Selection
from trustml.federated.simulate import (
    DeviceDP, FederatedData, LocalTraining, continual_data, dp_epsilon, embedding_model, run_continual,
    run_federated, run_rounds, train_centralized,
)


def new_model(task, seed: int, **options):
    """The intent model for ``task`` (an ``IntentTask``), seeded."""
    return embedding_model(task.tokenizer.vocab_size, task.num_classes, seed=seed, **options)


def device_data(task) -> FederatedData:
    """The natural partition of ``task``'s training data: one client per corpus device."""
    return FederatedData.by_column(task.train, task.train_frame, column="device_id")


def period_tests(task, *, period: str = "period") -> list[TensorDataset]:
    """One test set per period t: the test rows of periods ≤ t (what the deployed model meets by then)."""
    values = task.test_frame[period].to_numpy()
    return [TensorDataset(*(t[torch.from_numpy(values <= p)] for t in task.test.tensors))
            for p in np.sort(np.unique(values))]


def seed_mean(table: pd.DataFrame, by: Sequence[str], value: str = "accuracy") -> pd.DataFrame:
    """Mean (and standard error) of ``value`` over seeds, per ``by`` group."""
    grouped = table.groupby(list(by))[value]
    out = grouped.mean().rename(value).to_frame()
    out[f"{value} s.e."] = grouped.std(ddof=1).fillna(0) / np.sqrt(grouped.count())
    return out.reset_index()


def centralized_accuracy(task, *, epochs: int, seeds: Sequence[int], training: LocalTraining = LocalTraining()
                         ) -> float:
    """Accuracy of the same model and optimiser trained on the pooled data (mean over seeds)."""
    accuracies = []
    for seed in seeds:
        model = new_model(task, seed)
        params = train_centralized(model, task.train, epochs=epochs, training=training, seed=seed)
        accuracies.append(model.evaluate(params, task.test)["accuracy"])
    return float(np.mean(accuracies))


def selection_curves(task, selections: Mapping[str, Selection], *, rounds: int, devices_per_round: int,
                     seeds: Sequence[int], training: LocalTraining = LocalTraining(), eval_every: int = 5,
                     data: FederatedData | None = None, progress: bool = True) -> pd.DataFrame:
    """Accuracy against rounds for each named selection rule (natural device partition by default).

    Columns: selection, seed, round, accuracy, loss, samples (local samples processed so far).
    """
    data = device_data(task) if data is None else data
    frames = []
    jobs = [(name, seed) for name in selections for seed in seeds]
    for name, seed in tqdm(jobs, desc="runs", disable=not progress):
        result = run_federated(new_model(task, seed), data, rounds=rounds, devices_per_round=devices_per_round,
                               selection=selections[name], training=training, test=task.test,
                               eval_every=eval_every, seed=seed, progress=False)
        frames.append(result.history.assign(selection=name, seed=seed))
    return pd.concat(frames, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class Method:
    """A federated optimisation method as FedNLP compares them: FedAvg (``mu = 0``, no server optimiser), FedProx
    (``mu > 0``: the local proximal term) and FedOpt (``server_optimizer``: FedAdam's server step)."""

    mu: float = 0.0
    server_optimizer: ServerAdam | None = None


FEDNLP_METHODS: dict[str, Method] = {
    "FedAvg": Method(),
    "FedProx μ = 0.1": Method(mu=0.1),
    "FedOpt (FedAdam)": Method(server_optimizer=ServerAdam()),  # Flower's FedAdam defaults: η = 0.1, τ = 1e-3
}


def alpha_sweep(task, *, alphas: Sequence[float], num_partitions: int, rounds: int, devices_per_round: int,
                seeds: Sequence[int], training: LocalTraining = LocalTraining(), eval_every: int = 5,
                methods: Mapping[str, Method] | None = None, partition_seed: int = 0,
                progress: bool = True) -> pd.DataFrame:
    """Each method (default: FedAvg only) on FedNLP label-skew partitions ``Dir(α·p)`` for each α.

    Columns: alpha, method, seed, round, accuracy, loss, samples.
    """
    methods = {"FedAvg": Method()} if methods is None else methods
    frames = []
    for alpha in tqdm(alphas, desc="α", disable=not progress):
        _, rows = partition(task.train_frame, "label_skew", num_partitions=num_partitions, alpha=alpha,
                            seed=partition_seed)
        data = FederatedData.from_partitions(task.train, rows)
        for name, method in methods.items():
            for seed in seeds:
                result = run_federated(new_model(task, seed), data, rounds=rounds, devices_per_round=devices_per_round,
                                       training=dataclasses.replace(training, mu=method.mu), test=task.test,
                                       server_optimizer=method.server_optimizer, eval_every=eval_every, seed=seed,
                                       progress=False)
                frames.append(result.history.assign(alpha=alpha, method=name, seed=seed))
    return pd.concat(frames, ignore_index=True)


def continual_comparison(task, selections: Mapping[str, Selection], *, rounds_per_period: int,
                         devices_per_round: int, seeds: Sequence[int], training: LocalTraining = LocalTraining(),
                         progress: bool = True) -> pd.DataFrame:
    """Each selection rule in three settings, at equal rounds and devices per round:

    - ``"continual, old data deleted"``: period by period, devices hold only the new period's data;
    - ``"continual, all data kept"``: period by period, devices keep everything seen so far;
    - ``"static"``: all data from the start, the same total number of rounds (evaluated at the end).

    Columns: selection, setting, seed, period, round, accuracy, samples. Period-t rows are evaluated on
    the test rows of periods ≤ t; the static row is the last period's.
    """
    deleted = continual_data(task.train, task.train_frame)
    kept = continual_data(task.train, task.train_frame, keep_old_data=True)
    tests = period_tests(task)
    periods = len(deleted)
    rows = []
    jobs = [(name, seed) for name in selections for seed in seeds]
    for name, seed in tqdm(jobs, desc="runs", disable=not progress):
        selection = selections[name]
        for setting, data in (("continual, old data deleted", deleted), ("continual, all data kept", kept)):
            result = run_continual(new_model(task, seed), data, rounds_per_period=rounds_per_period,
                                   devices_per_round=devices_per_round, selection=selection, training=training,
                                   tests=tests, seed=seed, progress=False)
            rows.append(result.history.assign(selection=name, setting=setting, seed=seed))
        static = run_federated(new_model(task, seed), kept[-1], rounds=periods * rounds_per_period,
                               devices_per_round=devices_per_round, selection=selection, training=training,
                               test=tests[-1], eval_every=periods * rounds_per_period, seed=seed, progress=False)
        last = static.history.iloc[[-1]].assign(selection=name, setting="static", seed=seed, period=periods - 1)
        rows.append(last)
    columns = ["selection", "setting", "seed", "period", "round", "accuracy", "samples"]
    return pd.concat(rows, ignore_index=True)[columns]


def dp_sweep(task, *, noise_multipliers: Sequence[float], devices_per_round: Sequence[int], rounds: int,
             max_grad_norm: float, delta: float, seeds: Sequence[int], training: LocalTraining = LocalTraining(),
             eval_every: int = 5, data: FederatedData | None = None, progress: bool = True) -> pd.DataFrame:
    """DP-FedAvg for each noise multiplier σ and expected devices per round m (σ = 0: clipping only).

    Columns: noise_multiplier, devices_per_round, epsilon (after ``rounds`` rounds, q = m/K; ∞ for σ = 0),
    seed, round, accuracy, loss.
    """
    data = device_data(task) if data is None else data
    uniform = Selection("uniform", aggregation="mean")
    frames = []
    jobs = [(sigma, m, seed) for m in devices_per_round for sigma in noise_multipliers for seed in seeds]
    for sigma, m, seed in tqdm(jobs, desc="runs", disable=not progress):
        dp = DeviceDP(noise_multiplier=sigma, max_grad_norm=max_grad_norm)
        result = run_federated(new_model(task, seed), data, rounds=rounds, devices_per_round=m, selection=uniform,
                               training=training, test=task.test, eval_every=eval_every, seed=seed, dp=dp,
                               progress=False)
        epsilon = (dp_epsilon(noise_multiplier=sigma, devices_per_round=m, num_devices=data.num_devices,
                              rounds=rounds, delta=delta) if sigma > 0 else float("inf"))
        frames.append(result.history.assign(noise_multiplier=sigma, devices_per_round=m, epsilon=epsilon, seed=seed))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- who benefits (per device)


def intent_mix(task) -> pd.DataFrame:
    """Each device's intent distribution (devices × classes, rows sum to 1) over all its utterances, train and test.

    Light devices have one or two test utterances, too few to measure their accuracy directly; their intent mix is
    what they ask for, and ``device_accuracy`` weighs the model's per-intent accuracy by it.
    """
    frames = [task.train_frame[["device_id", "label"]], task.test_frame[["device_id", "label"]]]
    both = pd.concat(frames, ignore_index=True)
    counts = pd.crosstab(both["device_id"], both["label"]).reindex(columns=range(task.num_classes), fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)


def per_class_accuracy(model, params: torch.Tensor, test: TensorDataset, num_classes: int) -> np.ndarray:
    """Accuracy on the test utterances of each class (NaN for a class without test utterances)."""
    with torch.no_grad():
        predicted = model.forward(params, test.tensors[0]).argmax(-1).numpy()
    labels = test.tensors[1].numpy()
    correct = np.bincount(labels, weights=(predicted == labels).astype(float), minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def device_accuracy(mix: pd.DataFrame, class_accuracy: np.ndarray) -> pd.Series:
    """a_k = Σ_c π_k(c) · acc(c): the expected accuracy on an utterance drawn from device k's intent mix π_k.

    Classes without test utterances (acc NaN) are left out and each device's remaining mix renormalised; a device
    whose every intent lacks test utterances gets NaN.
    """
    class_accuracy = np.asarray(class_accuracy, dtype=np.float64)
    if class_accuracy.shape != (mix.shape[1],):
        raise ValueError(f"class_accuracy must hold one value per class of mix ({mix.shape[1]}), "
                         f"got shape {class_accuracy.shape}")
    if np.any(np.isinf(class_accuracy)) or np.any((class_accuracy < 0) | (class_accuracy > 1)):
        raise ValueError("class_accuracy must be in [0, 1] (NaN for a class without test utterances)")
    mix_values = mix.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(mix_values)) or np.any(mix_values < 0):
        raise ValueError("mix must hold finite, non-negative intent shares")
    defined = ~np.isnan(class_accuracy)
    weights = mix_values[:, defined]
    mass = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(mass > 0, weights @ class_accuracy[defined] / np.where(mass > 0, mass, 1), np.nan)
    return pd.Series(values, index=mix.index, name="accuracy")


def _devices_accuracy(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"accuracy must be a non-empty 1-D sequence (one value per device), got shape {a.shape}")
    if np.any(np.isnan(a)) or np.any((a < 0) | (a > 1)):
        raise ValueError("accuracy must hold values in [0, 1] without NaN (drop devices without an accuracy first)")
    return a


def worst_decile_accuracy(accuracy, *, fraction: float = 0.1) -> float:
    """Mean accuracy of the worst ``fraction`` of devices (at least one): the tail a fair federation should lift
    (q-FFL's "worst 10 %" accuracy, Li et al., ICLR 2020, "Fair Resource Allocation in Federated Learning")."""
    a = np.sort(_devices_accuracy(accuracy))
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return float(a[: max(1, int(np.floor(fraction * len(a))))].mean())


def accuracy_variance(accuracy) -> float:
    """Var_k(a_k), the variance of accuracy across devices: q-FFL's uniformity measure (lower is fairer)."""
    return float(np.var(_devices_accuracy(accuracy)))


def low_activity_accuracy(accuracy, activity, *, quantile: float = 0.25) -> float:
    """Mean accuracy of the devices whose activity n_k is at or below its ``quantile`` (the light users)."""
    a = _devices_accuracy(accuracy)
    n = np.asarray(activity, dtype=np.float64)
    if n.shape != a.shape:
        raise ValueError(f"activity has shape {n.shape}, accuracy {a.shape}: one activity per device")
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError("activity must hold finite, non-negative counts n_k")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    return float(a[n <= np.quantile(n, quantile)].mean())


def device_outcomes(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by`` (e.g. selection, seed): mean accuracy over devices (each device counts once), the
    worst-decile accuracy, the variance across devices and the light devices' (lowest activity quartile) accuracy.
    Devices without an accuracy (NaN: none of their intents has test utterances) are left out; a group with none
    left is an error, not a missing row."""
    missing = [c for c in ["accuracy", "activity", *by] if c not in table.columns]
    if missing:
        raise ValueError(f"table has no column(s) {missing}")
    empty = table.groupby(list(by))["accuracy"].count()
    if (empty == 0).any():
        raise ValueError(f"no device has an accuracy in group(s) {list(empty[empty == 0].index)}")
    rows = []
    for key, group in table.dropna(subset=["accuracy"]).groupby(list(by)):
        a, n = group["accuracy"].to_numpy(), group["activity"].to_numpy()
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "mean accuracy": float(a.mean()), "worst-decile accuracy": worst_decile_accuracy(a),
                     "variance": accuracy_variance(a), "light devices' accuracy": low_activity_accuracy(a, n)})
    return pd.DataFrame(rows)


def who_benefits(task, selections: Mapping[str, Selection], *, rounds: int | Sequence[int], devices_per_round: int,
                 seeds: Sequence[int], training: LocalTraining = LocalTraining(), continual: bool = False,
                 progress: bool = True) -> pd.DataFrame:
    """Per-device accuracy after training with each selection rule (``device_accuracy``).

    ``continual=False``: ``rounds`` rounds on all data — or, for a list of rounds, one run read off after each
    (the later rounds continue the same run); ``continual=True``: ``rounds`` (one number) spread over the periods
    with old data deleted (``run_continual``). Columns: selection, seed, rounds, device_id, activity (n_k,
    training utterances), accuracy.
    """
    checkpoints = sorted({int(r) for r in ([rounds] if isinstance(rounds, (int, np.integer)) else rounds)})
    if not checkpoints or checkpoints[0] < 1 or (continual and len(checkpoints) > 1):
        raise ValueError(f"rounds must be an int >= 1 (or, static only, a list of them), got {rounds!r}")
    mix = intent_mix(task)
    data = device_data(task)
    activity = pd.Series(data.counts, index=data.device_ids)
    periods = continual_data(task.train, task.train_frame) if continual else None
    frames = []
    jobs = [(name, seed) for name in selections for seed in seeds]
    for name, seed in tqdm(jobs, desc="runs", disable=not progress):
        model = new_model(task, seed)
        reached: list[tuple[int, torch.Tensor]] = []
        if periods is None:
            params, done = model.flatten(), 0
            plan = FedAvgPlan(selections[name])
            for checkpoint in checkpoints:
                params = run_rounds(model, data, params, rounds=checkpoint - done, devices_per_round=devices_per_round,
                                    plan=plan, training=training, seed=seed, first_round=done + 1).params
                done = checkpoint
                reached.append((checkpoint, params))
        else:
            per_period = max(1, checkpoints[0] // len(periods))
            reached.append((checkpoints[0], run_continual(
                model, periods, rounds_per_period=per_period, devices_per_round=devices_per_round,
                selection=selections[name], training=training, seed=seed, progress=False).params))
        for checkpoint, params in reached:
            accuracy = device_accuracy(mix, per_class_accuracy(model, params, task.test, task.num_classes))
            frames.append(pd.DataFrame({"selection": name, "seed": seed, "rounds": checkpoint,
                                        "device_id": accuracy.index,
                                        "activity": activity.reindex(accuracy.index, fill_value=0).to_numpy(),
                                        "accuracy": accuracy.to_numpy()}))
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "FEDNLP_METHODS", "Method", "accuracy_variance", "alpha_sweep", "centralized_accuracy", "continual_comparison",
    "device_accuracy", "device_data", "device_outcomes", "dp_sweep", "intent_mix", "low_activity_accuracy", "new_model",
    "per_class_accuracy", "period_tests", "seed_mean", "selection_curves", "who_benefits", "worst_decile_accuracy",
]
