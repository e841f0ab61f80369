"""DPSGD warns when training spends more than the target ε its noise was calibrated for (issue #15, item 6).

Before: a loader that ran past the planned epochs spent ε ≈ 2 for a target of 1 without a word."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trustml.models import EmbeddingClassifier
from trustml.privacy import DPSGD, PrivacyBudgetExceeded, get_epsilon, train_private


def tiny_task(n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 20, (n, 6), generator=generator)
    return TensorDataset(ids, (ids.float().mean(1) > 10).long())


def private(target=1.0, epochs=1, **options):
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0, target_epsilon=target,
               delta=1e-5, epochs=epochs, seed=0, **options)
    return model, dp


def run(model, dp, loader):
    for inputs, labels in loader:
        dp.step(nn.functional.cross_entropy(model(inputs), labels, reduction="none"))


def test_a_loader_past_the_planned_epochs_warns_before_and_after_training():
    model, dp = private(target=1.0, epochs=1)
    with pytest.warns(PrivacyBudgetExceeded, match=r"will exceed target_epsilon = 1"):
        loader = dp.poisson_loader(tiny_task(), batch_size=40, epochs=5)
    with pytest.warns(PrivacyBudgetExceeded, match=r"after 11 steps, ε = .* exceeds target_epsilon = 1"):
        run(model, dp, loader)
    spent = dp.epsilon()
    assert spent > 1.5  # the accountant's ε for 50 steps at the σ planned for 10
    assert spent == pytest.approx(get_epsilon(noise_multiplier=dp.noise_multiplier, sample_rate=0.1, steps=50,
                                              delta=1e-5))


def test_iterating_a_loader_twice_warns_at_the_first_step_past_the_plan():
    model, dp = private(target=1.0, epochs=1)
    loader = dp.poisson_loader(tiny_task(), batch_size=40, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyBudgetExceeded)
        run(model, dp, loader)  # exactly the plan: silent
        assert dp.epsilon() <= 1.0
    with pytest.warns(PrivacyBudgetExceeded, match="after 11 steps"):
        run(model, dp, loader)  # a second pass over the same loader: past the plan


def test_training_as_planned_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyBudgetExceeded)
        model, dp = private(target=2.0, epochs=2, noise_decay=0.9)
        run(model, dp, dp.poisson_loader(tiny_task(), batch_size=40))
        assert 1.95 <= dp.epsilon() <= 2.0
        result = train_private(EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8), tiny_task(), epsilon=1.0,
                               delta=1e-5, epochs=2, batch_size=40)
        assert result.epsilon <= 1.0


def test_a_fixed_noise_multiplier_has_no_target_to_exceed():
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0, noise_multiplier=0.5,
               delta=1e-5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyBudgetExceeded)
        run(model, dp, dp.poisson_loader(tiny_task(), batch_size=40, epochs=3))
        assert dp.epsilon() > 1


def test_dpsgd_with_prv_and_a_huge_grid_reports_rdp_and_says_so():
    """DPSGD's ε goes through epsilon_of_history: PRV's grid is bounded there (before: minutes and GBs)."""
    from trustml.privacy import PRVFallbackWarning

    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0, noise_multiplier=0.05,
               delta=1e-5, accountant="prv", seed=0)
    run(model, dp, dp.poisson_loader(tiny_task(), sample_rate=0.5, steps=20))
    with pytest.warns(PRVFallbackWarning, match="RDP"):
        spent = dp.epsilon()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert spent == get_epsilon(noise_multiplier=0.05, sample_rate=0.5, steps=20, delta=1e-5, accountant="rdp")
