"""Empirical privacy audits: valid lower bounds on ε (issue #15, item 7).

Before: the "95 % lower bound" took the best of every ROC threshold (and of four attacks) on the same data.
On a mechanism that leaks nothing it reported a positive bound in ~19 % of runs. Now the threshold / attack
and guess counts are chosen on data the bound does not use, and one training run is audited with the
one-run audit of Steinke, Nasr & Jagielski (2023)."""

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from trustml.privacy.attacks import (
    AttackResult, MembershipGame, audit_with_selection, best_threshold, clopper_pearson, epsilon_lower_bound,
    guesses, make_trainer, one_run_audit, one_run_epsilon_lower_bound, one_run_p_value,
)
from trustml.privacy.attacks.audit import EPSILON_RESOLUTION


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 250), (999, 1000)]:
        low, high = clopper_pearson(k, n, confidence=0.9)
        reference = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        assert low == pytest.approx(reference.low, abs=1e-9) and high == pytest.approx(reference.high, abs=1e-9)
    for bad in (1.0, 0.0, float("nan"), True):
        with pytest.raises(ValueError, match="confidence must be in"):
            clopper_pearson(1, 2, confidence=bad)
    with pytest.raises(ValueError, match="finite"):
        clopper_pearson(float("nan"), 2)


def randomized_response(epsilon, n, seed):
    """An exactly ε-DP membership mechanism: it reports the true bit with probability e^ε / (1 + e^ε).
    Membership is an independent fair coin per example (what the one-run audit assumes)."""
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.5
    truthful = rng.random(n) < math.exp(epsilon) / (1 + math.exp(epsilon))
    return np.where(truthful, is_member, ~is_member).astype(float), is_member


def null_attacks(n, seed, n_attacks=4):
    """Four "attacks" whose scores ignore membership: the mechanism leaks nothing (ε = 0, δ = 0)."""
    rng = np.random.default_rng(seed)
    member = rng.random(n) < 0.5
    return [AttackResult(f"attack {j}", rng.normal(size=n), member) for j in range(n_attacks)]


# ------------------------------------------------------------------ the invalid procedure, and the valid one

def test_best_of_every_threshold_and_attack_on_the_same_data_is_not_a_95_percent_bound():
    """The old procedure: the best threshold of each attack, the best attack, bounded on the same data."""
    positive = [max(epsilon_lower_bound(r, threshold=best_threshold(r, delta=0.0), delta=0.0).epsilon_lower
                    for r in null_attacks(800, seed)) > 0 for seed in range(100)]
    assert np.mean(positive) > 0.1  # far more than the 5 % a 95 % bound allows (measured: 19 %)


def test_selection_on_held_out_examples_keeps_the_bound_valid_on_a_null_mechanism():
    positive = [audit_with_selection(null_attacks(800, seed), delta=0.0, seed=seed).epsilon_lower > 0
                for seed in range(100)]
    assert np.mean(positive) <= 0.05  # measured: 1 %


def test_one_run_audit_of_an_exactly_epsilon_dp_mechanism_is_valid_and_nearly_tight():
    epsilon = 1.0
    exceed = []
    for seed in range(100):
        scores, member = randomized_response(epsilon, 1000, seed)
        audit = one_run_audit(scores, member, k_member=300, k_nonmember=300, delta=0.0, confidence=0.95)
        exceed.append(audit.epsilon_lower > epsilon)
    assert np.mean(exceed) <= 0.05
    scores, member = randomized_response(epsilon, 20000, 0)
    audit = one_run_audit(scores, member, k_member=10000, k_nonmember=10000, delta=0.0)
    assert epsilon - 0.1 < audit.epsilon_lower <= epsilon
    assert audit.n_guesses == 20000 and abs(audit.accuracy - math.exp(1) / (1 + math.exp(1))) < 0.01


def test_classical_audit_with_a_threshold_fixed_in_advance_is_valid_and_tight():
    for epsilon in (0.5, 2.0):
        bounds = [epsilon_lower_bound(*randomized_response(epsilon, 20000, seed), threshold=0.5, delta=0.0,
                                      confidence=0.99).epsilon_lower for seed in range(5)]
        assert max(bounds) <= epsilon and min(bounds) > epsilon - 0.2
    exceed = [epsilon_lower_bound(*randomized_response(1.0, 1000, seed), threshold=0.5, delta=0.0,
                                  confidence=0.9).epsilon_lower > 1.0 for seed in range(200)]
    assert np.mean(exceed) <= 0.1


def test_a_threshold_chosen_on_other_trials_gives_a_valid_bound_on_fresh_ones():
    exceed = []
    for seed in range(100):
        selection, fresh = randomized_response(1.0, 500, seed), randomized_response(1.0, 500, seed + 1000)
        threshold = best_threshold(*selection, delta=0.0)
        exceed.append(epsilon_lower_bound(*fresh, threshold=threshold, delta=0.0).epsilon_lower > 1.0)
    assert np.mean(exceed) <= 0.05


# ------------------------------------------------------------------ the one-run bound against plain references

def p_value_reference(m, r, v, epsilon, delta):
    """Steinke, Nasr & Jagielski (2023), Thm. 5.2, written as a plain loop."""
    p = math.exp(epsilon) / (1 + math.exp(epsilon))
    tail = sum(binom.pmf(k, r, p) for k in range(v, r + 1))
    alpha, mass = 0.0, 0.0
    for i in range(1, v + 1):
        mass += binom.pmf(v - i, r, p)
        alpha = max(alpha, mass / i)
    return min(1.0, tail + 2 * m * delta * alpha)


@pytest.mark.parametrize("m, r, v, epsilon, delta", [
    (100, 20, 15, 0.5, 0.0), (1000, 200, 150, 1.0, 1e-5), (1000, 200, 150, 1.0, 1e-3), (50, 10, 10, 3.0, 1e-4),
    (500, 100, 0, 1.0, 1e-5), (500, 100, 40, 0.0, 1e-5),
])
def test_one_run_p_value_matches_the_papers_formula(m, r, v, epsilon, delta):
    got = one_run_p_value(n_examples=m, n_guesses=r, n_correct=v, epsilon=epsilon, delta=delta)
    assert got == pytest.approx(p_value_reference(m, r, v, epsilon, delta), rel=1e-9, abs=1e-12)


def test_one_run_bound_is_where_the_p_value_crosses_the_level():
    bound = one_run_epsilon_lower_bound(n_examples=1000, n_guesses=200, n_correct=160, delta=1e-5)
    assert one_run_p_value(n_examples=1000, n_guesses=200, n_correct=160, epsilon=bound, delta=1e-5) < 0.05
    step = EPSILON_RESOLUTION  # the bisection's width: the bound is the lower end
    assert one_run_p_value(n_examples=1000, n_guesses=200, n_correct=160, epsilon=bound + step, delta=1e-5) >= 0.05
    # With δ = 0 it is the one-sided Clopper–Pearson bound on the guess accuracy, as a log-odds.
    low = binomtest(160, 200, alternative="greater").proportion_ci(confidence_level=0.95, method="exact").low
    zero = one_run_epsilon_lower_bound(n_examples=1000, n_guesses=200, n_correct=160, delta=0.0)
    assert math.log(low / (1 - low)) - EPSILON_RESOLUTION <= zero <= math.log(low / (1 - low))
    assert bound < zero  # δ > 0 can only weaken the evidence
    assert one_run_epsilon_lower_bound(n_examples=1000, n_guesses=200, n_correct=100, delta=0.0) == 0.0


def test_guesses_take_the_extremes_and_abstain_in_between():
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    assert guesses(scores, k_member=2, k_nonmember=1).tolist() == [0, 1, -1, 0, 1]
    assert guesses(scores, k_member=0, k_nonmember=0).tolist() == [0] * 5
    with pytest.raises(ValueError, match="k_member"):
        guesses(scores, k_member=4, k_nonmember=2)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, message", [
    (dict(n_examples=10, n_guesses=20, n_correct=5), "n_correct <= n_guesses <= n_examples"),
    (dict(n_examples=10, n_guesses=5, n_correct=6), "n_correct <= n_guesses"),
    (dict(n_examples=-1, n_guesses=0, n_correct=0), "n_examples must be an integer"),
    (dict(n_examples=10.5, n_guesses=5, n_correct=3), "n_examples must be an integer"),
    (dict(n_examples=10, n_guesses=5, n_correct=3, delta=1.0), "delta"),
    (dict(n_examples=10, n_guesses=5, n_correct=3, delta=float("nan")), "delta"),
    (dict(n_examples=10, n_guesses=5, n_correct=3, confidence=1.0), "confidence"),
])
def test_bad_counts(kwargs, message):
    arguments = dict(delta=0.0) | kwargs
    with pytest.raises(ValueError, match=message):
        one_run_epsilon_lower_bound(**arguments)


def test_bad_scores_and_selection_options():
    scores, member = randomized_response(1.0, 400, 1)
    with pytest.raises(ValueError, match="finite"):
        one_run_audit(np.where(np.arange(400) == 3, np.nan, scores), member, k_member=10, k_nonmember=10, delta=0.0)
    with pytest.raises(ValueError, match="same length"):
        one_run_audit(scores, member[:10], k_member=1, k_nonmember=1, delta=0.0)
    with pytest.raises(ValueError, match="both members and non-members"):
        one_run_audit(scores, np.ones(400, bool), k_member=1, k_nonmember=1, delta=0.0)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        epsilon_lower_bound(scores, member, threshold=float("nan"), delta=0.0)
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1\)"):
        epsilon_lower_bound(scores, member, threshold=0.5, delta=1.0)
    with pytest.raises(ValueError, match="is_member is required"):
        epsilon_lower_bound(scores, threshold=0.5, delta=0.0)
    result = AttackResult("rr", scores, member)
    with pytest.raises(ValueError, match="is_member only with a score array"):
        epsilon_lower_bound(result, member, threshold=0.5, delta=0.0)
    with pytest.raises(ValueError, match="selection_fraction"):
        audit_with_selection(result, delta=0.0, selection_fraction=1.0)
    with pytest.raises(ValueError, match="fractions"):
        audit_with_selection(result, delta=0.0, fractions=[0.1, 0.7])
    with pytest.raises(ValueError, match="must not be empty"):
        audit_with_selection([], delta=0.0)
    other = AttackResult("other", scores, ~member)
    with pytest.raises(ValueError, match="same examples"):
        audit_with_selection([result, other], delta=0.0)


def test_summaries_name_the_procedure():
    scores, member = randomized_response(2.0, 2000, 3)
    audit = audit_with_selection(AttackResult("rr", scores, member), delta=1e-5, epsilon_claimed=2.0)
    assert "one-run audit (Steinke et al. 2023), rr" in audit.summary() and "accountant ε = 2.00" in audit.summary()
    assert audit.n_examples == 1000 and 0 < audit.epsilon_lower <= 2.0
    assert set(audit.selection.columns) >= {"attack", "member fraction", "non-member fraction", "ε lower bound"}
    assert audit.to_frame().loc["rr", "accountant ε"] == 2.0
    fixed = epsilon_lower_bound(AttackResult("rr", scores, member), threshold=0.5, delta=1e-5, epsilon_claimed=2.0)
    assert "threshold fixed in advance" in fixed.summary()


# ------------------------------------------------------------------ on trained models

@pytest.fixture(scope="module")
def population():
    from trustml.data import load_intent_task, subset

    task = load_intent_task(n_devices=60, seed=0)
    return task, subset(task.train, np.arange(400))


def audit(task, population, epsilon):
    train_fn = make_trainer(vocab_size=task.tokenizer.vocab_size, num_classes=task.num_classes, epsilon=epsilon,
                            delta=1e-3, epochs=30, batch_size=25, lr=1e-2)
    game = MembershipGame.train(train_fn, population, n_shadows=4, n_targets=2, progress=False)
    results = game.attack(["LOSS", "LiRA online"])
    return results, audit_with_selection(results, delta=1e-3, epsilon_claimed=game.epsilon)


def test_audit_finds_leakage_without_noise_and_respects_strong_dp(population):
    task, data = population
    leaky, leaky_audit = audit(task, data, math.inf)
    assert leaky["LiRA online"].auc > 0.7
    assert leaky_audit.epsilon_lower > 0.5  # clear evidence of leakage, from examples the choice never saw
    private, private_audit = audit(task, data, 1.0)
    assert private_audit.epsilon_claimed == pytest.approx(1.0, abs=0.05)  # the accountant's ε
    assert private_audit.epsilon_lower < private_audit.epsilon_claimed  # empirical leakage within the guarantee
    assert private["LiRA online"].auc < leaky["LiRA online"].auc - 0.15
    assert abs(private["LiRA online"].auc - 0.5) < 0.1
