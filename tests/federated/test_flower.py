"""The Flower app: strategy selection, parity with the in-process loop (Flower's simulation runtime, driven by
``flwr run`` against a local simulation SuperLink), and a real deployment (SuperLink + SuperNodes on loopback).

Processes are started by ``trustml.federated.flower.loopback`` and torn down by PID (with their children), also
when a test fails.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from trustml.federated.flower import (
    DEFAULT_RUN_CONFIG, ActivityFedAvg, DeviceInfo, FewRepliesError, RequireReplies, RunConfig, app_dir,
    check_dp_config, resolve_config, run_server,
)
from trustml.federated.flower.task import load_federated_task, selection_of, training_of
from trustml.federated.selection import Selection, collapse, round_rng
from trustml.federated.simulate import dp_epsilon, fixed_sample_epsilon, run_federated

#: Parity tolerance: the Flower run and the in-process loop run the same float32 arithmetic; only the
#: order of the weighted sum of the replies may differ (float32 rounding, ~1e-7 per round).
PARITY_ATOL = 1e-5


# ------------------------------------------------------------------------------------ no processes
def test_template_config_matches_the_defaults():
    config = tomllib.loads((app_dir() / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert config["config"] == DEFAULT_RUN_CONFIG
    assert config["components"] == {"serverapp": "trustml_fl.server_app:app", "clientapp": "trustml_fl.client_app:app"}


def test_unknown_run_config_key_is_an_error():
    with pytest.raises(KeyError, match="unknown run-config key 'num-rounds'"):
        resolve_config({"num-rounds": 3})


@pytest.mark.parametrize("key, value, match", [
    ("replace", "false", "'replace' must be true or false"),  # was bool("false") == True
    ("num-server-rounds", 2.7, "'num-server-rounds' must be an integer"),  # was int(2.7) == 2
    ("num-server-rounds", True, "'num-server-rounds' must be an integer"),
    ("devices-per-round", 0, ">= 1"),
    ("dp-noise-multiplier", -1.0, "'dp-noise-multiplier' must be a finite number >= 0"),  # was: DP silently off
    ("dp-noise-multiplier", float("nan"), "'dp-noise-multiplier' must be a finite number >= 0"),
    ("dp-clipping-norm", 0.0, "> 0"),
    ("lr", float("inf"), "'lr' must be a finite number > 0"),
    ("gamma", "1", "'gamma' must be a number"),
    ("selection", "activty", "'selection' must be one of"),
    ("server-optimizer", "adam", "'server-optimizer' must be one of"),
    ("server-beta-1", 1.0, "< 1"),
    ("fail-partitions", "1;2", "comma-separated partition ids"),
])
def test_run_config_is_parsed_strictly(key, value, match):
    with pytest.raises(ValueError, match=match):
        resolve_config({key: value})


def test_run_config_is_resolved_once_into_a_frozen_dataclass():
    config = resolve_config({"selection": "uniform", "replace": True, "aggregation": "mean", "local-epochs": 2,
                             "server-optimizer": "fedadam", "server-lr": 0.05, "fail-partitions": " 3, 1"})
    assert isinstance(config, RunConfig)
    assert config.selection_rule == Selection("uniform", replace=True, aggregation="mean")
    assert config.training.epochs == 2 and config.server_adam.eta == 0.05
    assert config.fail_partitions == (1, 3) and config.required_replies == config.devices_per_round
    assert resolve_config(config.to_dict()) == config and resolve_config(config) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


@pytest.mark.parametrize("override, match", [
    ({"selection": "activity"}, "selection='activity'"),
    ({"selection": "uniform", "aggregation": "weighted"}, "aggregation='weighted'"),
    ({"selection": "uniform", "aggregation": "mean", "replace": True}, "replace=True"),
    ({"selection": "uniform", "aggregation": "mean", "min-replies": 1}, "min-replies=1"),
    ({"selection": "uniform", "aggregation": "mean", "secagg": True}, "secagg"),
])
def test_flower_dp_refuses_unequal_weights_and_data_dependent_selection(override, match):
    """Flower's noise σC/m assumes weights 1/m; n_k-weights (seen: 0.42/0.53/0.05) make the sensitivity C·max w_k.
    The old ServerApp ran these silently with too little noise; now it refuses before any message is sent."""
    config = resolve_config({"dp-noise-multiplier": 1.0, "devices-per-round": 3, **override})
    with pytest.raises(ValueError, match=match):
        run_server(grid=None, config=config)
    check_dp_config(resolve_config({"dp-noise-multiplier": 1.0, "selection": "uniform", "aggregation": "mean"}))


def test_fixed_sample_epsilon_counts_every_round_with_replace_one_sensitivity():
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(20):
        accountant.step(noise_multiplier=0.75, sample_rate=1.0)  # σ/2: sensitivity 2C, no amplification
    assert fixed_sample_epsilon(noise_multiplier=1.5, rounds=20, delta=1e-4) == pytest.approx(
        accountant.get_epsilon(delta=1e-4), rel=1e-9)
    poisson = dp_epsilon(noise_multiplier=1.5, devices_per_round=10, num_devices=1000, rounds=20, delta=1e-4)
    assert fixed_sample_epsilon(noise_multiplier=1.5, rounds=20, delta=1e-4) > 10 * poisson
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="noise_multiplier"):
            fixed_sample_epsilon(noise_multiplier=bad, rounds=20, delta=1e-4)


def replies_for(requests, *, failing=(), missing=()):
    """A successful reply (arrays + weight) for each request, an error reply for ``failing`` node ids, and no
    reply at all for ``missing`` ones."""
    from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

    replies = []
    for request in requests:
        node = request.metadata.dst_node_id
        if node in missing:
            continue
        if node in failing:
            replies.append(Message(Error(code=0, reason="RuntimeError: device fails on purpose"), reply_to=request))
            continue
        weight = request.content["config"]["aggregation-weight"]
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.full(3, float(node % 7), dtype=np.float32))}),
                              "metrics": MetricRecord({"aggregation-weight": weight, "num-examples": 1})})
        replies.append(Message(content, reply_to=request))
    return replies


def test_require_replies_records_failures_and_fails_the_round_below_the_minimum(task_identity):
    strategy = ActivityFedAvg(devices_per_round=3, selection=Selection("uniform", aggregation="mean"), seed=2)
    node_ids = [2**64 - 1 - 5 * i for i in range(4)]
    strategy.devices = {node: DeviceInfo(partition_id=k, num_examples=10 + k) for k, node in enumerate(node_ids)}
    guard = RequireReplies(strategy, min_replies=2, partition_of=strategy.partition_of)
    arrays = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    requests = list(guard.configure_train(1, arrays, ConfigRecord({}), grid=None))
    asked = [r.metadata.dst_node_id for r in requests]
    arrays_out, _ = guard.aggregate_train(1, replies_for(requests, failing={asked[0]}))
    record = guard.rounds[1]
    assert record.asked == [strategy.partition_of(n) for n in asked]
    assert record.trained == record.asked[1:] and list(record.failed) == record.asked[:1]
    assert "fails on purpose" in record.failed[record.asked[0]]
    np.testing.assert_allclose(arrays_out["w"].numpy(), np.mean([n % 7 for n in asked[1:]]), rtol=1e-6)

    requests = list(guard.configure_train(2, arrays, ConfigRecord({}), grid=None))
    asked = [r.metadata.dst_node_id for r in requests]
    with pytest.raises(FewRepliesError, match=r"round 2: 1 of 3 selected devices replied, fewer than the 2 required"):
        guard.aggregate_train(2, replies_for(requests, failing={asked[0]}, missing={asked[1]}))
    assert "no reply within the timeout" in guard.rounds[2].failed[strategy.partition_of(asked[1])]

    # every device failing (before: a KeyError from the empty aggregation) is the same clear error
    requests = list(guard.configure_train(3, arrays, ConfigRecord({}), grid=None))
    asked = [r.metadata.dst_node_id for r in requests]
    with pytest.raises(FewRepliesError, match=r"round 3: 0 of 3 selected devices replied"):
        guard.aggregate_train(3, replies_for(requests, failing=set(asked)))
    assert sorted(guard.rounds[3].failed) == sorted(strategy.partition_of(n) for n in asked)
    assert guard.rounds[3].trained == []
    with pytest.raises(ValueError, match="min_replies"):
        RequireReplies(strategy, min_replies=0)


def test_configure_train_selects_like_the_in_process_loop_and_keeps_uint64_node_ids(task_identity):
    """Node ids above 2**63 (uint64) reach the messages exactly; devices are the ones selection picks."""
    counts = [5, 0, 40, 12, 90, 3]
    node_ids = [2**64 - 1 - 7 * i for i in range(len(counts))]  # not representable in int64 / float64
    strategy = ActivityFedAvg(devices_per_round=3, selection=Selection("activity", gamma=1.0), seed=11)
    strategy.devices = {node: DeviceInfo(partition_id=k, num_examples=n)
                        for k, (node, n) in enumerate(zip(node_ids[::-1], counts[::-1]))}
    arrays = ArrayRecord(torch_state_dict={"w": torch.zeros(3)})
    for server_round in (1, 2, 3):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), grid=None))
        drawn = Selection("activity", gamma=1.0).select(np.array(counts[::-1]), 3, round_rng(11, server_round))
        devices, weights = collapse(drawn, np.array(counts[::-1])[drawn] / np.array(counts[::-1])[drawn].sum())
        assert [m.metadata.dst_node_id for m in messages] == [node_ids[::-1][d] for d in devices]
        assert all(isinstance(m.metadata.dst_node_id, int) and m.metadata.message_type == MessageType.TRAIN
                   for m in messages)
        np.testing.assert_allclose([m.content["config"]["aggregation-weight"] for m in messages], weights)
        assert all(m.content["config"]["server-round"] == server_round for m in messages)
        zero = counts[::-1].index(0)
        assert zero not in strategy.selected[server_round][0], "a device without data is never selected"


def test_strategy_rejects_bad_devices_per_round(task_identity):
    with pytest.raises(ValueError, match="devices_per_round must be an int >= 1"):
        ActivityFedAvg(devices_per_round=0)
    strategy = ActivityFedAvg(devices_per_round=3)
    strategy.devices = {2**63 + 1: DeviceInfo(0, 4), 5: DeviceInfo(1, 0), 6: DeviceInfo(2, 9)}
    with pytest.raises(ValueError, match="devices_per_round=3 exceeds the 2 devices that hold data"):
        strategy.configure_train(1, ArrayRecord(), ConfigRecord({}), grid=None)


# ------------------------------------------------------------------ Flower's simulation engine
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("server_optimizer", ["fedavg", "fedadam"])
def test_parity_between_flower_simulation_and_in_process_loop(server_optimizer):
    """Same seed, partitions and selection: the same devices each round, final weights within PARITY_ATOL —
    for FedAvg, and for FedOpt (Flower's ``FedAdam`` strategy against trustml's ``FedOptPlan``)."""
    from trustml.federated.flower import run_flower_simulation

    config = resolve_config({"n-devices": 12, "num-server-rounds": 3, "devices-per-round": 3, "seed": 5,
                             "selection": "activity", "gamma": 1.0, "local-epochs": 2,
                             "server-optimizer": server_optimizer, "server-lr": 0.05})
    flower = run_flower_simulation(config)
    federated = load_federated_task(config)
    model = federated.new_model(seed=5)
    local = run_federated(model, federated.data, rounds=3, devices_per_round=3, selection=selection_of(config),
                          training=training_of(config), server_optimizer=config.server_adam, seed=5,
                          test=federated.task.test, progress=False)
    assert [flower.selected[r] for r in (1, 2, 3)] == [s.tolist() for s in local.selected]
    torch.testing.assert_close(flower.initial_params, model.flatten(), atol=0, rtol=0)
    assert (flower.final_params - local.params).abs().max().item() <= PARITY_ATOL
    assert (flower.final_params - flower.initial_params).norm().item() > 100 * PARITY_ATOL, "the model trained"
    np.testing.assert_allclose([flower.accuracy[r] for r in range(4)], local.history["accuracy"], atol=1e-3)
    assert flower.trained == flower.selected and all(not failed for failed in flower.failed.values())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failing_device_is_reported_and_too_few_replies_fail_the_run():
    """A ClientApp that raises: the old ServerApp averaged over the others and still listed it as trained (and
    raised a misleading KeyError when every device failed). Now the result names it, with the reason, and a
    round below ``min-replies`` stops the run with a clear error."""
    from trustml.federated.flower import run_flower_simulation

    base = {"n-devices": 8, "num-server-rounds": 2, "devices-per-round": 3, "seed": 3, "selection": "uniform"}
    federated = load_federated_task(base)
    first = Selection("uniform").select(federated.data.counts, 3, round_rng(3, 1))
    failing = int(first[0])  # a device selected in round 1
    result = run_flower_simulation({**base, "fail-partitions": str(failing), "min-replies": 2})
    assert failing in result.selected[1] and failing not in result.trained[1]
    assert result.trained[1] == [k for k in result.selected[1] if k != failing]
    assert "fails on purpose" in result.failed[1][failing]
    with pytest.raises(FewRepliesError, match=rf"round 1: 2 of 3 selected devices replied.*device {failing}"):
        run_flower_simulation({**base, "fail-partitions": str(failing)})  # min-replies 0: every device must reply


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flower_dp_run_adds_flowers_noise_and_reports_the_fixed_sample_epsilon():
    """The accepted DP configuration runs through Flower's DifferentialPrivacyServerSideFixedClipping: equal weights
    1/m, noise of std σC/m on the mean (seen in the change of the model), and the ε of a fixed-size sample."""
    from trustml.federated.flower import run_flower_simulation

    config = {"n-devices": 8, "num-server-rounds": 1, "devices-per-round": 4, "seed": 2, "selection": "uniform",
              "aggregation": "mean", "lr": 1e-6, "dp-noise-multiplier": 2.0, "dp-clipping-norm": 0.5}
    result = run_flower_simulation(config)
    assert result.weights[1] == [0.25] * 4
    change = result.final_params - result.initial_params  # lr ~0: the change is the noise
    assert change.std().item() == pytest.approx(2.0 * 0.5 / 4, rel=0.05)
    assert result.epsilon == pytest.approx(fixed_sample_epsilon(noise_multiplier=2.0, rounds=1, delta=1e-4))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_secagg_in_the_simulation_engine_equals_the_plain_aggregate():
    """SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) sums quantised masked updates: the model equals the plain
    run's up to quantisation (2^22 levels on ±secagg-clipping-range), also with n_k weights."""
    from trustml.federated.flower import run_flower_simulation

    base = {"n-devices": 6, "num-server-rounds": 2, "devices-per-round": 3, "seed": 1, "selection": "activity",
            "aggregation": "weighted", "secagg-clipping-range": 1.0}
    plain = run_flower_simulation(base)
    secure = run_flower_simulation({**base, "secagg": True})
    assert secure.selected == plain.selected and secure.trained == plain.trained
    step = 2 * 1.0 / 2**22
    assert (secure.final_params - plain.final_params).abs().max().item() < 20 * step
    assert (secure.final_params - secure.initial_params).norm() > 1e-3
    assert secure.messages["sent"] == 6 + 2 * 4 * 3 and plain.messages["sent"] == 6 + 2 * 3  # query + rounds


# ------------------------------------------------------------------------- real processes
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_secagg_on_a_loopback_deployment():
    """A real deployment on 127.0.0.1 (SuperLink + three SuperNodes): activity selection in the clear and with
    SecAgg+ (same devices, same model up to quantisation, four message rounds instead of one), then SecAgg+ with a
    device that fails mid-round: the others' aggregate is still unmasked (its masks rebuilt from key shares)."""
    from trustml.federated.flower.loopback import LoopbackFederation
    from trustml.federated.simulate import device_seed, local_update

    base = {"n-devices": 3, "num-server-rounds": 1, "devices-per-round": 2, "selection": "activity",
            "secagg-clipping-range": 1.0}
    step = 2 * 1.0 / 2**22
    with LoopbackFederation(3) as federation:
        plain = federation.run(base)
        secure = federation.run({**base, "secagg": True})
        dropout = federation.run({"n-devices": 3, "num-server-rounds": 1, "devices-per-round": 3,
                                  "selection": "uniform", "aggregation": "mean", "secagg": True,
                                  "secagg-clipping-range": 1.0, "fail-partitions": "1", "min-replies": 2})
    assert plain["selected"] == secure["selected"] and plain["trained"] == plain["selected"]
    assert np.abs(np.subtract(plain["final_params"], secure["final_params"])).max() < 20 * step
    assert plain["change_norm"] > 1e-3
    assert plain["messages"]["sent"] == 3 + 2 and secure["messages"]["sent"] == 3 + 4 * 2
    assert dropout["trained"] == {"1": [k for k in dropout["selected"]["1"] if k != 1]}
    assert dropout["failed"] == {"1": {"1": "dropped out of the SecAgg+ round"}}
    # The surviving devices' plain mean, computed here in-process, is what SecAgg+ unmasked.
    config = resolve_config({"n-devices": 3})
    federated = load_federated_task(config)
    model = federated.new_model(seed=0)
    start = model.flatten()
    survivors = [local_update(model, start, *federated.data.device(k), training=config.training,
                              seed=device_seed(0, 1, k))[0] for k in (0, 2)]
    expected = torch.stack(survivors).mean(0)
    assert np.abs(np.asarray(dropout["final_params"]) - expected.numpy()).max() < 20 * step
