"""trustml.privacy.finetuning: the pooled classifier, LoRA injection, subsets, features and the shipped grid."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from trustml.privacy.finetuning import (
    GRID_PATH, VARIANTS, PooledClassifier, Setting, add_lora, load_grid, run_variant, sentence_features,
    stratified_subset, tokenize,
)


def tiny_classifier(num_classes=3):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=20, max_position_embeddings=16, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return PooledClassifier(BertModel(config), num_classes)


def padded_ids():
    ids = torch.randint(1, 40, (4, 10), generator=torch.Generator().manual_seed(1))
    ids[0, 6:] = 0
    ids[1, 3:] = 0
    ids[2:, 8:] = 0  # columns 8 and 9 are padding in every row
    return ids


def test_the_classifier_mean_pools_real_tokens_and_cutting_padding_columns_changes_nothing():
    model = tiny_classifier().eval()
    ids = padded_ids()
    mask = (ids != 0).long()
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = model.head((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-6)
    # explicit position ids are cut with the columns (and stay valid for the encoder)
    positions = torch.arange(10).repeat(4, 1)
    torch.testing.assert_close(model(ids, position_ids=positions), expected, rtol=1e-5, atol=1e-6)
    assert model.encoder.pooler is None  # the unused [CLS] pooler is dropped


def test_the_classifier_refuses_fewer_than_two_classes():
    with pytest.raises(ValueError, match="num_classes"):
        tiny_classifier(num_classes=1)


def test_sentence_features_are_what_the_head_reads():
    model = tiny_classifier().eval()
    ids = padded_ids()
    features = sentence_features(model, ids, batch_size=3)
    assert features.shape == (4, 16)
    torch.testing.assert_close(model.head(features), model(ids), rtol=1e-5, atol=1e-6)
    assert isinstance(model.head, nn.Linear)  # the head is put back


def test_lora_trains_only_adapters_and_the_named_modules():
    model = add_lora(tiny_classifier(), targets=("query", "value"), rank=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "lora_" in n or n.startswith("head.")}
    assert any("query.lora_A" in n for n in trainable) and not any("key" in n for n in trainable)
    with pytest.raises(ValueError, match="rank"):
        add_lora(tiny_classifier(), rank=0)


def test_stratified_subset():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    rows = stratified_subset(labels, 30, seed=0)
    assert len(rows) == 30 and len(set(rows.tolist())) == 30
    assert torch.bincount(labels[rows], minlength=3).tolist() == [10, 10, 10]
    assert set(labels[stratified_subset(labels, 3)].tolist()) == {0, 1, 2}  # one per class
    for size in (0, -1, 101):
        with pytest.raises(ValueError, match="size"):
            stratified_subset(labels, size)


def test_tokenize_refuses_no_texts():
    with pytest.raises(ValueError, match="empty"):
        tokenize(None, [])


def test_run_variant_checks_its_arguments():
    data = dict(train_inputs=torch.zeros(4, 3, dtype=torch.long), train_labels=torch.tensor([0, 1, 0, 1]),
                test_inputs=torch.zeros(2, 3, dtype=torch.long), test_labels=torch.tensor([0, 1]), num_classes=2,
                setting=Setting(1, 2, 0.1))
    with pytest.raises(ValueError, match="variant"):
        run_variant("adapters", 8.0, **data)
    with pytest.raises(ValueError, match="vocab_size"):
        run_variant("scratch", 8.0, **data)


def test_the_head_variant_trains_and_reports_the_accountants_epsilon():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=generator)
    features = torch.randn(300, 8, generator=generator) + 3 * nn.functional.one_hot(labels, 8).float()
    row = run_variant("head", 8.0, train_inputs=features[:200], train_labels=labels[:200],
                      test_inputs=features[200:], test_labels=labels[200:], num_classes=3,
                      setting=Setting(10, 50, 0.05))
    assert 7.5 < row["reported_epsilon"] <= 8.0 and row["trainable_parameters"] == 8 * 3 + 3
    assert row["test_accuracy"] > 0.8


def test_the_shipped_grid_is_complete_and_within_budget():
    grid, meta = load_grid(GRID_PATH)
    assert meta["command"].startswith("python -m trustml.privacy.finetuning")
    assert set(grid["dataset"]) == {"synthetic", "clinc150"}
    for _, part in grid.groupby("dataset"):
        assert sorted(part["variant"].unique()) == sorted(VARIANTS)
        assert sorted(part["epsilon"].unique()) == [1.0, 3.0, 8.0, math.inf]
    assert (grid["reported_epsilon"] <= grid["epsilon"] + 1e-9).all()
    assert grid["test_accuracy"].between(0, 1).all()
