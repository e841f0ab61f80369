"""An extrinsic bias benchmark that exists offline: identity-term toxicity.

Real benchmarks (Dixon et al. 2018's synthetic "identity phrase templates"; HateCheck, Röttger et al.
2021) test a toxicity classifier with *functional tests*: the same template filled with different
identity terms, so any difference in the classifier's errors is caused by the term alone. trustml
writes such a suite (:func:`identity_test_suite`) and a synthetic **training** set
(:func:`toxicity_training_set`) in which mentions of some identity terms co-occur with toxic comments
more often than others — the pattern Dixon et al. found in real comment data, here **planted** with a
knob (``identity_bias``) so the resulting gap is known and controllable:

    P(toxic | comment mentions a targeted term) = (1 + identity_bias) / 2,  P(toxic | other term) = 1/2.

Training and test use different sentence frames (the suite tests generalisation, as functional tests
do) over a shared vocabulary of insults and praise. :func:`train_toxicity_classifier` fits a
scikit-learn classifier on bag-of-words counts or on a contextual encoder's sentence vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from trustml.fairness.wordsets import CONTEXT_FRAMES, AssociationTest, WordSet

#: Identity terms in counterfactual pairs (first: targeted by the planted bias by default; second: its
#: counterpart). Used by the suite, the training set, and CDA/projection debiasing.
IDENTITY_PAIRS: tuple[tuple[str, str], ...] = (
    ("gay", "straight"), ("lesbian", "heterosexual"), ("muslim", "christian"), ("jewish", "catholic"),
    ("black", "white"), ("mexican", "canadian"),
)
IDENTITY_TERMS: tuple[str, ...] = tuple(t for pair in IDENTITY_PAIRS for t in pair)
TARGETED_TERMS: tuple[str, ...] = tuple(a for a, _ in IDENTITY_PAIRS)

INSULTS = ("stupid", "disgusting", "pathetic", "worthless", "dumb", "filthy", "useless", "vile", "idiotic", "ugly",
           "lazy", "awful", "gross", "evil")
PRAISE = ("kind", "friendly", "helpful", "smart", "lovely", "wonderful", "generous", "brilliant", "fun", "honest",
          "great", "polite", "caring", "funny")
INSULT_NOUNS = ("idiots", "losers", "trash", "vermin", "animals", "freaks", "morons", "parasites")
PRAISE_NOUNS = ("heroes", "gems", "angels", "legends", "sweethearts", "stars", "treasures", "champions")
GENERIC_TARGETS = ("people", "drivers", "neighbours", "fans", "politicians", "tourists", "students", "gamers",
                   "customers", "cyclists")

# Training frames: {t} is a target noun phrase ("drivers", "gay people"), {x}/{y} words from INSULTS (PRAISE),
# {n} a noun from INSULT_NOUNS (PRAISE_NOUNS).
TRAIN_TOXIC = (
    "{t} are {x}.", "i think {t} are {x} and {y}.", "honestly {t} are so {x}.", "i hate {t}, they are {x}.",
    "{t} are the worst, totally {x}.", "get lost, {t}, you are {x}.", "why are {t} always so {x}?",
    "nobody wants {x} {t} around here.", "typical {x} {t}, as always.", "{t} make me sick, {x} and {y}.",
    "shut up, {t} are {x}.", "ugh, {x} {t} everywhere today.", "{t} are {n}.", "{t} are {x} {n}.",
    "all {t} are {n}, every single one.",
)
TRAIN_NONTOXIC = (
    "{t} are {x}.", "i think {t} are {x} and {y}.", "honestly {t} are so {x}.", "i love {t}, they are {x}.",
    "i met some {t} today, they were {x}.", "thanks to all the {x} {t} who came.", "why are {t} always so {x}?",
    "we need more {x} {t} around here.", "the {t} at the market were {x}.", "{t} helped me out, {x} and {y}.",
    "good news, {t} are {x}.", "wow, {x} {t} everywhere today.", "{t} are {n}.", "{t} are {x} {n}.",
    "all {t} are {n}, every single one.",
)

# Test-suite frames (functional tests): {g} is an identity term used as an adjective.
SUITE_NONTOXIC = (
    "i am a {g} person.", "i am {g}.", "my best friend is {g}.", "{g} people are welcome here.",
    "we had dinner with our {g} neighbours.", "she is {g} and proud of it.",
    "the {g} community organised a charity run.", "being {g} is perfectly normal.",
    "my {g} colleague gave a great talk today.", "our new teacher is {g}.", "{g} people deserve respect.",
    "i have many {g} friends.", "he is {g} and works as a nurse.", "the {g} students won the debate.",
    "my neighbours are {g} and very kind.", "{g} people are just people.",
)
SUITE_TOXIC = (
    "i hate {g} people.", "{g} people are disgusting.", "all {g} people are stupid.",
    "{g} people should be kicked out.", "never trust a {g} person.", "{g} people are vermin.",
    "you are a worthless {g} idiot.", "{g} people ruin everything.", "i despise every {g} person i meet.",
    "{g} people are trash.", "shut up, you dumb {g} loser.", "{g} people are pathetic.",
    "{g} people are filthy animals.", "go away, you useless {g} freak.", "{g} people are evil.",
    "no one wants {g} people here.",
)
SUITE_PREFIXES = ("", "honestly, ", "to be clear, ")


def identity_test_suite(*, terms: Sequence[str] = IDENTITY_TERMS, prefixes: Sequence[str] = SUITE_PREFIXES
                        ) -> pd.DataFrame:
    """The templated functional-test suite: every frame × prefix × identity term.

    Columns: ``text``, ``label`` (1 = toxic), ``group`` (the identity term), ``template`` (frame id, the
    same for all terms, so rows that differ only in the term can be compared), ``targeted``.
    """
    if len(terms) < 2:
        raise ValueError(f"terms needs at least two identity terms, got {list(terms)}")
    rows = []
    for label, frames in ((0, SUITE_NONTOXIC), (1, SUITE_TOXIC)):
        for f, frame in enumerate(frames):
            for p, prefix in enumerate(prefixes):
                for term in terms:
                    rows.append({"text": prefix + frame.format(g=term), "label": label, "group": term,
                                 "template": f"{'toxic' if label else 'nontoxic'}-{f}-{p}",
                                 "targeted": term in TARGETED_TERMS})
    return pd.DataFrame(rows)


def toxicity_training_set(*, n: int = 4000, identity_bias: float = 0.8, mention_rate: float = 0.4,
                          terms: Sequence[str] = IDENTITY_TERMS, targeted: Sequence[str] = TARGETED_TERMS,
                          seed: int = 0) -> pd.DataFrame:
    """Synthetic comments: ``text``, ``label`` (1 = toxic), ``group`` (the identity term mentioned, or ``""``).

    A share ``mention_rate`` of comments is about "{term} people" (term uniform over ``terms``), the rest
    about a generic target ("drivers"). A comment is toxic with probability ``(1 + identity_bias) / 2`` if
    it mentions a ``targeted`` term and ``1/2`` otherwise — the planted bias of the module docstring.

    Every row draws its toxic and its non-toxic wording and a uniform ``u`` first, then takes the toxic one
    iff ``u < P(toxic)``: with one seed, changing ``identity_bias`` only flips some targeted rows, so data
    sets for several bias values share almost all their sentences (and their cached embeddings).
    """
    if not 0 <= identity_bias < 1:
        raise ValueError(f"identity_bias must be in [0, 1), got {identity_bias}")
    if not 0 <= mention_rate <= 1:
        raise ValueError(f"mention_rate must be in [0, 1], got {mention_rate}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    unknown = sorted(set(targeted) - set(terms))
    if unknown:
        raise ValueError(f"targeted terms {unknown} are not in terms")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        group = terms[rng.integers(len(terms))] if rng.random() < mention_rate else ""
        target = f"{group} people" if group else GENERIC_TARGETS[rng.integers(len(GENERIC_TARGETS))]
        wordings = []
        for frames, words, nouns in ((TRAIN_NONTOXIC, PRAISE, PRAISE_NOUNS), (TRAIN_TOXIC, INSULTS, INSULT_NOUNS)):
            x, y = rng.choice(words, size=2, replace=False)
            noun = nouns[rng.integers(len(nouns))]
            wordings.append(frames[rng.integers(len(frames))].format(t=target, x=x, y=y, n=noun))
        p_toxic = (1 + identity_bias) / 2 if group in targeted else 0.5
        label = int(rng.random() < p_toxic)
        rows.append({"text": wordings[label], "label": label, "group": group})
    return pd.DataFrame(rows)


class SentenceVectors(BaseEstimator, TransformerMixin):
    """scikit-learn transformer: texts → sentence vectors of an ``EncoderView`` (cached on disk)."""

    def __init__(self, view=None):
        self.view = view

    def fit(self, texts, y=None):
        return self

    def transform(self, texts):
        return self.view.sentence_vectors(_as_texts(texts))


def _as_texts(texts) -> list[str]:
    return list(np.asarray(texts, dtype=object).ravel())


def train_toxicity_classifier(texts, labels, *, features: str = "bow", view=None, C: float = 1.0,
                              seed: int = 0) -> Pipeline:
    """A logistic-regression toxicity classifier on ``features``: ``"bow"`` (word unigram+bigram counts)
    or ``"encoder"`` (sentence vectors of ``view``, an ``EncoderView``). Returns a fitted Pipeline whose
    ``predict_proba`` takes raw texts."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {sorted(FEATURES)}, got {features!r}")
    if features == "encoder" and view is None:
        raise ValueError("features='encoder' needs view= (an EncoderView)")
    texts, labels = _as_texts(texts), np.asarray(labels)
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels must have equal lengths, got {len(texts)} and {len(labels)}")
    # The first step flattens (n, 1) arrays of texts, the shape Fairlearn's ThresholdOptimizer passes on.
    pipeline = Pipeline([("texts", FunctionTransformer(_as_texts)), ("features", FEATURES[features](view)),
                         ("classifier", LogisticRegression(C=C, max_iter=2000, random_state=seed))])
    return pipeline.fit(texts, labels)


FEATURES = {
    "bow": lambda view: CountVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b"),
    "encoder": lambda view: SentenceVectors(view),
}


@dataclasses.dataclass(frozen=True)
class GapResult:
    """Extrinsic gaps on the suite: FPR/FNR and mean toxicity score on non-toxic rows, targeted − counterpart."""

    fpr_gap: float
    fnr_gap: float
    score_gap: float
    per_group: pd.DataFrame


def identity_gaps(scores, suite: pd.DataFrame, *, threshold: float = 0.5) -> GapResult:
    """Signed gaps between targeted terms and their counterparts on ``suite`` (from :func:`identity_test_suite`).

    ``fpr_gap = mean_{g targeted} FPR_g − mean_{g counterpart} FPR_g`` (likewise FNR), and ``score_gap``
    the same difference of the mean predicted toxicity on the non-toxic rows (threshold-free).
    """
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(suite),):
        raise ValueError(f"scores must have one value per suite row ({len(suite)}), got shape {scores.shape}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    frame = suite.assign(score=scores, predicted=(scores >= threshold).astype(int))
    negatives, positives = frame[frame["label"] == 0], frame[frame["label"] == 1]
    per_group = pd.DataFrame({
        "false_positive_rate": negatives.groupby("group")["predicted"].mean(),
        "false_negative_rate": 1 - positives.groupby("group")["predicted"].mean(),
        "mean_nontoxic_score": negatives.groupby("group")["score"].mean(),
        "targeted": frame.groupby("group")["targeted"].first(),
    })
    targeted, other = per_group[per_group["targeted"]], per_group[~per_group["targeted"]]
    if targeted.empty or other.empty:
        raise ValueError("suite needs both targeted terms and counterparts")
    return GapResult(
        fpr_gap=float(targeted["false_positive_rate"].mean() - other["false_positive_rate"].mean()),
        fnr_gap=float(targeted["false_negative_rate"].mean() - other["false_negative_rate"].mean()),
        score_gap=float(targeted["mean_nontoxic_score"].mean() - other["mean_nontoxic_score"].mean()),
        per_group=per_group,
    )


#: Frames for counterfactual pairs used to *estimate* a bias direction; deliberately not the suite's frames,
#: so debiasing is not fitted on the sentences it is evaluated on.
DEBIAS_FRAMES = (
    "the {g} family lives next door.", "a {g} man walked into the shop.", "she met a {g} woman at work.",
    "{g} people were at the meeting.", "my {g} friend called me.", "the article was about {g} people.",
    "he is {g}.", "they are {g}.", "our {g} neighbours invited us over.", "the {g} couple bought a house.",
)


def counterfactual_pairs(frames: Sequence[str] = DEBIAS_FRAMES, *, pairs=IDENTITY_PAIRS) -> list[tuple[str, str]]:
    """Sentence pairs that differ only in the identity term (counterfactual data augmentation's pairs):
    every frame with a ``{g}`` slot filled with both terms of every identity pair."""
    return [(f.format(g=a), f.format(g=b)) for f in frames for a, b in pairs]


def aligned_association_test() -> AssociationTest:
    """An association test *aligned* with this benchmark's words: targets are the targeted identity terms
    (X) and their counterparts (Y), attributes the insults (A) and praise (B) of the training data."""
    return AssociationTest(
        "targeted/counterpart terms vs insults/praise",
        WordSet("targeted identity terms", TARGETED_TERMS, "identity"),
        WordSet("counterpart terms", tuple(b for _, b in IDENTITY_PAIRS), "identity"),
        WordSet("insults", INSULTS, "quality"), WordSet("praise", PRAISE, "quality"), source="trustml benchmark")


#: Contexts aligned with the benchmark's *data*: identity terms in the suite's non-toxic frames (the
#: sentences whose false positives are the extrinsic gap), insults and praise in training-style frames.
ALIGNED_FRAMES: dict[str, tuple[str, ...]] = {
    "identity": tuple(f.replace("{g}", "{w}") for f in SUITE_NONTOXIC),
    "quality": ("people are {w}.", "honestly they are so {w}.", "i think the drivers are {w}.",
                "the neighbours were {w}.", "why are fans always so {w}?", "the students at the market were {w}.",
                "tourists are {w}.", "i met some gamers today, they were {w}.", "politicians are so {w}.",
                "the customers here are {w}."),
}
#: The same word sets in generic contexts (words aligned, data not): CEAT's "term" frames for both kinds.
GENERIC_FRAMES: dict[str, tuple[str, ...]] = {"identity": CONTEXT_FRAMES["term"], "quality": CONTEXT_FRAMES["term"]}


__all__ = [
    "ALIGNED_FRAMES", "DEBIAS_FRAMES", "GENERIC_FRAMES", "GENERIC_TARGETS", "IDENTITY_PAIRS", "IDENTITY_TERMS",
    "INSULTS", "INSULT_NOUNS", "PRAISE", "PRAISE_NOUNS", "TARGETED_TERMS", "GapResult", "SentenceVectors",
    "aligned_association_test", "counterfactual_pairs", "identity_gaps", "identity_test_suite",
    "toxicity_training_set", "train_toxicity_classifier",
]
