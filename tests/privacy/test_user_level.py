"""User-level DP-SGD (issue #17, item 3): the per-user clipped sum against a plain per-user loop, the
accountant's ε at the user sampling rate, user batches, group privacy, and bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trustml.models import EmbeddingClassifier, TransformerClassifier, accuracy
from trustml.privacy import ClippingEngine, PoissonSamplingRequired, get_epsilon
from trustml.privacy.user_level import (
    UserBatches, UserLevelDPSGD, check_users, group_privacy, naive_user_clipped_sum, train_user_level, user_rows,
)


def plain_user_clipped_sum(model, inputs, labels, groups, bound):
    """Σ_u clip(∇ mean loss of user u): one autograd call per user, flattened, no trustml code."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    for user in groups.unique():
        rows = groups == user
        loss = nn.functional.cross_entropy(model(inputs[rows]), labels[rows])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])
        total += flat * min(1.0, bound / (flat.norm().item() + 1e-6))
    return total


def skewed_task(n_users=30, seed=0, vocab=20):
    """Users with 1 to ~40 examples each (a heavy tail), labels learnable from the tokens."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(1 + rng.zipf(1.6, n_users), 40)
    owner = np.repeat(np.arange(n_users), sizes)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(owner), 6), generator=generator)
    labels = (ids.float().mean(1) > vocab / 2).long()
    return TensorDataset(ids, labels), user_rows(owner)


@pytest.mark.parametrize("architecture", ["embedding", "transformer"])
def test_per_user_clipped_sum_equals_a_per_user_loop(architecture):
    torch.manual_seed(0)
    vocab, classes = 30, 4
    model = (EmbeddingClassifier(vocab, classes, embed_dim=8, hidden_dim=8) if architecture == "embedding"
             else TransformerClassifier(vocab, classes, d_model=16, n_layers=1, d_ff=32, max_length=8)).double()
    inputs = torch.randint(1, vocab, (13, 8))
    inputs[::3, 5:] = 0  # some padding
    labels = torch.randint(0, classes, (13,))
    groups = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3])  # users of 1, 3, 7 and 2 examples
    norms = [plain_user_clipped_sum(model, inputs[groups == u], labels[groups == u],
                                    torch.zeros(int((groups == u).sum())), 1e9).norm().item() for u in range(4)]
    bound = float(np.median(norms))  # half of the users are clipped
    engine = ClippingEngine(model, max_grad_norm=bound, mode="micro_batch", micro_batch_size=7)
    stats = engine.clipped_sum(nn.functional.cross_entropy(model(inputs), labels, reduction="none"), groups=groups)
    fast = torch.cat([p.grad.flatten() for p in model.parameters()])
    engine.remove()
    reference = plain_user_clipped_sum(model, inputs, labels, groups, bound)
    assert 0 < float((stats.norms > bound).float().mean()) < 1  # some users clipped, some not
    assert torch.allclose(fast, reference, atol=1e-10, rtol=1e-8)
    named = naive_user_clipped_sum(model, (inputs, labels), groups, max_grad_norm=bound)
    assert torch.allclose(torch.cat([named[n].flatten() for n, _ in model.named_parameters()]), reference,
                          atol=1e-12)


def test_the_step_adds_noise_sigma_c_and_divides_by_the_expected_users():
    class ZeroGradient(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(400, 1)

        def forward(self, x):
            return self.linear(x.float()) * 0.0

    model = ZeroGradient()
    data = TensorDataset(torch.randn(200, 400), torch.zeros(200))
    users = user_rows(np.arange(200) // 4)  # 50 users of 4
    sigma, bound = 0.8, 2.0
    dp = UserLevelDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.0), max_grad_norm=bound,
                        max_examples_per_user=2, noise_multiplier=sigma, seed=0)
    draws = []
    for inputs, _ in dp.user_loader(data, users, users_per_step=10, steps=30):
        dp.step(model(inputs).squeeze(1))
        draws.append(model.linear.weight.grad.flatten() * 10)  # times the expected number of users qU = 10
    draws = torch.cat(draws)
    assert float(draws.std()) == pytest.approx(sigma * bound, rel=0.03)
    assert dp.noise_std == pytest.approx(sigma * bound)


def test_epsilon_is_the_accountant_at_the_user_sampling_rate():
    data, users = skewed_task()
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = UserLevelDPSGD(model, torch.optim.Adam(model.parameters(), lr=0.01), max_grad_norm=1.0,
                        max_examples_per_user=4, noise_multiplier=1.1, delta=1e-3, seed=0)
    loader = dp.user_loader(data, users, users_per_step=6, epochs=4)
    for inputs, labels in loader:
        dp.step(nn.functional.cross_entropy(model(inputs), labels, reduction="none"))
    q = 6 / len(users)
    assert dp.sample_rate == pytest.approx(q) and dp.steps_taken == 4 * int(1 / q) == len(loader)
    assert dp.history == [(1.1, q, dp.steps_taken)]
    expected = get_epsilon(noise_multiplier=1.1, sample_rate=q, steps=dp.steps_taken, delta=1e-3)
    assert dp.epsilon() == pytest.approx(expected, rel=1e-12)
    # Not the share of rows a step sees (q · Σ min(n_u, k) / N, smaller under the cap): the unit is the user.
    row_rate = q * sum(min(len(u), 4) for u in users) / len(data)
    assert row_rate < 0.8 * q
    assert dp.epsilon() > 1.2 * get_epsilon(noise_multiplier=1.1, sample_rate=row_rate, steps=dp.steps_taken,
                                            delta=1e-3)


def test_training_meets_its_user_level_target_and_learns():
    data, users = skewed_task(n_users=200, seed=1)
    test, _ = skewed_task(n_users=100, seed=2)
    torch.manual_seed(0)
    result = train_user_level(EmbeddingClassifier(20, 2, embed_dim=16, hidden_dim=16), data, users, epsilon=4.0,
                              delta=1e-3, epochs=8, users_per_step=40, max_examples_per_user=8, lr=0.05)
    assert 3.95 <= result.epsilon <= 4.0 and result.mode == "user_level"
    assert result.sample_rate == pytest.approx(40 / 200)
    assert accuracy(result.model, test) > 0.75
    assert not any(m._forward_hooks for m in result.model.modules())
    reference = train_user_level(EmbeddingClassifier(20, 2, embed_dim=16, hidden_dim=16), data, users,
                                 epsilon=math.inf, epochs=2, users_per_step=40, max_examples_per_user=8)
    assert math.isinf(reference.epsilon) and reference.noise_multiplier == 0.0


def test_user_batches_sample_users_and_cap_their_rows():
    data, users = skewed_task(n_users=40, seed=3)
    heavy = int(np.argmax([len(u) for u in users]))
    seen_groups = []
    loader = UserBatches(data, users, sample_rate=0.25, steps=300, max_examples_per_user=3, seed=0,
                         on_batch=seen_groups.append)
    counts, heavy_rows = [], set()
    for _ in range(300):
        rows, groups = loader.draw()
        counts.append(len(np.unique(groups)))
        for g in np.unique(groups):
            members = rows[groups == g]
            owners = {next(u for u, r in enumerate(users) if row in set(r.tolist())) for row in members}
            assert len(owners) == 1 and len(members) == min(3, len(users[owners.pop()]))
        heavy_rows |= {int(r) for r in rows if r in set(users[heavy].tolist())}
    assert np.mean(counts) == pytest.approx(0.25 * 40, rel=0.1)
    assert len(heavy_rows) > 3 * 2  # the cap draws a fresh subset each step: over time all of a user's data is used
    batches = list(loader)
    assert len(batches) == 300 and len(seen_groups) == 300
    assert all(len(g) == len(b[0]) for g, b in zip(seen_groups, batches))


def test_explicit_groups_are_not_accounted():
    data, users = skewed_task()
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = UserLevelDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0,
                        max_examples_per_user=4, noise_multiplier=1.0, delta=1e-3)
    dp.user_loader(data, users, users_per_step=5, steps=1)
    inputs, labels = data.tensors[0][:10], data.tensors[1][:10]
    dp.step(nn.functional.cross_entropy(model(inputs), labels, reduction="none"), torch.arange(10) // 3)
    with pytest.raises(PoissonSamplingRequired, match="user_loader"):
        dp.epsilon()


def test_group_privacy():
    eps_k, delta_k = group_privacy(0.5, 1e-6, np.array([1, 2, 10, 200]))
    assert eps_k.tolist() == [0.5, 1.0, 5.0, 100.0]
    assert delta_k[0] == pytest.approx(1e-6) and delta_k[1] == pytest.approx(2 * math.exp(0.5) * 1e-6)
    assert delta_k[-1] == 1.0  # capped: the guarantee is void
    for bad in (dict(epsilon=0.0), dict(epsilon=float("nan")), dict(delta=1.0), dict(k=0), dict(k=1.5)):
        arguments = dict(epsilon=1.0, delta=1e-5, k=3) | bad
        with pytest.raises(ValueError):
            group_privacy(arguments["epsilon"], arguments["delta"], arguments["k"])


# ------------------------------------------------------------------ bad input

def test_user_rows_from_labels():
    rows = user_rows(np.array([5, 3, 5, 9, 3]))
    assert [r.tolist() for r in rows] == [[1, 4], [0, 2], [3]]
    assert [r.tolist() for r in user_rows(["b", "a", "b"])] == [[1], [0, 2]]
    for bad in ([1.0, float("nan")], [0.5, 1.5], [], [[1, 2]], np.array([None, 1], dtype=object)):
        with pytest.raises(ValueError, match="labels"):
            user_rows(bad)


@pytest.mark.parametrize("users, message", [
    ([np.array([0, 1]), np.array([], dtype=int), np.array([2, 3])], "user 1 has no examples"),
    ([np.array([0, 1]), np.array([1, 2, 3])], "row 1 belongs to user 0 and to user 1"),
    ([np.array([0, 0, 1]), np.array([2, 3])], "lists row 0 twice"),
    ([np.array([0, 1]), np.array([2])], "1 rows belong to no user"),
    ([np.array([0, 1]), np.array([2, 3, 4])], r"outside \[0, 4\)"),
    ([np.array([0.0, 1.0]), np.array([2, 3])], "integer row indices"),
    ([], "must not be empty"),
])
def test_bad_users(users, message):
    with pytest.raises(ValueError, match=message):
        check_users(users, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_examples_per_user=0), "max_examples_per_user must be an integer >= 1"),
    (dict(max_examples_per_user=-3), "max_examples_per_user must be an integer >= 1"),
    (dict(max_examples_per_user=2.5), "max_examples_per_user must be an integer >= 1"),
    (dict(max_examples_per_user=True), "max_examples_per_user must be an integer >= 1"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(noise_multiplier=float("nan")), "noise_multiplier"),
    (dict(noise_multiplier=None, target_epsilon=float("nan"), delta=1e-3, epochs=1), "target_epsilon"),
    (dict(noise_multiplier=None, target_epsilon=1.0), "delta and epochs"),
    (dict(delta=float("nan")), "delta"),
])
def test_bad_options(kwargs, message):
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    arguments = dict(max_grad_norm=1.0, max_examples_per_user=4, noise_multiplier=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        UserLevelDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), **arguments)


def test_bad_loader_and_step_input():
    data, users = skewed_task()
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = UserLevelDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0,
                        max_examples_per_user=4, noise_multiplier=1.0, delta=1e-3)
    for options, message in [(dict(users_per_step=float("nan")), "users_per_step"),
                             (dict(users_per_step=0), "users_per_step"),
                             (dict(users_per_step=len(users) + 1), "users_per_step must be <="),
                             (dict(sample_rate=1.5), "sample_rate"),
                             (dict(users_per_step=2, sample_rate=0.1), "exactly one")]:
        with pytest.raises(ValueError, match=message):
            dp.user_loader(data, users, steps=1, **options)
    with pytest.warns(UserWarning, match="1/N"):
        UserLevelDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0,
                       max_examples_per_user=4, noise_multiplier=1.0, delta=0.1).user_loader(
            data, users, users_per_step=3, steps=1)
    losses = nn.functional.cross_entropy(model(data.tensors[0][:6]), data.tensors[1][:6], reduction="none")
    with pytest.raises(ValueError, match="groups"):
        dp.step(losses)  # no loader batch pending and no groups
    with pytest.raises(ValueError, match="shapes"):
        dp.step(losses, torch.arange(5))
    with pytest.raises(ValueError, match="integer user indices"):
        dp.step(losses, torch.zeros(6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="user 0 has no examples"):
            train_user_level(model, data, [np.array([], dtype=int), *users], epsilon=1.0, delta=1e-3)


def test_a_user_loader_past_the_planned_epochs_warns_like_dpsgd():
    """UserLevelDPSGD is DPSGD with users as the unit: the budget warning and the PRV guard are the same code."""
    from trustml.privacy import PrivacyBudgetExceeded

    data, users = skewed_task()
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = UserLevelDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=1.0,
                        max_examples_per_user=4, target_epsilon=1.0, delta=1e-3, epochs=1)
    with pytest.warns(PrivacyBudgetExceeded, match="will exceed target_epsilon = 1"):
        dp.user_loader(data, users, users_per_step=5, epochs=3)
    assert dp.sensitivity == 1.0 and dp.n_users == len(users)
