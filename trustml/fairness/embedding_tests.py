"""Embedding association tests: WEAT, SEAT and CEAT, on plain ``(n, d)`` arrays of vectors.

* **WEAT** (Caliskan, Bryson & Narayanan, *Science* 2017): targets X, Y and attributes A, B; the effect
  size ``d`` and a one-sided permutation test (:func:`weat_effect_size`, :func:`weat_p_value`).
* **SEAT** (May et al., NAACL 2019): WEAT on *sentence* vectors of semantically bleached templates
  ("This is the rose."), see :func:`seat_sentences` and ``trustml.fairness.encoders.seat``.
* **CEAT** (Guo & Caliskan, AIES 2021): draw one random context per word, compute WEAT's ``d`` on the
  contextual word vectors, repeat ``N`` times and combine the ``N`` effect sizes with a random-effects
  meta-analysis (:func:`ceat_from_vectors`, :func:`random_effects`).

Everything here is numpy; turning words into vectors with an encoder (and caching them) lives in
``trustml.fairness.encoders``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from trustml.fairness.wordsets import CONTEXT_FRAMES, SEAT_TEMPLATES, AssociationTest, WordSet

#: Enumerate every re-partition when there are at most this many; sample otherwise.
EXACT_PERMUTATION_LIMIT = 100_000
#: Associations are cosine differences in [-2, 2]: a spread below this is rounding error, not variation.
ZERO_SPREAD = 1e-12


def as_vectors(name: str, vectors, *, dim: int | None = None) -> np.ndarray:
    """``vectors`` as a float64 ``(n, d)`` array with ``n >= 1``; clear errors naming ``name`` otherwise."""
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array of vectors, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: an association test needs at least one vector per set")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} has vectors of dimension {array.shape[1]}, the other sets have {dim}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (np.linalg.norm(array, axis=1) == 0).any():
        raise ValueError(f"{name} contains a zero vector: its cosine similarity is undefined")
    return array


def _check_sets(X, Y, A, B) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X = as_vectors("X", X)
    dim = X.shape[1]
    return X, as_vectors("Y", Y, dim=dim), as_vectors("A", A, dim=dim), as_vectors("B", B, dim=dim)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def association(W, A, B) -> np.ndarray:
    """``s(w, A, B) = mean_{a∈A} cos(w, a) − mean_{b∈B} cos(w, b)`` for every row ``w`` of ``W``.

    The per-word association of Caliskan et al. (2017), eq. in "Methods".
    """
    W = as_vectors("W", W)
    A, B = as_vectors("A", A, dim=W.shape[1]), as_vectors("B", B, dim=W.shape[1])
    W, A, B = _unit(W), _unit(A), _unit(B)
    return (W @ A.T).mean(axis=1) - (W @ B.T).mean(axis=1)


def weat_effect_size(X, Y, A, B) -> float:
    """Caliskan et al.'s (2017) effect size

    ``d = (mean_{x∈X} s(x,A,B) − mean_{y∈Y} s(y,A,B)) / std_{w∈X∪Y} s(w,A,B)``

    with the sample standard deviation (``ddof=1``, as in the CEAT authors' code). Positive ``d``: X is
    closer to A (and Y to B) than the reverse. ``X, Y, A, B`` are ``(n, d)`` arrays of vectors.
    """
    X, Y, A, B = _check_sets(X, Y, A, B)
    s_x, s_y = association(X, A, B), association(Y, A, B)
    return _effect_size(s_x, s_y)


def _effect_size(s_x: np.ndarray, s_y: np.ndarray) -> float:
    joint = np.concatenate([s_x, s_y])
    if len(joint) < 2:
        raise ValueError("the effect size needs at least two target vectors in X ∪ Y")
    spread = joint.std(ddof=1)
    if spread < ZERO_SPREAD:
        raise ValueError("every target has the same association: the effect size is undefined (std = 0)")
    return float((s_x.mean() - s_y.mean()) / spread)


def weat_statistic(X, Y, A, B) -> float:
    """The test statistic ``s(X,Y,A,B) = Σ_{x∈X} s(x,A,B) − Σ_{y∈Y} s(y,A,B)`` (Caliskan et al. 2017)."""
    X, Y, A, B = _check_sets(X, Y, A, B)
    return float(association(X, A, B).sum() - association(Y, A, B).sum())


def _associations(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-word associations, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: the permutation test needs at least one association per set")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_count(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def permutation_p_value(s_x: np.ndarray, s_y: np.ndarray, *, n_permutations: int = 10_000,
                        exact_limit: int = EXACT_PERMUTATION_LIMIT, seed: int = 0) -> tuple[float, bool, int]:
    """One-sided permutation p-value of WEAT from the per-word associations ``s_x``, ``s_y``.

    ``p = Pr_i[s(X_i, Y_i, A, B) ≥ s(X, Y, A, B)]`` over the re-partitions ``(X_i, Y_i)`` of ``X ∪ Y``
    into sets of sizes ``|X|, |Y|`` (Caliskan et al. 2017 write ``>``; ``≥`` counts the observed split,
    the usual exact permutation test). All partitions are enumerated when there are at most
    ``exact_limit``; otherwise ``n_permutations`` random ones are drawn (seeded) and
    ``p = (1 + #{≥}) / (1 + n_permutations)`` (Phipson & Smyth 2010). Returns ``(p, exact, n_used)``.

    ``s_x`` and ``s_y`` must be non-empty, 1-D and finite: a NaN would compare false everywhere and give a
    meaningless p, so it is an error, as is an empty set (there is nothing to permute).
    """
    s_x, s_y = _associations("s_x", s_x), _associations("s_y", s_y)
    _check_count("n_permutations", n_permutations, minimum=1)
    _check_count("exact_limit", exact_limit, minimum=0)
    joint = np.concatenate([s_x, s_y])
    n, k = len(joint), len(s_x)
    total = joint.sum()
    observed = 2 * s_x.sum() - total  # Σ_X s − Σ_Y s
    tolerance = 1e-12 * max(1.0, np.abs(joint).sum())  # ties up to float rounding count as ≥
    n_partitions = math.comb(n, k)
    if n_partitions <= exact_limit:
        index = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), k)), dtype=np.int64,
                            count=n_partitions * k).reshape(n_partitions, k)
        statistics = 2 * joint[index].sum(axis=1) - total
        return float(np.mean(statistics >= observed - tolerance)), True, n_partitions
    rng = np.random.default_rng(seed)
    index = rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)[:, :k]
    statistics = 2 * joint[index].sum(axis=1) - total
    return float((1 + np.sum(statistics >= observed - tolerance)) / (1 + n_permutations)), False, n_permutations


def weat_p_value(X, Y, A, B, *, n_permutations: int = 10_000, exact_limit: int = EXACT_PERMUTATION_LIMIT,
                 seed: int = 0) -> float:
    """One-sided permutation-test p-value of WEAT (see :func:`permutation_p_value`)."""
    X, Y, A, B = _check_sets(X, Y, A, B)
    return permutation_p_value(association(X, A, B), association(Y, A, B), n_permutations=n_permutations,
                               exact_limit=exact_limit, seed=seed)[0]


@dataclasses.dataclass(frozen=True)
class WEATResult:
    effect_size: float
    p_value: float
    statistic: float
    exact: bool  # p-value from all partitions (True) or sampled ones
    n_permutations: int

    def summary(self) -> str:
        kind = "exact" if self.exact else f"{self.n_permutations} sampled permutations"
        return f"WEAT d = {self.effect_size:+.3f}, p = {self.p_value:.2g} ({kind})"


def weat(X, Y, A, B, *, n_permutations: int = 10_000, exact_limit: int = EXACT_PERMUTATION_LIMIT,
         seed: int = 0) -> WEATResult:
    """WEAT effect size, statistic and permutation p-value in one pass (Caliskan et al. 2017)."""
    X, Y, A, B = _check_sets(X, Y, A, B)
    s_x, s_y = association(X, A, B), association(Y, A, B)
    p, exact, used = permutation_p_value(s_x, s_y, n_permutations=n_permutations, exact_limit=exact_limit,
                                         seed=seed)
    return WEATResult(_effect_size(s_x, s_y), p, float(s_x.sum() - s_y.sum()), exact, used)


# --- SEAT ---------------------------------------------------------------------------------------------------

def _templates(word_set: WordSet, templates: Mapping[str, Sequence[str]]) -> Sequence[str]:
    if word_set.kind not in templates:
        raise ValueError(f"no templates for kind {word_set.kind!r} (set {word_set.name!r}); "
                         f"templates has {sorted(templates)}")
    return templates[word_set.kind]


def seat_sentences(word_set: WordSet, *, templates: Mapping[str, Sequence[str]] = SEAT_TEMPLATES) -> list[str]:
    """SEAT's sentences for one set: every word in every template of its kind (May et al. 2019)."""
    if not word_set.words:
        raise ValueError(f"word set {word_set.name!r} is empty")
    return [t.format(w=w) for w in word_set.words for t in _templates(word_set, templates)]


# --- CEAT ---------------------------------------------------------------------------------------------------

def context_corpus(test: AssociationTest, *, contexts_per_word: int | None = None,
                   frames: Mapping[str, Sequence[str]] = CONTEXT_FRAMES, seed: int = 0) -> dict[str, list[str]]:
    """A corpus of contexts for CEAT: for each word of ``test``, sentences that contain it.

    The original CEAT samples Reddit comments that contain each word (Guo & Caliskan 2021); offline we
    fill valence-neutral frames (``CONTEXT_FRAMES``, by the kind of the word's set) with the word. With
    ``contexts_per_word`` set, a seeded subset of that many frames is kept per word.
    """
    frames_by_word: dict[str, Sequence[str]] = {}
    for word_set in test.sets:
        if not word_set.words:
            raise ValueError(f"word set {word_set.name!r} of test {test.name!r} is empty")
        for word in word_set.words:
            frames_by_word.setdefault(word, _templates(word_set, frames))
    rng = np.random.default_rng(seed)
    corpus = {}
    for word, word_frames in frames_by_word.items():
        chosen = list(word_frames)
        if contexts_per_word is not None:
            if contexts_per_word < 1:
                raise ValueError(f"contexts_per_word must be >= 1, got {contexts_per_word}")
            chosen = [chosen[i] for i in rng.permutation(len(chosen))[:contexts_per_word]]
        corpus[word] = [f.format(w=word) for f in chosen]
    return corpus


@dataclasses.dataclass(frozen=True)
class RandomEffectsResult:
    combined_effect_size: float
    standard_error: float
    p_value: float  # one-sided, H1: combined effect > 0
    tau_squared: float  # between-sample variance τ²
    q: float  # Cochran's Q
    i_squared: float  # share of the total variation due to heterogeneity, max(0, (Q − df)/Q)


def random_effects(effect_sizes, variances) -> RandomEffectsResult:
    """DerSimonian–Laird random-effects combination (as in CEAT, Guo & Caliskan 2021).

    With within-sample variances ``v_i`` and weights ``w_i = 1/v_i``:
    ``Q = Σ w_i ES_i² − (Σ w_i ES_i)² / Σ w_i``, ``df = N − 1``,
    ``τ² = max(0, (Q − df) / (Σ w_i − Σ w_i² / Σ w_i))``; then ``w*_i = 1/(v_i + τ²)``,
    ``CES = Σ w*_i ES_i / Σ w*_i``, ``SE = sqrt(1 / Σ w*_i)`` and the one-sided
    ``p = 1 − Φ(CES / SE)`` (DerSimonian & Laird 1986; Hedges & Vevea 1998).
    """
    es = np.asarray(effect_sizes, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if es.ndim != 1 or es.shape != v.shape:
        raise ValueError(f"effect_sizes and variances must be 1-D of equal length, got {es.shape} and {v.shape}")
    if len(es) < 2:
        raise ValueError(f"random_effects needs at least 2 samples, got {len(es)}")
    if not (np.isfinite(es).all() and np.isfinite(v).all()) or (v <= 0).any():
        raise ValueError("effect sizes must be finite and variances finite and > 0")
    w = 1 / v
    q = float(np.sum(w * es**2) - np.sum(w * es) ** 2 / np.sum(w))
    df = len(es) - 1
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    tau2 = max(0.0, (q - df) / c)
    w_star = 1 / (v + tau2)
    combined = float(np.sum(w_star * es) / np.sum(w_star))
    se = float(np.sqrt(1 / np.sum(w_star)))
    return RandomEffectsResult(combined, se, float(stats.norm.sf(combined / se)), float(tau2), q,
                               max(0.0, (q - df) / q) if q > 0 else 0.0)


class DegenerateSampleWarning(UserWarning):
    """CEAT drew the same contexts more than once: repeated draws are dropped before combining."""


@dataclasses.dataclass(frozen=True)
class CEATResult:
    combined_effect_size: float
    standard_error: float
    p_value: float
    tau_squared: float
    i_squared: float
    effect_sizes: np.ndarray  # the per-sample WEAT effect sizes that were combined (one per distinct draw)
    variances: np.ndarray  # their in-sample variances v_i
    vocabulary: tuple[str, ...] = ()  # the test's words, in the column order of ``draws``
    draws: np.ndarray | None = None  # (n_samples, words): which context of each word sample i used
    n_draws: int | None = None  # draws requested; more than n_samples when some repeated an earlier draw

    @property
    def n_samples(self) -> int:
        """Distinct draws combined (repeats of an earlier draw are not new samples)."""
        return len(self.effect_sizes)

    def summary(self) -> str:
        return (f"CEAT CES = {self.combined_effect_size:+.3f} ± {self.standard_error:.3f} (SE), "
                f"p = {self.p_value:.2g}, τ² = {self.tau_squared:.3g}, N = {self.n_samples}")

    def samples(self) -> pd.DataFrame:
        return pd.DataFrame({"effect size": self.effect_sizes, "variance": self.variances})


def ceat_from_vectors(word_vectors: Mapping[str, np.ndarray], test: AssociationTest, *, n_samples: int = 1000,
                      seed: int = 0, chunk_size: int = 64) -> CEATResult:
    """CEAT (Guo & Caliskan 2021) from contextual vectors: ``word_vectors[w]`` is ``(n_contexts_w, d)``.

    For ``i = 1..N``: draw one context (row) per word uniformly, compute WEAT's effect size ``ES_i`` on
    those vectors and the in-sample variance ``v_i = Var_{w∈X∪Y} s(w,A,B)`` (``ddof=1``, the variance
    the CEAT authors' code uses); combine with :func:`random_effects`.

    **Distinct draws.** The meta-analysis treats the samples as independent studies, so its standard
    error shrinks like ``1/√N``. A draw that repeats an earlier one (the same context for every word) is
    the same study again, not new evidence: counting it would shrink the standard error and the p-value
    with nothing new sampled. Repeats are therefore dropped (with a :class:`DegenerateSampleWarning`
    saying how many), and fewer than two distinct draws — e.g. one context per word, where every draw is
    the same — is an error: that is WEAT on those vectors (:func:`weat`), with its permutation test.
    """
    _check_count("n_samples", n_samples, minimum=2)
    _check_count("chunk_size", chunk_size, minimum=1)
    sets = []
    dim: int | None = None
    for label, word_set in zip("XYAB", test.sets):
        if not word_set.words:
            raise ValueError(f"{label} ({word_set.name!r}) is empty")
        missing = [w for w in word_set.words if w not in word_vectors]
        if missing:
            raise KeyError(f"no contextual vectors for {label} words {missing[:5]}")
        for word in word_set.words:
            dim = as_vectors(f"vectors of {word!r}", word_vectors[word], dim=dim).shape[1]
        sets.append(list(word_set.words))
    assert dim is not None  # every set is non-empty
    vocabulary = list(dict.fromkeys(w for s in sets for w in s))
    position = {w: i for i, w in enumerate(vocabulary)}
    counts = np.array([len(word_vectors[w]) for w in vocabulary])
    rng = np.random.default_rng(seed)
    draws = (rng.random((n_samples, len(vocabulary))) * counts).astype(np.int64)
    _, first = np.unique(draws, axis=0, return_index=True)
    if len(first) < 2:
        raise ValueError(
            f"CEAT needs at least 2 distinct samples, but all {n_samples} draws picked the same contexts "
            f"({int((counts > 1).sum())} of {len(counts)} words have more than one context): the random-effects "
            "p-value would count one WEAT n_samples times. Give the words more contexts, or use weat() on these "
            "vectors (its permutation test is the right p-value for a single sample)")
    if len(first) < n_samples:
        possible = math.prod(int(c) for c in counts)
        warnings.warn(
            f"{n_samples - len(first)} of {n_samples} CEAT draws repeat an earlier draw (only {possible} distinct "
            f"draws exist); the random-effects combination uses the {len(first)} distinct draws",
            DegenerateSampleWarning, stacklevel=2)
        draws = draws[np.sort(first)]
    # One padded (words, contexts, d) array of unit vectors: a sample is then one gather.
    table = np.zeros((len(vocabulary), int(counts.max()), dim))
    for i, w in enumerate(vocabulary):
        table[i, : counts[i]] = _unit(np.asarray(word_vectors[w], dtype=np.float64))
    rows = [np.array([position[w] for w in s]) for s in sets]
    effect_sizes, variances = np.empty(len(draws)), np.empty(len(draws))
    for start in range(0, len(draws), chunk_size):
        stop = min(start + chunk_size, len(draws))
        picked = table[np.arange(len(vocabulary)), draws[start:stop]]  # (chunk, words, d)
        X, Y, A, B = (picked[:, r] for r in rows)
        mean_a = A.mean(axis=1)  # mean_a cos(w, a) = w · mean(a) for unit vectors
        mean_b = B.mean(axis=1)
        s_x = np.einsum("cnd,cd->cn", X, mean_a) - np.einsum("cnd,cd->cn", X, mean_b)
        s_y = np.einsum("cnd,cd->cn", Y, mean_a) - np.einsum("cnd,cd->cn", Y, mean_b)
        joint = np.concatenate([s_x, s_y], axis=1)
        spread = joint.std(axis=1, ddof=1)
        if (spread < ZERO_SPREAD).any():
            raise ValueError("a CEAT sample has every target with the same association (std = 0): its effect size "
                             "is undefined")
        effect_sizes[start:stop] = (s_x.mean(axis=1) - s_y.mean(axis=1)) / spread
        variances[start:stop] = spread**2
    combined = random_effects(effect_sizes, variances)
    return CEATResult(combined.combined_effect_size, combined.standard_error, combined.p_value,
                      combined.tau_squared, combined.i_squared, effect_sizes, variances, tuple(vocabulary), draws,
                      n_samples)


__all__ = [
    "CEATResult", "DegenerateSampleWarning", "EXACT_PERMUTATION_LIMIT", "RandomEffectsResult", "WEATResult",
    "as_vectors", "association", "ceat_from_vectors", "context_corpus", "permutation_p_value", "random_effects",
    "seat_sentences", "weat", "weat_effect_size", "weat_p_value", "weat_statistic",
]
