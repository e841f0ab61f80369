"""Counterfactual gender swapping: role reversal for data augmentation, and the counterfactual fairness gap.

:class:`GenderSwapper` rewrites a text with every gendered word replaced by its counterpart (word pairs
and first names from :mod:`trustml.fairness.gender_pairs`, both directions), keeping case
(``he``/``He``/``HE``), plurals (``kings → queens``), possessives (``John's → Mary's``), punctuation and
spacing. The ambiguous pronouns are resolved from the next word (a simple heuristic, documented in
:meth:`GenderSwapper.swap`): *her* before a noun phrase is the determiner (→ *his*), elsewhere the object
(→ *him*); *his* before a noun phrase → *her*, elsewhere → *hers*. On the pair lists the swap is an
involution (swapping twice returns the text); on free text it is one wherever the heuristic reads the
pronoun the same way both times (``"told him stories"`` → ``"told her stories"`` → ``"told his stories"``
is the known failure).

Uses: :func:`counterfactual_augment` (CDA: the data plus its swapped copy; Lu et al. 2020, Gupta et al.
2022), and :func:`counterfactual_gap`, the counterfactual fairness metric for a classifier (Garg et al.
2019, "Counterfactual Fairness in Text Classification through Robustness"): how much the prediction
changes when only the protected terms are swapped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from trustml.fairness.gender_pairs import GenderPairs, load_gender_pairs

_WORD = re.compile(r"[A-Za-z]+")
_BOUNDARY = re.compile(r"[.,;:!?()\"]")


def _match_case(template: str, word: str) -> str:
    """``word`` written in ``template``'s case: ``UPPER`` (two letters or more), ``Title`` or lower."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class GenderSwapper:
    """Swap gendered words and first names in both directions (``male ↔ female``).

    ``language`` picks the pair lists (``"en"``; anything else raises); ``names=False`` leaves first names
    alone; ``extra_pairs`` adds ``(male, female)`` word pairs (lower case; must not clash with the lists).
    """

    def __init__(self, *, language: str = "en", names: bool = True,
                 extra_pairs: Sequence[tuple[str, str]] = ()):
        lists = load_gender_pairs(language)
        if extra_pairs:
            extra = tuple((male, female) for male, female in extra_pairs)
            lists = dataclasses.replace(lists, words=lists.words + extra)
            from trustml.fairness.gender_pairs import check_pairs

            check_pairs(lists)
        self.language, self.names, self.lists = language, names, lists
        pairs = lists.pairs(names=names)
        self.male_words = frozenset(m for m, _ in pairs)
        self.female_words = frozenset(f for _, f in pairs)
        self._map = {m: f for m, f in pairs} | {f: m for m, f in pairs}

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The (male, female) pairs this swapper uses (names included when ``names=True``)."""
        return self.lists.pairs(names=self.names)

    def words(self, gender: str) -> frozenset[str]:
        """The lower-case gendered words of ``gender`` (``"male"`` or ``"female"``)."""
        table = {"male": self.male_words, "female": self.female_words}
        if gender not in table:
            raise ValueError(f"gender must be one of {sorted(table)}, got {gender!r}")
        return table[gender]

    def token_pairs(self) -> list[tuple[str, str]]:
        """A one-to-one pairing of single words for next-token distributions (used by the teacher
        perturbation): the unambiguous pairs plus the determiners ``his ↔ her``; ``him`` and ``hers`` stay
        unpaired there, because the object *her* cannot be told from the determiner without the next word."""
        determiners = {"his": "her"}
        unpaired = {"him", "hers"}
        pairs = [(m, f) for m, f in self.pairs if m not in unpaired and f not in unpaired
                 and m not in self.lists.ambiguous and f not in self.lists.ambiguous]
        return pairs + list(determiners.items())

    def gendered(self, text: str) -> bool:
        """Whether ``text`` contains a word the swap changes."""
        return any(w.lower() in self._map for w in _WORD.findall(text))

    def swap(self, text: str) -> str:
        """``text`` with every listed gendered word and name replaced by its counterpart.

        Ambiguous pronouns look at what follows: if the next word comes before any sentence punctuation
        and is not a function word (articles, prepositions, conjunctions, auxiliaries, pronouns), the
        pronoun is a determiner (``her car`` → ``his car``, ``his car`` → ``her car``); otherwise it is the
        object or the standalone possessive (``saw her.`` → ``saw him.``, ``is his.`` → ``is hers.``).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pieces = re.split(r"([A-Za-z]+)", text)  # odd indices are words, even ones the text between
        out = list(pieces)
        for i in range(1, len(pieces), 2):
            word = pieces[i].lower()
            if word in self.lists.ambiguous:
                before_noun_phrase, elsewhere = self.lists.ambiguous[word]
                replacement = before_noun_phrase if self._next_is_content(pieces, i) else elsewhere
            elif word in self._map:
                replacement = self._map[word]
            else:
                continue
            out[i] = _match_case(pieces[i], replacement)
        return "".join(out)

    __call__ = swap

    def _next_is_content(self, pieces: list[str], i: int) -> bool:
        if i + 2 >= len(pieces) or _BOUNDARY.search(pieces[i + 1]) or "'" in pieces[i + 1]:
            return False
        return pieces[i + 2].lower() not in self.lists.function_words

    def swap_all(self, texts: Sequence[str]) -> list[str]:
        return [self.swap(t) for t in texts]


def swap_gender(text: str, *, language: str = "en", names: bool = True) -> str:
    """``GenderSwapper(language=language, names=names).swap(text)``."""
    return GenderSwapper(language=language, names=names).swap(text)


def counterfactual_augment(texts: Sequence[str], *, swapper: GenderSwapper | None = None,
                           only_gendered: bool = True) -> list[str]:
    """Counterfactual data augmentation (CDA): ``texts`` followed by their gender-swapped copies.

    With ``only_gendered`` (default) a text without any listed word is not duplicated (its copy would be
    identical and only re-weight the data).
    """
    swapper = swapper or GenderSwapper()
    texts = list(texts)
    copies = [swapper.swap(t) for t in texts if not only_gendered or swapper.gendered(t)]
    return texts + copies


def _total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(p - q).sum(-1)


def _max_abs(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.abs(p - q).max(-1)


def _flip(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p.argmax(-1) != q.argmax(-1)).astype(float)


#: Distances between the prediction on a text and on its swapped copy.
GAP_DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "total_variation": _total_variation,  # ½ Σ_j |f_j(x) − f_j(x')|, in [0, 1]
    "max_abs": _max_abs,                  # max_j |f_j(x) − f_j(x')|
    "flip": _flip,                        # 1 if the arg-max class changes
}


@dataclasses.dataclass
class CounterfactualGap:
    """Per-example gaps (``frame``: text, swapped text, whether a term was swapped, gap, flip) and the
    dataset scores (:meth:`summary`)."""

    frame: pd.DataFrame
    distance: str

    @property
    def score(self) -> float:
        """Mean gap over all examples (a text with nothing to swap contributes 0)."""
        return float(self.frame["gap"].mean())

    def summary(self) -> dict[str, float]:
        swapped = self.frame[self.frame["swapped"]]
        return {"counterfactual_gap": self.score,
                "gap_on_swapped": float(swapped["gap"].mean()) if len(swapped) else 0.0,
                "flip_rate": float(self.frame["flip"].mean()),
                "fraction_swapped": float(self.frame["swapped"].mean())}


def counterfactual_gap(predict_proba: Callable[[list[str]], np.ndarray], texts: Sequence[str], *,
                       swapper: GenderSwapper | Callable[[str], str] | None = None,
                       distance: str = "total_variation") -> CounterfactualGap:
    """Counterfactual fairness gap (Garg et al. 2019; the baseline of Krishna et al. 2022):

        gap(x) = d(f(x), f(x')),  x' = x with its protected terms swapped,

    with ``d`` one of :data:`GAP_DISTANCES` (default total variation ½ Σ_j |f_j(x) − f_j(x')|) and
    ``predict_proba(texts) -> (n, C)`` class probabilities. It only sees terms on the swap list: a
    classifier that relies on a proxy (a hobby, a name not on the list) has gap 0 there.
    """
    if distance not in GAP_DISTANCES:
        raise ValueError(f"distance must be one of {sorted(GAP_DISTANCES)}, got {distance!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts must not be empty")
    swap = swapper or GenderSwapper()
    swapped_texts = [swap(t) for t in texts]
    p, q = np.asarray(predict_proba(texts), dtype=float), np.asarray(predict_proba(swapped_texts), dtype=float)
    if p.shape != q.shape or p.ndim != 2 or p.shape[0] != len(texts):
        raise ValueError(f"predict_proba must return (n_texts, n_classes) arrays, got {p.shape}")
    frame = pd.DataFrame({"text": texts, "swapped_text": swapped_texts,
                          "swapped": [a != b for a, b in zip(texts, swapped_texts)],
                          "gap": GAP_DISTANCES[distance](p, q), "flip": _flip(p, q).astype(bool)})
    return CounterfactualGap(frame=frame, distance=distance)


__all__ = ["GAP_DISTANCES", "CounterfactualGap", "GenderPairs", "GenderSwapper", "counterfactual_augment",
           "counterfactual_gap", "swap_gender"]
