"""ModIvA: white-box model inversion of canaries (Parikh, Dupuy & Gupta 2022, "Canary extraction in
natural language understanding models").

The attacker holds the trained model's weights, the canary's template ("my pin code is _ _ _ _") and its
labels, but not the secret. Each unknown position gets a *soft token*: a distribution p_j = softmax(z_j)
over the candidate alphabet (the digits), whose embedding is the mix Σ_a p_{j,a} · E[a] of the digit
embeddings. With the model frozen, Adam minimises the loss of the known label over the z's, from several
random restarts; the guess is the arg-max symbol at each position (the restart whose guess has the
lowest loss wins). Recovery is then compared with chance: |alphabet|^−k for the whole secret (10⁻⁴ for
4 digits) and 1/|alphabet| per digit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from trustml.privacy.attacks.canary import CanaryProbe
from trustml.threads import limit_threads


@dataclasses.dataclass(frozen=True)
class InversionResult:
    """ModIvA's guess for each probe (as alphabet indices) and what it recovered."""

    guesses: np.ndarray  # (n_probes, k) alphabet indices
    secrets: np.ndarray  # (n_probes, k)
    losses: np.ndarray  # (n_probes,) known-label loss of the chosen guess
    probabilities: np.ndarray  # (n_probes, k, |alphabet|) soft tokens of the winning restart
    alphabet_size: int

    @property
    def exact(self) -> np.ndarray:
        """Per probe: was the whole secret recovered?"""
        return (self.guesses == self.secrets).all(1)

    @property
    def symbol_accuracy(self) -> np.ndarray:
        """Per probe: share of positions recovered."""
        return (self.guesses == self.secrets).mean(1)

    @property
    def exact_chance(self) -> float:
        return float(self.alphabet_size ** -self.secrets.shape[1])

    @property
    def symbol_chance(self) -> float:
        return 1.0 / self.alphabet_size

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"guess": [" ".join(map(str, g)) for g in self.guesses], "exact": self.exact,
                             "digit accuracy": self.symbol_accuracy, "inversion loss": self.losses})

    def summary(self) -> str:
        return (f"ModIvA: exact recovery {self.exact.mean():.2f} (chance {self.exact_chance:.0e}), "
                f"per-digit accuracy {self.symbol_accuracy.mean():.2f} (chance {self.symbol_chance:.2f}) "
                f"over {len(self.guesses)} canaries")


def _check_probes(probes: Sequence[CanaryProbe]) -> None:
    if not probes:
        raise ValueError("probes must not be empty")
    k, size = probes[0].n_symbols, len(probes[0].alphabet_ids)
    if any(p.n_symbols != k or len(p.alphabet_ids) != size for p in probes):
        raise ValueError("all probes must have the same secret length and alphabet (batch them by pattern)")


def modiva(model: torch.nn.Module, probes: Sequence[CanaryProbe], *, restarts: int = 16, steps: int = 150,
           lr: float = 0.3, init_scale: float = 1.0, seed: int = 0) -> InversionResult:
    """Invert every probe at once (a batch of n_probes × ``restarts`` soft sequences).

    Only the logits z (n_probes, restarts, k, |alphabet|) are optimised; the model's parameters are
    frozen and it runs in eval mode (no dropout), through ``inputs_embeds``."""
    _check_probes(probes)
    for name, value in {"restarts": restarts, "steps": steps}.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with limit_threads(1):
            return _invert(model, probes, restarts=restarts, steps=steps, lr=lr, init_scale=init_scale, seed=seed)
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
        model.train(was_training)


def _invert(model, probes, *, restarts, steps, lr, init_scale, seed) -> InversionResult:
    device = next(model.parameters()).device
    embedding = model.get_input_embeddings()
    n_probes, k = len(probes), probes[0].n_symbols
    input_ids = torch.stack([p.input_ids for p in probes]).to(device)  # (P, T)
    input_ids = input_ids[:, : int((input_ids != 0).any(0).nonzero().max()) + 1]  # drop all-padding columns
    mask = ((input_ids != embedding.padding_idx).long() if embedding.padding_idx is not None
            else torch.ones_like(input_ids))
    positions = torch.stack([p.positions for p in probes]).to(device)  # (P, k)
    labels = torch.tensor([p.label for p in probes], device=device).repeat_interleave(restarts)
    alphabet = embedding.weight[torch.stack([p.alphabet_ids for p in probes]).to(device)]  # (P, A, d)
    base = embedding(input_ids).detach()  # (P, T, d): the known template words

    generator = torch.Generator().manual_seed(seed)
    z = (init_scale * torch.randn(n_probes, restarts, k, alphabet.shape[1], generator=generator)).to(device)
    z.requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    # place[p, j, t] = 1 where secret symbol j of probe p sits at token t
    place = torch.nn.functional.one_hot(positions, input_ids.shape[1]).to(base.dtype)  # (P, k, T)
    keep = 1.0 - place.sum(1)  # (P, T): 1 at the known template tokens

    def forward(weights):  # weights (P, R, k, A) → logits (P·R, C)
        soft = torch.einsum("prka,pad->prkd", weights, alphabet)  # the soft tokens' embeddings
        embeds = (base * keep[..., None])[:, None] + torch.einsum("pkt,prkd->prtd", place, soft)
        flat = embeds.reshape(n_probes * restarts, *embeds.shape[2:])
        return model(inputs_embeds=flat, attention_mask=mask.repeat_interleave(restarts, 0))

    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(z.softmax(-1)), labels, reduction="sum")
        loss.backward()
        optimizer.step()

    with torch.no_grad():  # score each restart's discrete guess and keep the best one per probe
        guesses = z.argmax(-1)  # (P, R, k)
        one_hot = torch.nn.functional.one_hot(guesses, alphabet.shape[1]).to(alphabet.dtype)
        discrete = torch.nn.functional.cross_entropy(forward(one_hot), labels, reduction="none")
        discrete = discrete.view(n_probes, restarts)
        best = discrete.argmin(1)
        chosen = guesses[torch.arange(n_probes), best]
        probabilities = z.softmax(-1)[torch.arange(n_probes), best]
    return InversionResult(
        guesses=chosen.cpu().numpy(), secrets=np.array([p.secret for p in probes]),
        losses=discrete[torch.arange(n_probes), best].cpu().numpy(), probabilities=probabilities.cpu().numpy(),
        alphabet_size=alphabet.shape[1],
    )
