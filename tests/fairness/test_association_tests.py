"""WEAT, the permutation test, the random-effects combination and CEAT, on small hand-computed cases."""

import math
import warnings

import numpy as np
import pytest

from trustml.fairness import (
    AssociationTest, DegenerateSampleWarning, WordSet, WEAT_TESTS, association, ceat_from_vectors, context_corpus,
    permutation_p_value, random_effects, seat_sentences, weat, weat_effect_size, weat_p_value, weat_statistic,
)

# Hand-computed case: s(w, A, B) = cos(w, a) − cos(w, b) with a = e1, b = e2.
A = np.array([[1.0, 0.0]])
B = np.array([[0.0, 1.0]])
X = np.array([[1.0, 0.0], [1.0, 1.0]])  # s = 1, 0
Y = np.array([[0.0, 1.0], [2.0, 2.0]])  # s = -1, 0


def test_association_by_hand():
    np.testing.assert_allclose(association(X, A, B), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(association(Y, A, B), [-1.0, 0.0], atol=1e-12)


def test_effect_size_by_hand():
    # mean difference 0.5 − (−0.5) = 1; joint {1, 0, −1, 0}: sample variance 2/3  →  d = 1/sqrt(2/3)
    assert weat_effect_size(X, Y, A, B) == pytest.approx(math.sqrt(1.5))
    assert weat_statistic(X, Y, A, B) == pytest.approx(2.0)


def test_p_value_by_hand():
    # Six re-partitions of {1, 0, −1, 0} into pairs; X-sums 1, 0, 1, −1, 0, −1: two reach the observed 1.
    assert weat_p_value(X, Y, A, B) == pytest.approx(1 / 3)
    result = weat(X, Y, A, B)
    assert result.exact and result.n_permutations == 6 and result.p_value == pytest.approx(1 / 3)


def test_symmetries_and_scale_invariance():
    rng = np.random.default_rng(0)
    x, y, a, b = (rng.normal(size=(6, 5)) for _ in range(4))
    d = weat_effect_size(x, y, a, b)
    assert weat_effect_size(y, x, a, b) == pytest.approx(-d)
    assert weat_effect_size(x, y, b, a) == pytest.approx(-d)
    assert weat_effect_size(3 * x, 0.5 * y, 2 * a, b) == pytest.approx(d)  # cosine: lengths do not matter


def test_perfect_separation_has_the_smallest_exact_p():
    rng = np.random.default_rng(1)
    a, b = np.eye(4)[:1] + 0.01 * rng.normal(size=(3, 4)), np.eye(4)[1:2] + 0.01 * rng.normal(size=(3, 4))
    x = np.eye(4)[:1] + 0.1 * rng.normal(size=(8, 4))
    y = np.eye(4)[1:2] + 0.1 * rng.normal(size=(8, 4))
    result = weat(x, y, a, b)
    assert result.exact and result.n_permutations == math.comb(16, 8)
    assert result.p_value == pytest.approx(1 / math.comb(16, 8))
    assert result.effect_size > 1.5


def test_sampled_p_value_matches_exact_and_is_seeded():
    rng = np.random.default_rng(2)
    s_x, s_y = rng.normal(0.3, 1, size=7), rng.normal(0, 1, size=7)
    exact, is_exact, _ = permutation_p_value(s_x, s_y)
    sampled, is_sampled_exact, used = permutation_p_value(s_x, s_y, exact_limit=0, n_permutations=20_000, seed=3)
    assert is_exact and not is_sampled_exact and used == 20_000
    assert sampled == pytest.approx(exact, abs=0.015)
    assert permutation_p_value(s_x, s_y, exact_limit=0, seed=3) == permutation_p_value(s_x, s_y, exact_limit=0, seed=3)


@pytest.mark.parametrize("bad, match", [
    (dict(X=np.zeros((0, 2))), "X is empty"),
    (dict(Y=np.ones((2, 3))), "dimension"),
    (dict(A=np.ones(2)), "2-D"),
    (dict(B=np.array([[0.0, 0.0]])), "zero vector"),
    (dict(A=np.array([[np.nan, 1.0]])), "NaN"),
])
def test_bad_input(bad, match):
    sets = dict(X=X, Y=Y, A=A, B=B) | bad
    with pytest.raises(ValueError, match=match):
        weat_effect_size(sets["X"], sets["Y"], sets["A"], sets["B"])


def test_no_spread_is_an_error():
    with pytest.raises(ValueError, match="std = 0"):
        weat_effect_size(A, A, A, B)


def _reference_random_effects(es, v):
    """DerSimonian & Laird (1986), written out with loops."""
    w = [1 / x for x in v]
    sw = sum(w)
    mean_fixed = sum(wi * e for wi, e in zip(w, es)) / sw
    q = sum(wi * (e - mean_fixed) ** 2 for wi, e in zip(w, es))
    c = sw - sum(wi * wi for wi in w) / sw
    tau2 = max(0.0, (q - (len(es) - 1)) / c)
    w_star = [1 / (x + tau2) for x in v]
    combined = sum(wi * e for wi, e in zip(w_star, es)) / sum(w_star)
    se = math.sqrt(1 / sum(w_star))
    return combined, se, tau2, q, 0.5 * math.erfc(combined / se / math.sqrt(2))


def test_random_effects_against_direct_computation():
    rng = np.random.default_rng(4)
    for heterogeneity in (0.0, 0.5):
        es = rng.normal(0.4, 0.1 + heterogeneity, size=30)
        v = rng.uniform(0.01, 0.2, size=30)
        result = random_effects(es, v)
        combined, se, tau2, q, p = _reference_random_effects(es.tolist(), v.tolist())
        assert result.combined_effect_size == pytest.approx(combined)
        assert result.standard_error == pytest.approx(se)
        assert result.tau_squared == pytest.approx(tau2)
        assert result.q == pytest.approx(q)
        assert result.p_value == pytest.approx(p)
    assert random_effects(es, v).tau_squared > 0  # the heterogeneous case is detected


def test_random_effects_hand_case():
    # Equal estimates: Q = 0, τ² = 0, CES = the estimate, SE = sqrt(v/N).
    result = random_effects([0.5, 0.5, 0.5, 0.5], [0.04] * 4)
    assert result.tau_squared == 0 and result.combined_effect_size == pytest.approx(0.5)
    assert result.standard_error == pytest.approx(0.1)
    # Two estimates 0 and 1 with v = 0.1: Q = 5, df = 1, c = 10 → τ² = 0.4, SE = sqrt(1 / (2 / 0.5)) = 0.5.
    result = random_effects([0.0, 1.0], [0.1, 0.1])
    assert result.tau_squared == pytest.approx(0.4) and result.standard_error == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2"):
        random_effects([0.1], [0.1])
    with pytest.raises(ValueError, match="> 0"):
        random_effects([0.1, 0.2], [0.1, 0.0])


def _toy_test():
    return AssociationTest("toy", WordSet("x", ("x1", "x2", "x3")), WordSet("y", ("y1", "y2", "y3")),
                           WordSet("a", ("a1", "a2")), WordSet("b", ("b1", "b2")))


def test_ceat_samples_are_weat_on_the_drawn_contexts_and_combine_by_random_effects():
    rng = np.random.default_rng(5)
    test = _toy_test()
    vectors = {w: rng.normal(size=(int(rng.integers(3, 7)), 6)) for w in test.words}
    result = ceat_from_vectors(vectors, test, n_samples=40, seed=6, chunk_size=7)
    assert result.n_samples == result.n_draws == 40 and result.draws.shape == (40, len(test.words))
    for i in (0, 13, 39):
        picked = {w: vectors[w][result.draws[i, j]] for j, w in enumerate(result.vocabulary)}
        sets = [np.stack([picked[w] for w in s.words]) for s in test.sets]
        assert result.effect_sizes[i] == pytest.approx(weat_effect_size(*sets))
        s = np.concatenate([association(sets[0], sets[2], sets[3]), association(sets[1], sets[2], sets[3])])
        assert result.variances[i] == pytest.approx(s.var(ddof=1))
    combined = random_effects(result.effect_sizes, result.variances)
    assert result.combined_effect_size == pytest.approx(combined.combined_effect_size)
    assert result.tau_squared == pytest.approx(combined.tau_squared)
    # Seeded: the same seed gives the same samples.
    np.testing.assert_array_equal(ceat_from_vectors(vectors, test, n_samples=40, seed=6).effect_sizes,
                                  result.effect_sizes)


def test_ceat_with_one_context_per_word_is_refused_not_p_zero():
    # Every draw is the same sample: the old code combined 1000 copies of one WEAT, SE = sqrt(v/1000), p = 0.0.
    rng = np.random.default_rng(7)
    test = _toy_test()
    vectors = {w: rng.normal(size=(1, 4)) for w in test.words}
    with pytest.raises(ValueError, match="at least 2 distinct samples.*use weat"):
        ceat_from_vectors(vectors, test, n_samples=1000)
    sets = [np.concatenate([vectors[w] for w in s.words]) for s in test.sets]
    assert 0 < weat(*sets).p_value  # the single sample's honest p-value comes from WEAT's permutation test


def test_ceat_combines_distinct_draws_only_and_warns():
    # One word has two contexts, every other word one: only 2 distinct draws exist.
    rng = np.random.default_rng(8)
    test = _toy_test()
    vectors = {w: rng.normal(size=(2 if w == "x1" else 1, 4)) for w in test.words}
    with pytest.warns(DegenerateSampleWarning, match="998 of 1000 CEAT draws repeat.*only 2 distinct"):
        result = ceat_from_vectors(vectors, test, n_samples=1000, seed=0)
    assert result.n_samples == 2 and result.n_draws == 1000 and len(np.unique(result.draws, axis=0)) == 2
    effect_sizes = []
    for context in (0, 1):
        sets = [np.stack([vectors[w][context if w == "x1" else 0] for w in s.words]) for s in test.sets]
        effect_sizes.append(weat_effect_size(*sets))
    np.testing.assert_allclose(np.sort(result.effect_sizes), np.sort(effect_sizes))
    two = random_effects(result.effect_sizes, result.variances)
    assert result.standard_error == pytest.approx(two.standard_error)
    # With many contexts per word no draw repeats: no warning, every draw is a sample.
    many = {w: rng.normal(size=(20, 4)) for w in test.words}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ceat_from_vectors(many, test, n_samples=300, seed=0)
    assert result.n_samples == result.n_draws == 300


def test_ceat_bad_input():
    test = _toy_test()
    vectors = {w: np.ones((2, 3)) + np.arange(3) * i for i, w in enumerate(test.words)}
    with pytest.raises(KeyError, match="no contextual vectors"):
        ceat_from_vectors({k: v for k, v in vectors.items() if k != "a1"}, test)
    with pytest.raises(ValueError, match="dimension"):
        ceat_from_vectors(vectors | {"b2": np.ones((2, 5))}, test)
    with pytest.raises(ValueError, match="n_samples"):
        ceat_from_vectors(vectors, test, n_samples=1)
    empty = AssociationTest("empty", WordSet("x", ()), test.Y, test.A, test.B)
    with pytest.raises(ValueError, match="empty"):
        ceat_from_vectors(vectors, empty)


def test_word_sets_are_the_papers():
    assert len(WEAT_TESTS) == 10
    t1 = WEAT_TESTS["weat1"]
    assert [len(s.words) for s in t1.sets] == [25, 25, 25, 25]
    assert "aster" in t1.X.words and "weevil" in t1.Y.words and "vacation" in t1.A.words and "prison" in t1.B.words
    assert [len(s.words) for s in WEAT_TESTS["weat3"].sets] == [32, 32, 25, 25]
    assert [len(s.words) for s in WEAT_TESTS["weat6"].sets] == [8, 8, 8, 8]
    for test in WEAT_TESTS.values():
        assert len(test.X.words) == len(test.Y.words) and all(s.words for s in test.sets)


def test_contexts_and_seat_sentences_contain_their_word():
    test = WEAT_TESTS["weat6"]
    corpus = context_corpus(test, contexts_per_word=5, seed=0)
    assert set(corpus) == set(test.words) and all(len(c) == 5 for c in corpus.values())
    assert all(word in text for word, texts in corpus.items() for text in texts)
    assert context_corpus(test, contexts_per_word=5, seed=0) == corpus
    sentences = seat_sentences(test.X)
    assert len(sentences) == 8 * 8 and "This is John." in sentences
    with pytest.raises(ValueError, match="contexts_per_word"):
        context_corpus(test, contexts_per_word=0)
    with pytest.raises(ValueError, match="empty"):
        seat_sentences(WordSet("none", ()))


@pytest.mark.parametrize("s_x, s_y, match", [
    (np.array([0.1, np.nan]), np.array([0.0, 0.2]), "s_x contains NaN"),
    (np.array([0.1, 0.3]), np.array([np.inf, 0.2]), "s_y contains NaN or infinite"),
    (np.array([]), np.array([0.0, 0.2]), "s_x is empty"),
    (np.array([0.1, 0.3]), np.array([]), "s_y is empty"),
    (np.ones((2, 2)), np.array([0.0, 0.2]), "1-D"),
])
def test_permutation_p_value_rejects_nan_empty_and_wrong_shape(s_x, s_y, match):
    # The old code returned p = 0.0 for a NaN association and p = 1.0 for an empty set.
    with pytest.raises(ValueError, match=match):
        permutation_p_value(s_x, s_y)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_permutations=0), "n_permutations must be an int >= 1"),
    (dict(n_permutations=2.5), "n_permutations"),
    (dict(exact_limit=-1), "exact_limit must be an int >= 0"),
])
def test_permutation_p_value_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        permutation_p_value(np.array([0.1, 0.3]), np.array([0.0, 0.2]), **kwargs)


def test_permutation_p_value_degenerate_sets():
    # One word per set: two partitions, the observed one and its mirror.
    assert permutation_p_value(np.array([1.0]), np.array([0.0]))[:2] == (0.5, True)
    # All associations equal: every partition ties with the observed statistic, p = 1.
    assert permutation_p_value(np.zeros(4), np.zeros(4))[0] == 1.0


def test_ceat_rejects_bad_sample_settings_and_zero_spread():
    test = _toy_test()
    rng = np.random.default_rng(9)
    vectors = {w: rng.normal(size=(3, 4)) for w in test.words}
    with pytest.raises(ValueError, match="chunk_size"):
        ceat_from_vectors(vectors, test, chunk_size=0)
    with pytest.raises(ValueError, match="n_samples"):
        ceat_from_vectors(vectors, test, n_samples=10.5)
    same = {w: np.tile(v[:1], (3, 1)) for w, v in vectors.items()}
    for w in test.X.words + test.Y.words:  # every target the same vector in every context: std = 0
        same[w] = np.tile(np.array([[1.0, 0.0, 0.0, 0.0]]), (3, 1)) * (1 + np.arange(3))[:, None]
    with pytest.raises(ValueError, match="std = 0"):
        ceat_from_vectors(same, test, n_samples=20)
