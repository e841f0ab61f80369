"""The Flower ClientApp: one device of the federation (Flower 1.41 Message API).

It answers three message types:

- ``query``: "who are you and how active?" → ``partition-id`` and ``num-examples`` (its activity n_k),
  which the server's ``ActivityFedAvg`` uses to select devices;
- ``train``: local SGD (``trustml.federated.simulate.local_update``, the same code as the in-process loop)
  from the received global arrays, seeded by (seed, server round, partition id); replies the new arrays
  with ``num-examples``, the ``aggregation-weight`` the server assigned, and the training loss;
- ``evaluate``: accuracy and loss of the received arrays on the device's own data.

Under SecAgg+ (run config ``secagg = true``) the train messages come from Flower's ``SecAggPlusWorkflow``:
Flower's ``secaggplus_mod`` runs the protocol's key exchange and unmasking, and at its "collect masked vectors"
stage calls ``train`` with the legacy FitIns layout; ``train`` then replies the **update** w^{(k)} − w_t (small
values: fine quantisation within ``secagg-clipping-range``, checked rather than clipped) with its integer weight
as ``num_examples``, which the mod quantises and masks before anything leaves the device.

The device's data is the corpus device ``partition-id`` of the run's corpus (node config
``partition-id``: set by the simulation engine, or by ``flower-supernode --node-config`` in a deployment).
"""

from __future__ import annotations

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from torch.utils.data import TensorDataset

from trustml.federated.flower.task import FederatedTask, RunConfig, load_federated_task, params_of, resolve_config
from trustml.federated.flower.task import state_dict_of
from trustml.federated.simulate import device_seed, local_update

LEGACY_FITINS = "fitins.parameters"  # the SecAgg+ workflow's train content (Flower's legacy FitIns layout)


def _device(context: Context, config: RunConfig) -> tuple[FederatedTask, int]:
    federated = load_federated_task(config)
    value = context.node_config["partition-id"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"node config partition-id must be an integer, got {value!r}")
    if not 0 <= value < federated.data.num_devices:
        raise ValueError(f"partition-id={value} outside [0, {federated.data.num_devices}) devices of the corpus")
    return federated, value


def _config_int(record: ConfigRecord, key: str) -> int:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"train config {key!r} must be an integer, got {value!r}")
    return value


def _config_float(record: ConfigRecord, key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"train config {key!r} must be a number, got {value!r}")
    return float(value)


def secagg_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; plain messages pass straight through."""
    from flwr.client.mod import secaggplus_mod

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def make_client_app(config: RunConfig | dict | None = None) -> ClientApp:
    """A ClientApp whose run configuration is ``config`` over the defaults (the run's own config wins)."""
    app = ClientApp()

    def settings(context: Context) -> RunConfig:
        return resolve_config(config, context.run_config)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        federated, k = _device(context, settings(context))
        metrics = MetricRecord({"partition-id": k, "num-examples": int(federated.data.counts[k])})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    @app.train(mods=[secagg_when_asked])
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        federated, k = _device(context, cfg)
        if k in cfg.fail_partitions:
            raise RuntimeError(f"device {k} fails on purpose (run config fail-partitions={cfg.fail_partitions})")
        model = federated.new_model(seed=0)
        legacy = LEGACY_FITINS in msg.content.array_records
        if legacy:
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            arrays: dict[str, object] = dict(zip(model.names, parameters_to_ndarrays(fitins.parameters)))
            train_config = ConfigRecord(dict(fitins.config))
        else:
            arrays = dict(msg.content.array_records["arrays"].to_torch_state_dict())
            train_config = msg.content.config_records["config"]
        params = params_of(model, arrays)
        x, y = federated.data.device(k)
        seed = device_seed(_config_int(train_config, "seed"), _config_int(train_config, "server-round"), k)
        new, loss = local_update(model, params, x, y, training=cfg.training, seed=seed)
        weight = _config_float(train_config, "aggregation-weight")
        if legacy:
            return _secagg_reply(msg, model.unflatten(new - params), weight=_config_int(train_config, "secagg-weight"),
                                 loss=loss, clipping_range=cfg.secagg_clipping_range, num_examples=len(y))
        metrics = MetricRecord({"num-examples": len(y), "train-loss": float(loss), "aggregation-weight": weight})
        reply = ArrayRecord(torch_state_dict=state_dict_of(model, new))
        return Message(RecordDict({"arrays": reply, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        federated, k = _device(context, settings(context))
        model = federated.new_model(seed=0)
        params = params_of(model, msg.content.array_records["arrays"].to_torch_state_dict())
        x, y = federated.data.device(k)
        result = model.evaluate(params, TensorDataset(x, y))
        metrics = MetricRecord({"num-examples": len(y), "accuracy": result["accuracy"], "loss": result["loss"]})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def _secagg_reply(msg: Message, update: dict, *, weight: int, loss: float, clipping_range: float,
                  num_examples: int) -> Message:
    """The legacy FitRes that ``secaggplus_mod`` quantises and masks: the update and its integer weight."""
    arrays = [tensor.detach().numpy().astype(np.float32) for tensor in update.values()]
    largest = max(float(np.abs(a).max(initial=0.0)) for a in arrays)
    if largest > clipping_range:  # SecAgg+ would clip it silently: refuse instead
        raise ValueError(f"update entry of size {largest:.3g} exceeds secagg-clipping-range={clipping_range:g}: "
                         "raise secagg-clipping-range (or lower lr)")
    fitres = FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(arrays), num_examples=weight,
                    metrics={"train-loss": float(loss), "num-examples": num_examples})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


#: The ClientApp that ``flwr run`` loads (``trustml.federated.flower.client_app:app``).
app = make_client_app()
