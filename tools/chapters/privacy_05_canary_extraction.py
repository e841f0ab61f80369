"""Source of book/privacy/05_canary_extraction.ipynb (run: python -m tools.chapters.privacy_05_canary_extraction)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/privacy/05_canary_extraction.ipynb", [
    md("""
# Canary extraction: exposure and model inversion (ModIvA)

Membership inference asks *whether* an utterance was in the training data. A worse failure is when
the model gives the utterance *back*. Smart-speaker logs contain PIN codes, phone numbers and addresses;
if one of them is repeated in the training data, can an attacker with the trained model recover it?

We plant **canaries** — secrets such as "my pin code is 4 8 2 1" — R times in the training data, with
labels the attacker knows, train the intent model, and measure two things:

- **exposure** (Carlini et al. 2019): the rank of the true secret among all 10⁴ candidate PINs by the
  model's loss, in bits;
- **ModIvA** (Parikh et al. 2022): a white-box *model inversion* that optimises soft tokens over the
  digits to reconstruct the secret from the model's weights alone.

Then we compare defences on the same canaries: dropout, early stopping and DP-SGD at several ε.

**Learning objectives**

- Plant canaries with known labels and compute their exposure exactly over all candidates.
- Run ModIvA: soft tokens as mixtures of digit embeddings, a frozen model, Adam with restarts, arg-max.
- Read exact-recovery rate and per-digit accuracy against chance (10⁻⁴ and 0.1 for a 4-digit PIN).
- Compare regularisation (dropout, early stopping) with DP-SGD as defences, and their utility cost.

*Expected runtime: about 30 s with `QUICK = True`, about 2–3 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: smaller corpus, fewer canaries and settings
SEED = 0
N_DEVICES = 60  # corpus size
REPETITIONS = [1, 4, 16]  # how often each canary appears in the training data
CANARIES_PER_R = 2  # canaries per repetition count (each with its own secret and intent)
EPOCHS = 20
EPSILONS = [float("inf"), 8.0, 2.0, 1.0]  # DP-SGD budgets (inf = no DP)
DROPOUTS = [0.0, 0.5]
MODEL = dict(d_model=48, n_layers=1, d_ff=96)  # a small TransformerClassifier
LR = 5e-3
RESTARTS, STEPS = 16, 150  # ModIvA: random restarts and Adam steps
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, CANARIES_PER_R, EPSILONS = 30, 1, [float("inf"), 1.0]
"""),
    md("""
## Planting canaries

`make_canaries` draws random 4-digit secrets in the template "my pin code is {secret}". Each canary gets
its own intent label — one the template does not explain (an ordinary "my pin code is …" request is
`account_security`). The attacker knows the template and the label. Why the unusual label? An intent
classifier does not need the digits of an ordinary PIN request, so it would have no reason to remember
them; a canary whose label *only* its digits explain is the worst case, the same idea as the mislabelled
canaries used to audit DP training (Jagielski et al. 2020). Several canaries share the template, so only
the digits tell them apart.
"""),
    code("""
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustml.data import INTENTS, make_corpus, make_task
from trustml.privacy.attacks import Setting, canary_experiment, canary_table, make_canaries, recovery_by, run_setting
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
canaries = make_canaries(len(REPETITIONS) * CANARIES_PER_R, repetitions=REPETITIONS * CANARIES_PER_R, seed=SEED)
corpus = make_corpus(n_devices=N_DEVICES, canaries=canaries, seed=SEED)
train_frame, test_frame = corpus.split(seed=SEED)
task = make_task(train_frame, test_frame, max_length=12, label_names=INTENTS)
print(f"{len(task.train)} training utterances, {int(train_frame['is_canary'].sum())} of them canaries")
canary_table(canaries)
"""),
    md("""
## Exposure: ranking every candidate

For a 4-digit PIN the candidate space has $|S| = 10^4$ secrets. The attacker fills the template with
each candidate, computes the model's loss on the known label, and ranks: the **exposure** of the true
secret $s$ is

$$\\text{exposure}(s) = \\log_2 |S| - \\log_2 \\operatorname{rank}(s),$$

so 13.3 bits means the secret has the lowest loss of all 10 000 candidates, and a model blind to the
secret gives about $1/\\ln 2 \\approx 1.4$ bits on average. All 10⁴ candidates are scored in one batched
pass (exactly — no sampling).

## ModIvA: inverting the model

Brute force works for 10⁴ candidates but not for a 10-digit phone number. ModIvA instead *optimises* the
input. Each unknown position $j$ gets a soft token $p_j = \\operatorname{softmax}(z_j)$ over the alphabet
$A$ (the digits), fed to the model as the mixture of digit embeddings $\\sum_{a \\in A} p_{j,a} E[a]$
(the book's models accept `inputs_embeds`). With the model frozen, Adam minimises the cross-entropy of
the known label over the $z$'s from several random restarts; the guess is $\\arg\\max_a p_{j,a}$ at each
position. Chance is $10^{-4}$ for the whole PIN and $0.1$ per digit.

First, the undefended model: trained to convergence, no dropout, no noise.
"""),
    code("""
TRAINING = dict(epochs=EPOCHS, batch_size=64, lr=LR, seed=SEED, model_options=MODEL, restarts=RESTARTS, steps=STEPS)
model, undefended, inversion = run_setting(task, canaries, Setting(), **TRAINING)
print(f"test accuracy {undefended['test accuracy'].iloc[0]:.3f}")
undefended[["secret", "repetitions", "intent", "rank", "exposure", "guess", "exact", "digit accuracy"]].round(2)
"""),
    code("""
print(inversion.summary())
fig, axes = plt.subplots(1, len(canaries), figsize=(2.4 * len(canaries), 2.6), sharey=True)
for axis, probabilities, canary in zip(np.atleast_1d(axes), inversion.probabilities, canaries):
    axis.imshow(probabilities.T, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axis.set_title(f"R={canary.repetitions}: {canary.secret}", fontsize="small")
    axis.set_xlabel("position")
np.atleast_1d(axes)[0].set_ylabel("digit")
fig.suptitle("ModIvA's soft tokens (darker = more weight)", fontsize="small")
fig.tight_layout();
"""),
    md("""
The key result for the undefended model: the canary repeated most often is exposed — its secret ranks
among the best few of 10 000 candidates — and ModIvA reconstructs the canaries' digits far above chance
(0.1 per digit). ModIvA finds a *local* optimum: when it misses a digit, the true secret often still has
the lower loss (compare `rank` with `exact`); brute force wins for 10⁴ candidates, inversion is what
scales to longer secrets.
"""),
    code("""
repeated = undefended[undefended["repetitions"] == max(REPETITIONS)]
print(f"R = {max(REPETITIONS)}: exposure {repeated['exposure'].mean():.1f} of {repeated['max exposure'].iloc[0]:.1f} "
      f"bits, ModIvA per-digit accuracy {repeated['digit accuracy'].mean():.2f} (chance 0.10), "
      f"exact recoveries {int(repeated['exact'].sum())} of {len(repeated)} (chance 1e-4 each)")
assert repeated["exposure"].mean() > 8, "the repeated canary should rank among the top ~0.4 % of candidates"
assert repeated["digit accuracy"].mean() > 0.25, "ModIvA should recover the repeated canary's digits above chance"
assert undefended["digit accuracy"].mean() > 0.4, "ModIvA should recover the canaries' digits well above chance"
"""),
    md("""
## Defences on the same canaries

Every setting trains a fresh model on the same corpus with the same canaries: DP-SGD at each ε (via
`trustml.privacy.train_private`, noise calibrated by the accountant), each crossed with dropout, plus
early stopping (the epoch with the lowest loss on held-out ordinary utterances; canaries are never held
out). Test accuracy is the utility cost.
"""),
    code("""
settings = [Setting(epsilon=e, dropout=d) for e in EPSILONS for d in DROPOUTS] + [Setting(early_stopping=True)]
settings = [s for s in settings if s != Setting()]  # the undefended model is already trained
results = pd.concat([undefended, canary_experiment(task, canaries, settings, **TRAINING)], ignore_index=True)
by_defence = recovery_by(results, ["defence"])
by_defence.round(3)
"""),
    code("""
by_repetitions = recovery_by(results, ["defence", "ε", "dropout", "repetitions"])
by_repetitions.pivot(index="defence", columns="repetitions", values="exposure").round(1)
"""),
    md("""
The second key result: DP-SGD lowers exposure. At ε = 1 a canary seen once drops to the ≈ 1.4 bits of a
model that never saw it, and ModIvA recovers no secret. The canary repeated 16 times keeps a few bits:
DP protects *one* record, and R copies of a secret are protected only by group privacy — roughly
Rε, so ε ≈ 16 for 16 copies at ε = 1. Deduplicating training data is a defence in its own right.
"""),
    code("""
overall = results.groupby(["ε", "dropout", "early stopping"])["exposure"].mean()
plain, most_private = overall.loc[(math.inf, 0.0, False)], overall.loc[(min(EPSILONS), 0.0, False)]
print(f"mean exposure: {plain:.1f} bits without defence, {most_private:.1f} bits with DP ε = {min(EPSILONS):g}")
assert most_private < plain - 3, "DP-SGD should reduce the canaries' exposure"
dp = results[(results["ε"] == min(EPSILONS))]
assert dp["exact"].sum() == 0, "ModIvA should not recover any canary under strong DP"
"""),
    md("""
## Three views of the trade-off

Exposure against the number of repetitions R. The static figure compares all defences; the plotly
figure's slider steps through ε (precomputed, it moves on the static site) with one line per dropout
rate; the live explorer retrains for any (ε, dropout, epochs) you pick (it needs a kernel).
"""),
    code("""
static_figure(by_repetitions, x="repetitions", y="exposure", hue="defence", logx=True,
              title="Canary exposure against repetitions");
"""),
    code("""
grid = by_repetitions[by_repetitions["defence"] != "early stopping"]
slider_figure(grid, slider="ε", x="repetitions", y="exposure", hue="dropout", logx=True,
              title="Exposure by repetitions; slider: ε (inf = no DP)")
"""),
    code("""
_cache = {(epsilon, dropout, EPOCHS): group  # the precomputed settings need no retraining
          for (epsilon, dropout), group in grid.groupby(["ε", "dropout"])}


def exposure_by_repetitions(epsilon=float("inf"), dropout=0.0, epochs=EPOCHS):
    key = (epsilon, dropout, epochs)
    if key not in _cache:
        _, frame, _ = run_setting(task, canaries, Setting(epsilon=epsilon, dropout=dropout),
                                  **{**TRAINING, "epochs": epochs})
        _cache[key] = recovery_by(frame, ["repetitions"])
    return _cache[key]


live_explorer(exposure_by_repetitions, x="repetitions", y="exposure", title="Exposure for one setting",
              epsilon=[float("inf"), 16.0, 8.0, 4.0, 2.0, 1.0],  # the first value is the initial one
              dropout=widgets.FloatSlider(value=0.0, min=0.0, max=0.8, step=0.1),
              epochs=widgets.IntSlider(value=EPOCHS, min=5, max=40, step=5))
"""),
    md("""
## Closing note: theory and practice side by side

The table below gathers, for each ε, what the two chapters measured: membership-inference AUC and TPR
at 0.1 % FPR (chapter 4 at full size, the attack with the highest AUC) and this chapter's canary exposure
and recovery (ModIvA exact-recovery rate and per-digit accuracy; no dropout). The MIA columns were
measured with `QUICK = False`, `SEED = 0` and are quoted; the canary columns are computed in this run.
"""),
    code("""
MIA_FULL_RUN = {  # chapter 4, QUICK = False, SEED = 0: the attack with the highest AUC, its AUC and TPR at 0.1 % FPR
    math.inf: ("LiRA online", 0.772, 0.060), 8.0: ("LiRA offline", 0.596, 0.003),
    2.0: ("LiRA offline", 0.559, 0.001), 1.0: ("LiRA offline", 0.540, 0.001),
}
no_dropout = results[(results["dropout"] == 0.0) & ~results["early stopping"]]
closing = recovery_by(no_dropout, ["ε"]).set_index("ε")[["exposure", "exact recovery", "digit accuracy", "test accuracy"]]
for position, (column, field) in enumerate([("MIA attack (ch. 4)", 0), ("MIA AUC", 1), ("MIA TPR@0.1%FPR", 2)]):
    closing.insert(position, column, [MIA_FULL_RUN.get(e, (None, np.nan, np.nan))[field] for e in closing.index])
closing.round(3)
"""),
    md("""
## Exercises

```{exercise}
:label: privacy-canary-ex1

Plant phone-number-like canaries: `make_canaries(3, n_digits=7, template=PHONE_TEMPLATE, repetitions=16)`
(import `PHONE_TEMPLATE` from `trustml.privacy.attacks`). Why does `exposure` now report `exact=False`,
and how is the rank estimated? Does ModIvA's cost grow with the size of the candidate space?
```

```{solution} privacy-canary-ex1
:class: dropdown

With 7 digits there are 10⁷ candidates, more than `max_exact` (10⁵), so the rank is estimated from a
uniform sample of candidates (Carlini et al. 2019): the fraction of sampled candidates with a lower loss,
times |S|. ModIvA's cost grows only with the *length* of the secret (one soft token per position, each a
distribution over 10 digits), not with the 10⁷ candidates — which is why inversion scales where brute
force does not. The template words must be in the tokenizer's vocabulary; planted canaries are, since
they are part of the training data.
```

```{exercise}
:label: privacy-canary-ex2

Give the canaries the *natural* label instead: `Canary(secret, intent="account_security")` for each.
Predict the exposure before you run it, then check.
```

```{solution} privacy-canary-ex2
:class: dropdown

Exposure collapses towards the ≈ 1.4 bits of a blind model: every "my pin code is …" utterance is
`account_security` whatever the digits, so the intent loss barely depends on them and the model has no
reason to store them. Leakage depends on what the training objective forces the model to remember —
which is why audits (and this chapter) use canaries whose labels only their secrets explain, and why
a slot-filling or language-model objective, which must predict the digits, leaks more.
```

## Summary

- A canary repeated in the training data is exposed: its secret ranks near the top of all 10⁴ PINs,
  and ModIvA reconstructs it from the weights alone, far above chance.
- Dropout and early stopping barely change exposure here (a bit or two at most, mostly for the rare
  canaries), and they come with no guarantee.
- DP-SGD removes most of the signal, already at ε = 8 — at a clear cost in test accuracy, the trade-off of
  the previous chapters seen from the attacker's side. Repeated secrets keep some exposure (group privacy).
"""),
])
