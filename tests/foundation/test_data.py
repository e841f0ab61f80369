import json

import numpy as np
import pandas as pd
import pytest
import torch

from trustml.data import (
    CLINC150_SHA256, INTENTS, Canary, WordTokenizer, load_clinc150, load_intent_task, make_corpus, make_loader, subset,
)
from trustml.data.clinc150 import sha256_of


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(n_devices=300, seed=1)


def test_corpus_is_deterministic(corpus):
    again = make_corpus(n_devices=300, seed=1)
    pd.testing.assert_frame_equal(corpus.utterances, again.utterances)
    other = make_corpus(n_devices=300, seed=2)
    assert not corpus.utterances["text"].equals(other.utterances["text"])


def test_corpus_has_the_promised_structure(corpus):
    u = corpus.utterances
    assert len(INTENTS) >= 20 and set(u["intent"]) <= set(INTENTS)
    assert u["intent"].nunique() >= 20
    # Paraphrase variety: several distinct surface forms per intent.
    assert u.groupby("intent")["text"].nunique().min() >= 3
    # Slot tags align with tokens, and slots occur.
    assert all(len(t) == len(s) for t, s in zip(u["tokens"], u["slot_tags"]))
    assert any(tag.startswith("B-") for tags in u["slot_tags"] for tag in tags)
    # Heavy-tailed activity: the top decile of devices holds far more than a tenth of the data.
    n = np.sort(corpus.devices["n_utterances"].to_numpy())[::-1]
    assert n[: len(n) // 10].sum() / n.sum() > 0.3
    assert corpus.devices["n_utterances"].sum() == len(u)
    # Periods and timestamps; later periods bring new intents.
    assert set(u["period"]) == {0, 1, 2, 3}
    assert u.groupby("period")["timestamp"].min().is_monotonic_increasing
    assert u[u["period"] == 3]["intent"].nunique() > u[u["period"] == 0]["intent"].nunique()
    # Speaker attributes usable as protected groups.
    for attribute in ("gender", "age_group", "dialect"):
        assert u[attribute].nunique() >= 2


def test_minority_dialect_rewrites_words():
    corpus = make_corpus(n_devices=200, asr_noise=0.0, seed=0)
    u = corpus.utterances
    minority_words = set(" ".join(u.loc[u["dialect"] == "minority", "text"]).split())
    majority_words = set(" ".join(u.loc[u["dialect"] == "majority", "text"]).split())
    assert "tha" in minority_words and "tha" not in majority_words


def test_canaries_are_planted():
    corpus = make_corpus(n_devices=50, canaries=[Canary("4 8 2 1", repetitions=3), Canary("9 9 1 0")], seed=0)
    canaries = corpus.utterances[corpus.utterances["is_canary"]]
    assert canaries["text"].value_counts().to_dict() == {"my pin code is 4 8 2 1": 3, "my pin code is 9 9 1 0": 1}
    assert (canaries["slot_tags"].iloc[0] == ["O"] * 4 + ["B-pin"] + ["I-pin"] * 3)
    train, test = corpus.split(seed=0)
    assert train["is_canary"].sum() == 4 and test["is_canary"].sum() == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"n_devices": 0}, "n_devices"), ({"mean_utterances": -1}, "mean_utterances"),
    ({"asr_noise": 1.0}, "asr_noise"), ({"activity_tail": -0.1}, "activity_tail"),
    ({"preference_concentration": 0}, "preference_concentration"),
])
def test_corpus_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_corpus(**kwargs)


def test_canary_rejects_bad_input():
    with pytest.raises(ValueError, match="repetitions"):
        Canary("1 2 3 4", repetitions=0)
    with pytest.raises(ValueError, match="intent"):
        Canary("1 2 3 4", intent="nope")


def test_split_is_stratified_and_disjoint(corpus):
    train, test = corpus.split(test_fraction=0.25, seed=0)
    assert len(train) + len(test) == len(corpus.utterances)
    share = len(test) / len(corpus.utterances)
    assert 0.22 < share < 0.28
    with pytest.raises(ValueError, match="test_fraction"):
        corpus.split(test_fraction=1.0)


def test_tokenizer_round_trip_and_padding():
    tok = WordTokenizer.fit(["play some jazz", "turn the lights on"], max_length=6)
    ids, mask = tok.encode(["play jazz", "unseen words here"])
    assert ids.shape == (2, 6) and mask.tolist()[0] == [1, 1, 0, 0, 0, 0]
    assert tok.decode(ids[0]) == "play jazz"
    assert ids[1, :3].tolist() == [tok.unk_id] * 3
    assert tok.token_to_id("Jazz") == tok.token_to_id("jazz")
    with pytest.raises(KeyError, match="vocabulary"):
        tok.token_to_id("saxophone")
    with pytest.raises(ValueError, match="texts"):
        WordTokenizer.fit([])


def test_intent_task_and_loaders():
    task = load_intent_task(n_devices=100, seed=0)
    assert task.num_classes == len(INTENTS)
    inputs, labels = task.train.tensors
    assert inputs.dtype == torch.long and labels.max() < task.num_classes
    batches = [b[1] for b in make_loader(task.train, batch_size=32, seed=3)]
    again = [b[1] for b in make_loader(task.train, batch_size=32, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    part = subset(task.train, [0, 2])
    assert len(part) == 2 and torch.equal(part.tensors[0][1], inputs[2])
    with pytest.raises(ValueError, match="source"):
        load_intent_task("imdb")


def test_clinc150_local_copy(clinc150_dir):
    train = load_clinc150("train", path=clinc150_dir)
    assert len(train) == 15000 and train["intent"].nunique() == 150
    assert set(train["domain"]) >= {"banking", "travel"}
    oos = load_clinc150("oos_test", path=clinc150_dir / "data_full.json")
    assert len(oos) == 1000 and set(oos["intent"]) == {"oos"}
    task = load_intent_task("clinc150", path=clinc150_dir)
    assert task.num_classes == 150 and len(task.test) == 4500


def test_clinc150_errors(tmp_path, clinc150_dir):
    with pytest.raises(ValueError, match="split"):
        load_clinc150("dev", path=clinc150_dir)
    with pytest.raises(FileNotFoundError, match="path"):
        load_clinc150("train", path=tmp_path / "missing.json")
    tampered = tmp_path / "data_full.json"
    data = json.loads((clinc150_dir / "data_full.json").read_text())
    data["train"] = data["train"][:10]
    tampered.write_text(json.dumps(data))
    (tmp_path / "domains.json").write_bytes((clinc150_dir / "domains.json").read_bytes())
    assert sha256_of(tampered) != CLINC150_SHA256
    with pytest.raises(ValueError, match="data_full.json has SHA-256"):
        load_clinc150("train", path=tmp_path)


def test_every_tokenizer_of_the_book_satisfies_the_protocol():
    import transformers

    from trustml.data import Tokenizer, WordTokenizer
    from trustml.models.lm import HFTokenizer, LMTokenizer

    texts = ["set an alarm", "play some jazz"]
    gpt2 = transformers.PreTrainedTokenizerFast(tokenizer_object=LMTokenizer.fit(texts)._tokenizer,
                                                bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]")
    for tokenizer in (WordTokenizer.fit(texts, max_length=4), LMTokenizer.fit(texts), HFTokenizer(gpt2)):
        assert isinstance(tokenizer, Tokenizer)
        ids, mask = tokenizer.encode(texts)
        assert ids.shape == mask.shape and ids.dtype == torch.long
        assert tokenizer.token_to_id("alarm") < tokenizer.vocab_size
    assert not isinstance(object(), Tokenizer)
