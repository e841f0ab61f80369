"""How the attacked models are trained: one recipe for targets and shadow models, with or without DP.

The attacks need models trained *the same way* many times (shadow models), so the recipe is a function
``train_fn(train_set, *, seed) -> PrivateTraining``. DP-SGD comes from ``trustml.privacy.train_private``
(Poisson sampling, σ calibrated to the target ε by the accountant); ``epsilon=inf`` runs the same loop
on the same Poisson batches without clipping or noise, so ε is the only thing that changes.
Early stopping, a non-DP defence, stops :func:`trustml.models.fit` from its epoch callback (a validation set).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

from trustml.data import make_loader
from trustml.models import build_model, classification_loss, fit, make_optimizer


def train_model(train_set: TensorDataset, *, seed: int, vocab_size: int, num_classes: int,
                architecture: str = "embedding", epsilon: float = math.inf, delta: float = 1e-5, epochs: float = 30,
                batch_size: int = 32, lr: float = 1e-2, max_grad_norm: float = 1.0, model_options: dict | None = None):
    """Train one model with ``trustml.privacy.train_private`` at budget ``epsilon`` (inf = no DP).

    Returns the ``PrivateTraining`` record (``.model``, the accountant's ``.epsilon``, ...)."""
    from trustml.privacy import train_private

    model = build_model(architecture, vocab_size=vocab_size, num_classes=num_classes, seed=seed,
                        **(model_options or {}))
    if math.isinf(epsilon):
        return train_private(model, train_set, epsilon=epsilon, delta=delta, epochs=epochs, batch_size=batch_size,
                             lr=lr, max_grad_norm=max_grad_norm, seed=seed)
    # σ for (ε, δ, q, epochs) is found once and reused by every shadow model of the same size;
    # train_private still reports the accountant's ε of the run it actually did.
    sigma = calibrated_noise(epsilon, delta=delta, sample_rate=batch_size / len(train_set), epochs=epochs)
    return train_private(model, train_set, noise_multiplier=sigma, delta=delta, epochs=epochs, batch_size=batch_size,
                         lr=lr, max_grad_norm=max_grad_norm, seed=seed)


@functools.lru_cache(maxsize=256)
def calibrated_noise(epsilon: float, *, delta: float, sample_rate: float, epochs: float) -> float:
    """σ that spends ``epsilon`` in ``epochs`` epochs at rate q (``trustml.privacy.get_noise_multiplier``, cached:
    the accountant's search takes seconds, a training run of a small model less)."""
    from trustml.privacy import get_noise_multiplier

    return get_noise_multiplier(target_epsilon=epsilon, sample_rate=sample_rate, delta=delta, epochs=epochs)


def make_trainer(**recipe) -> functools.partial:
    """``train_fn(train_set, *, seed)`` with a fixed recipe (the keyword arguments of ``train_model``)."""
    options = {name for name, parameter in inspect.signature(train_model).parameters.items()
               if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = set(recipe) - options
    if unknown or "seed" in recipe:
        raise TypeError(f"unknown recipe options {sorted(unknown | ({'seed'} & set(recipe)))}; "
                        f"allowed: {sorted(options - {'seed'})}")
    return functools.partial(train_model, **recipe)


def train_with_early_stopping(model: nn.Module, train_set: TensorDataset, validation: TensorDataset, *,
                              max_epochs: int = 50, patience: int = 2, batch_size: int = 64, lr: float = 3e-3,
                              seed: int = 0) -> list[float]:
    """Adam training that keeps the weights of the epoch with the lowest validation loss and stops after
    ``patience`` epochs without improvement (a classic regulariser against memorisation, no formal
    guarantee). Returns the validation loss of each epoch; the model ends in eval mode with the best weights."""
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience must be >= 1, got {max_epochs} and {patience}")
    torch.manual_seed(seed)
    optimizer = make_optimizer("adam", model.parameters(), lr=lr)
    loader = make_loader(train_set, batch_size=batch_size, shuffle=True, seed=seed)
    best, best_state, history = math.inf, copy.deepcopy(model.state_dict()), []

    def validate(epoch: int, _train_loss: float) -> bool:
        nonlocal best, best_state
        with torch.no_grad():
            inputs, labels = validation.tensors
            history.append(float(nn.functional.cross_entropy(model(inputs), labels)))
        if history[-1] < best:
            best, best_state = history[-1], copy.deepcopy(model.state_dict())
        return len(history) - 1 - history.index(best) >= patience  # stop: no improvement for `patience` epochs

    fit(model, loader, loss=classification_loss(), optimizer=optimizer, epochs=max_epochs, on_epoch_end=validate)
    model.load_state_dict(best_state)
    model.eval()
    return history
