"""trustml.models.fit: the one training loop (plain steps, a pluggable update such as DP-SGD, early stopping)."""

import math

import pytest
import torch
from torch import nn

from trustml.models import classification_loss, fit, gradient_step


def _problem(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    y = (x[:, 0] > 0).long()
    return x, y


def test_fit_trains_and_reports_example_weighted_epoch_means():
    torch.manual_seed(0)
    x, y = _problem()
    model = nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batches = [(x[:40], y[:40]), (x[40:], y[40:])]
    seen = []

    def loss(model, batch):
        losses = classification_loss()(model, batch)
        seen.append(losses.detach())
        return losses

    history = fit(model, batches, loss=loss, optimizer=optimizer, epochs=3)
    assert len(history) == 3 and history[-1] < history[0]
    assert history[0] == pytest.approx(float(torch.cat(seen[:2]).mean()), rel=1e-6)
    assert not model.training


def test_fit_calls_a_batch_factory_with_the_epoch_and_stops_early():
    x, y = _problem()
    model = nn.Linear(5, 2)
    asked, ends = [], []

    def batches(epoch):
        asked.append(epoch)
        return [(x, y)]

    def stop_after_two(epoch, mean_loss):
        ends.append((epoch, model.training))
        return epoch == 2

    fit(model, batches, loss=classification_loss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=10, on_epoch_end=stop_after_two)
    assert asked == [0, 1] and ends == [(1, False), (2, False)]


def test_a_custom_update_receives_the_per_example_losses():
    x, y = _problem()
    model = nn.Linear(5, 2)
    shapes = []
    fit(model, [(x, y)], loss=classification_loss(), update=lambda losses: shapes.append(tuple(losses.shape)))
    assert shapes == [(64,)]


def test_an_epoch_without_examples_reports_nan_and_skips_the_step():
    model = nn.Linear(5, 2)
    before = model.weight.detach().clone()
    empty = (torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    history = fit(model, [empty], loss=classification_loss(), optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    assert math.isnan(history[0]) and torch.equal(model.weight, before)


def test_gradient_step_skips_an_empty_batch():
    model = nn.Linear(2, 1)
    gradient_step(torch.optim.SGD(model.parameters(), lr=1.0))(torch.zeros(0))
    assert model.weight.grad is None


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_bad_epochs_are_refused(epochs):
    model = nn.Linear(5, 2)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        fit(model, [], loss=classification_loss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=epochs)


def test_exactly_one_of_optimizer_and_update():
    model = nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="exactly one of optimizer"):
        fit(model, [], loss=classification_loss())
    with pytest.raises(ValueError, match="exactly one of optimizer"):
        fit(model, [], loss=classification_loss(), optimizer=optimizer, update=gradient_step(optimizer))
