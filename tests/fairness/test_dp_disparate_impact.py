"""DP-SGD by group: equals train_private without oversampling, logs true per-example norms with their groups,
samples each group at its rate, reports each group's accountant ε; the clipping summary and the paired
bootstrap of accuracy gaps by hand; clear errors."""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn
from torch.utils.data import TensorDataset

from trustml.fairness import group_accuracy
from trustml.fairness.dp_disparate_impact import (
    GroupPoissonBatches, accuracy_gaps, clipping_by_group, group_sample_rates, train_private_by_group,
)
from trustml.models import EmbeddingClassifier
from trustml.privacy import train_private

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/fairness/conftest.py


def toy_task(n=600, seed=0):
    """Token ids whose label is readable from the first token; group "b" (a quarter) uses other tokens."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    group = np.where(rng.random(n) < 0.25, "b", "a")
    ids = rng.integers(8, 30, size=(n, 6))
    ids[:, 0] = labels + np.where(group == "b", 4, 1)
    ids[:, 4:] = np.where(rng.random((n, 2)) < 0.5, 0, ids[:, 4:])  # some padding
    return TensorDataset(torch.as_tensor(ids), torch.as_tensor(labels)), group


def new_model(seed=0):
    torch.manual_seed(seed)
    return EmbeddingClassifier(30, 3, embed_dim=8, hidden_dim=8)


@pytest.mark.parametrize("budget", [dict(epsilon=4.0), dict(epsilon=math.inf), dict(noise_multiplier=0.8)])
def test_without_oversampling_it_is_train_private(budget):
    data, group = toy_task()
    options = dict(delta=1e-4, epochs=2, batch_size=64, lr=0.05, max_grad_norm=0.5, seed=3) | budget
    ours = train_private_by_group(new_model(), data, groups=group, **options)
    theirs = train_private(new_model(), data, **options)
    for (name, p), q in zip(ours.model.named_parameters(), theirs.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert ours.epsilon == {"a": theirs.epsilon, "b": theirs.epsilon}
    assert ours.noise_multiplier == theirs.noise_multiplier and ours.steps == theirs.steps
    assert ours.losses == pytest.approx(theirs.losses)
    if math.isinf(budget.get("epsilon", 1.0)):
        assert ours.clip_log.empty
    else:
        assert len(ours.clip_log) > ours.steps and set(ours.clip_log["group"]) == {"a", "b"}


def test_logged_norms_are_the_examples_gradient_norms_with_their_groups():
    data, group = toy_task(n=300, seed=1)
    start = new_model(seed=2)
    model = copy.deepcopy(start)
    # One step (a tiny fraction of an epoch): the logged norms are those of the initial model.
    run = train_private_by_group(model, data, groups=group, epsilon=8.0, delta=1e-4, epochs=0.01, batch_size=60,
                                 seed=4)
    assert run.steps == 1 and (run.clip_log["step"] == 0).all()
    reference = []
    for i in range(len(data)):
        start.zero_grad()
        nn.functional.cross_entropy(start(data.tensors[0][i : i + 1]), data.tensors[1][i : i + 1]).backward()
        reference.append(float(torch.sqrt(sum(p.grad.square().sum() for p in start.parameters()))))
    reference = np.array(reference)
    for _, row in run.clip_log.iterrows():
        candidates = reference[group == row["group"]]
        assert np.min(np.abs(candidates - row["norm"])) < 1e-4 * max(1.0, row["norm"])
    summary = run.clipping()
    assert summary["examples"].sum() == len(run.clip_log)
    assert summary["clipped_fraction"].between(0, 1).all()


def test_loss_weights_scale_the_groups_gradients_and_cost_no_epsilon():
    data, group = toy_task(n=300, seed=1)
    options = dict(groups=group, epsilon=8.0, delta=1e-4, epochs=0.01, batch_size=60, seed=4)
    plain = train_private_by_group(new_model(seed=2), data, **options)
    ones = train_private_by_group(new_model(seed=2), data, loss_weights={"a": 1.0, "b": 1.0}, **options)
    for p, q in zip(plain.model.parameters(), ones.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    weighted = train_private_by_group(new_model(seed=2), data, loss_weights={"b": 4.0}, **options)
    assert weighted.epsilon == plain.epsilon and weighted.noise_multiplier == plain.noise_multiplier
    # Same batch (same seed): group b's logged norms are 4 times larger, group a's unchanged.
    pd.testing.assert_series_equal(weighted.clip_log["group"], plain.clip_log["group"])
    factor = np.where(plain.clip_log["group"] == "b", 4.0, 1.0)
    np.testing.assert_allclose(weighted.clip_log["norm"], factor * plain.clip_log["norm"], rtol=1e-5)
    for bad, match in (({"c": 2.0}, "not one of"), ({"b": 0.0}, "finite number > 0"),
                       ({"b": float("nan")}, "finite number > 0")):
        with pytest.raises(ValueError, match=match):
            train_private_by_group(new_model(), data, loss_weights=bad, **options)


def test_group_sample_rates_keep_the_expected_batch_size():
    rates = group_sample_rates({"a": 900, "b": 100}, batch_size=100, oversample={"b": 4})
    assert rates["b"] == pytest.approx(4 * rates["a"])
    assert 900 * rates["a"] + 100 * rates["b"] == pytest.approx(100)
    assert group_sample_rates({"a": 900, "b": 100}, batch_size=100) == pytest.approx({"a": 0.1, "b": 0.1})


@pytest.mark.parametrize("kwargs, match", [
    (dict(group_sizes={"a": 10, "b": 0}, batch_size=5), r"group_sizes\['b'\] must be an int >= 1"),
    (dict(group_sizes={}, batch_size=5), "empty"),
    (dict(group_sizes={"a": 10}, batch_size=0), r"batch_size must be in \(0, 10\]"),
    (dict(group_sizes={"a": 10}, batch_size=11), "batch_size"),
    (dict(group_sizes={"a": 10}, batch_size=2, oversample={"c": 2}), "not one of"),
    (dict(group_sizes={"a": 10, "b": 10}, batch_size=2, oversample={"b": 0}), r"oversample\['b'\] must be a finite"),
    (dict(group_sizes={"a": 10, "b": 10}, batch_size=2, oversample={"b": float("nan")}), "finite number > 0"),
    (dict(group_sizes={"a": 10, "b": 10}, batch_size=2, oversample={"b": math.inf}), "finite number > 0"),
    (dict(group_sizes={"a": 100, "b": 10}, batch_size=100, oversample={"b": 5}), "exceed 1"),
])
def test_group_sample_rates_bad_input(kwargs, match):
    group_sizes = kwargs.pop("group_sizes")
    with pytest.raises(ValueError, match=match):
        group_sample_rates(group_sizes, **kwargs)


def test_group_poisson_batches_include_each_row_at_its_rate():
    n_a, n_b, steps = 200, 100, 400
    data = TensorDataset(torch.arange(n_a + n_b))
    rates = np.r_[np.full(n_a, 0.05), np.full(n_b, 0.3)]
    counts = np.zeros(n_a + n_b)
    for (rows,) in GroupPoissonBatches(data, rates, steps=steps, seed=0):
        counts[rows.numpy()] += 1
    for part, q in ((slice(0, n_a), 0.05), (slice(n_a, None), 0.3)):
        observed, n = counts[part].sum(), (part.stop or n_a + n_b) - (part.start or 0)
        expected, sd = n * steps * q, math.sqrt(n * steps * q * (1 - q))
        assert abs(observed - expected) < 5 * sd
    first = [rows.tolist() for (rows,) in GroupPoissonBatches(data, rates, steps=3, seed=7)]
    assert first == [rows.tolist() for (rows,) in GroupPoissonBatches(data, rates, steps=3, seed=7)]
    with pytest.raises(ValueError, match=r"every rate must be in \(0, 1\]"):
        GroupPoissonBatches(data, np.r_[rates[:-1], 1.5], steps=3)
    with pytest.raises(ValueError, match="one rate per row"):
        GroupPoissonBatches(data, rates[:-1], steps=3)
    with pytest.raises(ValueError, match="steps"):
        GroupPoissonBatches(data, rates, steps=0)


def _rdp_epsilon(sigma, q, steps, delta):
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=q)
    return accountant.get_epsilon(delta)


def test_oversampling_reports_each_groups_accountant_epsilon():
    data, group = toy_task(n=800, seed=5)
    options = dict(groups=group, epsilon=2.0, delta=1e-4, epochs=1, batch_size=80, seed=0, oversample={"b": 3})
    run = train_private_by_group(new_model(), data, **options)
    assert run.sample_rates["b"] == pytest.approx(3 * run.sample_rates["a"])
    assert run.epsilon["b"] == pytest.approx(2.0, rel=0.01)  # calibrated to the most sampled group
    assert run.epsilon["a"] < 1.5
    for g in ("a", "b"):
        assert run.epsilon[g] == pytest.approx(_rdp_epsilon(run.noise_multiplier, run.sample_rates[g], run.steps,
                                                            1e-4))
    # The oversampled group is really sampled more often: its share of the logged examples triples.
    share_b = (run.clip_log["group"] == "b").mean()
    expected = 3 * (group == "b").sum() / (3 * (group == "b").sum() + (group == "a").sum())
    assert share_b == pytest.approx(expected, abs=0.05)
    # σ kept for group "a": the oversampled group pays in ε.
    kept = train_private_by_group(new_model(), data, calibrate_to="a", **options)
    assert kept.epsilon["a"] == pytest.approx(2.0, rel=0.01) and kept.epsilon["b"] > 3.0
    assert kept.noise_multiplier < run.noise_multiplier
    # A fixed σ with oversampling: each group's ε for that σ and its rate.
    fixed = train_private_by_group(new_model(), data, **(options | dict(epsilon=None, noise_multiplier=1.5)))
    assert fixed.noise_multiplier == 1.5
    for g in ("a", "b"):
        assert fixed.epsilon[g] == pytest.approx(_rdp_epsilon(1.5, fixed.sample_rates[g], fixed.steps, 1e-4))


@pytest.mark.parametrize("change, match", [
    (dict(groups=np.array(["a"] * 5)), "one group label per row"),
    (dict(groups=np.array([None] * 600, dtype=object)), "missing labels"),
    (dict(epsilon=0.0), "epsilon must be > 0"),
    (dict(epsilon=float("nan")), "epsilon must be > 0"),
    (dict(epsilon=math.inf, oversample={"b": 2}), "private training"),
    (dict(calibrate_to="b"), "with oversample and a target epsilon only"),
    (dict(epsilon=None, noise_multiplier=1.0, oversample={"b": 2}, calibrate_to="b"), "target epsilon only"),
    (dict(noise_multiplier=1.0), "exactly one of epsilon"),
    (dict(epsilon=None), "exactly one of epsilon"),
    (dict(oversample={"b": 2}, calibrate_to="c"), "calibrate_to must be one of"),
    (dict(epsilon=None, noise_multiplier=-1.0), "noise_multiplier"),
    (dict(delta=1.5), "delta"),
    (dict(epochs=-1), "epochs"),
])
def test_train_private_by_group_bad_input(change, match):
    data, group = toy_task()
    options = dict(groups=group, epsilon=4.0, delta=1e-4, epochs=1, batch_size=64) | change
    with pytest.raises(ValueError, match=match):
        train_private_by_group(new_model(), data, **options)
    with pytest.raises(ValueError, match="TensorDataset of"):
        train_private_by_group(new_model(), TensorDataset(*data.tensors, data.tensors[1]), groups=group, epsilon=4.0)


def test_clipping_by_group_by_hand():
    log = pd.DataFrame({"group": ["a", "a", "a", "b", "b"], "norm": [0.5, 2.0, 4.0, 1.0, 3.0]})
    summary = clipping_by_group(log, max_grad_norm=1.0)
    assert summary.loc["a", "clipped_fraction"] == pytest.approx(2 / 3)
    assert summary.loc["b", "clipped_fraction"] == pytest.approx(1 / 2)  # a norm equal to C is not clipped
    assert summary.loc["a", "kept_share"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert summary.loc["b", "median_norm"] == pytest.approx(2.0)
    assert summary["examples"].tolist() == [3, 2]
    with pytest.raises(ValueError, match="max_grad_norm"):
        clipping_by_group(log, max_grad_norm=0)
    with pytest.raises(ValueError, match="finite norms"):
        clipping_by_group(log.assign(norm=[np.nan, 1, 1, 1, 1]), max_grad_norm=1.0)
    with pytest.raises(ValueError, match="finite norms"):
        clipping_by_group(log.assign(norm=[-1.0, 1, 1, 1, 1]), max_grad_norm=1.0)
    with pytest.raises(ValueError, match="empty"):
        clipping_by_group(log.iloc[:0], max_grad_norm=1.0)
    with pytest.raises(KeyError, match="no column"):
        clipping_by_group(log, max_grad_norm=1.0, by=("epoch",))


def test_accuracy_gaps_by_hand_and_against_group_accuracy():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    groups = np.array(["maj"] * 5 + ["min"] * 3)
    predictions = {
        "no DP": np.array([0, 1, 2, 0, 1, 2, 0, 0]),  # maj 5/5, min 2/3
        "DP": np.array([[0, 1, 2, 0, 0, 0, 0, 0],  # seed 0: maj 4/5, min 1/3
                        [0, 1, 2, 0, 1, 0, 1, 0]]),  # seed 1: maj 5/5, min 0/3
    }
    report = accuracy_gaps(y, predictions, sensitive_features=groups, groups=("maj", "min"), n_boot=200)
    accuracy = report.by_group.set_index(["setting", "group"])["accuracy"]
    assert accuracy["no DP", "maj"] == 1 and accuracy["no DP", "min"] == pytest.approx(2 / 3)
    assert accuracy["DP", "maj"] == pytest.approx(0.9) and accuracy["DP", "min"] == pytest.approx(1 / 6)
    gaps = report.gaps.set_index("setting")
    assert gaps.loc["no DP", "gap"] == pytest.approx(1 / 3) and gaps.loc["DP", "gap"] == pytest.approx(0.9 - 1 / 6)
    assert gaps.loc["DP", "change"] == pytest.approx(0.9 - 1 / 6 - 1 / 3)
    assert gaps.loc["no DP", ["change", "change_low", "change_high"]].tolist() == [0, 0, 0]  # paired: exactly 0
    assert (report.by_group["low"] <= report.by_group["accuracy"] + 1e-12).all()
    assert (report.by_group["accuracy"] <= report.by_group["high"] + 1e-12).all()
    single = group_accuracy(y, predictions["no DP"], sensitive_features=groups)
    np.testing.assert_allclose(accuracy["no DP"].to_numpy(), single.by_group["accuracy"].to_numpy())


def test_accuracy_gaps_interval_resolves_a_planted_change():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 5, n)
    groups = np.where(rng.random(n) < 0.2, "min", "maj")
    def predict(p_min):
        right = rng.random(n) < np.where(groups == "min", p_min, 0.9)
        return np.where(right, y, (y + 1) % 5)
    report = accuracy_gaps(y, {"a": predict(0.85), "b": predict(0.6)}, sensitive_features=groups,
                           groups=("maj", "min"), n_boot=300, seed=1)
    b = report.gaps.set_index("setting").loc["b"]
    assert b["change_low"] > 0.15 and b["low"] < b["gap"] < b["high"]
    again = accuracy_gaps(y, {"a": predict(0.85), "b": predict(0.6)}, sensitive_features=groups,
                          groups=("maj", "min"), n_boot=300, seed=1)
    assert again.gaps["low"].notna().all()


def test_cluster_bootstrap_is_wider_for_correlated_examples():
    # 40 speakers per group, 25 utterances each; a speaker is either always right or always wrong.
    rng = np.random.default_rng(2)
    speakers = np.repeat(np.arange(80), 25)
    groups = np.where(speakers < 40, "a", "b")
    y = np.zeros(len(speakers), dtype=int)
    right = np.repeat(rng.random(80) < 0.7, 25)
    predictions = {"x": np.where(right, 0, 1)}
    options = dict(sensitive_features=groups, groups=("a", "b"), n_boot=400, seed=0)
    rows = accuracy_gaps(y, predictions, **options).gaps.iloc[0]
    clustered = accuracy_gaps(y, predictions, clusters=speakers, **options).gaps.iloc[0]
    assert clustered["gap"] == rows["gap"]
    # 40 independent speakers per group, not 1000 utterances: the interval is about √25 = 5 times wider.
    assert (clustered["high"] - clustered["low"]) > 3 * (rows["high"] - rows["low"])
    with pytest.raises(ValueError, match="span several groups"):
        accuracy_gaps(y, predictions, clusters=np.zeros(len(y), dtype=int), **options)
    with pytest.raises(ValueError, match="clusters must give one"):
        accuracy_gaps(y, predictions, clusters=np.zeros(3, dtype=int), **options)


@pytest.mark.parametrize("change, match", [
    (dict(predictions={}), "predictions is empty"),
    (dict(predictions={"x": np.zeros(3, dtype=int)}), r"shape \(n,\) or \(n_seeds, n\)"),
    (dict(predictions={"x": np.full(4, np.nan)}), "NaN"),
    (dict(groups=("a", "a")), "two different groups"),
    (dict(groups=("a", "z")), r"groups \['z'\] do not occur"),
    (dict(reference="nope"), "reference"),
    (dict(n_boot=0), "n_boot"),
    (dict(confidence=1.0), "confidence"),
    (dict(sensitive_features=np.array(["a", "b", None, "a"], dtype=object)), "missing labels"),
    (dict(sensitive_features=np.array(["a", "b"])), "one group label per row"),
    (dict(y_true=np.array([0, 1, np.nan, 1])), "y_true contains NaN"),
    (dict(y_true=np.array([])), "non-empty"),
])
def test_accuracy_gaps_bad_input(change, match):
    options = dict(y_true=np.array([0, 1, 0, 1]), predictions={"x": np.array([0, 1, 1, 1])},
                   sensitive_features=np.array(["a", "b", "a", "b"]), groups=("a", "b")) | change
    with pytest.raises(ValueError, match=match):
        accuracy_gaps(options.pop("y_true"), options.pop("predictions"), **options)
