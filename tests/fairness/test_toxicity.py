"""The templated identity test suite, the planted-bias training set and the toxicity classifier."""

import numpy as np
import pandas as pd
import pytest

from trustml.fairness import (
    IDENTITY_TERMS, TARGETED_TERMS, counterfactual_pairs, identity_gaps, identity_test_suite, toxicity_training_set,
    train_toxicity_classifier,
)


def test_suite_swaps_only_the_group_term():
    suite = identity_test_suite()
    assert set(suite["group"]) == set(IDENTITY_TERMS)
    per_template = suite.groupby("template")
    assert (per_template["group"].nunique() == len(IDENTITY_TERMS)).all()
    assert (per_template["label"].nunique() == 1).all()
    # Rows of one template differ only in the term: replacing it by a placeholder gives one sentence.
    blanked = suite.apply(lambda r: r["text"].replace(r["group"], "<g>"), axis=1)
    assert (blanked.groupby(suite["template"]).nunique() == 1).all()
    assert suite.groupby("group")["label"].mean().eq(0.5).all()
    with pytest.raises(ValueError, match="at least two"):
        identity_test_suite(terms=["gay"])


def test_training_set_plants_the_bias_it_is_asked_for():
    for bias in (0.0, 0.6):
        train = toxicity_training_set(n=6000, identity_bias=bias, seed=1)
        mentioned = train[train["group"] != ""]
        toxic_share = mentioned.groupby(mentioned["group"].isin(TARGETED_TERMS))["label"].mean()
        assert toxic_share[True] == pytest.approx((1 + bias) / 2, abs=0.04)
        assert toxic_share[False] == pytest.approx(0.5, abs=0.04)
        plain = train[train["group"] == ""]
        assert plain["label"].mean() == pytest.approx(0.5, abs=0.03)
    pd.testing.assert_frame_equal(toxicity_training_set(n=50, seed=3), toxicity_training_set(n=50, seed=3))
    # One seed, two bias values: only rows that mention a targeted term can change.
    low, high = (toxicity_training_set(n=2000, identity_bias=b, seed=4) for b in (0.0, 0.8))
    changed = low["text"] != high["text"]
    assert changed.any() and low.loc[changed, "group"].isin(TARGETED_TERMS).all()
    assert (high.loc[changed, "label"] == 1).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(identity_bias=1.0), "identity_bias"), (dict(mention_rate=1.5), "mention_rate"), (dict(n=1), "n must"),
    (dict(targeted=["martian"]), "targeted"),
])
def test_training_set_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        toxicity_training_set(**kwargs)


def test_planted_bias_creates_a_false_positive_gap():
    suite = identity_test_suite()
    gaps = {}
    for bias in (0.0, 0.9):
        train = toxicity_training_set(n=3000, identity_bias=bias, seed=0)
        model = train_toxicity_classifier(train["text"], train["label"])
        scores = model.predict_proba(suite[["text"]])[:, 1]  # (n, 1) input, as ThresholdOptimizer passes it
        gaps[bias] = identity_gaps(scores, suite)
        assert ((scores >= 0.5) == suite["label"]).mean() > 0.6
    assert gaps[0.9].fpr_gap > gaps[0.0].fpr_gap + 0.2
    assert gaps[0.9].score_gap > gaps[0.0].score_gap


def test_identity_gaps_by_hand():
    suite = pd.DataFrame({"label": [0, 0, 1, 1, 0, 0, 1, 1], "group": ["gay"] * 4 + ["straight"] * 4,
                          "targeted": [True] * 4 + [False] * 4, "text": [""] * 8, "template": list("abcdabcd")})
    scores = np.array([0.9, 0.1, 0.8, 0.9, 0.2, 0.1, 0.3, 0.9])
    gaps = identity_gaps(scores, suite)
    assert gaps.fpr_gap == pytest.approx(0.5 - 0.0)
    assert gaps.fnr_gap == pytest.approx(0.0 - 0.5)
    assert gaps.score_gap == pytest.approx(0.5 - 0.15)
    with pytest.raises(ValueError, match="one value per suite row"):
        identity_gaps(scores[:3], suite)


def test_classifier_options_and_pairs():
    with pytest.raises(ValueError, match="features"):
        train_toxicity_classifier(["a b"], [1], features="tfidf")
    with pytest.raises(ValueError, match="view"):
        train_toxicity_classifier(["a b"], [1], features="encoder")
    pairs = counterfactual_pairs()
    assert ("he is gay.", "he is straight.") in pairs and len(pairs) == 10 * 6
    suite_texts = set(identity_test_suite()["text"])
    assert not any(a in suite_texts or b in suite_texts for a, b in pairs)  # not fitted on the evaluation data


def test_aligned_test_and_frames():
    from trustml.fairness import ALIGNED_FRAMES, GENERIC_FRAMES, aligned_association_test, context_corpus

    test = aligned_association_test()
    assert test.X.words == TARGETED_TERMS and len(test.Y.words) == len(TARGETED_TERMS)
    aligned = context_corpus(test, frames=ALIGNED_FRAMES)
    generic = context_corpus(test, frames=GENERIC_FRAMES)
    suite_texts = set(identity_test_suite(prefixes=("",))["text"])
    assert set(aligned["gay"]) <= suite_texts  # data-aligned contexts are the suite's own sentences
    assert not set(generic["gay"]) & suite_texts
