"""Source of book/federated/03_device_selection.ipynb (run: python -m tools.chapters.federated_03_device_selection)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/federated/03_device_selection.ipynb", [
    md("""
# Device selection by activity

A federated round trains on the few devices the server asks. FedAvg asks devices **uniformly at
random**. On real device data that wastes rounds: activity — the number of utterances $n_k$ a device
holds — is heavy-tailed, so a uniform draw mostly lands on devices with a handful of utterances. This
chapter selects devices **by activity** instead and measures what it buys at equal cost (the same rounds
and devices per round).

**Learning objectives**

- Write selection rules as probabilities $p_k \\propto n_k^{\\gamma}$ ($\\gamma = 0$ uniform, $\\gamma = 1$
  proportional to activity) and the deterministic "top-$m$ most active" rule.
- Pair a selection rule with aggregation weights, and see why $n$-weighting *and* sampling by $n$
  counts heavy devices twice — and what the unbiased alternative is.
- Measure accuracy against rounds for uniform and activity selection, averaged over seeds, and read the
  mechanism (samples processed per round).

*Expected runtime: about 15 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: fewer devices and rounds
SEED = 0
N_DEVICES = 1000
ACTIVITY_TAIL = 1.6  # σ of the log-normal activity: heavy-tailed, as device data are
ROUNDS = 60
DEVICES_PER_ROUND = 5
N_SEEDS = 3
GAMMAS = [0.0, 0.5, 1.0, 1.5, 2.0]
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, ROUNDS = 400, 40
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustml.data import load_intent_task
from trustml.federated import Selection, selection_probabilities, unbiased_activity
from trustml.federated.experiments import device_data, seed_mean, selection_curves
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
task = load_intent_task(n_devices=N_DEVICES, activity_tail=ACTIVITY_TAIL, seed=SEED)
data = device_data(task)  # the natural partition: one client per device
counts = data.counts
print(f"{data.num_devices} devices, {counts.sum()} training utterances; "
      f"median {int(np.median(counts))}, mean {counts.mean():.0f}, max {counts.max()} per device")
"""),
    md("""
## Selection rules

A rule gives each device $k$ a probability per draw

$$p_k = \\frac{n_k^{\\gamma}}{\\sum_j n_j^{\\gamma}},$$

and the server draws $m$ devices **without replacement** (a device trains at most once per round).
Devices without data ($n_k = 0$) are never drawn. The expected number of samples a round processes is
$m\\,\\mathbb{E}_p[n] = m \\sum_k p_k n_k$: for uniform selection the mean activity, for $\\gamma = 1$ the
much larger $\\sum_k n_k^2 / \\sum_k n_k$.
"""),
    code("""
order = np.argsort(-counts)
fig, ax = plt.subplots(figsize=(6, 3.5))
for gamma in GAMMAS:
    ax.loglog(np.arange(1, len(counts) + 1), selection_probabilities(counts, gamma=gamma)[order], label=f"γ = {gamma:g}")
ax.set_xlabel("device rank by activity"); ax.set_ylabel("selection probability $p_k$"); ax.legend(fontsize="small")
ax.set_title("p ∝ n^γ on heavy-tailed devices");
expected = pd.DataFrame({"γ": GAMMAS, "expected samples per draw": [
    float(np.dot(selection_probabilities(counts, gamma=g), counts)) for g in GAMMAS]})
expected
"""),
    md("""
## Aggregation weights, and counting twice

FedAvg averages the returned models with weights $n_k / \\sum_{j \\in S} n_j$. That is right for uniform
selection: in expectation the round then follows the data-weighted objective $\\sum_k \\frac{n_k}{n} F_k$.
With $\\gamma = 1$ a heavy device is *more likely to be drawn* **and** *weighted more once drawn*: the
expected update leans towards heavy devices further than the data do. The unbiased alternative (Li et al.
2020, "scheme I") samples $\\propto n_k$ **with** replacement and averages plainly, $1/m$ per draw
(`unbiased_activity()`). We compare both below; the main comparison uses FedAvg's $n$-weighting for every
rule, as a deployment would.

## Uniform against activity, at equal rounds and devices per round
"""),
    code("""
seeds = list(range(SEED, SEED + N_SEEDS))
selections = {f"γ = {g:g}": Selection("activity", gamma=g) for g in GAMMAS}
selections["top-m"] = Selection("top")
selections["∝ n with replacement, mean"] = unbiased_activity()
curves = selection_curves(task, selections, rounds=ROUNDS, devices_per_round=DEVICES_PER_ROUND, seeds=seeds,
                          eval_every=5, data=data)
mean_curves = seed_mean(curves, ["selection", "round"])
final = seed_mean(curves[curves["round"] == ROUNDS], ["selection"]).set_index("selection")
final["samples processed"] = curves[curves["round"] == ROUNDS].groupby("selection")["samples"].mean()
final.round(3)
"""),
    code("""
uniform, activity = final.loc["γ = 0", "accuracy"], final.loc["γ = 1", "accuracy"]
print(f"after {ROUNDS} rounds of {DEVICES_PER_ROUND} devices, mean over {N_SEEDS} seeds: "
      f"uniform {uniform:.3f}, activity (γ = 1) {activity:.3f}")
glue("selection_uniform_accuracy", round(float(uniform), 3))
glue("selection_activity_accuracy", round(float(activity), 3))
assert activity >= uniform, "activity selection should match or beat uniform selection at equal rounds"
assert final.loc["γ = 1", "samples processed"] > 2 * final.loc["γ = 0", "samples processed"]
"""),
    md("""
Activity selection wins because every round processes several times more utterances: the heavy
devices hold most of the data. The price is visible elsewhere — light devices rarely take part, so
their own intent mix counts less (a fairness question for part III), and the top-$m$ rule, which always
asks the same devices, never sees the rest of the population at all.

## The trade-off three ways

Accuracy against rounds for each $\\gamma$ (static), then one $\\gamma$ at a time against uniform
selection with a slider (precomputed, works on the static site), then a live explorer that reruns the
federation on a smaller corpus for any $\\gamma$ and devices per round (needs a kernel).
"""),
    code("""
gamma_curves = mean_curves[mean_curves["selection"].str.startswith("γ")]
static_figure(gamma_curves, x="round", y="accuracy", hue="selection", title="Accuracy against rounds, by γ");
"""),
    code("""
twin = pd.concat([
    pd.concat([mean_curves[mean_curves["selection"] == f"γ = {g:g}"].assign(rule="p ∝ n^γ"),
               mean_curves[mean_curves["selection"] == "γ = 0"].assign(rule="uniform")]).assign(gamma=g)
    for g in GAMMAS
])
slider_figure(twin, slider="gamma", x="round", y="accuracy", hue="rule", title="Activity selection with exponent γ")
"""),
    code("""
small_task = load_intent_task(n_devices=300, activity_tail=ACTIVITY_TAIL, seed=SEED)

def explore(gamma=1.0, devices_per_round=5):
    rules = {"p ∝ n^γ": Selection("activity", gamma=gamma), "uniform": Selection("uniform")}
    table = selection_curves(small_task, rules, rounds=30, devices_per_round=devices_per_round, seeds=[SEED],
                             eval_every=5, progress=False)
    return table.rename(columns={"selection": "rule"})

live_explorer(explore, x="round", y="accuracy", hue="rule", gamma=(0.0, 3.0, 0.25), devices_per_round=(1, 20, 1))
"""),
    md("""
## Exercises

```{exercise}
:label: federated-selection-ex1

Compare `"γ = 1"` with `"∝ n with replacement, mean"` in the table above. Which one follows the
data-weighted objective in expectation, and why can the biased one still reach a higher accuracy on this
test set?
```

```{solution} federated-selection-ex1
:class: dropdown

Sampling $\\propto n_k$ with replacement and averaging with weight $1/m$ per draw is unbiased for
$\\sum_k \\frac{n_k}{n} F_k$ (each draw is device $k$ with probability $n_k/n$). $n$-weighting on top of
$\\gamma = 1$ weights device $k$ roughly $\\propto n_k^2$: biased towards heavy devices. The test set is
an utterance-level split, so it is itself dominated by heavy devices' intent mixes; leaning towards
them costs little here and the larger effective step (more samples per round) helps. On a test set
that weights every *device* equally (per-device accuracy, the fair view) the bias would show.
```

```{exercise}
:label: federated-selection-ex2

Regenerate the corpus with `activity_tail=0.3` (devices almost equally active) and rerun the comparison.
What happens to the gap between $\\gamma = 0$ and $\\gamma = 1$?
```

```{solution} federated-selection-ex2
:class: dropdown

It nearly vanishes: with similar $n_k$ every rule draws devices of similar size, so a round processes
about the same number of samples whatever $\\gamma$ is. Activity selection pays off exactly when activity
is heavy-tailed.
```
"""),
])
