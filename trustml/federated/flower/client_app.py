"""The Flower ClientApp: one device of the federation (Flower 1.41 Message API).

It answers three message types:

- ``query``: "who are you and how active?" → ``partition-id`` and ``num-examples`` (its activity n_k),
  which the server's ``ActivityFedAvg`` uses to select devices;
- ``train``: local SGD (``trustml.federated.simulate.local_update``, the same code as the in-process loop)
  from the received global arrays, seeded by (seed, server round, partition id); replies the new arrays
  with ``num-examples``, the ``aggregation-weight`` the server assigned, and the training loss;
- ``evaluate``: accuracy and loss of the received arrays on the device's own data.

The device's data is the corpus device ``partition-id`` of the run's corpus (node config
``partition-id``: set by the simulation engine, or by ``flower-supernode --node-config`` in a deployment).
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch.utils.data import TensorDataset

from trustml.federated.flower.task import (
    load_federated_task, params_of, resolve_config, state_dict_of, training_of,
)
from trustml.federated.simulate import device_seed, local_update


def _device(context: Context, config: Mapping):
    federated = load_federated_task(config)
    partition_id = int(context.node_config["partition-id"])
    if not 0 <= partition_id < federated.data.num_devices:
        raise ValueError(f"partition-id={partition_id} outside [0, {federated.data.num_devices}) devices of the corpus")
    return federated, partition_id


def make_client_app(config: Mapping | None = None) -> ClientApp:
    """A ClientApp whose run configuration is ``config`` over the defaults (the run's own config wins)."""
    app = ClientApp()

    def settings(context: Context) -> dict:
        return resolve_config(config, context.run_config)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        federated, k = _device(context, settings(context))
        metrics = MetricRecord({"partition-id": k, "num-examples": int(federated.data.counts[k])})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        federated, k = _device(context, cfg)
        train_config = msg.content["config"]
        model = federated.new_model(seed=0)
        params = params_of(model, msg.content["arrays"].to_torch_state_dict())
        x, y = federated.data.device(k)
        seed = device_seed(int(train_config["seed"]), int(train_config["server-round"]), k)
        new, loss = local_update(model, params, x, y, training=training_of(cfg), seed=seed)
        metrics = MetricRecord({"num-examples": len(y), "train-loss": float(loss),
                                "aggregation-weight": float(train_config["aggregation-weight"])})
        arrays = ArrayRecord(torch_state_dict=state_dict_of(model, new))
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        federated, k = _device(context, settings(context))
        model = federated.new_model(seed=0)
        params = params_of(model, msg.content["arrays"].to_torch_state_dict())
        x, y = federated.data.device(k)
        result = model.evaluate(params, TensorDataset(x, y))
        metrics = MetricRecord({"num-examples": len(y), "accuracy": result["accuracy"], "loss": result["loss"]})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


#: The ClientApp that ``flwr run`` loads (``trustml.federated.flower.client_app:app``).
app = make_client_app()
