"""Vectors from a contextual encoder for the association tests, with an on-disk cache.

* :class:`EmbeddingCache` stores token-level hidden states in SQLite, keyed by
  ``(model hash, layer, text)``; a CEAT run re-uses every context it has seen before.
* :func:`token_states` runs the encoder **once** per uncached text and keeps every requested layer
  (``Encoder.hidden_states`` runs the whole model for one layer; asking it for seven layers costs seven
  passes).
* :class:`EncoderView` is "a representation": an encoder, a layer and an optional linear projection
  (used for projection debiasing). It gives sentence vectors (mean of the token vectors, as
  all-MiniLM-L6-v2's own pooling) and **word-in-context** vectors: a word that the tokenizer splits into
  several wordpieces ("hyacinth" → "h ##ya ##cin ##th") is represented by the mean of its wordpieces'
  vectors (CEAT's convention for BERT-style tokenizers).
* :func:`seat` and :func:`ceat` run SEAT and CEAT on a view.

Stored vectors are float16 (half the disk); the uncached path rounds through float16 as well, so a
result does not depend on whether the cache was warm.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import sqlite3
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

from trustml.cache import CacheRecoveredWarning, default_cache_dir, move_aside
from trustml.fairness.embedding_tests import (
    CEATResult, WEATResult, ceat_from_vectors, context_corpus, seat_sentences, weat,
)
from trustml.fairness.wordsets import SEAT_TEMPLATES, AssociationTest

STORAGE_DTYPE = np.float16


def default_cache_path() -> pathlib.Path:
    """``embeddings.sqlite`` in trustml's cache folder (``$TRUSTML_CACHE`` or ``~/.cache/trustml``)."""
    return default_cache_dir() / "embeddings.sqlite"


_T = TypeVar("_T")
_COLUMNS = ("model_hash", "layer", "text", "n_tokens", "dim", "data")
_SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPTION_CODES = {11, 26}


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file — not a busy or locked database, which is worth waiting for, not discarding."""
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _CORRUPTION_CODES
    message = str(error)
    return "file is not a database" in message or "malformed" in message


class _NotThisCache(sqlite3.DatabaseError):
    """A readable SQLite file whose ``states`` table is not this cache's (another program's, or an old layout)."""


class EmbeddingCache:
    """Token-level hidden states on disk, keyed by ``(model_hash, layer, text)`` (SQLite, safe to share).

    A cache file that cannot be read as this cache (not a database, a damaged one, a foreign table) is moved
    aside to ``<name>.corrupt-<time>`` with a :class:`~trustml.cache.CacheRecoveredWarning` naming both paths,
    and an empty cache takes its place — at open, or when a read or write later meets the damage (the lost
    vectors are recomputed). ``python -m trustml.cache clear set-aside`` deletes what was moved aside.
    """

    def __init__(self, path: str | pathlib.Path | None = None):
        self.path = pathlib.Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.recovered: list[pathlib.Path] = []  # where unreadable files were moved (for callers and tests)
        try:
            self._connection = self._connect()
        except sqlite3.DatabaseError as error:
            if not (isinstance(error, _NotThisCache) or _is_corruption(error)):
                raise
            self._connection = self._recover(error, connection=None)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=120)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS states (model_hash TEXT, layer INTEGER, text TEXT, n_tokens INTEGER, "
                "dim INTEGER, data BLOB, PRIMARY KEY (model_hash, layer, text))")
            connection.commit()
            columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(states)"))
            if columns != _COLUMNS:
                raise _NotThisCache(f"its table 'states' has columns {columns}, expected {_COLUMNS}")
        except BaseException:
            connection.close()
            raise
        self._inode = self.path.stat().st_ino
        return connection

    def _recover(self, error: sqlite3.DatabaseError, *, connection: sqlite3.Connection | None) -> sqlite3.Connection:
        """Move the unreadable file aside (unless another process already replaced it) and open a fresh cache."""
        if connection is not None:
            connection.close()
        action = "another process already replaced it; reopened the cache"
        try:
            # Another process may have recovered first: move only the file this connection found damaged.
            if connection is None or self.path.stat().st_ino == self._inode:
                aside = move_aside(self.path, siblings=_SQLITE_SIBLINGS)
                self.recovered.append(aside)
                action = f"moved it to {aside} and started an empty cache"
        except FileNotFoundError:
            pass
        warnings.warn(f"embedding cache {self.path} is unreadable ({error}); {action} (vectors are recomputed)",
                      CacheRecoveredWarning, stacklevel=3)
        return self._connect()

    def _run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """``operation(connection)``, recovering once from a damaged file found on the way."""
        try:
            return operation(self._connection)
        except sqlite3.DatabaseError as error:
            if not _is_corruption(error):
                raise
            self._connection = self._recover(error, connection=self._connection)
            return operation(self._connection)

    def get(self, model_hash: str, layer: int, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The stored ``(n_tokens, d)`` float32 arrays (``None`` where a text is not cached)."""
        unique = list(dict.fromkeys(texts))

        def read(connection: sqlite3.Connection) -> dict[str, np.ndarray]:
            found: dict[str, np.ndarray] = {}
            for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
                chunk = unique[start : start + 500]
                rows = connection.execute(
                    f"SELECT text, n_tokens, dim, data FROM states WHERE model_hash = ? AND layer = ? "
                    f"AND text IN ({','.join('?' * len(chunk))})", [model_hash, layer, *chunk])
                for text, n_tokens, dim, data in rows:
                    found[text] = np.frombuffer(data, dtype=STORAGE_DTYPE).reshape(n_tokens, dim).astype(np.float32)
            return found

        found = self._run(read)
        result = [found.get(t) for t in texts]
        hits = sum(r is not None for r in result)
        self.hits += hits
        self.misses += len(texts) - hits
        return result

    def put(self, model_hash: str, layer: int, texts: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
        if len(texts) != len(arrays):
            raise ValueError(f"texts and arrays must have equal length, got {len(texts)} and {len(arrays)}")
        bad = [i for i, a in enumerate(arrays) if np.ndim(a) != 2]
        if bad:
            raise ValueError(f"arrays must be 2-D (n_tokens, d); entries {bad[:5]} are not")
        rows = [(model_hash, layer, t, a.shape[0], a.shape[1], np.ascontiguousarray(a, dtype=STORAGE_DTYPE).tobytes())
                for t, a in zip(texts, arrays)]

        def write(connection: sqlite3.Connection) -> None:
            with connection:
                connection.executemany("INSERT OR REPLACE INTO states VALUES (?, ?, ?, ?, ?, ?)", rows)

        self._run(write)

    def __len__(self) -> int:
        return int(self._run(lambda connection: connection.execute("SELECT COUNT(*) FROM states").fetchone()[0]))

    def clear(self) -> None:
        def delete(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("DELETE FROM states")

        self._run(delete)

    def close(self) -> None:
        self._connection.close()


def _check_layer(encoder, layer: int) -> int:
    n = encoder.num_layers
    if not isinstance(layer, (int, np.integer)) or not -n - 1 <= layer <= n:
        raise ValueError(f"layer must be an int in [{-n - 1}, {n}] (0 = embeddings, {n} = last), got {layer!r}")
    return int(layer) % (n + 1)


@torch.no_grad()
def _forward_all_layers(encoder, texts: Sequence[str], layers: Sequence[int],
                        batch_size: int) -> dict[int, list[np.ndarray]]:
    """``{layer: [array (n_tokens, d)]}`` for ``texts``: one forward pass, special tokens and padding removed."""
    out: dict[int, dict[int, np.ndarray]] = {layer: {} for layer in layers}  # layer -> text index -> states
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        batch = encoder.tokenizer([texts[i] for i in index], padding=True, truncation=True, return_tensors="pt",
                                  return_special_tokens_mask=True)
        special = batch.pop("special_tokens_mask").bool()
        hidden = encoder.model(**batch, output_hidden_states=True).hidden_states
        keep = batch["attention_mask"].bool() & ~special
        for layer in layers:
            states = hidden[layer].float().numpy()
            for row, i in enumerate(index):
                # Round through the storage precision so cached and uncached results are identical.
                out[layer][int(i)] = states[row][keep[row].numpy()].astype(STORAGE_DTYPE).astype(np.float32)
    return {layer: [by_text[i] for i in range(len(texts))] for layer, by_text in out.items()}


def token_states(encoder, texts: Sequence[str], *, layers: Sequence[int], cache: EmbeddingCache | None = None,
                 batch_size: int = 64) -> dict[int, list[np.ndarray]]:
    """Token-level hidden states of ``texts`` at each of ``layers``: ``{layer: [(n_tokens, d) arrays]}``.

    Texts found in ``cache`` for every requested layer are not re-encoded; the others are encoded in one
    forward pass, and *every* layer of that pass is stored (a later request for another layer is then a
    cache hit, not a second pass).
    """
    layers = sorted({_check_layer(encoder, layer) for layer in layers})
    texts = list(texts)
    if not texts:
        return {layer: [] for layer in layers}
    if cache is None:
        return _forward_all_layers(encoder, texts, layers, batch_size)
    found = {layer: cache.get(encoder.model_hash, layer, texts) for layer in layers}
    missing = list(dict.fromkeys(t for i, t in enumerate(texts) if any(found[layer][i] is None for layer in layers)))
    computed: dict[int, list[np.ndarray]] = {}
    if missing:
        computed = _forward_all_layers(encoder, missing, range(encoder.num_layers + 1), batch_size)
        for layer, states in computed.items():
            cache.put(encoder.model_hash, layer, missing, states)
    position = {t: i for i, t in enumerate(missing)}
    return {layer: [stored if stored is not None else computed[layer][position[t]]
                    for t, stored in zip(texts, found[layer])] for layer in layers}


def word_span(text: str, word: str) -> tuple[int, int]:
    """Character span of the first whole-word, case-insensitive occurrence of ``word`` in ``text``."""
    match = re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"word {word!r} does not occur in context {text!r}")
    return match.span()


def wordpiece_rows(tokenizer, texts: Sequence[str], words: Sequence[str]) -> list[np.ndarray]:
    """For each (text, word), the rows of the text's token matrix (special tokens removed) that make up
    the word: the wordpieces whose character offsets lie inside the word's span."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                        max_length=tokenizer.model_max_length - 2)
    rows = []
    for text, word, offsets in zip(texts, words, encoded["offset_mapping"]):
        start, end = word_span(text, word)
        picked = np.array([i for i, (s, e) in enumerate(offsets) if e > s and s >= start and e <= end])
        if len(picked) == 0:
            raise ValueError(f"no wordpieces of {word!r} in {text!r} (truncated?)")
        rows.append(picked)
    return rows


class EncoderView:
    """One representation to test: ``encoder`` at ``layer``, optionally followed by ``projection``.

    ``projection`` is a ``(d, d)`` matrix applied to every vector (``v ↦ v @ projection``), e.g. the
    nullspace projection of :func:`projection_debias`.
    """

    def __init__(self, encoder, *, layer: int, cache: EmbeddingCache | None = None,
                 projection: np.ndarray | None = None, name: str | None = None):
        self.encoder = encoder
        self.layer = _check_layer(encoder, layer)
        self.cache = cache
        dim = encoder.model.config.hidden_size
        if projection is not None:
            projection = np.asarray(projection, dtype=np.float64)
            if projection.shape != (dim, dim):
                raise ValueError(f"projection must be ({dim}, {dim}), got {projection.shape}")
        self.projection = projection
        self.name = name or f"layer {self.layer}"

    def with_projection(self, projection: np.ndarray, *, name: str) -> EncoderView:
        return EncoderView(self.encoder, layer=self.layer, cache=self.cache, projection=projection, name=name)

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.projection is None else vectors @ self.projection

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        return token_states(self.encoder, texts, layers=[self.layer], cache=self.cache)[self.layer]

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), d)``: the mean of each text's token vectors (then the projection, if any)."""
        if len(texts) == 0:
            raise ValueError("texts is empty")
        return self._project(np.stack([t.mean(axis=0) for t in self.token_vectors(texts)]).astype(np.float64))

    def word_vectors(self, texts: Sequence[str], words: Sequence[str]) -> np.ndarray:
        """``(len(texts), d)``: the vector of ``words[i]`` in context ``texts[i]`` (mean of its wordpieces)."""
        if len(texts) != len(words):
            raise ValueError(f"texts and words must have equal length, got {len(texts)} and {len(words)}")
        if len(texts) == 0:
            raise ValueError("texts is empty")
        rows = wordpiece_rows(self.encoder.tokenizer, texts, words)
        states = self.token_vectors(texts)
        return self._project(np.stack([s[r].mean(axis=0) for s, r in zip(states, rows)]).astype(np.float64))


def seat(view: EncoderView, test: AssociationTest, *, templates=SEAT_TEMPLATES, n_permutations: int = 10_000,
         seed: int = 0) -> WEATResult:
    """SEAT (May et al. 2019): WEAT on the sentence vectors of the template sentences of each set."""
    vectors = [view.sentence_vectors(seat_sentences(s, templates=templates)) for s in test.sets]
    return weat(*vectors, n_permutations=n_permutations, seed=seed)


def static_weat(view: EncoderView, test: AssociationTest, *, n_permutations: int = 10_000,
                seed: int = 0) -> WEATResult:
    """WEAT on context-free vectors: each word encoded alone (its wordpieces averaged)."""
    vectors = [view.word_vectors(list(s.words), list(s.words)) for s in test.sets]
    return weat(*vectors, n_permutations=n_permutations, seed=seed)


def contextual_word_vectors(view: EncoderView, corpus: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """``{word: (n_contexts, d)}``: the word's vector in each of its contexts (``corpus[word]``)."""
    pairs = [(word, text) for word, texts in corpus.items() for text in texts]
    if not pairs:
        raise ValueError("the context corpus is empty")
    vectors = view.word_vectors([t for _, t in pairs], [w for w, _ in pairs])
    out, start = {}, 0
    for word, texts in corpus.items():
        out[word] = vectors[start : start + len(texts)]
        start += len(texts)
    return out


def ceat(view: EncoderView, test: AssociationTest, *, n_samples: int = 1000, contexts_per_word: int | None = None,
         corpus: Mapping[str, Sequence[str]] | None = None, seed: int = 0) -> CEATResult:
    """CEAT (Guo & Caliskan 2021) on ``view``: contexts from ``corpus`` (default: :func:`context_corpus`)."""
    corpus = corpus if corpus is not None else context_corpus(test, contexts_per_word=contexts_per_word, seed=seed)
    return ceat_from_vectors(contextual_word_vectors(view, {w: corpus[w] for w in test.words}), test,
                             n_samples=n_samples, seed=seed)


def random_init_encoder(encoder, *, seed: int = 0):
    """The same architecture and tokenizer with freshly initialised weights (seeded): a control with no
    pretraining. Its ``model_hash`` is the SHA-256 of its weights, so its cache entries are its own."""
    from transformers import AutoModel

    from trustml.models import Encoder

    torch.manual_seed(seed)
    model = AutoModel.from_config(encoder.model.config)
    model.eval()
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return Encoder(model=model, tokenizer=encoder.tokenizer, model_hash=f"random-init:{digest.hexdigest()[:24]}")


def projection_debias(view: EncoderView, pairs: Sequence[tuple[str, str]], *, n_components: int = 1) -> np.ndarray:
    """Nullspace projection of a bias subspace estimated from counterfactual pairs (SENT-DEBIAS, Liang et
    al. 2020; after Bolukbasi et al. 2016's hard debiasing).

    ``pairs`` are sentences that differ only in the group term ("i am a gay person" / "i am a straight
    person"). Centring each pair on its mean leaves ``±(a − b)/2``, so the bias subspace ``U`` is spanned by
    the top ``n_components`` right singular vectors of the pair differences ``a − b``; the returned matrix
    is ``P = I − U Uᵀ`` (apply as ``v @ P``), composed after the view's own projection if it has one.
    """
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if len(pairs) < n_components:
        raise ValueError(f"need at least n_components={n_components} pairs, got {len(pairs)}")
    base = EncoderView(view.encoder, layer=view.layer, cache=view.cache)
    differences = base.sentence_vectors([a for a, _ in pairs]) - base.sentence_vectors([b for _, b in pairs])
    _, _, vt = np.linalg.svd(differences, full_matrices=False)
    U = vt[:n_components].T
    projection = np.eye(U.shape[0]) - U @ U.T
    return projection if view.projection is None else view.projection @ projection


__all__ = [
    "EmbeddingCache", "EncoderView", "ceat", "contextual_word_vectors", "default_cache_path", "projection_debias",
    "random_init_encoder", "seat", "static_weat", "token_states", "word_span", "wordpiece_rows",
]
