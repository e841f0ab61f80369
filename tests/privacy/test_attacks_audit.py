"""The empirical privacy audit: a lower bound on ε from attack TPR/FPR with Clopper–Pearson intervals."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from trustml.privacy.attacks import AttackResult, MembershipGame, clopper_pearson, epsilon_lower_bound, make_trainer


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 250), (999, 1000)]:
        low, high = clopper_pearson(k, n, confidence=0.9)
        reference = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        assert low == pytest.approx(reference.low, abs=1e-9) and high == pytest.approx(reference.high, abs=1e-9)
    with pytest.raises(ValueError, match="confidence must be in"):
        clopper_pearson(1, 2, confidence=1.0)


def randomized_response(epsilon, n, seed):
    """An exactly ε-DP membership mechanism: it reports the true bit with probability e^ε / (1 + e^ε)."""
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.5
    truthful = rng.random(n) < math.exp(epsilon) / (1 + math.exp(epsilon))
    return np.where(truthful, is_member, ~is_member).astype(float), is_member


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_bound_is_valid_and_tight_on_a_mechanism_with_known_epsilon(epsilon):
    bounds = [epsilon_lower_bound(*randomized_response(epsilon, 20000, seed), delta=0.0, confidence=0.99).epsilon_lower
              for seed in range(5)]
    assert max(bounds) <= epsilon  # never claims more leakage than the mechanism has
    assert min(bounds) > epsilon - 0.2  # and with 20 000 trials it finds nearly all of it


def test_bound_holds_with_about_the_stated_confidence():
    """Coverage: over 200 repetitions, a 90 % bound exceeds the true ε rarely (two inequalities are
    tried, each with two one-sided 5 % tails, so at most ~20 % by the union bound; far fewer in practice)."""
    exceed = [epsilon_lower_bound(*randomized_response(1.0, 1000, seed), delta=0.0, confidence=0.9).epsilon_lower > 1.0
              for seed in range(200)]
    assert np.mean(exceed) < 0.1


def test_guessing_gives_no_evidence_and_fewer_trials_give_looser_bounds():
    rng = np.random.default_rng(0)
    guess = epsilon_lower_bound(rng.normal(size=2000), rng.random(2000) < 0.5, delta=1e-5)
    assert guess.epsilon_lower < 0.25
    small = epsilon_lower_bound(*randomized_response(2.0, 200, 0), delta=0.0)
    large = epsilon_lower_bound(*randomized_response(2.0, 20000, 0), delta=0.0)
    assert small.epsilon_lower < large.epsilon_lower
    assert small.epsilon_lower <= small.epsilon_point


def test_fixed_threshold_summary_and_inputs():
    scores, is_member = randomized_response(1.0, 4000, 1)
    fixed = epsilon_lower_bound(AttackResult("rr", scores, is_member), delta=1e-5, threshold=0.5, epsilon_claimed=1.0)
    assert fixed.threshold == 0.5 and fixed.attack == "rr"
    assert 0.5 < fixed.tpr < 0.9 and 0.1 < fixed.fpr < 0.5
    assert "accountant ε = 1.00" in fixed.summary()
    assert fixed.to_frame().loc["rr", "accountant ε"] == 1.0
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1\)"):
        epsilon_lower_bound(scores, is_member, delta=1.0)
    with pytest.raises(ValueError, match="same length"):
        epsilon_lower_bound(scores, is_member[:10], delta=0.0)
    with pytest.raises(ValueError, match="is_member is required"):
        epsilon_lower_bound(scores, delta=0.0)


@pytest.fixture(scope="module")
def population():
    from trustml.data import load_intent_task, subset

    task = load_intent_task(n_devices=60, seed=0)
    return task, subset(task.train, np.arange(400))


def audit(task, population, epsilon):
    train_fn = make_trainer(vocab_size=task.tokenizer.vocab_size, num_classes=task.num_classes, epsilon=epsilon,
                            delta=1e-3, epochs=30, batch_size=25, lr=1e-2)
    game = MembershipGame.train(train_fn, population, n_shadows=4, n_targets=2, progress=False)
    result = game.attack(["LiRA online"])["LiRA online"]
    return result, epsilon_lower_bound(result, delta=1e-3, epsilon_claimed=game.epsilon)


def test_audit_finds_leakage_without_noise_and_respects_strong_dp(population):
    task, data = population
    leaky, leaky_audit = audit(task, data, math.inf)
    assert leaky.auc > 0.7
    assert leaky_audit.epsilon_lower > 1.0  # clear evidence of leakage
    private, private_audit = audit(task, data, 1.0)
    assert private_audit.epsilon_claimed == pytest.approx(1.0, abs=0.05)  # the accountant's ε
    assert private_audit.epsilon_lower < private_audit.epsilon_claimed  # empirical leakage within the guarantee
    assert private.auc < leaky.auc - 0.15
    assert abs(private.auc - 0.5) < 0.1
