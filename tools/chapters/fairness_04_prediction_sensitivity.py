"""Source of book/fairness/04_prediction_sensitivity.ipynb
(run: python -m tools.chapters.fairness_04_prediction_sensitivity)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/fairness/04_prediction_sensitivity.ipynb", [
    md("""
# Prediction sensitivity: how much does a prediction depend on gender?

Group metrics compare error rates across groups; they say nothing about a *single* prediction. Krishna
et al. (2022, "Measuring Fairness of Text Classifiers via Prediction Sensitivity") ask instead: if the
parts of this input that reveal the protected attribute moved a little, how much would the prediction
move? Their **accumulated prediction sensitivity** (APS) takes the gradient of the task classifier with
respect to its input features and weights each feature by how much it encodes the attribute — judged by
a second model that predicts the attribute. The older **counterfactual** metric swaps the protected
words (*he → she*, *John → Mary*) and measures the change in the prediction.

Neither can be checked on real data: nobody knows how much a real classifier *should* depend on gender.
So this chapter plants the dependence with a knob and checks that both metrics follow the knob.

**Learning objectives**

- State APS $= \\sum_j v_j\\, |\\partial f_j / \\partial x|\\, w$, the roles of the task classifier (TC),
  the protected-status model (PSM), the feature weights $w$ and the class weights $v$, and compute it
  with `trustml.fairness.sensitivity.prediction_sensitivity`.
- Compute the counterfactual gap with `trustml.fairness.counterfactual.counterfactual_gap` on the same texts.
- Verify on data with a known, controlled gender dependence that the metrics rise with it.
- Explain the two places where the metrics disagree: **proxies** the swap list does not cover, and
  **saturation** of a confident classifier's probabilities.

*Expected runtime: about 15 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
# Tests set QUICK = True: fewer texts and seeds.
QUICK = False
SEED = 0
# Texts per data set, training epochs, training seeds averaged per degree.
N_TEXTS = 3000
EPOCHS = 6
N_SEEDS = 4
# Degrees of the planted gender dependence (0 = none, 1 = strong), share of texts that name the gender.
DEGREES = [0.0, 0.25, 0.5, 0.75, 1.0]
EXPLICIT_RATE = 0.7
# The slider twin: shares of explicit texts (one seed each).
SLIDER_EXPLICIT_RATES = [0.1, 0.4, 0.7, 1.0]
""", tags=["parameters"]),
    code("""
if QUICK:
    N_TEXTS, N_SEEDS, SLIDER_EXPLICIT_RATES = 2000, 3, [0.1, 0.7]
"""),
    md("""
## Accumulated prediction sensitivity

Let $x = (x_1, \\dots, x_F)$ be the input features, $f_1, \\dots, f_C$ the task classifier's outputs
(class probabilities) and $g$ a protected-status model that predicts the attribute from the same input.

$$
\\mathrm{APS}(x) \\;=\\; \\sum_{j=1}^{C} v_j \\sum_{i=1}^{F} \\left|\\frac{\\partial f_j}{\\partial x_i}\\right| w_i ,
\\qquad
w_i = \\frac{\\sum_a |\\partial g_a / \\partial x_i|}{\\sum_k \\sum_a |\\partial g_a / \\partial x_k|},
\\qquad v_j = \\tfrac{1}{C}.
$$

- **Features.** For a text model, $x_t$ is a scale on the embedding of token $t$ (evaluated at 1), so
  $\\partial f/\\partial x_t = \\langle \\partial f/\\partial e_t, e_t\\rangle$: the derivative with respect
  to the token's *presence*. (`features="embedding"` uses the norm of the embedding gradient instead;
  `features="dense"` takes bag-of-words vectors.)
- **$w$** (`feature_weights`): `"psm_gradient"` — the features the PSM relies on, normalised to sum
  to 1 (it finds proxies, such as a hobby that predicts gender, as well as *he*/*she*);
  `"protected_terms"` — uniform on the listed gender words (no PSM, blind to proxies); `"uniform"` — all
  tokens (plain sensitivity, attribute-agnostic).
- **$v$** (`class_weights`): `"uniform"`, `"predicted"` ($v_j = f_j(x)$) or `"argmax"`.
- **$f$** (`output`): probabilities, or logits (`output="logit"`), which never saturate.

The dataset score is the mean over examples. `tests/fairness/test_sensitivity.py` checks the gradients
against finite differences on small models and against the closed form of logistic regression.

## Data with a known answer

`planted_attribute_task` writes short candidate descriptions with a skill word (the legitimate signal),
a role and a hobby. Most texts name the candidate and use a pronoun; the rest are anonymous. Hobbies are
planted **proxies** of gender (*netball*, *rugby*, …) that are *not* on the swap list. The label
follows a logistic model whose gender coefficient is the **degree** $d$:

$$P(\\text{hire} \\mid s, \\text{gender}) = \\sigma\\big(1.5\\,(2s-1) + 2d\\,(2[\\text{male}]-1)\\big).$$
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from trustml.fairness.sensitivity import planted_attribute_task, sensitivity_vs_degree
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

torch.set_num_threads(1)  # tiny models: on a shared CPU, one thread is faster than two
setup_plotly()
example = planted_attribute_task(8, degree=1.0, seed=SEED)
example[["text", "gender", "skill", "hire_probability", "label"]]
"""),
    code("""
cells = planted_attribute_task(4000, degree=1.0, seed=SEED)
cells.groupby(["skill", "gender"])["label"].mean().unstack().round(2).rename_axis(columns="P(hire) at degree 1")
"""),
    md("""
## Both metrics against the planted degree

For each seed: fit the tokenizer and the PSM (an embedding classifier predicting gender) on the training
texts; for each degree, train the TC on that degree's labels and audit it on held-out texts with four
scores — APS (probabilities), APS on logits, APS with $w$ on the swap-list words, and the counterfactual
gap $\\tfrac12 \\sum_j |f_j(x) - f_j(x')|$ with $x'$ the gender-swapped text.
"""),
    code("""
tables, audits = [], {}
for seed in tqdm(range(SEED, SEED + N_SEEDS), desc="seeds"):
    table, audits[seed] = sensitivity_vs_degree(DEGREES, n=N_TEXTS, explicit_rate=EXPLICIT_RATE, epochs=EPOCHS,
                                                seed=seed)
    tables.append(table)
results = pd.concat(tables, ignore_index=True)
print(f"PSM accuracy (predicting gender from the text): {results['psm_accuracy'].mean():.3f}")
by_degree = results.pivot_table(index="degree", columns="metric", values="value")  # mean over seeds
by_degree.round(4)
"""),
    code("""
# Key result: prediction sensitivity rises with the planted dependence, at every step (mean over seeds).
logit_aps = by_degree["aps_logit"].to_numpy()
steps = np.diff(logit_aps)
print("APS (logits) per degree:", np.round(logit_aps, 3), "| steps:", np.round(steps, 3))
assert (steps > 0).all(), "APS should increase with the degree of gender dependence"
for metric in ["aps", "aps_terms", "counterfactual_gap"]:
    assert by_degree[metric].iloc[-1] > 1.5 * by_degree[metric].iloc[0], f"{metric} should rise with the degree"
"""),
    code("""
relative = results.groupby(["degree", "metric"], as_index=False)["value"].mean()
relative["score / score at the top degree"] = relative["value"] / relative.groupby("metric")["value"].transform("last")
static_figure(relative, x="degree", y="score / score at the top degree", hue="metric",
              title="Every metric rises with the planted gender dependence");
"""),
    md("""
All four rise. They do not rise *alike*: the probability-based APS flattens at the top while the logit
APS and the counterfactual gap keep growing. That is the first disagreement.

## Where the metrics disagree, and why

**1. Saturation.** A gradient is local. When the classifier is confident, $p(1-p)$ is small and the
probabilities are flat around the input, so $|\\partial f/\\partial x|$ is small even though swapping
*he* for *she* — a finite move — changes the prediction a lot. Logits do not saturate, which is why this
chapter asserts monotonicity on the logit APS. Per example at the top degree: the probability APS is
largest for predictions near 0.5 and small for confident ones, while the counterfactual gap is not.
"""),
    code("""
top = audits[SEED][DEGREES[-1]].examples
top["confidence"] = pd.cut((top["p_hire"] - 0.5).abs(), [0, 0.2, 0.35, 0.5], labels=["low", "medium", "high"])
named = top[top["has_swap_term"]]
named.groupby("confidence", observed=True)[["aps", "aps_logit", "counterfactual_gap"]].mean().round(4)
"""),
    md("""
**2. Proxies.** The counterfactual gap only sees words on the swap list. On anonymous texts there is
nothing to swap, so the gap is exactly zero — yet the classifier still treats *netball* and *rugby*
players differently, because the hobby predicts gender and gender predicts the label. The PSM learned
the proxy, so APS with PSM weights sees it; APS with $w$ on the swap-list words is as blind as the
counterfactual.
"""),
    code("""
top["text kind"] = np.where(top["has_swap_term"], "names the gender", "anonymous")
proxy_view = top.groupby("text kind")[["aps", "aps_terms", "counterfactual_gap"]].mean()
print(proxy_view.round(4))
assert proxy_view.loc["anonymous", "counterfactual_gap"] == 0
assert proxy_view.loc["anonymous", "aps"] > 0.5 * proxy_view.loc["names the gender", "aps"]
top[~top["has_swap_term"]].sort_values("aps", ascending=False)[["text", "p_hire", "aps", "counterfactual_gap"]].head(5)
"""),
    md("""
## How much of the data names the gender?

The slider moves the share of texts that name the candidate. With few explicit texts the counterfactual
gap sees little of the planted dependence (there is little to swap), while APS, through the PSM,
still follows the degree. Precomputed with one seed per setting: it moves on the static site too.
"""),
    code("""
grid = []
for rate in tqdm(SLIDER_EXPLICIT_RATES, desc="explicit rates"):
    table, _ = sensitivity_vs_degree(DEGREES, n=N_TEXTS, explicit_rate=rate, epochs=EPOCHS, seed=SEED)
    grid.append(table)
grid = pd.concat(grid, ignore_index=True)
slider_figure(grid, slider="explicit_rate", x="degree", y="value", hue="metric",
              title="Metrics vs planted degree; slider: share of texts that name the gender")
"""),
    code("""
def explore(explicit_rate=0.7, proxy_strength=0.8):
    table, _ = sensitivity_vs_degree([0.0, 0.5, 1.0], n=1500, explicit_rate=explicit_rate,
                                     proxy_strength=proxy_strength, epochs=EPOCHS, seed=SEED)
    return table

live_explorer(explore, x="degree", y="value", hue="metric", explicit_rate=(0.0, 1.0, 0.1),
              proxy_strength=(0.5, 1.0, 0.1))
"""),
    md("""
## Summary

- APS combines *how much the prediction moves* (TC gradients) with *which features carry the attribute*
  (PSM gradients); the counterfactual gap measures the change under an explicit word swap.
- On data with a planted dependence both rise with it; the logit APS rises at every step.
- The counterfactual gap misses dependence routed through proxies that are not on its list; the
  probability APS under-reports confident (saturated) predictions. Report which $w$, $v$ and $f$ you
  used — they change the answer.

## Exercise

```{exercise}
:label: fairness-sensitivity-ex1

Add the hobby words to the swap list, e.g. `GenderSwapper(extra_pairs=[("rugby", "netball"),
("boxing", "ballet")])`, and pass it to `counterfactual_gap` on the anonymous texts of the top degree
(`text_predictor` gives the classifier's probabilities). What happens to the gap there, and what does
this say about the counterfactual metric?
```

```{solution} fairness-sensitivity-ex1
:class: dropdown

The gap on anonymous texts becomes positive: swapping *rugby* for *netball* now changes the prediction,
because the classifier learned the hobby as a gender cue. The counterfactual metric is only as good as
its list: it measures exactly the dependencies someone thought of in advance. APS with PSM weights found
the proxy without being told, because the PSM learned that the hobby predicts gender. (The flip side:
APS is only as good as the PSM — a proxy the PSM has not learned is invisible to it.)
```

```{exercise}
:label: fairness-sensitivity-ex2

Recompute APS on the top-degree classifier with `class_weights="predicted"` and with
`feature_weights="uniform"`. Which one changes the ranking of the examples, and why?
```

```{solution} fairness-sensitivity-ex2
:class: dropdown

For two classes, $|\\partial f_0/\\partial x| = |\\partial f_1/\\partial x|$ (the probabilities sum to one),
so any $v$ with $v_0 + v_1 = 1$ gives the same APS: `"predicted"` changes nothing here (it matters with
three or more classes). `feature_weights="uniform"` does change it: it averages the sensitivity over
**all** tokens, so examples where the skill word moves the prediction a lot score high although that
dependence is legitimate. The PSM weights are what make APS a *fairness* metric rather than a
general robustness score.
```
"""),
])
