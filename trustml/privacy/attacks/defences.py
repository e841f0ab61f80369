"""Canary extraction under defences: train the NLU model one way, then measure exposure and ModIvA.

A *setting* says how the intent model is trained: plain, with dropout, with early stopping, with DP-SGD
at a budget ε (``trustml.privacy.train_private``), or a combination. Every setting sees the same
corpus with the same canaries, so the rows of ``canary_experiment`` compare defences on equal terms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from trustml.data import Canary, IntentTask, subset
from trustml.models import accuracy
from trustml.privacy.attacks.canary import canary_probe, exposure
from trustml.privacy.attacks.modiva import InversionResult, modiva
from trustml.models import build_model
from trustml.privacy.attacks.targets import train_with_early_stopping
from trustml.threads import limit_threads


@dataclasses.dataclass(frozen=True)
class Setting:
    """How the attacked model is trained: ε (inf = no DP), dropout rate, early stopping on/off."""

    epsilon: float = math.inf
    dropout: float = 0.0
    early_stopping: bool = False

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (inf for no DP), got {self.epsilon}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.early_stopping and not math.isinf(self.epsilon):
            raise ValueError("early stopping looks at validation loss many times; combine it with DP only with an "
                             "accountant for that (not provided): use epsilon=inf")

    @property
    def label(self) -> str:
        parts = [f"DP ε={self.epsilon:g}"] if not math.isinf(self.epsilon) else []
        parts += [f"dropout {self.dropout:g}"] if self.dropout else []
        parts += ["early stopping"] if self.early_stopping else []
        return " + ".join(parts) or "no defence"


DEFENCES = {  # the book's named defences; DP-SGD appears once per ε in the chapters
    "no defence": Setting(),
    "dropout": Setting(dropout=0.5),
    "early stopping": Setting(early_stopping=True),
    "DP-SGD": Setting(epsilon=2.0),
}


def validation_split(task: IntentTask, *, fraction: float = 0.1, seed: int = 0):
    """(train, validation) TensorDatasets: ``fraction`` of the ordinary training rows are held out for
    early stopping; canaries always stay in training (the defence must not simply drop them)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    is_canary = task.train_frame["is_canary"].to_numpy(dtype=bool)
    rng = np.random.default_rng(seed)
    ordinary = rng.permutation(np.flatnonzero(~is_canary))
    held_out = np.zeros(len(is_canary), dtype=bool)
    held_out[ordinary[: max(1, int(round(fraction * len(ordinary))))]] = True
    return subset(task.train, np.flatnonzero(~held_out)), subset(task.train, np.flatnonzero(held_out))


def train_nlu_model(task: IntentTask, setting: Setting = Setting(), *, epochs: int = 20, batch_size: int = 128,
                    lr: float = 1e-2, max_grad_norm: float = 1.0, delta: float = 1e-5, seed: int = 0,
                    model_options: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """Train the intent Transformer on ``task.train`` under ``setting``; returns (model, facts) where
    facts hold the accountant's ε, the epochs actually run and the test accuracy."""
    from trustml.privacy import train_private

    options = {"max_length": task.tokenizer.max_length, **(model_options or {}), "dropout": setting.dropout}
    model = build_model("transformer", vocab_size=task.tokenizer.vocab_size, num_classes=task.num_classes,
                        seed=seed, **options)
    with limit_threads(1):
        if setting.early_stopping:
            train_set, validation = validation_split(task, seed=seed)
            history = train_with_early_stopping(model, train_set, validation, max_epochs=epochs,
                                                batch_size=batch_size, lr=lr, seed=seed)
            epsilon, epochs_run = math.inf, int(np.argmin(history)) + 1
        else:
            record = train_private(model, task.train, epsilon=setting.epsilon, delta=delta, epochs=epochs,
                                   batch_size=batch_size, lr=lr, max_grad_norm=max_grad_norm, seed=seed)
            model, epsilon, epochs_run = record.model, record.epsilon, epochs
        test_accuracy = accuracy(model, task.test)
    return model, {"accountant ε": epsilon, "epochs run": epochs_run, "test accuracy": test_accuracy}


def attack_canaries(model: torch.nn.Module, task: IntentTask, canaries: Sequence[Canary], *, restarts: int = 16,
                    steps: int = 150, seed: int = 0) -> tuple[pd.DataFrame, InversionResult]:
    """Exposure (exact over all candidates) and ModIvA inversion of every canary: a frame with one row per
    canary, and the ``InversionResult`` (whose soft tokens can be plotted)."""
    probes = [canary_probe(c, task.tokenizer, task.label_names) for c in canaries]
    exposures = [exposure(model, probe) for probe in probes]
    inversion = modiva(model, probes, restarts=restarts, steps=steps, seed=seed)
    frame = pd.DataFrame({
        "secret": [c.secret for c in canaries], "repetitions": [c.repetitions for c in canaries],
        "intent": [c.intent for c in canaries], "rank": [e.rank for e in exposures],
        "exposure": [e.exposure for e in exposures],
        "max exposure": [float(np.log2(e.space)) for e in exposures],
    })
    return pd.concat([frame, inversion.to_frame()], axis=1), inversion


def run_setting(task: IntentTask, canaries: Sequence[Canary], setting: Setting = Setting(), *, restarts: int = 16,
                steps: int = 150, **training) -> tuple[torch.nn.Module, pd.DataFrame, InversionResult]:
    """Train one model under ``setting`` and attack every canary. Returns the model, a frame with one row
    per canary (the setting's columns — defence, ε, dropout, early stopping —, its test accuracy, the
    exposure and ModIvA results) and the ``InversionResult``."""
    model, facts = train_nlu_model(task, setting, **training)
    frame, inversion = attack_canaries(model, task, canaries, restarts=restarts, steps=steps,
                                       seed=training.get("seed", 0))
    frame = pd.concat([pd.DataFrame({"defence": setting.label, "ε": setting.epsilon, "dropout": setting.dropout,
                                     "early stopping": setting.early_stopping}, index=frame.index), frame], axis=1)
    for name, value in facts.items():
        frame[name] = value
    return model, frame, inversion


def canary_experiment(task: IntentTask, canaries: Sequence[Canary], settings: Sequence[Setting], *,
                      progress: bool = True, **options) -> pd.DataFrame:
    """``run_setting`` for each setting (same corpus, same canaries); the rows of all settings stacked."""
    if not settings:
        raise ValueError("settings must not be empty")
    frames = [run_setting(task, canaries, setting, **options)[1]
              for setting in tqdm(settings, desc="settings", disable=not progress)]
    return pd.concat(frames, ignore_index=True)


def recovery_by(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean exposure, exact-recovery rate and per-digit accuracy per group (e.g. defence × repetitions)."""
    return (frame.groupby(list(by), sort=False)
            .agg(exposure=("exposure", "mean"), exact_recovery=("exact", "mean"),
                 digit_accuracy=("digit accuracy", "mean"), test_accuracy=("test accuracy", "mean"),
                 canaries=("secret", "size"))
            .rename(columns={"exact_recovery": "exact recovery", "digit_accuracy": "digit accuracy",
                             "test_accuracy": "test accuracy"})
            .reset_index())
