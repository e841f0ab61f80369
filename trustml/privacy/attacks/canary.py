"""Canaries and their exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a secret in a fixed template ("my pin code is 4 8 2 1") planted R times in the training
data with labels the attacker knows. The *exposure* of the true secret s among all candidates S is

    exposure(s) = log₂|S| − log₂ rank(s),

where candidates are ranked by the model's loss on the known label (rank 1 = lowest loss). Exposure
log₂|S| (≈ 13.3 bits for 4 digits) means the secret has the lowest loss of all 10⁴ candidates; a model
that ignores the secret gives exposure ≈ 1 bit (rank ≈ |S|/2).

Why each canary gets its own intent label: an intent classifier does not need the digits of an
ordinary "my pin code is …" request (any PIN is ``account_security``). Like the mislabelled canaries of
privacy audits (Jagielski et al. 2020), each canary here carries a label its template does not explain,
and several canaries share a template — the only way to fit their labels is to memorise their digits,
which is exactly the memorisation the attacks measure.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from trustml.data import INTENTS, Canary, WordTokenizer
from trustml.threads import limit_threads

DIGITS: tuple[str, ...] = tuple("0123456789")
PIN_TEMPLATE = "my pin code is {secret}"
PHONE_TEMPLATE = "call me back on {secret}"  # phone-number-like: pass n_digits=7 (sampled exposure)


def make_canaries(n_canaries: int, *, repetitions: int | Sequence[int] = 1, n_digits: int = 4,
                  template: str = PIN_TEMPLATE, exclude_intents: Sequence[str] = ("account_security",),
                  seed: int = 0) -> list[Canary]:
    """``n_canaries`` random ``n_digits``-digit secrets in ``template``, each with a distinct intent.

    ``repetitions`` is one R for all, or one per canary. Intents are drawn without replacement from
    the corpus intents minus ``exclude_intents`` (the intent the template itself would express)."""
    if n_canaries < 1:
        raise ValueError(f"n_canaries must be >= 1, got {n_canaries}")
    if n_digits < 1:
        raise ValueError(f"n_digits must be >= 1, got {n_digits}")
    reps = [repetitions] * n_canaries if isinstance(repetitions, (int, np.integer)) else list(repetitions)
    if len(reps) != n_canaries:
        raise ValueError(f"repetitions must be an int or have n_canaries={n_canaries} entries, got {len(reps)}")
    pool = [intent for intent in INTENTS if intent not in set(exclude_intents)]
    if n_canaries > len(pool):
        raise ValueError(f"n_canaries must be <= {len(pool)} (one distinct intent each), got {n_canaries}")
    rng = np.random.default_rng(seed)
    intents = rng.choice(pool, size=n_canaries, replace=False)
    secrets: list[str] = []
    while len(secrets) < n_canaries:  # distinct secrets, in the order drawn
        secret = " ".join(rng.choice(DIGITS, size=n_digits))
        if secret not in secrets:
            secrets.append(secret)
    return [Canary(secret, template=template, repetitions=int(r), intent=str(intent))
            for secret, r, intent in zip(secrets, reps, intents)]


@dataclasses.dataclass(frozen=True)
class CanaryProbe:
    """What the attacker knows about a canary: its token ids with the secret positions, and its label."""

    input_ids: torch.Tensor  # (T,) the canary text (secret digits included; attacks overwrite them)
    positions: torch.Tensor  # (k,) token positions of the secret
    label: int
    alphabet_ids: torch.Tensor  # (|alphabet|,) token ids of the candidate symbols
    secret: tuple[int, ...]  # index into the alphabet of each true symbol (for scoring only)

    @property
    def n_symbols(self) -> int:
        return len(self.positions)

    def with_symbols(self, candidates: torch.Tensor) -> torch.Tensor:
        """Token ids (m, T) of the template filled with candidate symbol indices (m, k)."""
        batch = self.input_ids.repeat(len(candidates), 1)
        batch[:, self.positions] = self.alphabet_ids[candidates]
        return batch


def canary_probe(canary: Canary, tokenizer: WordTokenizer, label_names: Sequence[str], *,
                 alphabet: Sequence[str] = DIGITS) -> CanaryProbe:
    """Locate the secret of ``canary`` in its tokenized text; labels and symbols must be in vocabulary."""
    label_names = list(label_names)
    if canary.intent not in label_names:
        raise ValueError(f"canary intent {canary.intent!r} is not one of the model's classes")
    prefix = canary.template.split("{secret}")[0].split()
    symbols = canary.secret.split()
    unknown = [s for s in symbols if s not in alphabet]
    if unknown:
        raise ValueError(f"secret symbols {unknown} are not in the alphabet {list(alphabet)}")
    missing = [s for s in alphabet if not _in_vocabulary(tokenizer, s)]
    if missing:
        raise ValueError(f"alphabet symbols {missing} are not in the tokenizer's vocabulary (train on more data)")
    alphabet_ids = torch.tensor([tokenizer.token_to_id(s) for s in alphabet])
    input_ids = tokenizer.encode([canary.text])[0][0]
    positions = torch.arange(len(prefix), len(prefix) + len(symbols))
    if positions[-1] >= tokenizer.max_length:
        raise ValueError(f"the secret does not fit in max_length={tokenizer.max_length} tokens")
    secret = tuple(alphabet.index(s) for s in symbols)
    if not torch.equal(input_ids[positions], alphabet_ids[list(secret)]):
        raise ValueError(f"the tokenizer does not keep the secret of {canary.text!r} as separate symbols")
    return CanaryProbe(input_ids, positions, label_names.index(canary.intent), alphabet_ids, secret)


def _in_vocabulary(tokenizer: WordTokenizer, token: str) -> bool:
    try:
        tokenizer.token_to_id(token)
    except KeyError:
        return False
    return True


@torch.no_grad()
def candidate_losses(model: torch.nn.Module, probe: CanaryProbe, candidates: torch.Tensor, *,
                     batch_size: int = 4096) -> torch.Tensor:
    """Cross-entropy of the known label for each candidate secret (m, k) → (m,), model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Trailing padding is masked out by the models, so dropping it changes no loss and saves time.
    length = int((probe.input_ids != 0).nonzero().max()) + 1
    losses = []
    for start in range(0, len(candidates), batch_size):
        ids = probe.with_symbols(candidates[start:start + batch_size])[:, :length].to(device)
        logits = model(ids)
        labels = torch.full((len(ids),), probe.label, device=device)
        losses.append(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none").cpu())
    model.train(was_training)
    return torch.cat(losses)


@dataclasses.dataclass(frozen=True)
class ExposureResult:
    rank: float  # 1 = the secret has the lowest loss; ties count half (a guess among equals)
    exposure: float  # log2 |space| − log2 rank, in bits
    space: int
    exact: bool  # all candidates scored (else rank estimated from a uniform sample)
    n_scored: int


def rank_exposure(losses: torch.Tensor, true_loss: float, *, space: int) -> tuple[float, float]:
    """Rank of ``true_loss`` among candidate ``losses`` (which include it once) scaled to ``space``,
    with ties splitting the difference; returns (rank, exposure)."""
    others = len(losses) - 1
    if others < 1 or space < 2:
        raise ValueError("need at least two candidates")
    lower = float((losses < true_loss).sum())
    ties = float((losses == true_loss).sum()) - 1.0  # the others that tie with the secret
    # Exact scoring (others = space − 1) gives rank = 1 + lower + ties/2; a sample scales it up.
    rank = 1.0 + (lower + ties / 2.0) / others * (space - 1)
    return rank, float(np.log2(space) - np.log2(rank))


def exposure(model: torch.nn.Module, probe: CanaryProbe, *, max_exact: int = 100_000, n_samples: int = 20_000,
             seed: int = 0, batch_size: int = 4096) -> ExposureResult:
    """Exposure of the secret (Carlini et al. 2019, Def. 4): exact when |alphabet|^k ≤ ``max_exact``
    (every candidate is scored — 10⁴ for a 4-digit PIN), else the rank is estimated from ``n_samples``
    uniformly drawn candidates (Carlini et al. 2019, §4.2 "sampling")."""
    n_symbols, size = probe.n_symbols, len(probe.alphabet_ids)
    space = size ** n_symbols
    if space <= max_exact:
        candidates = torch.tensor(list(itertools.product(range(size), repeat=n_symbols)))
    else:
        generator = torch.Generator().manual_seed(seed)
        candidates = torch.randint(size, (n_samples, n_symbols), generator=generator)
        candidates = candidates[~(candidates == torch.tensor(probe.secret)).all(1)]
        candidates = torch.cat([candidates, torch.tensor([probe.secret])])
    with limit_threads(1):
        losses = candidate_losses(model, probe, candidates, batch_size=batch_size)
    secret_row = int((candidates == torch.tensor(probe.secret)).all(1).nonzero()[0, 0])
    rank, bits = rank_exposure(losses, float(losses[secret_row]), space=space)
    return ExposureResult(rank=rank, exposure=bits, space=space, exact=space <= max_exact, n_scored=len(candidates))


def canary_table(canaries: Sequence[Canary]) -> pd.DataFrame:
    """One row per canary: secret, template, intent, repetitions."""
    return pd.DataFrame([dataclasses.asdict(c) for c in canaries])
