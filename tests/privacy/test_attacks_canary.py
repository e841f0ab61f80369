"""Canaries: planting, exposure over all candidates, ModIvA inversion, defences."""

import math

import pytest
import torch
from torch import nn

from trustml.data import INTENTS, Canary, make_corpus, make_task
from trustml.privacy.attacks import (
    DIGITS, PHONE_TEMPLATE, Setting, attack_canaries, canary_probe, candidate_losses, exposure, make_canaries, modiva,
    rank_exposure, train_nlu_model, validation_split,
)


# --- planting ----------------------------------------------------------------------------------------------

def test_make_canaries_distinct_secrets_and_intents():
    canaries = make_canaries(6, repetitions=[1, 2, 4, 8, 16, 32], seed=3)
    assert len({c.secret for c in canaries}) == 6 and len({c.intent for c in canaries}) == 6
    assert all(c.intent != "account_security" and c.intent in INTENTS for c in canaries)
    assert [c.repetitions for c in canaries] == [1, 2, 4, 8, 16, 32]
    assert all(len(c.secret.split()) == 4 and set(c.secret.split()) <= set(DIGITS) for c in canaries)
    assert canaries == make_canaries(6, repetitions=[1, 2, 4, 8, 16, 32], seed=3)
    phone = make_canaries(2, n_digits=7, template="call me back on {secret}")
    assert all(len(c.secret.split()) == 7 for c in phone)
    with pytest.raises(ValueError, match="n_canaries must be <= 23"):
        make_canaries(24)
    with pytest.raises(ValueError, match="repetitions must be an int or have n_canaries=3 entries"):
        make_canaries(3, repetitions=[1, 2])


@pytest.fixture(scope="module")
def canary_task():
    canaries = make_canaries(3, repetitions=[1, 4, 16], seed=1)
    corpus = make_corpus(n_devices=30, canaries=canaries, seed=0)
    train, test = corpus.split(seed=0)
    return make_task(train, test, label_names=INTENTS, max_length=12), canaries


def test_probe_locates_the_secret(canary_task):
    task, canaries = canary_task
    probe = canary_probe(canaries[0], task.tokenizer, task.label_names)
    assert probe.positions.tolist() == [4, 5, 6, 7]  # "my pin code is | d d d d"
    assert task.tokenizer.decode(probe.input_ids) == canaries[0].text
    assert probe.label == INTENTS.index(canaries[0].intent)
    assert [DIGITS[i] for i in probe.secret] == canaries[0].secret.split()
    filled = probe.with_symbols(torch.tensor([[0, 1, 2, 3]]))
    assert task.tokenizer.decode(filled[0]) == "my pin code is 0 1 2 3"
    with pytest.raises(ValueError, match="not one of the model's classes"):
        canary_probe(canaries[0], task.tokenizer, ["play_music"])
    with pytest.raises(ValueError, match="not in the alphabet"):
        canary_probe(Canary("4 x 2 1", intent="joke"), task.tokenizer, task.label_names)


# --- exposure ----------------------------------------------------------------------------------------------

def test_rank_and_exposure_formula():
    losses = torch.tensor([0.1, 0.5, 0.5, 0.9])
    assert rank_exposure(losses, 0.1, space=4) == (1.0, pytest.approx(2.0))  # lowest: log2 4 − log2 1
    rank, bits = rank_exposure(losses, 0.5, space=4)
    assert rank == 2.5 and bits == pytest.approx(2 - math.log2(2.5))  # one lower, one tie counted half
    rank, _ = rank_exposure(torch.zeros(10_000), 0.0, space=10_000)  # a model blind to the secret
    assert rank == pytest.approx(5000.5)
    rank, _ = rank_exposure(torch.tensor([0.0, 1.0, 2.0, 3.0]), 1.0, space=301)  # a sample of 3 others + secret
    assert rank == pytest.approx(1 + 100)


class OracleModel(nn.Module):
    """Logit of class 0 = −(squared distance of the secret positions' embeddings to a target secret)."""

    def __init__(self, probe, target):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(int(max(probe.input_ids.max(), probe.alphabet_ids.max())) + 1, 8, padding_idx=0)
        self.positions = probe.positions
        self.register_buffer("target", self.embedding.weight[probe.alphabet_ids[list(target)]].detach().clone())

    def get_input_embeddings(self):
        return self.embedding

    def forward(self, input_ids=None, *, attention_mask=None, inputs_embeds=None):
        embeds = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        distance = ((embeds[:, self.positions] - self.target) ** 2).sum((1, 2))
        return torch.stack([-distance, torch.zeros_like(distance)], 1)


def oracle_probe(canary_task):
    task, canaries = canary_task
    return canary_probe(Canary(canaries[0].secret, intent=INTENTS[0]), task.tokenizer, task.label_names)


def test_exposure_is_maximal_for_a_model_that_knows_the_secret_and_one_bit_for_a_blind_one(canary_task):
    probe = oracle_probe(canary_task)
    knows = OracleModel(probe, probe.secret)
    result = exposure(knows, probe)
    assert result.exact and result.space == 10_000 and result.n_scored == 10_000
    assert result.rank == 1.0 and result.exposure == pytest.approx(math.log2(10_000))
    other = tuple((d + 1) % 10 for d in probe.secret)  # a model that memorised a different secret
    assert exposure(OracleModel(probe, other), probe).exposure < 3
    losses = candidate_losses(knows, probe, torch.tensor([probe.secret, other]))
    assert losses[0] < losses[1]
    sampled = exposure(knows, probe, max_exact=100, n_samples=500)
    assert not sampled.exact and sampled.rank == 1.0


def test_modiva_inverts_the_oracle_and_checks_inputs(canary_task):
    probe = oracle_probe(canary_task)
    result = modiva(OracleModel(probe, probe.secret), [probe, probe], restarts=4, steps=100)
    assert result.exact.all() and result.symbol_accuracy.min() == 1.0
    assert result.exact_chance == pytest.approx(1e-4) and result.symbol_chance == pytest.approx(0.1)
    assert "exact recovery 1.00" in result.summary()
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        modiva(OracleModel(probe, probe.secret), [probe], restarts=0)
    with pytest.raises(ValueError, match="probes must not be empty"):
        modiva(OracleModel(probe, probe.secret), [])


def test_phone_number_canaries_use_sampled_exposure_and_seven_soft_tokens():
    phones = make_canaries(2, n_digits=7, template=PHONE_TEMPLATE, repetitions=2, seed=0)
    train, test = make_corpus(n_devices=30, canaries=phones, seed=0).split(seed=0)
    task = make_task(train, test, label_names=INTENTS, max_length=12)
    probe = canary_probe(Canary(phones[0].secret, template=PHONE_TEMPLATE, intent=INTENTS[0]), task.tokenizer,
                         task.label_names)  # label 0: the oracle's class
    assert probe.positions.tolist() == list(range(4, 11))  # "call me back on | d d d d d d d"
    model = OracleModel(probe, probe.secret)
    result = exposure(model, probe, n_samples=2000)
    assert not result.exact and result.space == 10 ** 7 and result.rank == 1.0
    assert modiva(model, [probe], restarts=4, steps=100).exact.all()
    tiny_train, tiny_test = make_corpus(n_devices=2, canaries=phones[:1], seed=0).split(seed=0)
    tiny = make_task(tiny_train, tiny_test, label_names=INTENTS)
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        canary_probe(Canary("1 2 3 4"), tiny.tokenizer, tiny.label_names)  # a corpus too small to hold every digit


# --- defences and the real model ---------------------------------------------------------------------------

def test_settings_validate_and_label():
    assert Setting().label == "no defence"
    assert Setting(epsilon=2, dropout=0.5).label == "DP ε=2 + dropout 0.5"
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        Setting(epsilon=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        Setting(dropout=1.0)
    with pytest.raises(ValueError, match="early stopping"):
        Setting(epsilon=1.0, early_stopping=True)


def test_validation_split_keeps_canaries_in_training(canary_task):
    task, canaries = canary_task
    train, validation = validation_split(task, fraction=0.2)
    assert len(train) + len(validation) == len(task.train)
    canary_rows = task.train_frame["is_canary"].sum()
    assert canary_rows == sum(c.repetitions for c in canaries)
    canary_ids = {tuple(r) for r in task.tensors(task.train_frame[task.train_frame["is_canary"]]).tensors[0].tolist()}
    assert not canary_ids & {tuple(r) for r in validation.tensors[0].tolist()}


@pytest.mark.slow
def test_undefended_model_memorises_the_repeated_canary(canary_task):
    """The real intent Transformer, trained to convergence: the canary seen 16 times is exposed
    (far above the ≈1.4 bits of a blind model) and ModIvA recovers most of its digits."""
    task, canaries = canary_task
    model, facts = train_nlu_model(task, Setting(), epochs=20, batch_size=64, lr=3e-3)
    assert facts["test accuracy"] > 0.6 and math.isinf(facts["accountant ε"])
    frame, inversion = attack_canaries(model, task, canaries)
    assert inversion.guesses.shape == (3, 4)
    repeated = frame[frame["repetitions"] == 16].iloc[0]
    assert repeated["exposure"] > 8  # rank among the best ~40 of 10 000
    assert frame["digit accuracy"].mean() > 0.4  # chance: 0.1
    assert frame["exposure"].mean() > 6


@pytest.mark.slow
def test_dp_sgd_lowers_exposure(canary_task):
    task, canaries = canary_task
    plain, _ = attack_canaries(train_nlu_model(task, Setting(), epochs=20, batch_size=64, lr=3e-3)[0], task, canaries)
    model, facts = train_nlu_model(task, Setting(epsilon=1.0), epochs=20, batch_size=64, lr=3e-3)
    assert facts["accountant ε"] == pytest.approx(1.0, abs=0.05)
    private, _ = attack_canaries(model, task, canaries)
    assert private["exposure"].mean() < plain["exposure"].mean() - 3
    assert private["exact"].sum() == 0
