"""The tiny causal LM, its tokenizer and the occupation corpus; the Hugging Face path on a config-built GPT-2."""

import math

import numpy as np
import pytest
import torch

from trustml.fairness.occupations import OCCUPATION_FEMALE_SHARE, occupation_corpus
from trustml.models.lm import (
    CausalLM, HFTokenizer, LMTokenizer, generate, hf_student, next_token_loss, next_token_probs, perplexity, train_lm,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/fairness/conftest.py


@pytest.fixture(scope="module")
def corpus():
    return occupation_corpus(600, seed=0)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return LMTokenizer.fit(corpus["text"])


def test_tokenizer_adds_bos_eos_and_pads_with_zero(tokenizer):
    ids, mask = tokenizer.encode(["the nurse said that she would help .", "the pilot ."])
    assert ids[0, 0] == tokenizer.bos_id and ids[0, mask[0].sum() - 1] == tokenizer.eos_id
    assert ids[1, mask[1].sum():].eq(0).all() and mask[1].sum() == 5
    assert tokenizer.decode(ids[1]) == "the pilot ."
    no_eos, _ = tokenizer.encode(["the pilot"], add_eos=False)
    assert no_eos.tolist() == [[tokenizer.bos_id, tokenizer.token_to_id("the"), tokenizer.token_to_id("pilot")]]
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tokenizer.token_to_id("zebra")
    assert tokenizer.fingerprint() == LMTokenizer.fit(occupation_corpus(600, seed=0)["text"]).fingerprint()
    assert tokenizer.fingerprint() != LMTokenizer.fit(["a different corpus"]).fingerprint()


@pytest.mark.parametrize("bad", [[], [""], ["ok", "  "]])
def test_empty_texts_and_prompts_are_errors(tokenizer, bad):
    model = CausalLM(tokenizer.vocab_size, d_model=8, n_heads=2, n_layers=1, d_ff=8)
    with pytest.raises(ValueError, match="must not be empty|non-empty strings"):
        tokenizer.encode(bad)
    with pytest.raises(ValueError, match="prompts"):
        next_token_probs(model, tokenizer, bad)
    with pytest.raises(ValueError, match="prompts"):
        generate(model, tokenizer, bad)


def test_causal_lm_is_causal_and_ignores_right_padding(tokenizer):
    torch.manual_seed(0)
    model = CausalLM(tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=2, d_ff=32).eval()
    ids, mask = tokenizer.encode(["the nurse said that she would help ."])
    changed = ids.clone()
    changed[0, 5] = tokenizer.token_to_id("he")
    with torch.no_grad():
        a, b = model(ids, mask), model(changed, mask)
        torch.testing.assert_close(a[0, :5], b[0, :5])  # earlier positions cannot see token 5
        assert not torch.allclose(a[0, 5:], b[0, 5:])
        padded = torch.nn.functional.pad(ids, (0, 3))
        torch.testing.assert_close(model(padded, (padded != 0).long())[0, : ids.shape[1]], a[0])
    with pytest.raises(ValueError, match="max_length"):
        model(torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="d_model must be >= 1"):
        CausalLM(10, d_model=0)


def test_training_lowers_the_loss_and_perplexity_is_exp_nll(corpus, tokenizer):
    torch.manual_seed(0)
    model = CausalLM(tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    texts = corpus["text"].tolist()
    before = perplexity(model, tokenizer, texts[:100])
    history = train_lm(model, tokenizer, texts, epochs=6, lr=1e-2, seed=0)
    assert history[-1] < history[0]
    after = perplexity(model, tokenizer, texts[:100])
    assert after < before / 3
    ids, mask = tokenizer.encode(texts[:100])
    with torch.no_grad():
        manual = math.exp(next_token_loss(model(ids, mask), ids, mask).item())
    assert after == pytest.approx(manual, rel=1e-5)
    probs = next_token_probs(model, tokenizer, ["the nurse said that", "the pilot said that"])
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    he, she = tokenizer.token_to_id("he"), tokenizer.token_to_id("she")
    assert probs[:, [he, she]].sum(1).min() > 0.5  # it has learnt that a pronoun follows
    samples = generate(model, tokenizer, ["the nurse said that"] * 3, max_new_tokens=4, seed=1)
    assert samples == generate(model, tokenizer, ["the nurse said that"] * 3, max_new_tokens=4, seed=1)
    assert all(0 < len(s) <= 4 for s in samples)


def test_occupation_corpus_plants_the_skew():
    frame = occupation_corpus(6000, neutral_share=0.3, seed=1)
    gendered = frame[frame["gender"] != ""]
    assert abs(len(gendered) / len(frame) - 0.7) < 0.03
    share = gendered.groupby("occupation")["gender"].apply(lambda g: (g == "female").mean())
    for occupation in ["nurse", "engineer", "baker"]:
        assert abs(share[occupation] - OCCUPATION_FEMALE_SHARE[occupation]) < 0.1
    she = gendered["text"].str.contains(r"\b(?:she|her|sister|mother)\b")
    he = gendered["text"].str.contains(r"\b(?:he|his|brother|father)\b")
    assert (she == (gendered["gender"] == "female")).all() and (he == (gendered["gender"] == "male")).all()
    assert not frame[frame["gender"] == ""]["text"].str.contains(r"\b(?:she|he|her|his)\b").any()
    with pytest.raises(ValueError, match="neutral_share"):
        occupation_corpus(10, neutral_share=1.5)
    with pytest.raises(ValueError, match="female_share"):
        occupation_corpus(10, female_share={"nurse": 2.0})


def tiny_hf_pair(texts):
    """A word-level Hugging Face tokenizer and a randomly initialised 2-layer GPT-2 (no hub needed)."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    word_level = LMTokenizer.fit(texts)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level._tokenizer, bos_token="[BOS]",
                                           eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(hf_tokenizer), n_positions=32, n_embd=16, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval(), HFTokenizer(hf_tokenizer)


def test_hugging_face_path_on_a_config_built_gpt2(corpus):
    teacher, tokenizer = tiny_hf_pair(corpus["text"].tolist())
    ids, mask = tokenizer.encode(["the nurse said that she would help ."])
    assert ids[0, 0] == tokenizer.bos_id and tokenizer.token_to_id("she") == tokenizer.vocab["she"]
    probs = next_token_probs(teacher, tokenizer, ["the nurse said that"])
    torch.testing.assert_close(probs.sum(1), torch.ones(1))
    student = hf_student(teacher, n_layers=1)
    assert student.config.n_layer == 1 and teacher.config.n_layer == 2
    # Every other teacher layer (here: layer 0) and the embeddings are copied.
    torch.testing.assert_close(student.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[0].mlp.c_fc.weight)
    torch.testing.assert_close(student.transformer.wte.weight, teacher.transformer.wte.weight)
    assert np.isfinite(perplexity(student, tokenizer, corpus["text"].tolist()[:20]))
    with pytest.raises(ValueError, match="n_layers must be in"):
        hf_student(teacher, n_layers=3)
