"""The one training loop of trustml (:func:`fit`), and evaluation helpers shared by the chapters.

Every model in the book is trained by :func:`fit`: classifiers (plain and DP-SGD), the attacks' targets and
shadow models, the fairness part's language models and students, and the federated devices' local SGD.
What differs is passed in: the batches, a loss callback, and (for DP-SGD) the update that turns the batch's
per-example losses into one optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trustml.data.text import make_loader

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}

#: ``loss(model, batch)``: the per-example losses (B,) of a batch, or their mean (a scalar).
LossFn = Callable[[Any, Any], torch.Tensor]
#: ``update(losses)``: one optimizer step from a batch's losses (DP-SGD: ``DPSGD.step``).
UpdateFn = Callable[[torch.Tensor], Any]


def make_optimizer(name: str, parameters, *, lr: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return OPTIMIZERS[name](parameters, lr=lr)


def gradient_step(optimizer: torch.optim.Optimizer) -> UpdateFn:
    """The plain update: ``zero_grad``, backward of the batch's mean loss, ``optimizer.step()``; an empty
    batch (Poisson sampling can draw one) is skipped."""

    def update(losses: torch.Tensor) -> None:
        if losses.numel() == 0:
            return
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()

    return update


def _rows(batch) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)


def fit(model: nn.Module | None, batches: Iterable | Callable[[int], Iterable], *, loss: LossFn,
        optimizer: torch.optim.Optimizer | None = None, update: UpdateFn | None = None, epochs: int = 1,
        on_epoch_end: Callable[[int, float], bool | None] | None = None, progress: bool = False,
        desc: str = "epochs") -> list[float]:
    """Train ``model`` for ``epochs`` passes; returns the example-weighted mean loss of each epoch.

    - ``batches``: re-iterated every epoch (a seeded ``DataLoader`` reshuffles), or ``batches(epoch)``.
    - ``loss(model, batch)``: per-example losses (B,) or the batch mean (weighted by the batch's rows).
    - ``update(losses)``: one step; default :func:`gradient_step` of ``optimizer``. DP-SGD plugs in here
      (``update=dp.step``), which is why ``loss`` should return per-example losses for private training.
    - ``on_epoch_end(epoch, mean_loss)``: called after each epoch (1-based) with the model in eval mode;
      returning True stops training (early stopping).

    ``model`` is put in train mode for the passes and left in eval mode (``None``: a functional model whose
    parameters the loss callback closes over, such as the federated devices' flat parameter vector).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if update is None:
        if optimizer is None:
            raise ValueError("pass exactly one of optimizer (plain gradient steps) and update (e.g. DPSGD.step)")
        update = gradient_step(optimizer)
    elif optimizer is not None:
        raise ValueError("pass exactly one of optimizer (plain gradient steps) and update (e.g. DPSGD.step)")
    history = []
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress):
        if model is not None:
            model.train()
        # Losses are kept as tensors and summed once per epoch: a float() per step would cost a
        # synchronisation (GPU) and several small operations, a large share of the tiny federated steps.
        per_example, means, count = [], [], 0
        for batch in batches(epoch) if callable(batches) else batches:
            losses = loss(model, batch)
            update(losses)
            if losses.dim():
                per_example.append(losses.detach())
                count += losses.shape[0]
            elif rows := _rows(batch):
                means.append((losses.detach(), rows))
                count += rows
        total = float(torch.cat(per_example).sum()) if per_example else 0.0
        total += sum(float(mean) * rows for mean, rows in means)
        history.append(total / count if count else math.nan)
        if model is not None:
            model.eval()
        if on_epoch_end is not None and on_epoch_end(epoch + 1, history[-1]):
            break
    if model is not None:
        model.eval()
    return history


def classification_loss(device: torch.device | None = None) -> LossFn:
    """``loss(model, (inputs, labels))``: per-example cross-entropy, inputs moved to ``device``."""

    def loss(model: nn.Module, batch) -> torch.Tensor:
        inputs, labels = batch
        if device is not None:
            inputs, labels = inputs.to(device), labels.to(device)
        return nn.functional.cross_entropy(model(inputs), labels, reduction="none")

    return loss


def train_classifier(
    model: nn.Module, dataset: TensorDataset, *, epochs: int = 5, batch_size: int = 64, lr: float = 1e-2,
    optimizer: str = "adam", seed: int = 0, progress: bool = False,
) -> list[float]:
    """Cross-entropy training; returns the mean loss of each epoch."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
    device = next(model.parameters()).device
    return fit(model, loader, loss=classification_loss(device), optimizer=opt, epochs=epochs, progress=progress)


@torch.no_grad()
def predict(model: nn.Module, dataset: TensorDataset, *, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every row of ``dataset`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = dataset.tensors[0]
    logits = torch.cat([model(inputs[i : i + batch_size].to(device)).cpu() for i in range(0, len(inputs), batch_size)])
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, dataset: TensorDataset) -> float:
    """Fraction of rows whose arg-max prediction equals the label."""
    return (predict(model, dataset).argmax(-1) == dataset.tensors[1]).float().mean().item()


__all__ = ["OPTIMIZERS", "accuracy", "classification_loss", "fit", "gradient_step", "make_optimizer", "predict",
           "train_classifier"]
