"""The membership game with shadow models (Carlini et al. 2022, §VI-A).

A *population* of n examples. ``n_shadows`` shadow models are trained on random halves in a balanced
design (every example is in exactly half of them), and ``n_targets`` target models each on its own random
subset: every example joins each target's training set independently with probability ½. Every target is
attacked with all shadows, and the scores are pooled over targets: ``n_targets · n`` membership decisions.
Independent inclusion is what the one-run audit (``trustml.privacy.attacks.audit``) assumes; example i of
target j is then its own audit example.

Why targets are not also shadows: with leave-one-out on a balanced design, an example the target
trained on is in *fewer* of the remaining models than one it did not — so the number of in/out shadows
reveals membership and, with few shadows, biases the online test (below chance for a model that leaks
nothing). Independent targets keep the shadows' design identical for members and non-members.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trustml.data import subset
from trustml.privacy.attacks.mia import ATTACKS
from trustml.privacy.attacks.results import AttackResult
from trustml.privacy.attacks.scores import check_logits_labels, model_logits
from trustml.threads import limit_threads

TrainFn = Callable[..., torch.nn.Module]  # train_fn(train_set: TensorDataset, *, seed: int) -> model or record


def balanced_membership(n_examples: int, n_models: int, *, seed: int = 0) -> np.ndarray:
    """Boolean (n_models, n_examples) in complementary pairs: models 2i and 2i+1 train on the two halves
    of one random split. Every example is in exactly n_models/2 models, and every model trains on
    ⌊n/2⌋ or ⌈n/2⌉ examples (equal sizes also mean one noise calibration serves all DP shadows)."""
    if n_models < 2 or n_models % 2:
        raise ValueError(f"n_models must be an even number >= 2, got {n_models}")
    halves = random_halves(n_examples, n_models // 2, seed=seed)
    return np.stack([halves, ~halves], axis=1).reshape(n_models, n_examples)


def independent_membership(n_examples: int, n_models: int, *, seed: int = 0) -> np.ndarray:
    """Boolean (n_models, n_examples): each example in each model independently with probability ½."""
    if n_models < 1 or n_examples < 2:
        raise ValueError(f"need n_models >= 1 and n_examples >= 2, got {n_models} and {n_examples}")
    return np.random.default_rng(seed).random((n_models, n_examples)) < 0.5


def random_halves(n_examples: int, n_models: int, *, seed: int = 0) -> np.ndarray:
    """Boolean (n_models, n_examples): each row an independent random half of the examples."""
    if n_models < 1 or n_examples < 2:
        raise ValueError(f"need n_models >= 1 and n_examples >= 2, got {n_models} and {n_examples}")
    rng = np.random.default_rng(seed)
    rank = np.argsort(np.argsort(rng.random((n_models, n_examples)), axis=1), axis=1)
    return rank < n_examples // 2


@dataclasses.dataclass
class MembershipGame:
    """Logits of target and shadow models on one population, and who trained on what."""

    labels: np.ndarray  # (n,)
    target_logits: np.ndarray  # (t, n, C)
    target_membership: np.ndarray  # (t, n) bool
    shadow_logits: np.ndarray  # (k, n, C)
    shadow_membership: np.ndarray  # (k, n) bool
    epsilons: list[float] | None = None  # the accountant's ε of each target (inf = trained without DP)
    target_models: list[torch.nn.Module] | None = None

    def __post_init__(self) -> None:
        for part in ("target", "shadow"):
            logits = np.asarray(getattr(self, f"{part}_logits"), dtype=np.float64)
            membership = np.asarray(getattr(self, f"{part}_membership"), dtype=bool)
            check_logits_labels(logits, self.labels)
            if logits.ndim != 3 or membership.shape != logits.shape[:2]:
                raise ValueError(f"{part}_membership must have shape {logits.shape[:2]}, got {membership.shape}")
            setattr(self, f"{part}_logits", logits)
            setattr(self, f"{part}_membership", membership)
        self.labels = np.asarray(self.labels)

    @property
    def epsilon(self) -> float:
        """The largest accountant ε among the targets (what an audit is compared with)."""
        return float(max(self.epsilons)) if self.epsilons else float("inf")

    @classmethod
    def train(cls, train_fn: TrainFn, population: TensorDataset, *, n_shadows: int, n_targets: int = 1,
              seed: int = 0, keep_models: bool = False, progress: bool = True) -> MembershipGame:
        """Train ``n_targets`` targets and ``n_shadows`` shadows with ``train_fn(train_set, seed=...)``."""
        if n_shadows < 2 or n_shadows % 2:
            raise ValueError(f"n_shadows must be an even number >= 2 (in and out shadows for every example), "
                             f"got {n_shadows}")
        targets = independent_membership(len(population), n_targets, seed=seed)
        shadows = balanced_membership(len(population), n_shadows, seed=seed + 1)
        runs = []
        with limit_threads(1):
            for j, members in enumerate(tqdm([*targets, *shadows], desc="models", disable=not progress)):
                trained = train_fn(subset(population, np.flatnonzero(members)), seed=seed * 1000 + j)
                # train_fn may return the model, or a training record with .model and the accountant's .epsilon
                model = trained if isinstance(trained, torch.nn.Module) else trained.model
                runs.append((model_logits(model, population), model, float(getattr(trained, "epsilon", np.inf))))
        logits, models, epsilons = zip(*runs)
        return cls(population.tensors[1].numpy(), np.stack(logits[:n_targets]), targets, np.stack(logits[n_targets:]),
                   shadows, epsilons=list(epsilons[:n_targets]),
                   target_models=list(models[:n_targets]) if keep_models else None)

    def with_shadows(self, n_shadows: int) -> MembershipGame:
        """The same game with only the first ``n_shadows`` shadow models (complementary pairs are kept whole,
        so every example stays in exactly half of them): how much does an attack gain from more shadows?"""
        total = len(self.shadow_logits)
        if isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < 2 \
                or n_shadows % 2 or n_shadows > total:
            raise ValueError(f"n_shadows must be an even number in [2, {total}], got {n_shadows!r}")
        return dataclasses.replace(self, shadow_logits=self.shadow_logits[:n_shadows],
                                   shadow_membership=self.shadow_membership[:n_shadows])

    def attack(self, attacks: Sequence[str] = tuple(ATTACKS)) -> dict[str, AttackResult]:
        """Run each attack on every target with all shadows; one ``AttackResult`` per attack, pooled."""
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown or not attacks:
            raise ValueError(f"attacks must be a non-empty list among {list(ATTACKS)}, got {list(attacks)}")
        results = {}
        with limit_threads(1):
            for name in attacks:
                scores = [ATTACKS[name](logits, self.labels, self.shadow_logits, self.shadow_membership)
                          for logits in self.target_logits]
                results[name] = AttackResult(name, np.concatenate(scores), self.target_membership.ravel())
        return results
