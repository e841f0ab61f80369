"""Source of book/federated/00_overview.ipynb (run: python -m tools.chapters.federated_00_overview)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/federated/00_overview.ipynb", [
    md("""
# Federated learning: overview and the shape of device data

This page opens the federated part. It does not train a federated model yet (the chapters after it
do); it looks at **how the data is spread over devices**, because that shape decides which federated
methods work: a few very active devices hold much of the data, each device has its own mix of
intents, and data arrives over time.

**Learning objectives**

- Read a device-activity distribution (rank plot, share held by the most active devices).
- See why device data is non-IID: each device's intent mix differs from the global one.
- Know the time periods the continual-learning chapter uses.

*Expected runtime: about 10 s with `QUICK = True`, under 1 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False
SEED = 0
N_DEVICES = 1000
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES = 200
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustml.data import make_corpus
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
corpus = make_corpus(n_devices=N_DEVICES, seed=SEED)
devices = corpus.devices.sort_values("n_utterances", ascending=False).reset_index(drop=True)
devices.head()
"""),
    md("""
## Activity is heavy-tailed

Utterances per device follow a log-normal law: on a log-log rank plot the most active devices stand
far above the many light ones.
"""),
    code("""
fig, ax = plt.subplots(figsize=(5, 3))
ax.loglog(np.arange(1, len(devices) + 1), devices["n_utterances"], ".")
ax.set_xlabel("device rank"); ax.set_ylabel("utterances"); ax.set_title("Device activity");
"""),
    md("""
The share of all utterances held by the most active $k$ % of devices, for several tail parameters
$\\sigma$ of the log-normal (0 = every device equally active):
"""),
    code("""
def share_curve(activity_tail, n_devices=N_DEVICES, seed=SEED):
    counts = np.sort(make_corpus(n_devices=n_devices, activity_tail=activity_tail, seed=seed)
                     .devices["n_utterances"].to_numpy())[::-1]
    percent = np.array([1, 5, 10, 20, 50, 100])
    shares = [counts[: max(1, len(counts) * p // 100)].sum() / counts.sum() for p in percent]
    return pd.DataFrame({"most active devices (%)": percent, "share of utterances": shares})

grid = pd.concat([share_curve(tail).assign(activity_tail=tail) for tail in (0.0, 0.6, 1.2, 1.8)])
top10 = grid.query("activity_tail == 1.2 and `most active devices (%)` == 10")["share of utterances"].item()
print(f"with the default tail (1.2) the top 10% of devices hold {top10:.0%} of the data")
glue("top_decile_share", round(float(top10), 3))
assert top10 > 0.3
assert grid.query("activity_tail == 0.0 and `most active devices (%)` == 10")["share of utterances"].item() < 0.15
"""),
    code("""
static_figure(grid, x="most active devices (%)", y="share of utterances", hue="activity_tail", logx=True);
"""),
    code("""
slider_figure(grid, slider="activity_tail", x="most active devices (%)", y="share of utterances", logx=True)
"""),
    code("""
live_explorer(lambda activity_tail=1.2: share_curve(activity_tail, n_devices=200),
              x="most active devices (%)", y="share of utterances", activity_tail=(0.0, 2.0, 0.1))
"""),
    md("""
## Each device has its own intent mix

The total-variation distance between a device's intent distribution and the global one is 0 for IID
data and 1 for disjoint intents.
"""),
    code("""
u = corpus.utterances
global_mix = u["intent"].value_counts(normalize=True)
per_device = pd.crosstab(u["device_id"], u["intent"], normalize="index").reindex(columns=global_mix.index, fill_value=0)
heavy = per_device.loc[devices.loc[devices["n_utterances"] >= 30, "device_id"]]
tv_distance = 0.5 * (heavy - global_mix).abs().sum(axis=1)
print(f"median total-variation distance to the global intent mix (devices with >= 30 utterances): {tv_distance.median():.2f}")
assert tv_distance.median() > 0.3, "device data should be clearly non-IID"
"""),
    md("""
## Data arrives over time

Utterances carry a period; some intents are launched only in later periods, which the continual
federated learning chapter exploits.
"""),
    code("""
pd.crosstab(u["period"], u["intent"]).T.head(24)
"""),
    md("""
```{exercise}
:label: federated-overview-ex1

Regenerate the corpus with `preference_concentration=100`. What happens to the median total-variation
distance, and why?
```

```{solution} federated-overview-ex1
:class: dropdown

It falls sharply: each device draws its intent mix from $\\mathrm{Dir}(\\alpha p)$, and a large $\\alpha$
concentrates that draw around the global prior $p$, so devices look alike (close to IID). What remains
is sampling noise from devices with few utterances.
```
"""),
])
