"""Source of book/federated/01_fedavg_on_flower.ipynb (run: python -m tools.chapters.federated_01_fedavg_on_flower)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/federated/01_fedavg_on_flower.ipynb", [
    md("""
# FedAvg on Flower

Federated learning trains one model on data that never leaves the devices. This chapter states the
protocol, Federated Averaging (FedAvg, McMahan et al., AISTATS 2017), runs it as a real
[Flower](https://flower.ai) app — the framework most federated research and many deployments use — and
shows how the same app goes from a simulation in this notebook to real machines.

**Learning objectives**

- Describe a FedAvg round: the server sends the model, selected devices train locally, the server
  averages the returned models. Devices send **updates, not data**.
- Read a Flower 1.41 app: a `ServerApp` with a strategy, a `ClientApp` answering `query`, `train` and
  `evaluate` messages, and the app's `pyproject.toml`.
- Run the app in Flower's simulation engine and check it against trustml's fast in-process loop.
- Know the commands that deploy the same app on real machines.

*Expected runtime: about 40 s with `QUICK = True` (most of it starting Flower's simulation engine),
about 2 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: a smaller federation, fewer rounds
SEED = 0
FLOWER_DEVICES = 30  # virtual SuperNodes in the Flower simulation (one per corpus device)
FLOWER_ROUNDS = 5
N_DEVICES = 1000  # corpus for the in-process experiments
ROUNDS = 40
LOCAL_EPOCHS = [1, 2, 5]
DEVICES_PER_ROUND = [2, 5, 10, 20]
""", tags=["parameters"]),
    code("""
if QUICK:
    FLOWER_DEVICES, FLOWER_ROUNDS, N_DEVICES, ROUNDS, LOCAL_EPOCHS, DEVICES_PER_ROUND = 10, 2, 300, 20, [1, 3], [2, 5, 10]
"""),
    md("""
## The protocol

A population of $K$ devices, device $k$ with $n_k$ utterances and loss $F_k(w)$; the goal is the
data-weighted objective $F(w) = \\sum_k \\frac{n_k}{n} F_k(w)$. FedAvg repeats rounds $t = 1, 2, \\dots$:

1. the server **selects** $m$ devices $S_t$ and sends them the global weights $w_t$;
2. each selected device runs a few epochs of SGD on **its own data only**, starting from $w_t$, and
   returns its new weights $w_t^{(k)}$ (and $n_k$);
3. the server **aggregates**: $w_{t+1} = \\sum_{k \\in S_t} \\frac{n_k}{\\sum_{j \\in S_t} n_j} w_t^{(k)}$.

Raw utterances stay on the device; what travels is a model update, which is smaller and coarser — but
not harmless (updates can leak training data: the privacy part, and the last chapter of this part).

## The Flower app

Flower splits a federation into long-running infrastructure — a **SuperLink** (the server's hub) and one
**SuperNode** per device — and the user's code, two apps that exchange **messages** through them:

- the **ServerApp** runs the strategy. trustml's `ActivityFedAvg` subclasses Flower's `FedAvg` and
  replaces its device sampling by `trustml.federated.selection` (uniform, or by activity — the next
  chapters). Before round 1 it sends every device a `query` message asking for its `partition-id`
  and activity `num-examples`;
- the **ClientApp** answers `query`, `train` (local SGD with the same `local_update` as trustml's
  in-process loop) and `evaluate` messages.

The app template lives in the trustml package (`app_dir()`): a `pyproject.toml` whose
`[tool.flwr.app]` section names the two components and the run configuration.
"""),
    code("""
import inspect
import os

import numpy as np
import pandas as pd

# Flower runs offline here: no telemetry, no update checks, no dependency installs at run time.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

from trustml.federated.flower import ActivityFedAvg, app_dir, load_federated_task, resolve_config, run_flower_simulation
from trustml.federated.flower.task import selection_of, training_of
from trustml.federated import LocalTraining, embedding_model, run_federated
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
print(app_dir())
print((app_dir() / "pyproject.toml").read_text().split("[tool.flwr.app]")[1])
"""),
    code("""
print(inspect.getsource(ActivityFedAvg.configure_train))
"""),
    md("""
## One simulated run

Flower's simulation engine runs the ServerApp and many virtual SuperNodes (on Ray) inside this
process. Each ClientApp rebuilds the corpus from the run configuration and keeps only the data of its
own device. We run FedAvg with uniform selection, then the same configuration through trustml's
in-process loop: the two must select the same devices every round and end with the same weights.
"""),
    code("""
config = resolve_config({"n-devices": FLOWER_DEVICES, "num-server-rounds": FLOWER_ROUNDS, "devices-per-round": 3,
                         "selection": "uniform", "seed": SEED})
flower = run_flower_simulation(config)
"""),
    code("""
federated = load_federated_task(config)
model = federated.new_model(seed=SEED)
local = run_federated(model, federated.data, rounds=FLOWER_ROUNDS, devices_per_round=3, selection=selection_of(config),
                      training=training_of(config), seed=SEED, test=federated.task.test, progress=False)
difference = (flower.final_params - local.params).abs().max().item()
comparison = pd.DataFrame({
    "devices (Flower)": [flower.selected[r] for r in range(1, FLOWER_ROUNDS + 1)],
    "devices (in-process)": [s.tolist() for s in local.selected],
    "accuracy (Flower)": [flower.accuracy[r] for r in range(1, FLOWER_ROUNDS + 1)],
    "accuracy (in-process)": local.history["accuracy"].iloc[1:].to_list(),
}, index=pd.Index(range(1, FLOWER_ROUNDS + 1), name="round"))
print(f"largest weight difference after {FLOWER_ROUNDS} rounds: {difference:.1e}")
assert all(a == b for a, b in zip(comparison["devices (Flower)"], comparison["devices (in-process)"]))
assert difference < 1e-5, "Flower and the in-process loop should train identically"
assert flower.accuracy[FLOWER_ROUNDS] > flower.accuracy[0], "the federated model should learn"
comparison
"""),
    md("""
The only differences are float32 rounding in the order of summation. From here on the chapters use
the in-process loop, which needs no message passing and runs a hundred rounds in seconds
(`python -m trustml.federated.bench` measures it).

## How much work per round?

Two knobs set the cost of a round: how many devices train ($m$) and how many local epochs each runs
($E$). More of either processes more data per round; too many local epochs on non-IID devices lets
their models drift apart. Accuracy against rounds, on the full device population (uniform selection):
"""),
    code("""
from trustml.data import load_intent_task
from trustml.federated.experiments import device_data

task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
data = device_data(task)
rows = []
for epochs in LOCAL_EPOCHS:
    for m in DEVICES_PER_ROUND:
        model = embedding_model(task.tokenizer.vocab_size, task.num_classes, seed=SEED)
        result = run_federated(model, data, rounds=ROUNDS, devices_per_round=m, training=LocalTraining(epochs=epochs),
                               test=task.test, eval_every=5, seed=SEED, progress=False)
        rows.append(result.history.assign(**{"local epochs": epochs, "devices per round": m}))
grid = pd.concat(rows, ignore_index=True)
final = grid[grid["round"] == ROUNDS].pivot(index="devices per round", columns="local epochs", values="accuracy")
final.round(3)
"""),
    code("""
assert final.loc[max(DEVICES_PER_ROUND), 1] > final.loc[min(DEVICES_PER_ROUND), 1], "more devices per round should help"
glue("fedavg_accuracy", round(float(final.loc[max(DEVICES_PER_ROUND), 1]), 3));
"""),
    code("""
static_figure(grid[grid["local epochs"] == LOCAL_EPOCHS[0]], x="round", y="accuracy", hue="devices per round",
              title=f"FedAvg, {LOCAL_EPOCHS[0]} local epoch(s)");
"""),
    code("""
slider_figure(grid, slider="local epochs", x="round", y="accuracy", hue="devices per round",
              title="FedAvg: local epochs (slider) and devices per round")
"""),
    code("""
small_task = load_intent_task(n_devices=200, seed=SEED)
small = device_data(small_task)

def explore(devices_per_round=5, local_epochs=1):
    model = embedding_model(small_task.tokenizer.vocab_size, small_task.num_classes, seed=SEED)
    return run_federated(model, small, rounds=20, devices_per_round=devices_per_round,
                         training=LocalTraining(epochs=local_epochs), test=small_task.test, eval_every=2,
                         seed=SEED, progress=False).history

live_explorer(explore, x="round", y="accuracy", devices_per_round=(1, 30, 1), local_epochs=(1, 10, 1))
"""),
    md("""
## Deploying it for real

The same app runs unchanged on real machines. Flower 1.41 serves every API of the SuperLink over one
HTTP(S) port. On the server machine (use TLS certificates instead of `--insecure` outside a lab):

```bash
flower-superlink --insecure --host 0.0.0.0 --port 9091
```

on each device (here: the corpus device it holds, as its `partition-id`):

```bash
flower-supernode --insecure --superlink SERVER:9091 --port 9094 \\
    --node-config "partition-id=0 num-partitions=20"
```

and on the operator's laptop, a SuperLink connection in `~/.flwr/config.toml`

```toml
[superlink]
default = "lab"

[superlink.lab]
address = "SERVER:9091"
insecure = true
```

then

```bash
flwr run "$(python -c 'import trustml.federated.flower as f; print(f.app_dir())')" lab \\
    --run-config "num-server-rounds=10 devices-per-round=2 selection='activity' expected-nodes=20"
```

`flwr run` builds a Flower App Bundle from the template folder, the SuperLink starts the ServerApp, and
each SuperNode starts a ClientApp per message. With `address = ":local:"` instead, `flwr run` starts a
local SuperLink in simulation mode (`--federation-config "num-supernodes=20"`). trustml's tests do all
three: this simulation, `flwr run` against a simulation SuperLink, and a SuperLink with two SuperNodes
on 127.0.0.1.

## Exercises

```{exercise}
:label: federated-flower-ex1

In a real deployment the server never sees the devices' data. Which quantities about a device does
`ActivityFedAvg` learn anyway, and from which messages?
```

```{solution} federated-flower-ex1
:class: dropdown

Its activity $n_k$ (`num-examples`) and its `partition-id`, from the `query` reply; then, every time it
trains, its new weights (hence its update), its training loss and `num-examples` again, from the `train`
reply. The update is the sensitive part: it is a function of the device's data. Device-level
differential privacy (the last chapter of this part) bounds what the aggregate reveals.
```

```{exercise}
:label: federated-flower-ex2

Run the simulation again with `"selection": "activity"` in the configuration. What changes in the
selected devices, and why does the parity check still hold?
```

```{solution} federated-flower-ex2
:class: dropdown

The devices are now drawn with probability $\\propto n_k$, so the most active devices appear in most
rounds. Parity still holds because both the strategy and the in-process loop call the same selection
code with the same per-round generator `round_rng(seed, round)`, and the ClientApp calls the same
`local_update` with the same per-device seed.
```
"""),
])
