"""Source of book/privacy/01_dp_basics.ipynb (run: python -m tools.chapters.privacy_01_dp_basics)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/privacy/01_dp_basics.ipynb", [
    md(r"""
# Differential privacy basics: the Gaussian mechanism, composition and accounting

Differential privacy (DP) is a promise about an *algorithm*, not about a dataset: whatever it outputs,
it would have output almost as likely had any single record been left out. This chapter builds the
promise from one noisy count up to the privacy budget of a whole DP-SGD training run.

**Learning objectives**

- Define neighbouring datasets and (ε, δ)-differential privacy, and read ε and δ as limits on what an
  attacker can infer (a hypothesis-testing bound on any membership-inference attack).
- Calibrate the Gaussian mechanism to a query's sensitivity and check its exact privacy profile against
  the definition by simulation.
- Explain why composition adds up privacy loss and why Poisson subsampling shrinks it.
- Compare the two accountants the book uses (RDP and PRV, both from Opacus) on ε over a training run.

*Expected runtime: about 15 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: fewer noise levels and fewer points on each curve
SEED = 0
N_DEVICES = 1000
DELTA = 1e-5
BATCH_SIZE = 256
EPOCHS = 10
SIGMAS = [0.6, 0.8, 1.0, 1.5, 2.0]  # noise multipliers of the precomputed grid
CURVE_POINTS = 12
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, EPOCHS, SIGMAS, CURVE_POINTS = 200, 3, [0.8, 1.0, 2.0], 5
"""),
    code("""
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustml.data import make_corpus
from trustml.privacy import (
    classic_gaussian_noise_multiplier, epsilon_curve, gaussian_delta, gaussian_epsilon, gaussian_mechanism,
    get_epsilon, max_advantage, privacy_loss, tpr_bound,
)
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # RDP at very small budgets
setup_plotly();
"""),
    md(r"""
## Neighbouring datasets

Two datasets are **neighbours** if one is the other plus one record. Here a record is one utterance of
the smart-speaker corpus, so DP protects each utterance: whether *this* request ("my pin code is …") was
in the training data. (Protecting a whole device — all its utterances at once — is *user-level* DP;
the federated part returns to it.)

Take the simplest analysis: **how many utterances ask to change a security code?** Removing one
utterance changes the count by at most 1: the query's **sensitivity** is Δ = 1.
"""),
    code("""
corpus = make_corpus(n_devices=N_DEVICES, seed=SEED)
D = corpus.utterances
is_security = (D["intent"] == "account_security").to_numpy()
count = int(is_security.sum())
neighbour_count = count - 1  # D' = D without one security utterance
print(f"|D| = {len(D)} utterances; count(D) = {count}, count(D') = {neighbour_count}; sensitivity 1")
"""),
    md(r"""
## The Gaussian mechanism

Release $f(D) + \mathcal N(0, \sigma^2\Delta^2)$. The ratio $\sigma$ of noise to sensitivity, the
**noise multiplier**, is all that matters. A mechanism $M$ is **$(\varepsilon,\delta)$-DP** if for all
neighbours $D, D'$ and every set of outputs $S$

$$P[M(D)\in S] \le e^{\varepsilon}\, P[M(D')\in S] + \delta .$$

The **privacy loss** of an output $o$, $L(o) = \ln \frac{p_D(o)}{p_{D'}(o)}$, is the evidence $o$ gives
for $D$ over $D'$. The smallest $\delta$ at a given $\varepsilon$ is the expected excess of that
evidence, $\delta(\varepsilon) = \mathbb E_{o\sim M(D)}\big[(1-e^{\varepsilon-L(o)})_+\big]$, which for the
Gaussian mechanism has a closed form (Balle & Wang 2018):
$\delta(\varepsilon) = \Phi\big(\tfrac{1}{2\sigma}-\varepsilon\sigma\big) - e^{\varepsilon}\,
\Phi\big(-\tfrac{1}{2\sigma}-\varepsilon\sigma\big)$.
Below we release the count many times from $D$ and from $D'$, and check the formula against the
definition by simulation.
"""),
    code("""
sigma, epsilon_check = 2.0, 0.5
releases_D = gaussian_mechanism(count, sensitivity=1, noise_multiplier=sigma, size=200_000, seed=SEED)
releases_D_prime = gaussian_mechanism(neighbour_count, sensitivity=1, noise_multiplier=sigma, size=200_000,
                                      seed=SEED + 1)
loss = privacy_loss(releases_D, value=count, neighbour_value=neighbour_count, sensitivity=1,
                    noise_multiplier=sigma)
delta_simulated = np.maximum(0.0, 1 - np.exp(epsilon_check - loss)).mean()
delta_exact = gaussian_delta(epsilon_check, noise_multiplier=sigma)
print(f"σ = {sigma}: δ({epsilon_check}) simulated {delta_simulated:.4f}, exact {delta_exact:.4f}")
assert abs(delta_simulated - delta_exact) < 0.005, "the closed form should match the definition"

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
bins = np.linspace(count - 4 * sigma, count + 4 * sigma, 80)
ax1.hist(releases_D, bins=bins, alpha=0.5, density=True, label="released from D")
ax1.hist(releases_D_prime, bins=bins, alpha=0.5, density=True, label="released from D'")
ax1.set_xlabel("released count"); ax1.legend(); ax1.set_title("Two nearly indistinguishable distributions")
ax2.hist(loss, bins=80, density=True)
ax2.axvline(epsilon_check, color="k", ls="--", label=f"ε = {epsilon_check}")
ax2.set_xlabel("privacy loss L(o)"); ax2.legend(); ax2.set_title("Evidence an output gives about the record")
fig.tight_layout()
"""),
    md(r"""
The textbook calibration $\sigma = \sqrt{2\ln(1.25/\delta)}/\varepsilon$ (Dwork & Roth 2014, Thm. A.1)
is valid for $\varepsilon<1$ and conservative; the exact profile tells how much.
"""),
    code("""
rows = []
for target in [0.25, 0.5, 0.9]:
    classic = classic_gaussian_noise_multiplier(target, DELTA)
    rows.append({"target ε": target, "classic σ": classic,
                 "exact ε of that σ": gaussian_epsilon(DELTA, noise_multiplier=classic)})
calibration = pd.DataFrame(rows)
assert (calibration["exact ε of that σ"] < calibration["target ε"]).all(), "the classic bound is conservative"
calibration.round(3)
"""),
    md(r"""
## What ε and δ mean

Think of an attacker who sees the output and must decide "was the record in (D) or not (D')?". Under
$(\varepsilon,\delta)$-DP, **every** such test — every membership-inference attack — has a true-positive
rate of at most $\min(1,\ e^\varepsilon\alpha+\delta,\ 1-e^{-\varepsilon}(1-\delta-\alpha))$ at
false-positive rate $\alpha$ (Kairouz, Oh & Viswanath 2015). At $\varepsilon = 1$ an attacker who
accepts 1 % false positives catches at most about 2.7 % of the members. $\delta$ is the probability mass
where the guarantee may fail outright, so it must be far below $1/N$ (trustml warns otherwise).
"""),
    code("""
alphas = np.linspace(0, 1, 401)
bounds = pd.concat([pd.DataFrame({"false-positive rate": alphas, "ε": e,
                                  "max true-positive rate": tpr_bound(alphas, epsilon=e, delta=DELTA)})
                    for e in [0.5, 1, 2, 4, 8]])
static_figure(bounds, x="false-positive rate", y="max true-positive rate", hue="ε", marker="",
              title="The best any attack can do under (ε, δ)-DP")
advantage = pd.DataFrame({"ε": [0.5, 1, 2, 4, 8]})
advantage["max advantage (TPR − FPR)"] = [max_advantage(epsilon=e, delta=DELTA) for e in advantage["ε"]]
advantage.round(3)
"""),
    md(r"""
## Composition and subsampling

Releasing $k$ noisy answers spends more privacy than one. For Gaussian noise the composition is exact:
$k$ releases with noise multiplier $\sigma$ are as private as one with $\sigma/\sqrt k$ (Dong, Roth & Su
2022). The accountants in `trustml.privacy.get_epsilon` — Opacus' **RDP** (Rényi DP, Mironov 2017) and
**PRV** (numerical composition of privacy-loss distributions, Gopi et al. 2021) — bound the same
quantity for any schedule; with sampling rate $q=1$ we can compare them with the exact answer.
"""),
    code("""
rows = []
for k in [1, 10, 100, 1000]:
    rows.append({"releases k": k, "exact": gaussian_epsilon(DELTA, noise_multiplier=5.0, steps=k),
                 **{name: get_epsilon(noise_multiplier=5.0, sample_rate=1.0, steps=k, delta=DELTA, accountant=name)
                    for name in ["prv", "rdp"]}})
composition = pd.DataFrame(rows)
assert (composition["prv"] >= composition["exact"] - 1e-6).all() and (composition["prv"] <= composition["exact"] + 0.05).all()
assert (composition["rdp"] > composition["prv"]).all(), "RDP's conversion to (ε, δ) is looser than PRV"
composition.round(3)
"""),
    md(r"""
DP-SGD never touches all the data at once: each step uses a **Poisson sample** — every record joins the
batch independently with probability $q$. A record that is probably not in the batch is hard to detect
from it: **privacy amplification by subsampling**. One step at the same $\sigma$:
"""),
    code("""
amplification = pd.DataFrame([
    {"sample rate q": q, "ε of one step (PRV)": get_epsilon(noise_multiplier=1.0, sample_rate=q, steps=1,
                                                              delta=DELTA, accountant="prv")}
    for q in [1.0, 0.1, 0.01]])
assert amplification["ε of one step (PRV)"].is_monotonic_decreasing, "a smaller sample rate spends less"
amplification.round(4)
"""),
    md(r"""
## The budget of a training run: RDP vs PRV

A DP-SGD run with batch size $B$ on $N$ examples has $q = B/N$ and $E/q$ steps for $E$ epochs.
`epsilon_curve` asks both accountants for ε after a number of steps. The same training is reported at
a noticeably smaller ε by PRV: the guarantee did not change, only the tightness of its analysis.
"""),
    code("""
N = len(D)
q = BATCH_SIZE / N
steps = int(EPOCHS / q)
curves = pd.concat([epsilon_curve(noise_multiplier=s, sample_rate=q, steps=steps, delta=DELTA, points=CURVE_POINTS)
                    .assign(sigma=s) for s in SIGMAS])
at_one = curves[curves["sigma"] == (1.0 if 1.0 in SIGMAS else SIGMAS[0])]
wide = at_one.pivot(index="step", columns="accountant", values="epsilon")
assert (wide["prv"] <= wide["rdp"]).all(), "PRV should never report more than RDP"
print(f"N = {N}, q = {q:.4f}, {steps} steps; final ε at σ = 1: RDP {wide['rdp'].iloc[-1]:.2f}, "
      f"PRV {wide['prv'].iloc[-1]:.2f}")
static_figure(at_one, x="epoch", y="epsilon", hue="accountant", title=f"ε over training (σ = 1, q = {q:.4f})");
"""),
    md("""
The same curves for every noise multiplier of the precomputed grid (the slider works on the static
site), then a live explorer that recomputes them for any σ and batch size (needs a running kernel).
"""),
    code("""
slider_figure(curves, slider="sigma", x="epoch", y="epsilon", hue="accountant",
              title="ε over training; slider: noise multiplier σ")
"""),
    code("""
def budget(sigma=1.0, batch_size=BATCH_SIZE):
    rate = min(1.0, batch_size / N)
    return epsilon_curve(noise_multiplier=sigma, sample_rate=rate, steps=int(EPOCHS / rate), delta=DELTA, points=5)

live_explorer(budget, x="epoch", y="epsilon", hue="accountant", title="ε over training",
              sigma=(0.5, 3.0, 0.1), batch_size=(64, 2048, 64))
"""),
    md(r"""
## Exercise

```{exercise}
:label: privacy-dp-basics-ex1

With σ = 1 and batch size 256 on this corpus, how many epochs can you train before ε exceeds 8 at
δ = 10⁻⁵, according to RDP and according to PRV? Use `get_epsilon` (or `epsilon_curve`). Which number
would you report, and why is it not "cheating" to pick the smaller ε?
```

```{solution} privacy-dp-basics-ex1
:class: dropdown

Loop over epochs $E$ with `steps = int(E * N / 256)` and call
`get_epsilon(noise_multiplier=1.0, sample_rate=256 / N, steps=steps, delta=1e-5, accountant=...)` for
`"rdp"` and `"prv"`. PRV allows noticeably more epochs for the same ε. Both are *upper bounds* on the
privacy loss of the very same algorithm; PRV's numerical composition is simply tighter than the RDP
conversion, so reporting it is legitimate — as long as the batches really were Poisson-sampled, which is
why `trustml.privacy.DPSGD` refuses to report an ε otherwise.
```

## Summary

- (ε, δ)-DP bounds how much any single record can change the output distribution; it caps every
  membership-inference attack (TPR ≤ e^ε·FPR + δ).
- The Gaussian mechanism adds noise proportional to the sensitivity; its exact profile matches the
  definition.
- Privacy loss adds up over releases (composition) and shrinks with Poisson subsampling; accountants
  turn a training schedule into one (ε, δ), PRV more tightly than RDP.
"""),
])
