"""The book's two text classifiers and their registry (``build_model("embedding" | "transformer", ...)``).

Both take ``input_ids`` (B, T) or ``inputs_embeds`` (B, T, d) — the latter lets white-box attacks feed
soft tokens — and expose their token embedding through ``get_input_embeddings()``. Only Embedding,
Linear and LayerNorm layers hold parameters, so DP engines (trustml's and Opacus') can handle them;
attention is written from Linear layers because Opacus rejects ``nn.MultiheadAttention``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _padding_mask(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, shape) -> torch.Tensor:
    if attention_mask is not None:
        return attention_mask.to(torch.float32)
    if input_ids is not None:
        return (input_ids != 0).to(torch.float32)
    return torch.ones(shape[:2])


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1; an all-padding row gives zeros."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class _TextClassifier(nn.Module):
    """Input handling both classifiers share: token ids or soft embeddings, and the padding mask."""

    embedding: nn.Embedding

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def _embed(self, input_ids, attention_mask, inputs_embeds) -> tuple[torch.Tensor, torch.Tensor]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        embeds = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        return embeds, _padding_mask(input_ids, attention_mask, embeds.shape).to(embeds.device)


class EmbeddingClassifier(_TextClassifier):
    """Mean-pooled word embeddings → hidden ReLU layer → class logits (a fastText-style intent model)."""

    def __init__(self, vocab_size: int, num_classes: int, *, embed_dim: int = 64, hidden_dim: int = 64,
                 padding_idx: int = 0, dropout: float = 0.0):
        super().__init__()
        for name, value in {"vocab_size": vocab_size, "num_classes": num_classes, "embed_dim": embed_dim,
                            "hidden_dim": hidden_dim}.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.hidden = nn.Linear(embed_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, input_ids: torch.Tensor | None = None, *, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        embeds, mask = self._embed(input_ids, attention_mask, inputs_embeds)
        pooled = masked_mean(embeds, mask)
        return self.head(self.dropout(torch.relu(self.hidden(pooled))))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention from four Linear layers (Vaswani et al. 2017).

    Padding keys are masked; with ``causal=True`` position t also attends only to positions ≤ t (the
    language models of the fairness chapters use it so).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, *, causal: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.causal = causal
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = (f(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        allowed = mask.bool()[:, None, None, :]
        if self.causal:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attention = self.dropout(scores.softmax(-1))
        return self.out((attention @ v).transpose(1, 2).reshape(B, T, -1))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm Transformer block: x + attention(LN(x)), then x + MLP(LN(x)); ``causal`` for decoders."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, *, causal: bool = False):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, n_heads, dropout, causal=causal)
        self.ff_in, self.ff_out = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.ff_out(torch.nn.functional.gelu(self.ff_in(self.norm2(x)))))


class TransformerClassifier(_TextClassifier):
    """A small Transformer encoder: token + position embeddings, ``n_layers`` blocks, mean-pool, linear head."""

    def __init__(self, vocab_size: int, num_classes: int, *, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int = 128, max_length: int = 32, padding_idx: int = 0, dropout: float = 0.0):
        super().__init__()
        for name, value in {"vocab_size": vocab_size, "num_classes": num_classes, "d_model": d_model,
                            "n_heads": n_heads, "n_layers": n_layers, "d_ff": d_ff, "max_length": max_length}.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.max_length = max_length
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.position = nn.Embedding(max_length, d_model)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor | None = None, *, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        embeds, mask = self._embed(input_ids, attention_mask, inputs_embeds)
        B, T, _ = embeds.shape
        if T > self.max_length:
            raise ValueError(f"sequence length {T} exceeds max_length={self.max_length}")
        # Position ids 0..T-1 for every row, as a broadcast view (no copy); Opacus' ghost mode needs
        # `.contiguous()` ids, which trustml.bench makes for it — trustml's engine takes the view as is.
        positions = torch.arange(T, device=embeds.device).expand(B, T)
        x = embeds + self.position(positions)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(masked_mean(self.norm(x), mask))


#: The classifiers by name: what attacks and experiments ask for when they train many models the same way.
ARCHITECTURES: dict[str, type[nn.Module]] = {"embedding": EmbeddingClassifier, "transformer": TransformerClassifier}


def build_model(architecture: str, *, vocab_size: int, num_classes: int, seed: int = 0, **options) -> nn.Module:
    """A fresh model from :data:`ARCHITECTURES` (``"embedding"`` or ``"transformer"``), initialised from ``seed``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    torch.manual_seed(seed)
    return ARCHITECTURES[architecture](vocab_size, num_classes, **options)
