"""A tiny causal language model and its tokenizers (the teacher and student of the fairness part's
role-reversal distillation chapter), and the same interface over Hugging Face causal LMs.

* :class:`LMTokenizer` — word-level (Hugging Face ``tokenizers``), with ``[BOS]``/``[EOS]``; a
  :meth:`~LMTokenizer.fingerprint` lets distillation refuse a student with a different vocabulary.
  :class:`HFTokenizer` gives any Hugging Face tokenizer the same interface. Both satisfy
  :class:`trustml.data.text.Tokenizer`.
* :class:`CausalLM` — a GPT-style pre-LayerNorm Transformer decoder written from Embedding, Linear and
  LayerNorm (``trustml.models``' Transformer blocks with ``causal=True``); ``forward(input_ids, attention_mask=None)``
  returns next-token logits (B, T, V). :func:`train_lm`, :func:`perplexity`, :func:`next_token_probs`,
  :func:`generate`.
* Online, any Hugging Face causal LM can be the teacher: :func:`load_hf_causal_lm` (``"distilgpt2"``)
  returns the model, loaded at a pinned hub commit, and an :class:`HFTokenizer`; :func:`hf_student` builds a
  smaller model of the same family and tokenizer. The hub is not reached offline; the unit tests run the same
  code path on a randomly initialised GPT-2 built from a config, saved in a local Hugging Face cache.
"""


from __future__ import annotations

import hashlib
import math
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from trustml.models.classifiers import TransformerBlock
from trustml.models.training import fit

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"


def _check_texts(texts: Sequence[str], name: str = "texts") -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError(f"{name} must not be empty")
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ValueError(f"{name} must be non-empty strings; entries {empty[:5]} are empty")
    return texts


class LMTokenizer:
    """Word-level tokenizer for the tiny LM: lower-cased, split on whitespace and punctuation, ``[BOS]``
    prepended and (optionally) ``[EOS]`` appended, right-padded with ``[PAD]`` (id 0)."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self.pad_id, self.unk_id = _special_id(tokenizer, PAD), _special_id(tokenizer, UNK)
        self.bos_id, self.eos_id = _special_id(tokenizer, BOS), _special_id(tokenizer, EOS)
        if self.pad_id != 0:
            raise ValueError("the [PAD] token must have id 0")

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_frequency: int = 1) -> LMTokenizer:
        texts = _check_texts(texts)
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK, BOS, EOS], min_frequency=min_frequency)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    @property
    def vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab()

    def fingerprint(self) -> str:
        """SHA-256 of the (token, id) table: equal fingerprints ⇔ interchangeable token ids."""
        return _vocab_fingerprint(self.vocab)

    def token_to_id(self, word: str) -> int:
        token_id = self._tokenizer.token_to_id(word.lower())
        if token_id is None:
            raise KeyError(f"token {word!r} is not in the vocabulary")
        return token_id

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def encode(self, texts: Sequence[str], *, add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` (B, T): ``[BOS] tokens [EOS]``, right-padded to the longest."""
        texts = _check_texts(texts)
        rows = [[self.bos_id, *self.tokenize(t)] + ([self.eos_id] if add_eos else []) for t in texts]
        return _pad(rows, self.pad_id)

    def decode(self, ids: Sequence[int]) -> str:
        special = {self.pad_id, self.bos_id, self.eos_id}
        words = []
        for i in ids:
            if int(i) in special:
                continue
            word = self._tokenizer.id_to_token(int(i))
            if word is None:
                raise ValueError(f"ids: {int(i)} is not a token id (vocabulary size {self.vocab_size})")
            words.append(word)
        return " ".join(words)


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token (LMTokenizer.fit adds {[PAD, UNK, BOS, EOS]})")
    return token_id


def _vocab_fingerprint(vocab: dict[str, int]) -> str:
    return hashlib.sha256(repr(sorted(vocab.items(), key=lambda kv: kv[1])).encode()).hexdigest()[:16]


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


class HFTokenizer:
    """The :class:`LMTokenizer` interface over a Hugging Face tokenizer (e.g. GPT-2's byte-level BPE).

    A word maps to the single token ``" word"`` (GPT-2 marks a leading space), else ``"word"``; a word
    that needs several tokens raises ``KeyError`` (it cannot be a next-token target). The BOS token is the
    tokenizer's ``bos_token`` (GPT-2: ``<|endoftext|>``); padding uses ``pad_token`` or, failing that, EOS
    with the attention mask marking real tokens.
    """

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.bos_id is None or self.eos_id is None:
            raise ValueError("the Hugging Face tokenizer needs a bos or eos token")

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def vocab(self) -> dict[str, int]:
        return self.hf.get_vocab()

    def fingerprint(self) -> str:
        return _vocab_fingerprint(self.vocab)

    def token_to_id(self, word: str) -> int:
        vocab = self.vocab
        for candidate in (f"Ġ{word}", f" {word}", word):  # byte-level BPE writes the space as "Ġ"
            if candidate in vocab:
                return vocab[candidate]
        raise KeyError(f"word {word!r} is not a single token of this tokenizer")

    def tokenize(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def encode(self, texts: Sequence[str], *, add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _check_texts(texts)
        rows = [[self.bos_id, *self.tokenize(t)] + ([self.eos_id] if add_eos else []) for t in texts]
        return _pad(rows, self.pad_id)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)


# ---- The model ----

class CausalLM(nn.Module):
    """A small GPT-style language model: token + position embeddings, ``n_layers`` decoder blocks, a final
    LayerNorm and a linear next-token head. ``forward(input_ids, attention_mask=None) -> logits (B, T, V)``;
    ``hidden_states(...)`` gives the final normalised states (B, T, d) for downstream fine-tuning."""

    def __init__(self, vocab_size: int, *, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, d_ff: int = 128,
                 max_length: int = 32, dropout: float = 0.0):
        super().__init__()
        for name, value in {"vocab_size": vocab_size, "d_model": d_model, "n_heads": n_heads, "n_layers": n_layers,
                            "d_ff": d_ff, "max_length": max_length}.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.vocab_size, self.max_length = vocab_size, max_length
        self.config = {"vocab_size": vocab_size, "d_model": d_model, "n_heads": n_heads, "n_layers": n_layers,
                       "d_ff": d_ff, "max_length": max_length, "dropout": dropout}
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.position = nn.Embedding(max_length, d_model)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff, dropout, causal=True)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        if T > self.max_length:
            raise ValueError(f"sequence length {T} exceeds max_length={self.max_length}")
        mask = (input_ids != 0).long() if attention_mask is None else attention_mask
        x = self.embedding(input_ids) + self.position(torch.arange(T, device=input_ids.device))
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.hidden_states(input_ids, attention_mask))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lm_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits (B, T, V) of a trustml :class:`CausalLM` or a Hugging Face causal LM."""
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    return out.logits if hasattr(out, "logits") else out


def lm_batches(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, batch_size: int, shuffle: bool, seed: int):
    order = torch.randperm(len(input_ids), generator=torch.Generator().manual_seed(seed)) if shuffle \
        else torch.arange(len(input_ids))
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        length = int(attention_mask[rows].sum(1).max())  # trim the batch to its longest row
        yield rows, input_ids[rows, :length], attention_mask[rows, :length]


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from positions ≤ t, over real (non-padding) targets."""
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=-100)


def train_lm(model: nn.Module, tokenizer, texts: Sequence[str], *, epochs: int = 5, batch_size: int = 64,
             lr: float = 3e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Maximum-likelihood training (Adam) on ``texts``; returns the mean loss of each epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    input_ids, attention_mask = tokenizer.encode(texts)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return fit(model, lambda epoch: lm_batches(input_ids, attention_mask, batch_size=batch_size, shuffle=True,
                                               seed=seed + epoch),
               loss=lambda model, batch: next_token_loss(lm_logits(model, batch[1], batch[2]), batch[1], batch[2]),
               optimizer=optimizer, epochs=epochs, progress=progress, desc="LM epochs")


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> float:
    """exp(mean negative log-likelihood per predicted token) on ``texts`` (``[EOS]`` included)."""
    input_ids, attention_mask = tokenizer.encode(texts)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for _, ids, mask in lm_batches(input_ids, attention_mask, batch_size=batch_size, shuffle=False, seed=0):
        n_targets = int(mask[:, 1:].sum())
        total += next_token_loss(lm_logits(model, ids, mask), ids, mask).item() * n_targets
        count += n_targets
    model.train(was_training)
    return math.exp(total / count)


@torch.no_grad()
def next_token_probs(model: nn.Module, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """(len(prompts), V): the model's distribution of the token that follows each prompt."""
    prompts = _check_texts(prompts, "prompts")
    input_ids, attention_mask = tokenizer.encode(prompts, add_eos=False)
    was_training = model.training
    model.eval()
    logits = lm_logits(model, input_ids, attention_mask)
    model.train(was_training)
    last = attention_mask.sum(1) - 1
    return logits[torch.arange(len(prompts)), last].softmax(-1)


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 8,
             temperature: float = 1.0, seed: int = 0) -> list[list[int]]:
    """Sample ``max_new_tokens`` continuation tokens per prompt (ancestral sampling; stops at ``[EOS]``)."""
    prompts = _check_texts(prompts, "prompts")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    generator = torch.Generator().manual_seed(seed)
    rows = [[tokenizer.bos_id, *tokenizer.tokenize(p)] for p in prompts]
    continuations: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(max_new_tokens):
        ids, mask = _pad(rows, tokenizer.pad_id)
        max_length = getattr(model, "max_length", None)
        if isinstance(max_length, int) and ids.shape[1] > max_length:
            break
        logits = lm_logits(model.eval(), ids, mask)[torch.arange(len(rows)), mask.sum(1) - 1]
        sampled = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator).squeeze(1)
        for i, token in enumerate(sampled.tolist()):
            if done[i]:
                continue
            if token == tokenizer.eos_id:
                done[i] = True
                continue
            rows[i].append(token)
            continuations[i].append(token)
    return continuations


# ---- Hugging Face path (online; e.g. "distilgpt2") ----

#: Hub commits of the causal LMs the book names. A name alone loads whatever its main branch holds on the day
#: (weights and tokenizer can change under the same name); a commit hash cannot move.
HF_CAUSAL_LM_REVISIONS: dict[str, str] = {
    "distilgpt2": "2290a62682d06624634c1f46a6ad5be0f47f38aa",
    "distilbert/distilgpt2": "2290a62682d06624634c1f46a6ad5be0f47f38aa",
    "gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
    "openai-community/gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
}
_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_revision(name: str, revision: str | None = None) -> str:
    """The commit to load hub model ``name`` at: ``revision`` (a 40-hex commit hash) or the pin in
    :data:`HF_CAUSAL_LM_REVISIONS`; an error for anything that can move (a branch, a tag, no pin)."""
    if revision is None:
        if name not in HF_CAUSAL_LM_REVISIONS:
            raise ValueError(f"revision: {name!r} has no pinned commit; pass revision=<the 40-hex commit hash> (the "
                             f"model page's 'Files and versions' history); pinned: {sorted(HF_CAUSAL_LM_REVISIONS)}")
        return HF_CAUSAL_LM_REVISIONS[name]
    if not isinstance(revision, str) or not _COMMIT.fullmatch(revision):
        raise ValueError(f"revision must be a 40-character lower-case hex commit hash, got {revision!r} "
                         "(a branch or tag name can point to other files tomorrow)")
    return revision


def load_hf_causal_lm(name: str, *, revision: str | None = None):
    """``(model, HFTokenizer)`` for a Hugging Face causal LM (needs the hub or a local cache).

    A hub ``name`` loads at a pinned commit (:func:`hub_revision`: ``revision=`` or the pin for the names the
    book uses); a local folder loads as it is (``revision`` must then be ``None``).

    Any causal LM works where the gendered words are single tokens (GPT-2's BPE: " he", " she", " his",
    " her", …); distillation then needs a student with the same tokenizer (:func:`hf_student`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a hub model name or a local folder, got {name!r}")
    if pathlib.Path(name).expanduser().is_dir():
        if revision is not None:
            raise ValueError(f"revision applies to hub names; {name!r} is a local folder")
        options: dict[str, str] = {}
    else:
        options = {"revision": hub_revision(name, revision)}
    tokenizer = AutoTokenizer.from_pretrained(name, **options)
    model = AutoModelForCausalLM.from_pretrained(name, **options)
    return model.eval(), HFTokenizer(tokenizer)


def hf_student(teacher, *, n_layers: int = 2, seed: int = 0):
    """A smaller model of the teacher's family: same config (and so the same tokenizer and vocabulary)
    with ``n_layers`` layers, initialised from every other teacher layer (DistilGPT2-style), embeddings
    copied. Works for GPT-2-like configs (``n_layer``/``num_hidden_layers``)."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(teacher.config)
    attribute = "n_layer" if hasattr(config, "n_layer") else "num_hidden_layers"
    teacher_layers = getattr(config, attribute)
    if not 1 <= n_layers <= teacher_layers:
        raise ValueError(f"n_layers must be in [1, {teacher_layers}] (the teacher's depth), got {n_layers}")
    setattr(config, attribute, n_layers)
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(config)
    teacher_state = teacher.state_dict()
    keep = np.linspace(0, teacher_layers - 1, n_layers).round().astype(int)
    state = {}
    for key, value in student.state_dict().items():
        source = key
        for i, j in enumerate(keep):
            for pattern in (f".h.{i}.", f".layers.{i}."):
                if pattern in key:
                    source = key.replace(pattern, pattern.replace(f".{i}.", f".{j}."))
        if source in teacher_state and teacher_state[source].shape == value.shape:
            state[key] = teacher_state[source]
    student.load_state_dict(state, strict=False)
    return student


__all__ = [
    "BOS", "EOS", "HF_CAUSAL_LM_REVISIONS", "PAD", "UNK", "CausalLM", "HFTokenizer", "LMTokenizer", "generate",
    "hf_student", "hub_revision", "lm_batches",
    "lm_logits", "load_hf_causal_lm", "next_token_loss", "next_token_probs", "perplexity", "train_lm",
]
