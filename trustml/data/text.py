"""Tokenizers, tensors and loaders shared by the chapters.

:class:`Tokenizer` is the interface every tokenizer of the book satisfies: the classifiers' word-level
:class:`WordTokenizer` here, and the language models' ``LMTokenizer`` and ``HFTokenizer`` (any Hugging Face
tokenizer) in :mod:`trustml.models.lm`. The word-level tokenizers are Hugging Face ``tokenizers`` WordLevel
models (lower-cased, split on whitespace and punctuation), trained on the training texts only; unseen words
map to ``[UNK]``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, trainers
from torch.utils.data import DataLoader, TensorDataset

PAD, UNK = "[PAD]", "[UNK]"


@runtime_checkable
class Tokenizer(Protocol):
    """What the book's code needs of a tokenizer: texts to padded ``(input_ids, attention_mask)`` tensors
    (B, T) with padding id ``pad_id``, ids back to text, and single words to ids (a word outside the
    vocabulary raises ``KeyError``)."""

    pad_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_to_id(self, word: str) -> int: ...


class WordTokenizer:
    """Word-level tokenizer with fixed-length padding: ``encode(texts) -> (input_ids, attention_mask)``."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, max_length: int):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.token_to_id(PAD)
        self.unk_id = tokenizer.token_to_id(UNK)
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token=PAD, length=max_length)
        tokenizer.enable_truncation(max_length=max_length)

    @classmethod
    def fit(cls, texts: Sequence[str], *, max_length: int = 24, min_frequency: int = 1) -> WordTokenizer:
        """Learn the vocabulary of ``texts`` (words seen at least ``min_frequency`` times)."""
        texts = list(texts)
        if not texts:
            raise ValueError("texts must not be empty")
        tokenizer = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK], min_frequency=min_frequency)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer, max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def token_to_id(self, token: str) -> int:
        """Id of ``token``; a word outside the vocabulary is an error (not silently ``[UNK]``)."""
        token_id = self._tokenizer.token_to_id(token.lower())
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return token_id

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, both ``(len(texts), max_length)`` int64, padded on the right."""
        encodings = self._tokenizer.encode_batch(list(texts))
        input_ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        attention_mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return input_ids, attention_mask

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids if int(i) != self.pad_id])


@dataclasses.dataclass
class IntentTask:
    """A text-classification task ready for training: tensors, tokenizer, label names and the raw frames."""

    train: TensorDataset  # (input_ids, labels)
    test: TensorDataset
    tokenizer: WordTokenizer
    label_names: list[str]
    train_frame: pd.DataFrame
    test_frame: pd.DataFrame

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def tensors(self, frame: pd.DataFrame) -> TensorDataset:
        """Encode any frame with ``text`` and ``intent`` columns with this task's tokenizer and labels."""
        return to_tensor_dataset(frame, self.tokenizer, self.label_names)


def to_tensor_dataset(frame: pd.DataFrame, tokenizer: WordTokenizer, label_names: Sequence[str]) -> TensorDataset:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(frame["intent"]) - set(index))
    if unknown:
        raise ValueError(f"frame has intents outside label_names: {unknown[:5]}")
    input_ids, _ = tokenizer.encode(frame["text"].tolist())
    labels = torch.tensor(frame["intent"].map(index).to_numpy(), dtype=torch.long)
    return TensorDataset(input_ids, labels)


def make_task(train_frame: pd.DataFrame, test_frame: pd.DataFrame, *, max_length: int = 24,
              label_names: Sequence[str] | None = None) -> IntentTask:
    """Fit a tokenizer on ``train_frame`` and encode both frames (columns ``text`` and ``intent``)."""
    label_names = list(label_names) if label_names is not None else sorted(set(train_frame["intent"]))
    tokenizer = WordTokenizer.fit(train_frame["text"], max_length=max_length)
    return IntentTask(
        train=to_tensor_dataset(train_frame, tokenizer, label_names),
        test=to_tensor_dataset(test_frame, tokenizer, label_names),
        tokenizer=tokenizer, label_names=label_names, train_frame=train_frame, test_frame=test_frame,
    )


def load_intent_task(
    source: str = "synthetic", *, max_length: int = 24, seed: int = 0, path: str | os.PathLike[str] | None = None,
    **corpus_options,
) -> IntentTask:
    """The chapters' intent-classification task.

    ``source="synthetic"`` generates the default corpus (``corpus_options`` go to ``make_corpus``);
    ``source="clinc150"`` loads CLINC150's in-scope train/test splits from ``path=`` or wherever
    :func:`trustml.data.clinc150.find_clinc150` finds a copy (it raises ``Clinc150Unavailable`` when there is none).
    """
    from trustml.data.clinc150 import find_clinc150, load_clinc150
    from trustml.data.corpus import INTENTS, make_corpus

    if source == "synthetic":
        if path is not None:
            raise TypeError("path applies to source='clinc150' only (the synthetic corpus is generated)")
        corpus = make_corpus(seed=seed, **corpus_options)
        train, test = corpus.split(seed=seed)
        return make_task(train, test, max_length=max_length, label_names=INTENTS)
    if source == "clinc150":
        if corpus_options:
            raise TypeError(f"options {sorted(corpus_options)} apply to source='synthetic' only")
        folder = find_clinc150(path)  # one lookup (and at most one download) for both splits
        return make_task(load_clinc150("train", path=folder), load_clinc150("test", path=folder), max_length=max_length)
    raise ValueError(f"source must be 'synthetic' or 'clinc150', got {source!r}")


def make_loader(
    dataset: TensorDataset, *, batch_size: int = 64, shuffle: bool = True, seed: int = 0
) -> DataLoader:
    """A seeded DataLoader (same seed, same batch order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def subset(dataset: TensorDataset, indices: Sequence[int] | np.ndarray) -> TensorDataset:
    """A TensorDataset of the given rows (a copy, so it can be handed to a device or a shadow model)."""
    index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return TensorDataset(*(t[index] for t in dataset.tensors))
