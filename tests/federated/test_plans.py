"""Aggregation functions and round plans against plain references and Flower's own strategies."""

import math

import numpy as np
import pytest
import torch

from trustml.federated.aggregation import adam_server_step, clip_update, noised_clipped_mean, weighted_average
from trustml.federated.plans import DeviceDP, DeviceDPPlan, FedAvgPlan, FedOptPlan, ServerAdam, make_plan
from trustml.federated.selection import Selection
from trustml.federated.simulate import FederatedData, LocalTraining, embedding_model, run_federated

from test_simulate import CLASSES, VOCAB, toy_data


def test_weighted_average_is_the_plain_sum_and_rejects_bad_weights():
    models = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0]), torch.tensor([0.0, 1.0])]
    torch.testing.assert_close(weighted_average(models, [0.5, 0.25, 0.25]),
                               0.5 * models[0] + 0.25 * models[1] + 0.25 * models[2])
    for weights, match in (([0.5, 0.5], "one number per update"), ([0.5, 0.6, -0.1], ">= 0"),
                           ([0.2, 0.2, 0.2], "sum to 1"), ([math.nan, 0.5, 0.5], "finite")):
        with pytest.raises(ValueError, match=match):
            weighted_average(models, weights)
    with pytest.raises(ValueError, match="at least one"):
        weighted_average([], [])
    with pytest.raises(ValueError, match="shape"):
        weighted_average([torch.zeros(2), torch.zeros(3)], [0.5, 0.5])


def test_clip_and_noised_mean_bad_input():
    with pytest.raises(ValueError, match="max_grad_norm"):
        clip_update(torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        clip_update(torch.tensor([1.0, math.inf]), 1.0)
    params = torch.zeros(4)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        noised_clipped_mean(params, [], noise_multiplier=math.nan, max_grad_norm=1.0, expected_devices=2,
                            generator=generator)
    with pytest.raises(ValueError, match="expected_devices"):
        noised_clipped_mean(params, [], noise_multiplier=1.0, max_grad_norm=1.0, expected_devices=0,
                            generator=generator)
    # An empty Poisson sample still releases noise (its absence would reveal that nobody was sampled).
    released = noised_clipped_mean(params, [], noise_multiplier=1.0, max_grad_norm=1.0, expected_devices=2,
                                   generator=generator)
    assert released.abs().sum() > 0


def test_device_dp_rejects_nan_negative_and_non_uniform():
    for sigma in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="noise_multiplier"):
            DeviceDP(noise_multiplier=sigma, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        DeviceDP(noise_multiplier=1.0, max_grad_norm=0.0)
    with pytest.raises(ValueError, match="uniform"):
        DeviceDPPlan(FedAvgPlan(Selection("activity")), DeviceDP(noise_multiplier=1.0, max_grad_norm=1.0))
    with pytest.raises(ValueError, match="eta"):
        ServerAdam(eta=0.0)
    with pytest.raises(ValueError, match="beta_1"):
        ServerAdam(beta_1=1.0)


def flower_fedadam_rounds(current, averaged_per_round, server: ServerAdam, task_identity_ready=True):
    """Flower's FedAdam.aggregate_train on replies whose weighted mean is ``averaged`` (one reply per round)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAdam

    strategy = FedAdam(eta=server.eta, beta_1=server.beta_1, beta_2=server.beta_2, tau=server.tau)
    arrays = ArrayRecord({"w": Array(current)})
    out = []
    for server_round, averaged in enumerate(averaged_per_round, start=1):
        strategy.current_arrays = {k: a.numpy() for k, a in arrays.items()}  # what configure_train records
        request = Message(RecordDict({"arrays": arrays, "config": ConfigRecord({})}), dst_node_id=7,
                          message_type=MessageType.TRAIN)
        # Two replies with weights 1 and 3 whose weighted mean is ``averaged``.
        first = averaged + 0.3
        second = (4 * averaged - first) / 3
        replies = [Message(RecordDict({"arrays": ArrayRecord({"w": Array(x.astype(np.float32))}),
                                       "metrics": MetricRecord({"num-examples": n})}), reply_to=request)
                   for x, n in ((first, 1), (second, 3))]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        out.append(arrays["w"].numpy())
    return out


def test_fedadam_server_step_equals_flowers_fedadam(task_identity):
    rng = np.random.default_rng(0)
    server = ServerAdam(eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3)
    start = rng.normal(size=20).astype(np.float32)
    # Flower's rounds: the mean model of each round is the previous Flower model plus a pseudo-gradient step.
    steps = [rng.normal(scale=0.1, size=20).astype(np.float32) for _ in range(4)]
    ours, moments, params = [], None, torch.from_numpy(start)
    averaged_flower = []
    for t, step in enumerate(steps, start=1):
        averaged = params + torch.from_numpy(step)
        averaged_flower.append(averaged.numpy().astype(np.float64))
        params, moments = adam_server_step(params, averaged, moments, server_round=t, eta=server.eta,
                                           beta_1=server.beta_1, beta_2=server.beta_2, tau=server.tau)
        ours.append(params.numpy())
    flower = flower_fedadam_rounds(start, averaged_flower, server)
    for a, b in zip(ours, flower):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.abs(ours[-1] - start).max() > 0.01, "the server moved the model"
    with pytest.raises(ValueError, match="server_round"):
        adam_server_step(params, params, None, server_round=0, eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)


def test_fedopt_plan_reuses_no_state_between_runs_and_differs_from_fedavg():
    dataset, frame = toy_data(n_devices=20)
    data = FederatedData.by_column(dataset, frame)
    model = embedding_model(VOCAB, CLASSES, seed=0)
    options = dict(rounds=4, devices_per_round=4, training=LocalTraining(lr=0.3), seed=1, progress=False)
    plan = make_plan(Selection("uniform"), server_optimizer=ServerAdam(eta=0.02))
    assert isinstance(plan, FedOptPlan)
    first, second = (run_federated(model, data, plan=plan, **options) for _ in range(2))
    torch.testing.assert_close(first.params, second.params, atol=0, rtol=0)
    fedavg = run_federated(model, data, **options)
    assert [s.tolist() for s in first.selected] == [s.tolist() for s in fedavg.selected], "same devices"
    assert (first.params - fedavg.params).abs().max() > 1e-3
    # The first FedAdam step moves every coordinate the mean update touches by about η (Adam's normalisation).
    one = run_federated(model, data, plan=plan, **{**options, "rounds": 1})
    avg1 = run_federated(model, data, **{**options, "rounds": 1})
    start = model.flatten()
    moved = (avg1.params - start).abs() > 1e-6
    expected = start + 0.02 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2) * 0.1 * (avg1.params - start) / (
        (0.01 * (avg1.params - start) ** 2).sqrt() + 1e-3)
    torch.testing.assert_close(one.params[moved], expected[moved], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="not both"):
        run_federated(model, data, plan=plan, selection=Selection("activity"), **options)
