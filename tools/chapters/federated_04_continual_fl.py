"""Source of book/federated/04_continual_fl.ipynb (run: python -m tools.chapters.federated_04_continual_fl)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/federated/04_continual_fl.ipynb", [
    md("""
# Continual federated learning

Devices do not hold a fixed dataset. A smart speaker hears new requests every day, new features launch
(new intents), and for privacy and storage reasons devices **delete old data**. Federated training then
runs in periods: in period $t$ every device holds only what it produced in $t$, and training continues
from the global model of period $t-1$. This chapter asks how device selection behaves in that setting.

**Learning objectives**

- Set up continual FL with periods and deletion (`trustml.federated.continual_data`, `run_continual`)
  and the "all data at once" baseline in which devices keep everything.
- Show that the gap between activity and uniform selection **widens** when old data are deleted,
  compared with the static setting at the same rounds and devices per round.
- Show that activity selection on deleted data **catches up** with uniform selection that keeps all data.

*Expected runtime: about 15 s with `QUICK = True`, about 2 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: fewer devices and rounds
SEED = 0
N_DEVICES = 1000
ACTIVITY_TAIL = 1.6  # heavy-tailed activity, as in the device-selection chapter
ROUNDS_PER_PERIOD = 25
DEVICES_PER_ROUND = 5
N_SEEDS = 3
GAMMAS = [0.0, 0.5, 1.0, 1.5]
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, ROUNDS_PER_PERIOD = 300, 10
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustml.data import load_intent_task
from trustml.federated import Selection, continual_data
from trustml.federated.experiments import continual_comparison, seed_mean
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
task = load_intent_task(n_devices=N_DEVICES, activity_tail=ACTIVITY_TAIL, seed=SEED)
periods = continual_data(task.train, task.train_frame)  # old data deleted
kept = continual_data(task.train, task.train_frame, keep_old_data=True)  # the "all data" baseline
frame = task.train_frame
pd.DataFrame({
    "new utterances": [int(p.counts.sum()) for p in periods],
    "devices with new data": [int((p.counts > 0).sum()) for p in periods],
    "median new utterances per active device": [float(np.median(p.counts[p.counts > 0])) for p in periods],
    "utterances kept (baseline)": [int(k.counts.sum()) for k in kept],
    "intents seen so far": [frame.loc[frame["period"] <= t, "intent"].nunique() for t in range(len(periods))],
}, index=pd.Index(range(len(periods)), name="period"))
"""),
    md("""
In each period a device holds about a quarter of its data, and many light devices hold nothing new at
all (they are never selected: a device without data cannot train). New intents appear in later periods.

## Three settings, equal cost

For each selection rule $p_k \\propto n_k^{\\gamma}$ (with $n_k$ the device's data *in the current
period*), at the same number of rounds and devices per round:

- **continual, old data deleted** — `ROUNDS_PER_PERIOD` rounds on each period's new data, in turn;
- **continual, all data kept** — the same, but devices keep everything seen so far ("all data at once");
- **static** — all data from the start, for the same total number of rounds.

Period $t$ is evaluated on the test utterances of periods $\\le t$ (what the deployed model must handle
by then).
"""),
    code("""
seeds = list(range(SEED, SEED + N_SEEDS))
selections = {g: Selection("activity", gamma=g) for g in GAMMAS}  # γ = 0 is uniform
results = continual_comparison(task, selections, rounds_per_period=ROUNDS_PER_PERIOD,
                               devices_per_round=DEVICES_PER_ROUND, seeds=seeds)
results = results.rename(columns={"selection": "gamma"})
last = results[results["period"] == results["period"].max()]
table = seed_mean(last, ["setting", "gamma"]).pivot(index="setting", columns="gamma", values="accuracy")
table.columns = [f"γ = {g:g}" for g in table.columns]
table.round(3)
"""),
    code("""
gap = {s: table.loc[s, "γ = 1"] - table.loc[s, "γ = 0"] for s in table.index}
deleted_activity = table.loc["continual, old data deleted", "γ = 1"]
kept_uniform = table.loc["continual, all data kept", "γ = 0"]
print("activity − uniform (γ = 1 vs γ = 0), mean over seeds:")
for setting, value in gap.items():
    print(f"  {setting:30s} {value:+.3f}")
print(f"activity with old data deleted: {deleted_activity:.3f}; uniform with all data kept: {kept_uniform:.3f}")
glue("continual_gap_deleted", round(float(gap["continual, old data deleted"]), 3))
glue("continual_gap_static", round(float(gap["static"]), 3))
assert gap["continual, old data deleted"] > gap["static"], "deleting old data should widen the activity−uniform gap"
assert deleted_activity >= kept_uniform, "activity selection on deleted data should catch up with uniform on all data"
"""),
    md("""
Deleting old data hurts uniform selection most: the devices it draws are mostly light, and a light
device's *new* data in one period is a few utterances at best. Activity selection keeps drawing the
devices that produced much new data, so each round still processes enough, and it recovers what
deletion took away — it reaches what uniform selection achieves when every device keeps everything.

## Accuracy over the periods, three ways
"""),
    code("""
curves = seed_mean(results[results["setting"] != "static"], ["gamma", "setting", "period"])
curves["curve"] = curves["setting"] + ", γ = " + curves["gamma"].map("{:g}".format)
chosen = curves[curves["gamma"].isin([0.0, 1.0])]
static_figure(chosen, x="period", y="accuracy", hue="curve", title="Continual FL: uniform (γ = 0) and activity (γ = 1)");
"""),
    code("""
slider_figure(curves, slider="gamma", x="period", y="accuracy", hue="setting",
              title="Selection exponent γ: deleting old data against keeping it")
"""),
    code("""
small_task = load_intent_task(n_devices=300, activity_tail=ACTIVITY_TAIL, seed=SEED)

def explore(gamma=1.0, rounds_per_period=10):
    table = continual_comparison(small_task, {gamma: Selection("activity", gamma=gamma)},
                                 rounds_per_period=rounds_per_period, devices_per_round=DEVICES_PER_ROUND,
                                 seeds=[SEED], progress=False)
    return table[table["setting"] != "static"]

live_explorer(explore, x="period", y="accuracy", hue="setting", gamma=(0.0, 3.0, 0.25), rounds_per_period=(2, 30, 2))
"""),
    md("""
## Exercises

```{exercise}
:label: federated-continual-ex1

Double `ROUNDS_PER_PERIOD`. Does the gap between the deleted and the kept setting shrink, for uniform
and for activity selection? What does that say about when deletion is cheap?
```

```{solution} federated-continual-ex1
:class: dropdown

It shrinks for both, faster for activity selection: with enough rounds each period's new data are
learnt well, and what old data added (more utterances of the same intents) matters less. Deletion is
cheap when every period gets enough training on enough data; it is expensive when rounds are scarce —
and selecting by activity is how to spend scarce rounds on the data that exist.
```

```{exercise}
:label: federated-continual-ex2

Uniform selection here already skips devices without new data. A naive deployment samples among *all*
devices, and a device with nothing new returns the global model unchanged. Argue how that would change
the uniform curves.
```

```{solution} federated-continual-ex2
:class: dropdown

It would lower them further: a sizeable share of each round's slots would go to devices with $n_k = 0$
that contribute nothing (with $n$-weighted averaging they get weight 0, so the round effectively has
fewer devices). trustml's selection never draws them, which is the fair comparison for uniform selection.
```
"""),
])
