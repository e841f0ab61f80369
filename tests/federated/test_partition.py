"""FedNLP partitions: shapes, skew, reuse of flwr-datasets, bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest
from flwr_datasets.partitioner import InnerDirichletPartitioner, NaturalIdPartitioner

from trustml.federated.partition import (
    FeatureSkewPartitioner,
    HeavyTailedPartitioner,
    LabelSkewPartitioner,
    QuantitySkewPartitioner,
    ShuffledIidPartitioner,
    label_counts,
    label_skew_assignment,
    make_partitioner,
    mean_tv_distance,
    partition,
    partition_rows,
    plot_label_distributions,
    to_hf_dataset,
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """A small labelled frame: 12 labels with a skewed prior, 40 devices of varying size."""
    rng = np.random.default_rng(0)
    n = 2400
    prior = rng.dirichlet(np.full(12, 3.0))
    labels = rng.choice(12, size=n, p=prior)
    texts = [f"word{label} filler{rng.integers(5)} token{label % 3}" for label in labels]
    device = np.repeat(np.arange(40), rng.multinomial(n - 40, np.full(40, 1 / 40)) + 1)
    return pd.DataFrame({"text": texts, "label": labels, "device_id": device, "period": rng.integers(4, size=n)})


def test_mean_tv_distance_by_hand():
    counts = pd.DataFrame([[10, 0], [0, 10]])  # global mix (½, ½); each client all on one label
    assert mean_tv_distance(counts) == pytest.approx(0.5)
    assert mean_tv_distance(pd.DataFrame([[3, 6], [1, 2]])) == pytest.approx(0.0)


mean_tv_to_global = mean_tv_distance


def assert_is_a_partition(rows, n):
    everything = np.concatenate(rows)
    assert len(everything) == n and len(np.unique(everything)) == n, "every row in exactly one partition"


@pytest.mark.parametrize("name, options", [
    ("iid", {"num_partitions": 10}),
    ("label_skew", {"num_partitions": 10, "alpha": 0.5}),
    ("quantity_skew", {"num_partitions": 10, "beta": 1.0}),
    ("heavy_tailed", {"num_partitions": 10, "tail": 1.2}),
    ("heavy_tailed", {"num_partitions": 10, "tail": 1.2, "alpha": 1.0}),
    ("natural", {}),
])
def test_partitioners_cover_every_row_once(frame, name, options):
    partitioner, rows = partition(frame, name, **options)
    assert partitioner.num_partitions == len(rows) == options.get("num_partitions", 40)
    assert_is_a_partition(rows, len(frame))
    first = partitioner.load_partition(0)  # the flwr-datasets interface
    assert sorted(first["row"]) == sorted(rows[0].tolist())


def test_natural_partition_is_flwr_datasets_one_client_per_device(frame):
    partitioner, rows = partition(frame, "natural")
    assert isinstance(partitioner, NaturalIdPartitioner)
    for i in (0, 17, 39):
        assert set(frame.loc[rows[i], "device_id"]) == {i}


def test_iid_is_shuffled_and_equal(frame):
    partitioner, rows = partition(frame, "iid", num_partitions=8, seed=1)
    assert {len(r) for r in rows} == {300}
    assert not np.array_equal(np.sort(rows[0]), np.arange(300)), "IidPartitioner alone shards contiguous rows"
    assert mean_tv_to_global(label_counts(partitioner)) < 0.15


def test_label_skew_grows_as_alpha_shrinks(frame):
    tv = {}
    for alpha in (100.0, 1.0, 0.05):
        partitioner, rows = partition(frame, "label_skew", num_partitions=20, alpha=alpha, seed=0)
        assert {len(r) for r in rows} == {120}, "FedNLP label skew keeps client sizes equal"
        assert_is_a_partition(rows, len(frame))
        tv[alpha] = mean_tv_to_global(label_counts(partitioner))
    assert tv[100.0] < tv[1.0] < tv[0.05]
    assert tv[0.05] > 0.6


def test_label_skew_matches_flwr_inner_dirichlet_when_no_label_runs_out():
    """Without exhaustion both procedures give client k Multinomial(n_k, q_k) with q_k ~ Dir(α·p):
    their clients' label statistics agree (flwr-datasets as the reference)."""
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=60_000, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    sizes = np.full(600, 20)  # 12 000 of 60 000 rows: no label runs out
    ours = label_skew_assignment(labels, sizes, alpha=2.0, rng=np.random.default_rng(1))
    reference = InnerDirichletPartitioner(partition_sizes=sizes.tolist(), partition_by="label",
                                          alpha=(2.0 * np.bincount(labels) / len(labels)).tolist(), seed=2)
    reference.dataset = to_hf_dataset(pd.DataFrame({"label": labels}))
    theirs = [np.asarray(reference.load_partition(i)["row"]) for i in range(600)]

    def statistics(assignment):
        top_share = [np.bincount(labels[rows], minlength=6).max() / len(rows) for rows in assignment]
        distinct = [len(np.unique(labels[rows])) for rows in assignment]
        return np.mean(top_share), np.mean(distinct)

    (ours_top, ours_distinct), (ref_top, ref_distinct) = statistics(ours), statistics(theirs)
    # Standard errors over 600 clients: ~0.008 (top share), ~0.04 (distinct labels).
    assert ours_top == pytest.approx(ref_top, abs=0.025)
    assert ours_distinct == pytest.approx(ref_distinct, abs=0.12)
    # ...and the check can fail: a different α is told apart.
    other_top, _ = statistics(label_skew_assignment(labels, sizes, alpha=0.5, rng=np.random.default_rng(1)))
    assert other_top > ref_top + 0.1


def test_label_skew_survives_tiny_alpha_where_flwr_fails():
    labels = np.repeat(np.arange(5), [400, 300, 200, 80, 20])
    rows = label_skew_assignment(labels, np.full(50, 20), alpha=0.01, rng=np.random.default_rng(0))
    assert_is_a_partition(rows, len(labels))
    assert all(len(r) == 20 for r in rows)


def test_quantity_skew_sizes_follow_beta(frame):
    spread = {}
    for beta in (100.0, 0.5):
        _, rows = partition(frame, "quantity_skew", num_partitions=20, beta=beta, seed=0)
        sizes = np.array([len(r) for r in rows])
        spread[beta] = sizes.std() / sizes.mean()
    assert spread[0.5] > 3 * spread[100.0]


def test_heavy_tailed_sizes(frame):
    _, rows = partition(frame, "heavy_tailed", num_partitions=30, tail=1.5, seed=0)
    sizes = np.sort([len(r) for r in rows])[::-1]
    assert sizes[:3].sum() > 0.3 * sizes.sum(), "a few big clients hold much of the data"


def test_feature_skew_clusters_text_features(frame):
    partitioner = FeatureSkewPartitioner(12, alpha=0.1, n_clusters=6, method="tfidf", seed=0)
    partitioner.dataset = to_hf_dataset(frame)
    rows = partition_rows(partitioner)
    assert_is_a_partition(rows, len(frame))
    clusters = label_counts(partitioner, label="cluster")
    assert mean_tv_to_global(clusters) > 0.5, "clients are skewed in embedding-cluster space"


def test_feature_skew_accepts_precomputed_embeddings(frame):
    embeddings = np.eye(12)[frame["label"].to_numpy()]  # clusters = labels: feature skew becomes label skew
    partitioner = FeatureSkewPartitioner(10, alpha=0.1, n_clusters=12, embeddings=embeddings, seed=0)
    partitioner.dataset = to_hf_dataset(frame)
    assert mean_tv_to_global(label_counts(partitioner)) > 0.5


def test_plot_label_distributions_uses_flwr_datasets(frame):
    import matplotlib

    matplotlib.use("Agg")
    partitioner, _ = partition(frame, "label_skew", num_partitions=5, alpha=1.0, seed=0)
    figure, _, table = plot_label_distributions(partitioner)
    assert table.shape[0] == 5 and table.values.sum() == len(frame)
    matplotlib.pyplot.close(figure)


@pytest.mark.parametrize("make, message", [
    (lambda: LabelSkewPartitioner(5, alpha=0.0), "alpha must be > 0"),
    (lambda: LabelSkewPartitioner(5, alpha=-1.0), "alpha must be > 0"),
    (lambda: QuantitySkewPartitioner(5, beta=0.0), "beta must be > 0"),
    (lambda: HeavyTailedPartitioner(5, tail=-1.0), "tail must be >= 0"),
    (lambda: ShuffledIidPartitioner(0), "num_partitions must be >= 1"),
    (lambda: make_partitioner("dirichlet"), "name must be one of"),
])
def test_bad_parameters_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_more_partitions_than_rows_is_an_error(frame):
    with pytest.raises(ValueError, match="num_partitions=5000 exceeds the 2400 rows"):
        partition(frame, "iid", num_partitions=5000)


def test_empty_partitions_are_an_error(frame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="empty partitions.*increase beta"):
            partition(frame, "quantity_skew", num_partitions=200, beta=0.01, seed=0)
    with pytest.raises(ValueError, match="every partition needs at least one row"):
        p = LabelSkewPartitioner(3, alpha=1.0, partition_sizes=[10, 0, 5])
        p.dataset = to_hf_dataset(frame)


@pytest.mark.slow
def test_minilm_sentence_embeddings_are_the_encoders_and_cached(tmp_path, monkeypatch):
    from trustml.federated.partition import sentence_embeddings
    from trustml.models import load_minilm

    monkeypatch.setenv("TRUSTML_CACHE", str(tmp_path))
    texts = ["turn the lights on", "play some jazz", "turn the lights on", "what is the weather in paris"]
    vectors = sentence_embeddings(texts, method="minilm")
    expected = load_minilm().sentence_vectors(texts).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert list((tmp_path / "sentence_vectors").glob("minilm-*.npy")), "vectors are cached on disk"
    np.testing.assert_array_equal(sentence_embeddings(texts, method="minilm"), vectors)
