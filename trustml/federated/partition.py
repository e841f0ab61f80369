"""Split a centralized dataset over clients: the FedNLP partitions (Lin et al., Findings of NAACL 2022).

Every partitioner here is a ``flwr_datasets`` ``Partitioner``: assign a Hugging Face ``datasets.Dataset``
(``partitioner.dataset = ds``), then ``partitioner.num_partitions`` and ``partitioner.load_partition(i)``.
flwr-datasets' own partitioners are reused where they already do the job:

=================  ==============================================================  ==============================
name               what a client gets                                              built on
=================  ==============================================================  ==============================
``iid``            a random equal share                                            ``IidPartitioner`` (+ shuffle)
``label_skew``     equal size, labels drawn from ``q_k ~ Dir(α·p)``, ``p`` the     trustml (see below)
                   global label prior; exhausted labels are back-filled
``quantity_skew``  IID labels, size share ``s ~ Dir(β·1)``                         ``SizePartitioner`` (+ shuffle)
``feature_skew``   k-means clusters of sentence embeddings fed to ``label_skew``   trustml + scikit-learn
``natural``        one client per natural id (device, domain)                      ``NaturalIdPartitioner``
``heavy_tailed``   log-normal client sizes (σ = ``tail``), IID labels — or         ``SizePartitioner`` (+ shuffle)
                   ``label_skew`` with ``alpha`` given
=================  ==============================================================  ==============================

``to_hf_dataset(frame)`` turns a pandas frame into a ``datasets.Dataset`` with a ``row`` column (the frame
position), so ``partition_rows(partitioner)`` gives each client's rows of the original tensors — what
``trustml.federated.simulate`` consumes. ``plot_label_distributions`` is flwr-datasets' plot.

Label skew is trustml's own: flwr-datasets' ``InnerDirichletPartitioner`` follows the same procedure but
fails for small α (an exhausted client's label mix is renormalised to NaN); the tests compare the two
where both work.

Smaller α or β means more skew; α, β ≤ 0 are errors, and so is a partitioning that would leave a
client empty (a client with nothing to train on is a mistake in the set-up, not a silent no-op).
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable, Sequence

import datasets
import numpy as np
import pandas as pd
from flwr_datasets.partitioner import (
    IidPartitioner,
    NaturalIdPartitioner,
    Partitioner,
    SizePartitioner,
)

DEFAULT_COLUMNS = ("text", "label", "device_id", "period")


# ------------------------------------------------------------------------------------------ helpers
def _check_num_partitions(num_partitions: int) -> int:
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)):
        raise TypeError(f"num_partitions must be an int, got {type(num_partitions).__name__}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    return int(num_partitions)


def _check_concentration(name: str, value: float) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 (smaller = more skewed), got {value}")
    return float(value)


def _check_fits(num_partitions: int, num_rows: int) -> None:
    if num_partitions > num_rows:
        raise ValueError(f"num_partitions={num_partitions} exceeds the {num_rows} rows: some partitions would be empty")


def equal_sizes(num_rows: int, num_partitions: int) -> np.ndarray:
    """``num_rows`` split into ``num_partitions`` sizes differing by at most one."""
    sizes = np.full(num_partitions, num_rows // num_partitions)
    sizes[: num_rows % num_partitions] += 1
    return sizes


def sizes_from_shares(shares: np.ndarray, num_rows: int) -> np.ndarray:
    """Integer sizes summing to ``num_rows`` closest to ``shares · num_rows`` (largest remainders)."""
    raw = shares * num_rows
    sizes = np.floor(raw).astype(int)
    sizes[np.argsort(-(raw - sizes), kind="stable")[: num_rows - sizes.sum()]] += 1
    return sizes


def _sizes_at_least(draw: Callable[[], np.ndarray], num_rows: int, *, min_partition_size: int, hint: str,
                    tries: int = 20) -> np.ndarray:
    """Redraw share vectors until every client gets ``min_partition_size`` rows; else a clear error."""
    for _ in range(tries):
        sizes = sizes_from_shares(draw(), num_rows)
        if sizes.min() >= min_partition_size:
            return sizes
    raise ValueError(
        f"after {tries} draws some partition still had fewer than min_partition_size={min_partition_size} "
        f"rows (empty partitions); {hint}, use fewer partitions or lower min_partition_size")


def to_hf_dataset(frame: pd.DataFrame, *, columns: Sequence[str] = DEFAULT_COLUMNS) -> datasets.Dataset:
    """A ``datasets.Dataset`` of ``columns`` (those present) plus ``row`` = position in ``frame``."""
    present = [c for c in columns if c in frame.columns]
    if not present:
        raise KeyError(f"frame has none of the columns {list(columns)}")
    table = frame[present].reset_index(drop=True).copy()
    table["row"] = np.arange(len(table))
    return datasets.Dataset.from_pandas(table, preserve_index=False)


def partition_rows(partitioner: Partitioner) -> list[np.ndarray]:
    """Each partition's ``row`` values (positions in the frame given to ``to_hf_dataset``)."""
    if "row" not in partitioner.dataset.column_names:
        raise KeyError("the dataset has no 'row' column: build it with trustml.federated.partition.to_hf_dataset")
    return [np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64) for i in range(partitioner.num_partitions)]


def label_counts(partitioner: Partitioner, *, label: str = "label") -> pd.DataFrame:
    """A (partition × label) table of counts."""
    rows: list[dict[str, object]] = []
    for i in range(partitioner.num_partitions):
        values, counts = np.unique(np.asarray(partitioner.load_partition(i)[label]), return_counts=True)
        rows.extend({"partition": i, label: v, "count": c} for v, c in zip(values.tolist(), counts.tolist()))
    table = pd.DataFrame(rows).pivot(index="partition", columns=label, values="count")
    return table.fillna(0).astype(int)


def mean_tv_distance(counts: pd.DataFrame) -> float:
    """Mean over clients of the total-variation distance ½ Σ_c |q_k(c) − p(c)| between a client's label mix
    q_k and the global one p (rows of ``counts``: clients; 0 = IID, 1 = disjoint labels)."""
    share = counts.div(counts.sum(axis=1), axis=0)
    overall = counts.sum(axis=0) / counts.to_numpy().sum()
    return float((0.5 * (share - overall).abs().sum(axis=1)).mean())


def plot_label_distributions(partitioner: Partitioner, *, label: str = "label", max_num_partitions: int | None = 30,
                             size_unit: str = "absolute", **options):
    """flwr-datasets' per-partition label plot (stacked bars): returns ``(figure, axes, table)``."""
    from flwr_datasets.visualization import plot_label_distributions as flwr_plot

    return flwr_plot(partitioner, label_name=label, max_num_partitions=max_num_partitions, size_unit=size_unit,
                     legend=False, verbose_labels=False, **options)


# ----------------------------------------------------------------------------------- partitioners
class ShuffledIidPartitioner(IidPartitioner):
    """``IidPartitioner`` shards contiguous rows; shuffle first (seeded) so every shard is a random share."""

    def __init__(self, num_partitions: int, *, seed: int = 0):
        super().__init__(_check_num_partitions(num_partitions))
        self._seed = seed

    @Partitioner.dataset.setter
    def dataset(self, value: datasets.Dataset) -> None:
        _check_fits(self._num_partitions, len(value))
        Partitioner.dataset.fset(self, value.shuffle(seed=self._seed))


def label_skew_assignment(labels: np.ndarray, sizes: np.ndarray, *, alpha: float,
                          rng: np.random.Generator) -> list[np.ndarray]:
    """FedNLP label skew: row indices for each client, client k with ``sizes[k]`` rows drawn from its
    label mix ``q_k ~ Dir(α·p)`` (``p`` = the labels' global prior).

    Clients are filled in random order, each by multinomial draws from ``q_k`` restricted to the labels
    that still have rows; when ``q_k`` has no mass left on any remaining label, the client is back-filled
    from the remaining rows' label prior. (flwr-datasets' ``InnerDirichletPartitioner`` implements the same
    idea sample by sample, but renormalises an exhausted row to 0/0 = NaN when α is small.)
    """
    classes, codes = np.unique(labels, return_inverse=True)
    prior = np.bincount(codes, minlength=len(classes)) / len(codes)
    q = rng.dirichlet(alpha * prior, size=len(sizes))
    pools = [rng.permutation(np.flatnonzero(codes == c)) for c in range(len(classes))]
    remaining = np.array([len(pool) for pool in pools])
    used = np.zeros(len(classes), dtype=int)
    assignment: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(sizes)
    for k in rng.permutation(len(sizes)):
        take = np.zeros(len(classes), dtype=int)
        need = int(sizes[k])
        while need > 0:
            available = remaining - take
            weights = np.where(available > 0, q[k], 0.0)
            if not weights.sum() > 0:  # back-fill: the client's labels are exhausted
                weights = available.astype(float)
            draw = np.minimum(rng.multinomial(need, weights / weights.sum()), available)
            take += draw
            need -= int(draw.sum())
        assignment[k] = np.concatenate([pools[c][used[c] : used[c] + take[c]] for c in range(len(classes))])
        used += take
        remaining -= take
    return [rng.permutation(rows) for rows in assignment]


class LabelSkewPartitioner(Partitioner):
    """FedNLP label skew: client k draws its label mix ``q_k ~ Dir(α·p)`` (``p`` = global label prior).

    Client sizes are equal unless ``partition_sizes`` is given; labels a client wants but that are used
    up are back-filled (see ``label_skew_assignment``). Small α: each client sees few labels; α → ∞: IID.
    """

    def __init__(self, num_partitions: int, *, alpha: float, partition_by: str = "label", seed: int = 0,
                 partition_sizes: Sequence[int] | None = None):
        super().__init__()
        self._alpha = _check_concentration("alpha", alpha)
        self._num = _check_num_partitions(num_partitions)
        if partition_sizes is not None and len(partition_sizes) != self._num:
            raise ValueError(f"partition_sizes has {len(partition_sizes)} entries, expected num_partitions={self._num}")
        self._requested_sizes = None if partition_sizes is None else np.asarray(partition_sizes, dtype=int)
        self._partition_by, self._seed = partition_by, seed
        self._rows: list[np.ndarray] | None = None

    @Partitioner.dataset.setter
    def dataset(self, value: datasets.Dataset) -> None:
        _check_fits(self._num, len(value))
        sizes = self._requested_sizes if self._requested_sizes is not None else equal_sizes(len(value), self._num)
        if sizes.sum() > len(value):
            raise ValueError(f"partition_sizes sum to {sizes.sum()} > {len(value)} rows")
        if sizes.min() < 1:
            raise ValueError("partition_sizes: every partition needs at least one row (found an empty one)")
        Partitioner.dataset.fset(self, value)
        labels = np.asarray(value[self._partition_by])
        self._rows = label_skew_assignment(labels, sizes, alpha=self._alpha, rng=np.random.default_rng(self._seed))

    @property
    def num_partitions(self) -> int:
        return self._num

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        if self._rows is None:
            raise AttributeError("assign a dataset first: partitioner.dataset = to_hf_dataset(frame)")
        return self.dataset.select(self._rows[partition_id])


class QuantitySkewPartitioner(SizePartitioner):
    """FedNLP quantity skew: client shares ``s ~ Dir(β·1)``, rows assigned at random (labels IID)."""

    def __init__(self, num_partitions: int, *, beta: float, seed: int = 0, min_partition_size: int = 1):
        self._num = _check_num_partitions(num_partitions)
        self._beta = _check_concentration("beta", beta)
        self._seed = seed
        self._min_size = min_partition_size
        super().__init__(partition_sizes=[1] * self._num)  # placeholder: the real sizes need the dataset

    @Partitioner.dataset.setter
    def dataset(self, value: datasets.Dataset) -> None:
        _check_fits(self._num, len(value))
        rng = np.random.default_rng(self._seed)
        self._partition_sizes = _sizes_at_least(
            lambda: rng.dirichlet(np.full(self._num, self._beta)), len(value), min_partition_size=self._min_size,
            hint=f"increase beta (got {self._beta})").tolist()
        Partitioner.dataset.fset(self, value.shuffle(seed=self._seed))


class HeavyTailedPartitioner(Partitioner):
    """Client sizes ∝ log-normal(0, ``tail``) — a few big clients, many small — like real device activity.

    Labels are IID, or label-skewed ``Dir(α·p)`` when ``alpha`` is given.
    """

    def __init__(self, num_partitions: int, *, tail: float = 1.2, alpha: float | None = None, seed: int = 0,
                 min_partition_size: int = 1):
        super().__init__()
        if not np.isfinite(tail) or tail < 0:
            raise ValueError(f"tail must be >= 0 (0 = equal sizes), got {tail}")
        self._num = _check_num_partitions(num_partitions)
        self._tail, self._alpha, self._seed, self._min_size = tail, alpha, seed, min_partition_size
        if alpha is not None:
            _check_concentration("alpha", alpha)
        self._inner: Partitioner | None = None

    @Partitioner.dataset.setter
    def dataset(self, value: datasets.Dataset) -> None:
        _check_fits(self._num, len(value))
        rng = np.random.default_rng(self._seed)

        def draw() -> np.ndarray:
            raw = rng.lognormal(0.0, self._tail, size=self._num)
            return raw / raw.sum()

        sizes = _sizes_at_least(draw, len(value), min_partition_size=self._min_size,
                                hint=f"lower tail (got {self._tail})")
        if self._alpha is None:
            self._inner = SizePartitioner(partition_sizes=sizes.tolist())
            self._inner.dataset = value.shuffle(seed=self._seed)
        else:
            self._inner = LabelSkewPartitioner(self._num, alpha=self._alpha, seed=self._seed,
                                               partition_sizes=sizes.tolist())
            self._inner.dataset = value
        Partitioner.dataset.fset(self, value)

    @property
    def num_partitions(self) -> int:
        return self._num

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        if self._inner is None:
            raise RuntimeError("assign the partitioner's dataset before loading a partition")
        return self._inner.load_partition(partition_id)


class FeatureSkewPartitioner(LabelSkewPartitioner):
    """FedNLP feature skew: k-means clusters of sentence embeddings play the role of labels in ``label_skew``.

    ``embeddings`` is an ``(n_rows, d)`` array aligned with the dataset's rows, or ``None`` to compute
    them from the ``text`` column with ``sentence_embeddings(method=method)``.
    """

    def __init__(self, num_partitions: int, *, alpha: float, n_clusters: int = 10, embeddings=None,
                 method: str = "tfidf", seed: int = 0):
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self._n_clusters, self._embeddings, self._method = n_clusters, embeddings, method
        super().__init__(num_partitions, alpha=alpha, partition_by="cluster", seed=seed)

    @Partitioner.dataset.setter
    def dataset(self, value: datasets.Dataset) -> None:
        from sklearn.cluster import KMeans

        vectors = self._embeddings if self._embeddings is not None else sentence_embeddings(
            value["text"], method=self._method)
        vectors = np.asarray(vectors)
        if vectors.shape[0] != len(value):
            raise ValueError(f"embeddings has {vectors.shape[0]} rows, the dataset {len(value)}")
        clusters = KMeans(self._n_clusters, n_init=3, random_state=self._seed).fit_predict(vectors)
        if "cluster" in value.column_names:
            value = value.remove_columns("cluster")
        LabelSkewPartitioner.dataset.fset(self, value.add_column("cluster", clusters.astype(np.int64).tolist()))


def natural(partition_by: str = "device_id") -> NaturalIdPartitioner:
    """One client per distinct value of ``partition_by`` (a device, a domain), sorted by that value."""
    return NaturalIdPartitioner(partition_by=partition_by)


PARTITIONERS: dict[str, Callable[..., Partitioner]] = {
    "iid": ShuffledIidPartitioner,
    "label_skew": LabelSkewPartitioner,
    "quantity_skew": QuantitySkewPartitioner,
    "feature_skew": FeatureSkewPartitioner,
    "natural": natural,
    "heavy_tailed": HeavyTailedPartitioner,
}


def make_partitioner(name: str, **options) -> Partitioner:
    """``make_partitioner("label_skew", num_partitions=100, alpha=0.5, seed=0)`` etc. (see ``PARTITIONERS``)."""
    if name not in PARTITIONERS:
        raise ValueError(f"name must be one of {sorted(PARTITIONERS)}, got {name!r}")
    return PARTITIONERS[name](**options)


def partition(frame: pd.DataFrame, name: str, **options) -> tuple[Partitioner, list[np.ndarray]]:
    """Partition ``frame`` with ``make_partitioner(name, **options)``: the partitioner and each client's rows."""
    partitioner = make_partitioner(name, **options)
    partitioner.dataset = to_hf_dataset(frame)
    rows = partition_rows(partitioner)
    empty = [i for i, r in enumerate(rows) if len(r) == 0]
    if empty:
        raise ValueError(f"partitioning {name!r} left {len(empty)} partitions empty (e.g. {empty[:5]})")
    return partitioner, rows


# ------------------------------------------------------------------------------ sentence embeddings
def _cache_file(method: str, texts: Sequence[str], extra: str) -> pathlib.Path:
    from trustml.cache import default_cache_dir

    digest = hashlib.sha256("\n".join([method, extra, *texts]).encode()).hexdigest()[:24]
    return default_cache_dir() / "sentence_vectors" / f"{method}-{digest}.npy"


def sentence_embeddings(texts: Sequence[str], *, method: str = "tfidf", dim: int = 64, cache: bool = True,
                        seed: int = 0) -> np.ndarray:
    """One vector per text, for clustering (feature skew).

    - ``"minilm"``: the mean of all-MiniLM-L6-v2's last-layer token vectors
      (``trustml.models.load_minilm().sentence_vectors``); minutes on a CPU for tens of thousands of
      texts, so results are cached on disk (``$TRUSTML_CACHE/sentence_vectors``), keyed by the model hash
      and the texts.
    - ``"tfidf"``: TF-IDF of words and word bigrams reduced to ``dim`` dimensions by truncated SVD (LSA) —
      seconds, no model; clusters group texts by their words rather than their meaning.
    """
    texts = [str(t) for t in texts]
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    if method == "tfidf":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(unique)
        dim = min(dim, tfidf.shape[1] - 1)
        vectors = TruncatedSVD(dim, random_state=seed).fit_transform(tfidf)
    elif method == "minilm":
        from trustml.models import load_minilm

        from trustml.cache import load_npy, save_npy_atomic

        encoder = load_minilm()
        file = _cache_file(method, unique.tolist(), encoder.model_hash)
        cached = load_npy(file, rows=len(unique)) if cache else None  # None also for an unreadable file
        if cached is not None:
            vectors = cached
        else:
            vectors = np.concatenate([encoder.sentence_vectors(unique[i : i + 512].tolist()).numpy()
                                      for i in range(0, len(unique), 512)])
            if cache:
                save_npy_atomic(file, vectors)  # a crash mid-write never leaves a truncated file under this name
    else:
        raise ValueError(f"method must be 'tfidf' or 'minilm', got {method!r}")
    return np.asarray(vectors, dtype=np.float32)[inverse]


__all__ = [
    "FeatureSkewPartitioner", "HeavyTailedPartitioner", "LabelSkewPartitioner", "PARTITIONERS",
    "QuantitySkewPartitioner", "ShuffledIidPartitioner", "equal_sizes", "label_counts", "label_skew_assignment",
    "make_partitioner", "mean_tv_distance",
    "natural", "partition", "partition_rows", "plot_label_distributions", "sentence_embeddings", "to_hf_dataset",
]
