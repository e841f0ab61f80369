"""Plain (non-private) training and evaluation loops shared by the chapters."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from trustml.data.text import make_loader

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


def make_optimizer(name: str, parameters, *, lr: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return OPTIMIZERS[name](parameters, lr=lr)


def train_classifier(
    model: nn.Module, dataset: TensorDataset, *, epochs: int = 5, batch_size: int = 64, lr: float = 1e-2,
    optimizer: str = "adam", seed: int = 0, progress: bool = False,
) -> list[float]:
    """Cross-entropy training; returns the mean loss of each epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
    device = next(model.parameters()).device
    history = []
    model.train()
    for _ in tqdm(range(epochs), desc="epochs", disable=not progress):
        total, count = 0.0, 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            opt.step()
            total += loss.item() * len(labels)
            count += len(labels)
        history.append(total / count)
    model.eval()
    return history


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
