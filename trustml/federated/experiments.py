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
from trustml.federated.selection import Selection
from trustml.federated.simulate import (
    DeviceDP, FederatedData, LocalTraining, continual_data, dp_epsilon, embedding_model, run_continual,
    run_federated, train_centralized,
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


def alpha_sweep(task, *, alphas: Sequence[float], num_partitions: int, rounds: int, devices_per_round: int,
                seeds: Sequence[int], training: LocalTraining = LocalTraining(), eval_every: int = 5,
                mus: Sequence[float] = (0.0,), partition_seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """FedAvg (and FedProx for μ > 0) on FedNLP label-skew partitions ``Dir(α·p)`` for each α.

    Columns: alpha, mu, seed, round, accuracy, loss, samples.
    """
    frames = []
    for alpha in tqdm(alphas, desc="α", disable=not progress):
        _, rows = partition(task.train_frame, "label_skew", num_partitions=num_partitions, alpha=alpha,
                            seed=partition_seed)
        data = FederatedData.from_partitions(task.train, rows)
        for mu in mus:
            for seed in seeds:
                result = run_federated(new_model(task, seed), data, rounds=rounds, devices_per_round=devices_per_round,
                                       training=dataclasses.replace(training, mu=mu), test=task.test,
                                       eval_every=eval_every, seed=seed, progress=False)
                frames.append(result.history.assign(alpha=alpha, mu=mu, seed=seed))
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


__all__ = [
    "alpha_sweep", "centralized_accuracy", "continual_comparison", "device_data", "dp_sweep", "new_model",
    "period_tests", "seed_mean", "selection_curves",
]
