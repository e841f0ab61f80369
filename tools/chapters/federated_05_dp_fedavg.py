"""Source of book/federated/05_dp_fedavg.ipynb (run: python -m tools.chapters.federated_05_dp_fedavg)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/federated/05_dp_fedavg.ipynb", [
    md("""
# DP-FedAvg: device-level differential privacy

Federated learning keeps utterances on the device, but the updates a device sends still depend on
them, and the final model can memorise them (the privacy part measures exactly that). **Device-level
differential privacy** bounds what the trained model reveals about *any one device's entire data*:
whether a device took part at all changes the distribution of the model by at most $e^{\\varepsilon}$
(up to $\\delta$). DP-FedAvg (McMahan et al., ICLR 2018) gets there with three changes to FedAvg.

**Learning objectives**

- State DP-FedAvg: Poisson sampling of devices, clipping each device's update to norm $C$, Gaussian noise
  $\\mathcal{N}(0, \\sigma^2 C^2)$ on the sum, division by the expected number of devices.
- Compute $\\varepsilon$ with Opacus' RDP accountant, sampling rate $q = m/K$ per round.
- Measure the $\\varepsilon$–accuracy trade-off, and how it depends on the number of devices per round.
- Know Flower's wrapper strategies that do the same in a deployment.

*Expected runtime: about 25 s with `QUICK = True`, about 2.5 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: fewer devices, rounds and seeds
SEED = 0
N_DEVICES = 1000
ROUNDS = 100
DEVICES_PER_ROUND = [25, 50]  # expected devices per round m (Poisson sampling with q = m / K)
NOISE_MULTIPLIERS = [0.0, 0.5, 1.0, 2.0]  # σ; 0 = clipping only (no privacy)
MAX_GRAD_NORM = 4.0  # C: the clipping norm of a device's update
DELTA = 1e-4  # below 1/K
N_SEEDS = 2
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, ROUNDS, DEVICES_PER_ROUND, N_SEEDS = 400, 40, [20, 40], 1
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from trustml.data import load_intent_task
from trustml.federated import DeviceDP, LocalTraining, Selection, dp_epsilon, local_update, run_federated
from trustml.federated.experiments import device_data, dp_sweep, new_model, seed_mean
from trustml.federated.simulate import clip_update, device_seed
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
data = device_data(task)
print(f"{data.num_devices} devices; sampling rates q = m/K: {[round(m / data.num_devices, 3) for m in DEVICES_PER_ROUND]}")
"""),
    md("""
## The algorithm

In round $t$, with global model $w_t$ and $K$ devices:

1. every device joins independently with probability $q = m/K$ (Poisson sampling: $m$ devices expected);
2. each joining device $k$ trains locally and computes its update $\\Delta_k = w^{(k)} - w_t$;
3. the update is clipped: $\\bar\\Delta_k = \\Delta_k \\min(1, C / \\lVert \\Delta_k \\rVert_2)$ — now one
   device changes the sum by at most $C$, however much data it holds;
4. the server adds noise and averages over the *expected* number of devices:
   $w_{t+1} = w_t + \\big(\\sum_k \\bar\\Delta_k + \\mathcal{N}(0, \\sigma^2 C^2 I)\\big) / (qK)$.

Each round is a sampled Gaussian mechanism with noise multiplier $\\sigma$ and sampling rate $q$ — the
same mechanism as a DP-SGD step with examples replaced by devices — so the RDP accountant composes the
rounds. Two consequences: the aggregation must not look at $n_k$ (weights $1/(qK)$, not $n_k/n$), and
selection must be uniform (activity-based selection depends on the data, and its sampling probabilities
are not the $q$ the accountant assumes; `run_federated` refuses the combination).

trustml's clipping and noise scale are Flower's: the check below compares them with
`flwr.supercore.differential_privacy`, the helpers behind Flower's wrapper strategies.
"""),
    code("""
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv

model = new_model(task, SEED)
start = model.flatten()
heavy = int(np.argmax(data.counts))
trained, _ = local_update(model, start, *data.device(heavy), training=LocalTraining(), seed=device_seed(SEED, 1, heavy))
print(f"update norm of the most active device: {(trained - start).norm():.2f}")
for clipping_norm in (MAX_GRAD_NORM, 0.5):  # one that leaves this update alone, one that clips it
    flower = [trained.numpy().copy()]
    compute_clip_model_update(flower, [start.numpy()], clipping_norm=clipping_norm)
    ours = start + clip_update(trained - start, clipping_norm)
    assert np.allclose(ours.numpy(), flower[0], atol=1e-5), "clipping must match Flower's"
m = DEVICES_PER_ROUND[-1]
print(f"noise std on the average with m = {m}: σC/m = {compute_stdv(1.0, MAX_GRAD_NORM, m):.3f} for σ = 1")
"""),
    md("""
## The ε–accuracy trade-off

For each noise multiplier $\\sigma$ and expected devices per round $m$: `ROUNDS` rounds of DP-FedAvg
(one local epoch), test accuracy, and $\\varepsilon$ at $\\delta$ = `DELTA` from Opacus' RDP accountant with
$q = m/K$ and `ROUNDS` compositions.
"""),
    code("""
seeds = list(range(SEED, SEED + N_SEEDS))
sweep = dp_sweep(task, noise_multipliers=NOISE_MULTIPLIERS, devices_per_round=DEVICES_PER_ROUND, rounds=ROUNDS,
                 max_grad_norm=MAX_GRAD_NORM, delta=DELTA, seeds=seeds, eval_every=10, data=data)
final = seed_mean(sweep[sweep["round"] == ROUNDS], ["devices_per_round", "noise_multiplier", "epsilon"])
final.round(3)
"""),
    code("""
from opacus.accountants import RDPAccountant

m, sigma = DEVICES_PER_ROUND[-1], NOISE_MULTIPLIERS[-1]
accountant = RDPAccountant()
for _ in range(ROUNDS):
    accountant.step(noise_multiplier=sigma, sample_rate=m / data.num_devices)
printed = final[(final["devices_per_round"] == m) & (final["noise_multiplier"] == sigma)]["epsilon"].item()
print(f"ε printed: {printed:.4f}; Opacus RDPAccountant directly: {accountant.get_epsilon(delta=DELTA):.4f}")
assert abs(printed - accountant.get_epsilon(delta=DELTA)) < 1e-9

for m in DEVICES_PER_ROUND:
    rows = final[final["devices_per_round"] == m].set_index("noise_multiplier")
    private = rows.loc[[s for s in NOISE_MULTIPLIERS if s > 0]]
    assert private["epsilon"].is_monotonic_decreasing, "more noise, smaller ε"
    assert rows.loc[0.0, "accuracy"] > rows.loc[max(NOISE_MULTIPLIERS), "accuracy"] + 0.1, \\
        "the strongest privacy should cost accuracy"
largest = final[final["devices_per_round"] == max(DEVICES_PER_ROUND)].set_index("noise_multiplier")
assert largest.loc[min(s for s in NOISE_MULTIPLIERS if s > 0), "accuracy"] > largest.loc[max(NOISE_MULTIPLIERS), "accuracy"], \\
    "accuracy should fall as ε falls"
glue("dp_fedavg_epsilon", round(float(printed), 2))
glue("dp_fedavg_accuracy", round(float(largest.loc[sigma, "accuracy"]), 3));
"""),
    md("""
More noise buys a smaller $\\varepsilon$ and costs accuracy. The number of devices per round enters
twice: a larger $m$ raises the sampling rate $q$ (worse $\\varepsilon$ at the same $\\sigma$) but divides the
noise by a larger $qK$ (better accuracy). That is why DP-FedAvg is a method for **large** populations:
McMahan et al. train with thousands of devices per round, where the noise on the average is negligible
at a single-digit $\\varepsilon$. Here, with hundreds of devices, the cost is plain to see.

## Three views
"""),
    code("""
points = final[final["noise_multiplier"] > 0].assign(**{"devices per round": lambda t: t["devices_per_round"].astype(str)})
fig = static_figure(points, x="epsilon", y="accuracy", hue="devices per round", logx=True,
                    title=f"DP-FedAvg after {ROUNDS} rounds (δ = {DELTA:g})")
for m in DEVICES_PER_ROUND:
    clip_only = final[(final["devices_per_round"] == m) & (final["noise_multiplier"] == 0)]["accuracy"].item()
    fig.axes[0].axhline(clip_only, ls=":", color="grey")
fig.axes[0].set_xlabel("ε (dotted: clipping only, no noise)");
"""),
    code("""
curves = seed_mean(sweep, ["noise_multiplier", "devices_per_round", "round"])
curves["devices per round"] = curves["devices_per_round"].astype(str)
slider_figure(curves, slider="noise_multiplier", x="round", y="accuracy", hue="devices per round",
              title="Noise multiplier σ: training curves")
"""),
    code("""
small_task = load_intent_task(n_devices=300, seed=SEED)
small = device_data(small_task)

def explore(noise_multiplier=1.0, devices_per_round=30):
    table = dp_sweep(small_task, noise_multipliers=[0.0, noise_multiplier], devices_per_round=[devices_per_round],
                     rounds=30, max_grad_norm=MAX_GRAD_NORM, delta=DELTA, seeds=[SEED], eval_every=5, data=small,
                     progress=False)
    eps = table["epsilon"].replace(np.inf, np.nan).max()
    return table.assign(run=np.where(table["noise_multiplier"] > 0, f"σ = {noise_multiplier:g} (ε = {eps:.1f})", "clipping only"))

live_explorer(explore, x="round", y="accuracy", hue="run", noise_multiplier=(0.25, 3.0, 0.25),
              devices_per_round=(10, 100, 10))
"""),
    md("""
## In a Flower deployment

Flower ships the same mechanism as **wrapper strategies** around any strategy:
`DifferentialPrivacyServerSideFixedClipping` (the server clips each update and adds noise to the
average — the server must be trusted with raw updates) and `DifferentialPrivacyClientSideFixedClipping`
(devices clip before sending; the server only adds noise), plus adaptive-clipping variants. trustml's
Flower app wraps `ActivityFedAvg` in the server-side one when the run configuration sets a noise
multiplier:

```bash
flwr run "$(python -c 'import trustml.federated.flower as f; print(f.app_dir())')" \\
    --run-config "selection='uniform' aggregation='mean' devices-per-round=50 dp-noise-multiplier=1.0 dp-clipping-norm=4.0"
```

Flower's wrapper samples a *fixed* number of devices per round; the accounting above assumes Poisson
sampling, as McMahan et al. do. For a fixed-size sample, account with sampling without replacement
(or use Flower's own accountant in `flwr.supercore.privacy_accounting`).

## Exercises

```{exercise}
:label: federated-dp-ex1

Keep $\\sigma = 1$ and double the number of devices $K$ (regenerate the corpus with twice `N_DEVICES`)
while keeping $m$ fixed. What happens to $\\varepsilon$ and to accuracy, and why?
```

```{solution} federated-dp-ex1
:class: dropdown

$q = m/K$ halves, so each round leaks less and $\\varepsilon$ drops (privacy amplification by sampling).
The noise on the average, $\\sigma C/(qK) = \\sigma C / m$, is unchanged, so accuracy stays about the
same (slightly better: each device's data is a smaller part of the whole). A bigger population gives
privacy almost for free.
```

```{exercise}
:label: federated-dp-ex2

Why may DP-FedAvg not use the activity-based selection of the previous chapters, nor $n_k$-weighted
averaging, even though both improve accuracy?
```

```{solution} federated-dp-ex2
:class: dropdown

Both make the released model depend on $n_k$ beyond the clipped update: $n_k$-weighting scales a device's
contribution by its data size, so one device could move the average by more than $C/(qK)$; selection by
activity makes the chance of taking part depend on the device's data, so the sampling rate is not the
$q$ the accountant uses. Device-level DP needs each device's influence bounded by the same $C$ and a
participation probability that does not depend on its data.
```
"""),
])
