"""Membership-inference attacks and their results object (trustml.privacy.attacks)."""

import math

import matplotlib
import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from trustml.privacy.attacks import (
    ATTACKS, AttackResult, MembershipGame, balanced_membership, logit_confidence, lira_offline, lira_online,
    loss_attack, per_example_loss, plot_roc, random_halves, results_table, shadow_attack,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def tiny_task():
    from trustml.data import load_intent_task

    return load_intent_task(n_devices=40, seed=0)


def gaussian_scores(n=2000, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.5
    return rng.normal(size=n) + shift * is_member, is_member


# --- results ---------------------------------------------------------------------------------------------

def test_auc_and_advantage_match_sklearn_and_brute_force():
    scores, is_member = gaussian_scores()
    result = AttackResult("toy", scores, is_member)
    assert result.auc == pytest.approx(roc_auc_score(is_member, scores))
    brute = max(abs((scores[is_member] >= t).mean() - (scores[~is_member] >= t).mean()) for t in scores)
    assert result.advantage == pytest.approx(brute)
    # Two unit Gaussians one σ apart: AUC = Φ(1/√2), advantage = 2Φ(1/2) − 1
    assert result.auc == pytest.approx(norm.cdf(1 / math.sqrt(2)), abs=0.03)
    assert result.advantage == pytest.approx(2 * norm.cdf(0.5) - 1, abs=0.05)


def test_tpr_at_low_fpr_reads_the_roc():
    scores, is_member = gaussian_scores(n=20000, shift=2.0)
    result = AttackResult("toy", scores, is_member)
    # Threshold at the (1 − f) quantile of N(0,1): TPR = 1 − Φ(z_f − 2)
    for fpr in (0.01, 0.001):
        expected = 1 - norm.cdf(norm.ppf(1 - fpr) - 2.0)
        assert result.tpr_at(fpr) == pytest.approx(expected, abs=0.05)
    assert result.tpr_at(0.001) <= result.tpr_at(0.01) <= result.tpr_at(0.5)
    perfect = AttackResult("perfect", is_member.astype(float), is_member)
    assert perfect.auc == 1.0 and perfect.tpr_at(0.001) == 1.0 and perfect.advantage == 1.0


def test_summary_table_and_plot():
    scores, is_member = gaussian_scores(n=400)
    result = AttackResult("toy", scores, is_member)
    text = result.summary()
    assert "AUC" in text and f"{result.auc:.3f}" in text and "0.1%" in text
    assert "resolve" in text  # 200 non-members cannot resolve 0.1 % FPR: said so
    table = results_table({"a": result, "b": AttackResult("b", -scores, is_member)})
    assert list(table.index) == ["toy", "b"]
    assert {"AUC", "advantage", "TPR@1.0%FPR", "TPR@0.1%FPR"} <= set(table.columns)
    assert table.loc["b", "AUC"] == pytest.approx(1 - result.auc)
    figure = plot_roc([result])
    axis = figure.axes[0]
    assert axis.get_xscale() == "log" and axis.get_yscale() == "log"


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1, 1.5])
def test_fpr_target_outside_unit_interval_is_an_error(fpr):
    result = AttackResult("toy", *gaussian_scores(n=100))
    with pytest.raises(ValueError, match=r"fpr must be in \(0, 1\)"):
        result.tpr_at(fpr)


def test_bad_membership_input_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        AttackResult("x", np.zeros(5), np.array([True, False]))
    with pytest.raises(ValueError, match="both members and non-members"):
        AttackResult("x", np.zeros(3), np.ones(3, bool))
    with pytest.raises(ValueError, match="finite"):
        AttackResult("x", np.array([0.0, np.nan]), np.array([True, False]))


# --- per-example signals ---------------------------------------------------------------------------------

def test_logit_confidence_and_loss_against_plain_formulas():
    torch.manual_seed(0)
    logits = torch.randn(50, 7, dtype=torch.float64) * 2
    labels = torch.randint(7, (50,))
    p = logits.softmax(-1)[torch.arange(50), labels]
    np.testing.assert_allclose(logit_confidence(logits, labels), torch.log(p / (1 - p)).numpy(), rtol=1e-9)
    np.testing.assert_allclose(per_example_loss(logits, labels),
                               torch.nn.functional.cross_entropy(logits, labels, reduction="none").numpy(), rtol=1e-9)
    confident = torch.tensor([[200.0, 0.0, 0.0]])  # p_y rounds to 1: the naive formula gives inf
    assert logit_confidence(confident, torch.tensor([0]))[0] == pytest.approx(200 - math.log(2))


def test_labels_outside_the_models_classes_and_length_mismatch():
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        per_example_loss(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        logit_confidence(logits, np.array([0, -1, 2, 1]))
    with pytest.raises(ValueError, match="same length"):
        loss_attack(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="shadow_logits must have shape"):
        lira_online(logits, np.zeros(4, int), np.zeros((3, 5, 3)), np.zeros((3, 5), bool))


# --- attacks on a synthetic population with known member / non-member distributions ------------------

def synthetic_population(n_examples=300, n_shadows=16, n_targets=1, gap=1.5, seed=0):
    """Logits whose φ is N(μ_i + gap, 0.5²) for models trained on example i and N(μ_i, 0.5²) otherwise —
    μ_i varies a lot between examples, so per-example calibration (LiRA) beats a global threshold (LOSS).
    The first ``n_targets`` rows are targets (independent halves), the others balanced shadows."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, n_examples)
    membership = np.concatenate([random_halves(n_examples, n_targets, seed=seed),
                                 balanced_membership(n_examples, n_shadows, seed=seed)])
    phi = mu + gap * membership + rng.normal(0, 0.5, membership.shape)
    logits = np.zeros(membership.shape + (2,))
    logits[..., 1] = phi  # two classes, label 1: φ = z_1 − z_0
    return logits, np.ones(n_examples, int), membership


def test_lira_beats_loss_when_examples_differ_in_difficulty():
    logits, labels, membership = synthetic_population()
    target, shadows = logits[0], logits[1:]
    auc = {name: AttackResult(name, ATTACKS[name](target, labels, shadows, membership[1:]), membership[0]).auc
           for name in ATTACKS}
    assert auc["LiRA online"] > 0.9 and auc["LiRA offline"] > 0.85
    assert auc["LOSS"] < 0.7  # the global threshold drowns in the per-example spread
    assert auc["LiRA online"] > auc["LOSS"] + 0.2 and auc["LiRA offline"] > auc["LOSS"] + 0.15
    assert auc["shadow"] > 0.5


def test_lira_scores_are_the_gaussian_likelihood_ratio():
    logits, labels, membership = synthetic_population(n_examples=5, n_shadows=6)
    target, shadows, member = logits[0], logits[1:], membership[1:]
    phi = shadows[..., 1]
    online = lira_online(target, labels, shadows, member, fixed_variance=False)
    offline = lira_offline(target, labels, shadows, member, fixed_variance=False)
    for i in range(5):
        inside, outside = phi[member[:, i], i], phi[~member[:, i], i]
        expected = (norm.logpdf(target[i, 1], inside.mean(), inside.std(ddof=1))
                    - norm.logpdf(target[i, 1], outside.mean(), outside.std(ddof=1)))
        assert online[i] == pytest.approx(expected)
        assert offline[i] == pytest.approx((target[i, 1] - outside.mean()) / outside.std(ddof=1))


def test_lira_needs_in_and_out_shadows():
    logits, labels, membership = synthetic_population(n_examples=10, n_shadows=4)
    member = np.zeros_like(membership[1:])  # no shadow ever trained on anything
    with pytest.raises(ValueError, match="no 'in' shadow"):
        lira_online(logits[0], labels, logits[1:], member)
    with pytest.raises(ValueError, match="both members and non-members"):
        shadow_attack(logits[0], labels, logits[1:], member)


def test_membership_designs():
    m = balanced_membership(50, 6, seed=1)
    assert m.shape == (6, 50) and (m.sum(0) == 3).all()
    assert (m == balanced_membership(50, 6, seed=1)).all() and not (m == balanced_membership(50, 6, seed=2)).all()
    halves = random_halves(50, 3, seed=0)
    assert (halves.sum(1) == 25).all()
    assert (m[0::2] ^ m[1::2]).all()  # complementary pairs: equal training-set sizes
    with pytest.raises(ValueError, match="n_models must be an even number"):
        balanced_membership(50, 3)


def test_game_pools_targets_and_checks_names():
    logits, labels, membership = synthetic_population(n_examples=100, n_shadows=6, n_targets=3)
    game = MembershipGame(labels, logits[:3], membership[:3], logits[3:], membership[3:])
    results = game.attack()
    assert set(results) == set(ATTACKS)
    assert len(results["LOSS"].scores) == 3 * 100  # pooled over the three targets
    assert results["LiRA online"].auc > 0.8
    with pytest.raises(ValueError, match="attacks must be"):
        game.attack(["nope"])
    with pytest.raises(ValueError, match="shadow_membership must have shape"):
        MembershipGame(labels, logits[:3], membership[:3], logits[3:], membership[3:, :10])


def test_no_leakage_means_chance_for_every_attack():
    """Outputs independent of membership: no attack may do better (or systematically worse) than chance."""
    rng = np.random.default_rng(0)
    n, k = 400, 4
    logits = rng.normal(0, 2, (k + 4, n, 5))
    labels = rng.integers(5, size=n)
    game = MembershipGame(labels, logits[:4], random_halves(n, 4, seed=0), logits[4:], balanced_membership(n, k))
    for name, result in game.attack().items():
        assert abs(result.auc - 0.5) < 0.05, name


def test_real_models_leak_membership(tiny_task):
    """Small non-private models trained to overfit on random halves of 200 examples."""
    from trustml.data import subset
    from trustml.privacy.attacks import make_trainer

    population = subset(tiny_task.train, np.arange(200))
    train_fn = make_trainer(vocab_size=tiny_task.tokenizer.vocab_size, num_classes=tiny_task.num_classes,
                            epochs=25, batch_size=25, lr=1e-2)
    game = MembershipGame.train(train_fn, population, n_shadows=4, n_targets=2, progress=False)
    assert game.epsilons == [math.inf] * 2 and game.shadow_logits.shape[0] == 4
    results = game.attack(["LOSS", "LiRA online"])
    assert results["LOSS"].auc > 0.6
    assert results["LiRA online"].auc > 0.6


def test_a_game_with_fewer_shadows_keeps_whole_pairs():
    rng = np.random.default_rng(0)
    n, k = 40, 6
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(2 + k, n, 3))
    game = MembershipGame(labels, logits[:2], random_halves(n, 2, seed=0), logits[2:], balanced_membership(n, k))
    fewer = game.with_shadows(2)
    assert fewer.shadow_logits.shape == (2, n, 3) and (fewer.shadow_membership.sum(0) == 1).all()
    assert np.array_equal(fewer.target_logits, game.target_logits)
    assert set(fewer.attack(["LiRA online"])) == {"LiRA online"}
    for bad in (0, 3, 8, 2.0, True):
        with pytest.raises(ValueError, match="n_shadows must be an even number"):
            game.with_shadows(bad)


def test_independent_membership_is_a_fair_coin_per_example_and_model():
    from trustml.privacy.attacks import independent_membership

    membership = independent_membership(2000, 3, seed=1)
    assert membership.shape == (3, 2000) and membership.dtype == bool
    assert abs(membership.mean() - 0.5) < 0.02 and len({m.sum() for m in membership}) > 1  # sizes vary
    assert np.array_equal(membership, independent_membership(2000, 3, seed=1))
    for n_examples, n_models in ((1, 2), (10, 0)):
        with pytest.raises(ValueError, match="n_models >= 1 and n_examples >= 2"):
            independent_membership(n_examples, n_models)
