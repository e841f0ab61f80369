"""Source of book/privacy/03_privacy_utility_tradeoff.ipynb (run: python -m tools.chapters.privacy_03_privacy_utility_tradeoff)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/privacy/03_privacy_utility_tradeoff.ipynb", [
    md(r"""
# The privacy–utility trade-off

Differential privacy has a price: the noise that hides each utterance also hides some of the signal.
This chapter trains the intent classifier with DP-SGD at privacy budgets ε ∈ {∞, 8, 4, 2, 1} and
measures what each costs in accuracy — on the book's smart-speaker corpus and, when available, on the
real CLINC150 intents.

**Learning objectives**

- Train a differentially private intent classifier for a target (ε, δ) with `trustml.privacy.train_private`
  and read the noise multiplier the accountant chose.
- Measure test accuracy as a function of ε, and explain why the loss is larger for harder tasks (more
  classes, fewer examples per class).
- Check that a reported ε is exactly what the accountant computes for the training's history.
- See how the clipping bound and a decaying noise schedule move the trade-off.

*Expected runtime: about 30 s with `QUICK = True`, about 2–3 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: smaller corpus, fewer epochs and seeds
SEED = 0
N_DEVICES = 1000
EPOCHS = 5
BATCH_SIZE = 512
LR = 0.05
MAX_GRAD_NORM = 1.0
DELTA = 1e-5
EPSILONS = [float("inf"), 8.0, 4.0, 2.0, 1.0]
N_SEEDS = 3
CLIPPING_NORMS = [0.25, 1.0, 4.0]  # slider grid
CLINC_EPOCHS = 10
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, EPOCHS, N_SEEDS, CLIPPING_NORMS, CLINC_EPOCHS = 200, 3, 2, [0.25, 1.0, 4.0], 4
"""),
    code("""
import math
import os
import pathlib
import socket
import time
import warnings

import numpy as np
import pandas as pd
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from tqdm.auto import tqdm

from trustml.data import load_intent_task
from trustml.models import EmbeddingClassifier, accuracy
from trustml.privacy import get_epsilon, noise_schedule, steps_per_epoch, train_private
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
torch.set_num_threads(1)  # these models are small: one thread is as fast, and steady on a busy machine
setup_plotly();
"""),
    md(r"""
## Training at a privacy budget

`train_private(model, data, epsilon=ε, delta=δ, epochs=E, batch_size=B)` does what the previous
chapters assembled: it asks the accountant for the smallest noise multiplier σ that spends at most ε in
$E$ epochs of Poisson-sampled batches (expected size $B$), trains with the fast clipping engine, and
returns the model with the accountant's ε. `epsilon=inf` trains without clipping or noise on the same
batches: the non-private reference.
"""),
    code("""
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
print(f"{len(task.train)} training and {len(task.test)} test utterances, {task.num_classes} intents")

def train(task, epsilon, *, seed, max_grad_norm=MAX_GRAD_NORM, epochs=EPOCHS, batch_size=BATCH_SIZE, **options):
    torch.manual_seed(seed)
    model = EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes)
    return train_private(model, task.train, epsilon=epsilon, delta=DELTA, epochs=epochs, batch_size=batch_size,
                         lr=LR, max_grad_norm=max_grad_norm, seed=seed, **options)

runs, rows = {}, []
for epsilon in tqdm(EPSILONS, desc="ε"):
    for seed in range(SEED, SEED + N_SEEDS):
        run = train(task, epsilon, seed=seed)
        runs[epsilon, seed] = run
        rows.append({"dataset": "smart speaker", "epsilon": epsilon, "seed": seed,
                     "noise multiplier": run.noise_multiplier, "reported epsilon": run.epsilon,
                     "test accuracy": accuracy(run.model, task.test)})
results = pd.DataFrame(rows)
summary = results.groupby("epsilon", sort=False)[["noise multiplier", "reported epsilon", "test accuracy"]].mean()
summary.round(3)
"""),
    md(r"""
Accuracy falls as ε falls: a smaller budget needs a larger σ, and the noise $\sigma C$ added to every
step's gradient sum drowns more of the signal. The key result of the chapter, asserted on the mean over
seeds:
"""),
    code("""
mean_accuracy = results.groupby("epsilon")["test accuracy"].mean()  # index sorted: 1, 2, 4, 8, inf
print(mean_accuracy.round(3).to_dict())
assert mean_accuracy[1.0] < mean_accuracy[math.inf] - 0.05, "ε = 1 should cost accuracy"
assert mean_accuracy[1.0] < mean_accuracy[8.0] < mean_accuracy[math.inf], "accuracy decreases as ε decreases"
assert (np.diff(mean_accuracy.to_numpy()) > -0.02).all(), "no budget should be clearly worse than a smaller one"
from trustml.viz import glue  # for the book's front page

glue("accuracy_eps_inf", float(mean_accuracy[math.inf]))
glue("accuracy_eps_1", float(mean_accuracy[1.0]))
"""),
    md(r"""
## Is the printed ε the accountant's?

A reported ε is only as good as its bookkeeping. For every private run, recompute the budget from the
run's history — σ, the sampling rate $q$ and the number of steps — twice: with
`trustml.privacy.get_epsilon` and with a fresh Opacus `RDPAccountant` stepped once per training step.
"""),
    code("""
checks = []
for (epsilon, seed), run in runs.items():
    if math.isinf(epsilon):
        continue
    recomputed = get_epsilon(noise_multiplier=run.noise_multiplier, sample_rate=run.sample_rate, steps=run.steps,
                             delta=DELTA, accountant=run.accountant)
    opacus = RDPAccountant()
    for _ in range(run.steps):
        opacus.step(noise_multiplier=run.noise_multiplier, sample_rate=run.sample_rate)
    checks.append({"target ε": epsilon, "seed": seed, "σ": run.noise_multiplier, "steps": run.steps,
                   "printed ε": run.epsilon, "get_epsilon": recomputed, "Opacus accountant": opacus.get_epsilon(DELTA)})
checks = pd.DataFrame(checks)
assert np.allclose(checks["printed ε"], checks["get_epsilon"], rtol=1e-12)
assert np.allclose(checks["printed ε"], checks["Opacus accountant"], rtol=1e-9)
assert (checks["printed ε"] <= checks["target ε"]).all() and (checks["printed ε"] > checks["target ε"] - 0.02).all()
checks.groupby("target ε").first().round(4)
"""),
    md(r"""
## The trade-off, three ways

First a static figure (the dashed line is non-private training), then the precomputed grid over the
**clipping bound** $C$ (slider): a small $C$ clips away signal, a large $C$ needs noise proportional to
it — the best $C$ sits in between and depends on ε. Last, a live explorer that re-trains a small model on
every move (a Jupyter or Colab kernel is needed; each move takes a couple of seconds).
"""),
    code("""
private = results[np.isfinite(results["epsilon"])]
figure = static_figure(private, x="epsilon", y="test accuracy", logx=True,
                       title="Accuracy against privacy budget (mean over seeds)")
figure.axes[0].axhline(mean_accuracy[math.inf], color="k", ls="--", label="non-private")
figure.axes[0].legend();
"""),
    code("""
grid_rows = []
for max_grad_norm in tqdm(CLIPPING_NORMS, desc="C"):
    for epsilon in EPSILONS:
        run = runs[epsilon, SEED] if max_grad_norm == MAX_GRAD_NORM else train(task, epsilon, seed=SEED,
                                                                                   max_grad_norm=max_grad_norm)
        grid_rows.append({"clipping bound C": max_grad_norm, "epsilon": epsilon,
                          "test accuracy": accuracy(run.model, task.test)})
grid = pd.DataFrame(grid_rows)
non_private = grid[np.isinf(grid["epsilon"])].groupby("clipping bound C")["test accuracy"].mean()
twin = grid[np.isfinite(grid["epsilon"])].assign(training="DP-SGD")
twin = pd.concat([twin, twin.assign(training="non-private",
                                    **{"test accuracy": twin["clipping bound C"].map(non_private)})])
slider_figure(twin, slider="clipping bound C", x="epsilon", y="test accuracy", hue="training", logx=True,
              title="Accuracy against ε; slider: clipping bound C")
"""),
    code("""
live_task = task if QUICK else load_intent_task(n_devices=200, seed=SEED)  # small, so a move re-trains fast
curve = private.groupby("epsilon", as_index=False)["test accuracy"].mean().assign(run="precomputed (C = 1)")

def retrain(epsilon=2.0, max_grad_norm=1.0):
    start = time.perf_counter()
    run = train(live_task, epsilon, seed=SEED, max_grad_norm=max_grad_norm, epochs=3)
    point = pd.DataFrame([{"epsilon": run.epsilon, "test accuracy": accuracy(run.model, live_task.test),
                           "run": f"this run ({time.perf_counter() - start:.1f} s)"}])
    return pd.concat([curve, point])

start = time.perf_counter()
retrain()
print(f"one re-training at the live explorer's size: {time.perf_counter() - start:.1f} s")
live_explorer(retrain, x="epsilon", y="test accuracy", hue="run", title="Re-trained on every move",
              epsilon=(0.5, 16.0, 0.5), max_grad_norm=(0.25, 4.0, 0.25))
"""),
    md(r"""
## A decaying noise schedule

DP-SGD need not add the same noise every step. With **epoch-wise decay** $\sigma_e = \sigma_0\gamma^e$
the early, large gradients get more noise and the late, fine-tuning steps less; the accountant composes
the per-step σ, and `train_private(..., noise_decay=γ)` searches σ₀ so that the whole schedule spends the
target ε.
"""),
    code("""
decay_rows = []
for gamma in [1.0, 0.8]:
    run = train(task, 2.0, seed=SEED, noise_decay=gamma)
    schedule = noise_schedule(run.noise_multiplier, steps=run.steps, steps_per_epoch=steps_per_epoch(run.sample_rate),
                              noise_decay=gamma)
    step_by_step = PRVAccountant() if run.accountant == "prv" else RDPAccountant()
    for sigma in schedule:
        step_by_step.step(noise_multiplier=sigma, sample_rate=run.sample_rate)
    assert math.isclose(run.epsilon, step_by_step.get_epsilon(DELTA), rel_tol=1e-9), "decay accounted step by step"
    decay_rows.append({"γ": gamma, "σ first epoch": schedule[0], "σ last epoch": schedule[-1],
                       "reported ε": run.epsilon, "test accuracy": accuracy(run.model, task.test)})
pd.DataFrame(decay_rows).round(3)
"""),
    md(r"""
## Real intents: CLINC150

CLINC150 (Larson et al. 2019, CC BY 3.0) has 150 intents with 100 training utterances each — a much
harder task for DP: fewer examples per class means each one matters more, so the same noise hurts more.
The data are not shipped with trustml: set `TRUSTML_CLINC150` to a local copy, place it in
`../shared/data/clinc150` next to the repository, or let `load_clinc150` download it (online, e.g. in
Colab). Without any of these, this section is skipped.
"""),
    code("""
def find_clinc150():
    candidates = [os.environ.get("TRUSTML_CLINC150"), "../../../shared/data/clinc150", "../../shared/data/clinc150"]
    local = next((p for p in candidates if p and (pathlib.Path(p) / "data_full.json").is_file()), None)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # do not hang offline
    try:
        return load_intent_task("clinc150", path=local)
    except (ConnectionError, OSError, ValueError) as error:
        print(f"CLINC150 not available ({error}); skipping this section")
        return None
    finally:
        socket.setdefaulttimeout(previous)

clinc = find_clinc150()
clinc_epsilons = [math.inf, 8.0, 1.0] if QUICK else EPSILONS
if clinc is not None:
    print(f"CLINC150: {len(clinc.train)} training utterances, {clinc.num_classes} intents")
    clinc_rows = []
    for epsilon in tqdm(clinc_epsilons, desc="ε (CLINC150)"):
        run = train(clinc, epsilon, seed=SEED, epochs=CLINC_EPOCHS, batch_size=1024)
        clinc_rows.append({"dataset": "CLINC150", "epsilon": epsilon, "seed": SEED, "reported epsilon": run.epsilon,
                           "noise multiplier": run.noise_multiplier, "test accuracy": accuracy(run.model, clinc.test)})
    clinc_results = pd.DataFrame(clinc_rows)
    clinc_accuracy = clinc_results.set_index("epsilon")["test accuracy"]
    assert clinc_accuracy[1.0] < clinc_accuracy[math.inf] - 0.1, "DP costs more on 150 intents"
    both = pd.concat([results, clinc_results])
    both = both[np.isfinite(both["epsilon"])].groupby(["dataset", "epsilon"], as_index=False)["test accuracy"].mean()
    static_figure(both, x="epsilon", y="test accuracy", hue="dataset", logx=True,
                  title="Same budgets, harder task: a steeper price")
    display(clinc_results.round(3))
"""),
    md(r"""
## Exercise

```{exercise}
:label: privacy-tradeoff-ex1

Keep ε = 2 and δ = 10⁻⁵ fixed and double the batch size (expected, i.e. the sampling rate $q$). What does
the accountant do to σ, and what happens to the noise *per example* in the averaged gradient
$(\sum_i \mathrm{clip}(g_i) + \mathcal N(0,\sigma^2C^2))/(qN)$? Try it with `train(task, 2.0, seed=0,
batch_size=1024)`.
```

```{solution} privacy-tradeoff-ex1
:class: dropdown

A larger $q$ amplifies privacy less per step and there are half as many steps per epoch; the accountant
answers with a larger σ — but less than twice as large. The noise in the *averaged* gradient is
$\sigma C/(qN)$, so doubling $qN$ while σ grows by less than 2 lowers the noise per example: large
batches are the standard way to buy utility in DP-SGD (at the price of fewer, more expensive steps — which
the fast engine keeps affordable).
```

## Summary

- `train_private` turns a target (ε, δ) into a noise multiplier and a trained model; the ε it prints is
  exactly what Opacus' accountant computes for the same history.
- Accuracy falls as ε falls, gently on the synthetic corpus and steeply on 150-intent CLINC150.
- The clipping bound and the noise schedule move the trade-off; they are tuned for a given ε.
"""),
])
