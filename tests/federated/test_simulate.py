"""The in-process FL loop against plain references: torch SGD, centralized gradient descent, Flower's DP
helpers and Opacus' accountant."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from trustml.federated.plans import FedAvgPlan
from trustml.federated.selection import Selection
from trustml.federated.simulate import (
    DeviceDP,
    FederatedData,
    FlatModel,
    LocalTraining,
    clip_update,
    continual_data,
    device_seed,
    dp_epsilon,
    embedding_model,
    local_update,
    run_continual,
    run_federated,
    run_rounds,
)
from trustml.models import EmbeddingClassifier, TransformerClassifier

VOCAB, CLASSES = 40, 5


def toy_data(n_devices=12, seed=0):
    """Devices with heavy-tailed sizes; label = (first token) mod CLASSES so the task is learnable."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, np.round(rng.lognormal(0, 1.2, n_devices) * 10)).astype(int)
    counts[3] = 0  # a device without data
    n = counts.sum()
    inputs = torch.from_numpy(rng.integers(1, VOCAB, size=(n, 6)))
    inputs[:, 4:] = 0  # padding
    labels = inputs[:, 0] % CLASSES
    frame = pd.DataFrame({"device_id": np.repeat(np.arange(n_devices), counts),
                          "period": rng.integers(3, size=n)})
    return TensorDataset(inputs, labels), frame


def test_fused_forward_matches_the_module():
    model = embedding_model(VOCAB, CLASSES, seed=0)
    x = torch.randint(0, VOCAB, (7, 6))
    x[:, 3:] = 0
    x[0] = 0  # an all-padding row
    torch.testing.assert_close(model.forward(model.flatten(), x), model.module(x))
    transformer = FlatModel(TransformerClassifier(VOCAB, CLASSES, d_model=16, n_layers=1, d_ff=32))
    torch.testing.assert_close(transformer.forward(transformer.flatten(), x), transformer.module(x))


def test_local_update_equals_torch_sgd_on_the_module():
    dataset, _ = toy_data()
    x, y = dataset.tensors[0][:37], dataset.tensors[1][:37]
    model = embedding_model(VOCAB, CLASSES, seed=1)
    training = LocalTraining(epochs=2, batch_size=8, lr=0.3)
    seed = device_seed(0, 1, 5)
    ours, _ = local_update(model, model.flatten(), x, y, training=training, seed=seed)

    torch.manual_seed(1)
    reference = EmbeddingClassifier(VOCAB, CLASSES)
    optimiser = torch.optim.SGD(reference.parameters(), lr=0.3)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        order = torch.from_numpy(rng.permutation(len(y)))
        for a in range(0, len(y), 8):
            index = order[a : a + 8]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(reference(x[index]), y[index]).backward()
            optimiser.step()
    torch.testing.assert_close(ours, model.flatten(reference), atol=1e-6, rtol=1e-5)


def test_fedprox_keeps_updates_closer_to_the_global_model():
    dataset, _ = toy_data()
    x, y = dataset.tensors
    model = embedding_model(VOCAB, CLASSES, seed=0)
    start = model.flatten()
    drift = {}
    for mu in (0.0, 1.0):
        new, _ = local_update(model, start, x, y, training=LocalTraining(epochs=3, lr=0.5, mu=mu), seed=0)
        drift[mu] = (new - start).norm().item()
    assert drift[1.0] < 0.8 * drift[0.0]


def test_one_fedavg_round_of_full_batch_steps_equals_centralized_gradient_descent():
    """E = 1 full-batch step on every device, n-weighted average = one GD step on the pooled data."""
    dataset, frame = toy_data()
    data = FederatedData.by_column(dataset, frame)
    model = embedding_model(VOCAB, CLASSES, seed=0)
    training = LocalTraining(epochs=1, batch_size=10_000, lr=0.7)
    available = int(np.count_nonzero(data.counts))
    result = run_federated(model, data, rounds=1, devices_per_round=available, training=training, progress=False)
    pooled, _ = local_update(model, model.flatten(), *dataset.tensors, training=training, seed=0)
    torch.testing.assert_close(result.params, pooled, atol=2e-6, rtol=1e-5)
    assert sorted(result.selected[0].tolist()) == np.flatnonzero(data.counts).tolist()


def test_runs_are_reproducible_and_skip_devices_without_data():
    dataset, frame = toy_data()
    data = FederatedData.by_column(dataset, frame, ids=np.arange(12))  # device 3 has no rows
    assert data.counts[3] == 0
    model = embedding_model(VOCAB, CLASSES, seed=0)
    runs = [run_federated(model, data, rounds=5, devices_per_round=4, selection=Selection("activity"),
                          test=dataset, seed=3, progress=False) for _ in range(2)]
    torch.testing.assert_close(runs[0].params, runs[1].params, atol=0, rtol=0)
    assert all(3 not in s for s in runs[0].selected)
    assert list(runs[0].history["round"]) == [0, 1, 2, 3, 4, 5]
    assert runs[0].history["samples"].is_monotonic_increasing


def test_federated_learning_learns_the_toy_task():
    dataset, frame = toy_data(n_devices=30)
    data = FederatedData.by_column(dataset, frame)
    model = embedding_model(VOCAB, CLASSES, seed=0)
    result = run_federated(model, data, rounds=40, devices_per_round=5, selection=Selection("activity"),
                           training=LocalTraining(epochs=2, lr=0.5), test=dataset, eval_every=40, progress=False)
    assert result.history["accuracy"].iloc[-1] > result.history["accuracy"].iloc[0] + 0.3


def test_continual_data_deletes_or_keeps_old_data():
    dataset, frame = toy_data()
    new = continual_data(dataset, frame)
    kept = continual_data(dataset, frame, keep_old_data=True)
    assert len(new) == len(kept) == 3
    assert sum(d.counts.sum() for d in new) == len(frame)
    np.testing.assert_array_equal(kept[-1].counts, FederatedData.by_column(dataset, frame).counts)
    np.testing.assert_array_equal(kept[1].counts, new[0].counts + new[1].counts)
    for t, data in enumerate(new):  # each device's rows of period t, and nothing else
        for k in (0, 5):
            x, _ = data.device(k)
            rows = (frame["device_id"].to_numpy() == data.device_ids[k]) & (frame["period"].to_numpy() == t)
            expected = dataset.tensors[0][rows]
            torch.testing.assert_close(x, expected)


def test_continual_run_continues_from_the_previous_model_and_skips_empty_devices():
    dataset, frame = toy_data(n_devices=20)
    periods = continual_data(dataset, frame)
    model = embedding_model(VOCAB, CLASSES, seed=0)
    result = run_continual(model, periods, rounds_per_period=3, devices_per_round=3, selection=Selection("activity"),
                           tests=dataset, progress=False)
    assert list(result.history["period"]) == [0, 1, 2] and len(result.selected) == 9
    for t, data in enumerate(periods):
        for selected in result.selected[3 * t : 3 * t + 3]:
            assert np.all(data.counts[selected] > 0)
    # Period 1 starts from the global model after period 0 (it continues, it does not restart).
    options = dict(rounds=3, devices_per_round=3, plan=FedAvgPlan(Selection("activity")), training=LocalTraining(),
                   seed=0)
    after_0 = run_rounds(model, periods[0], model.flatten(), first_round=1, **options).params
    after_1 = run_rounds(model, periods[1], after_0, first_round=4, **options).params
    two = run_continual(model, periods[:2], rounds_per_period=3, devices_per_round=3, selection=Selection("activity"),
                        progress=False)
    torch.testing.assert_close(two.params, after_1, atol=0, rtol=0)


def test_clipping_and_noise_scale_match_flower():
    from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv

    rng = np.random.default_rng(0)
    start, end = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32) * 3
    flower = [end.copy()]
    compute_clip_model_update(flower, [start], clipping_norm=1.5)
    ours = torch.from_numpy(start) + clip_update(torch.from_numpy(end - start), 1.5)
    np.testing.assert_allclose(ours.numpy(), flower[0], atol=1e-6)

    # One DP round with learning rate ~0: the change is the noise, std σC/(qK) = Flower's compute_stdv.
    dataset, frame = toy_data(n_devices=40)
    data = FederatedData.by_column(dataset, frame)
    model = embedding_model(VOCAB, CLASSES, seed=0)
    result = run_federated(model, data, rounds=1, devices_per_round=8,
                           dp=DeviceDP(noise_multiplier=2.0, max_grad_norm=0.5), training=LocalTraining(lr=1e-9),
                           progress=False)
    change = (result.params - model.flatten()).std().item()
    assert change == pytest.approx(compute_stdv(2.0, 0.5, 8), rel=0.05)


def test_dp_epsilon_is_opacus_rdp():
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(50):
        accountant.step(noise_multiplier=1.1, sample_rate=10 / 1000)
    expected = accountant.get_epsilon(delta=1e-5)
    assert dp_epsilon(noise_multiplier=1.1, devices_per_round=10, num_devices=1000, rounds=50,
                      delta=1e-5) == pytest.approx(expected, rel=1e-9)


def test_bad_input_is_a_clear_error():
    dataset, frame = toy_data()
    data = FederatedData.by_column(dataset, frame, ids=np.arange(12))
    model = embedding_model(VOCAB, CLASSES, seed=0)
    with pytest.raises(ValueError, match="devices_per_round=12 exceeds the 11 devices that hold data"):
        run_federated(model, data, rounds=1, devices_per_round=12, progress=False)
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        run_federated(model, data, rounds=0, devices_per_round=2, progress=False)
    with pytest.raises(ValueError, match="uniform"):
        run_federated(model, data, rounds=1, devices_per_round=2, selection=Selection("activity"),
                      dp=DeviceDP(noise_multiplier=1.0, max_grad_norm=1.0), progress=False)
    with pytest.raises(ValueError, match="no data"):
        local_update(model, model.flatten(), *data.device(3), training=LocalTraining(), seed=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        LocalTraining(lr=0)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        LocalTraining(mu=-1)
