"""Source of book/fairness/01_group_fairness.ipynb (run: python -m tools.chapters.fairness_01_group_fairness)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/fairness/01_group_fairness.ipynb", [
    md("""
# Group fairness of a text classifier

A toxicity classifier that flags *"i am a gay person."* as toxic harms the people it is meant to
protect. This chapter measures such harm with **group (extrinsic) metrics** — error rates of the
deployed classifier compared across groups — puts confidence intervals on them, and tries the simplest
mitigation: group-specific decision thresholds.

**Learning objectives**

- Build an identity-term test suite in the style of functional tests: the same template, only the group
  term swapped.
- Compute per-group accuracy, false-positive rate (FPR), false-negative rate (FNR) and selection rate,
  and the demographic-parity and equalized-odds differences, with Fairlearn's `MetricFrame`
  (`trustml.fairness.group_metrics`), and read bootstrap confidence intervals.
- Apply Fairlearn's `ThresholdOptimizer` and measure what equalized odds costs in accuracy.
- Measure the same kind of gap for the intent classifier, by speaker attribute.

*Expected runtime: about 20 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
# Tests set QUICK = True: fewer bootstrap replicates, seeds and devices.
QUICK = False
SEED = 0
# Synthetic training comments, and the planted bias b: P(toxic | a targeted term is mentioned) = (1 + b) / 2.
N_TRAIN = 4000
IDENTITY_BIAS = 0.8
# Bootstrap replicates for the confidence intervals; training seeds for the mitigation experiment.
N_BOOT = 1000
N_SEEDS = 3
# The intent classifier: corpus size and epochs.
N_DEVICES = 600
EPOCHS = 3
""", tags=["parameters"]),
    code("""
if QUICK:
    N_TRAIN, N_BOOT, N_SEEDS, N_DEVICES, EPOCHS = 2000, 200, 2, 300, 2
"""),
    md("""
## An extrinsic benchmark that exists offline

Real audits of toxicity classifiers (Dixon et al. 2018; HateCheck, Röttger et al. 2021) use
**templated test suites**: one sentence frame filled with each identity term, so that any difference in
the classifier's behaviour is caused by the term alone. `trustml.fairness.identity_test_suite` writes
such a suite: 16 non-toxic and 16 toxic frames, three harmless prefixes, 12 identity terms in six
counterfactual pairs (*gay/straight*, *muslim/christian*, *black/white*, …).

The classifier is trained on synthetic comments (`toxicity_training_set`). Real comment data mention
some identities mostly in abusive comments — Dixon et al. found exactly this — and a classifier learns
the *term* as a cue for toxicity. Here that bias is **planted**, with a knob: a comment about a
*targeted* term (the first of each pair) is toxic with probability $(1 + b)/2$, any other comment with
probability $1/2$.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fairlearn.metrics import equalized_odds_difference
from fairlearn.postprocessing import ThresholdOptimizer
from tqdm.auto import tqdm

from trustml.data import load_intent_task
from trustml.fairness import (
    IDENTITY_PAIRS, group_accuracy, group_metrics, identity_gaps, identity_test_suite, toxicity_training_set,
    train_toxicity_classifier,
)
from trustml.models import EmbeddingClassifier, predict, train_classifier
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
suite = identity_test_suite()
train = toxicity_training_set(n=N_TRAIN, identity_bias=IDENTITY_BIAS, seed=SEED)
mentions = train[train["group"] != ""]
print(f"{len(train)} training comments, {len(suite)} test-suite sentences")
print("share toxic among training comments that mention a term:")
mentions.groupby("group")["label"].mean().round(2).sort_values(ascending=False).to_frame("P(toxic | term)").T
"""),
    code("""
# One template, every identity term: the rows differ only in the term.
suite[suite["template"] == "nontoxic-1-0"][["text", "label", "group"]].head(6)
"""),
    md("""
## Per-group error rates, with confidence intervals

A bag-of-words logistic regression (`train_toxicity_classifier(features="bow")`) at the default
threshold 0.5. `group_metrics(y_true, y_pred, *, sensitive_features=...)` wraps Fairlearn's
`MetricFrame`: per group, the accuracy, the selection rate $P(\\hat y = 1 \\mid g)$, the false-positive
rate $P(\\hat y = 1 \\mid y = 0, g)$ and the false-negative rate $P(\\hat y = 0 \\mid y = 1, g)$; and
the disparities

$$\\text{DP difference} = \\max_g P(\\hat y=1 \\mid g) - \\min_g P(\\hat y=1 \\mid g), \\qquad
\\text{EO difference} = \\max\\big(\\Delta_g \\mathrm{TPR}, \\Delta_g \\mathrm{FPR}\\big)$$

(Hardt et al. 2016), where $\\Delta_g$ is the largest minus the smallest value over groups. The 95 %
intervals come from `N_BOOT` bootstrap replicates that resample sentences within each
(group, true label) cell.
"""),
    code("""
classifier = train_toxicity_classifier(train["text"], train["label"], features="bow", seed=SEED)
scores = classifier.predict_proba(suite[["text"]])[:, 1]
predicted = (scores >= 0.5).astype(int)
report = group_metrics(suite["label"], predicted, sensitive_features=suite["group"], n_boot=N_BOOT, seed=SEED)
columns = ["accuracy", "false_positive_rate", "false_positive_rate_low", "false_positive_rate_high",
           "false_negative_rate", "selection_rate"]
report.by_group[columns].sort_values("false_positive_rate", ascending=False).round(3)
"""),
    code("""
report.disparities.round(3)
"""),
    code("""
table = report.by_group.sort_values("false_positive_rate")
fig, ax = plt.subplots(figsize=(7, 3.5))
for offset, (metric, colour) in enumerate([("false_positive_rate", "C3"), ("false_negative_rate", "C0")]):
    ax.errorbar(np.arange(len(table)) + 0.15 * offset, table[metric],
                yerr=[table[metric] - table[f"{metric}_low"], table[f"{metric}_high"] - table[metric]],
                fmt="o", color=colour, capsize=3, label=metric.replace("_", " "))
ax.set_xticks(np.arange(len(table)), table.index, rotation=45)
ax.set_ylabel("rate (95 % bootstrap CI)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
"""),
    code("""
gaps = identity_gaps(scores, suite)
targeted = [a for a, _ in IDENTITY_PAIRS]
print(f"FPR gap, targeted terms - counterparts: {gaps.fpr_gap:+.3f}; FNR gap: {gaps.fnr_gap:+.3f}")
# The numbers are Fairlearn's: the same function called directly agrees.
direct = equalized_odds_difference(suite["label"], predicted, sensitive_features=suite["group"])
assert np.isclose(report.disparities.loc["equalized_odds_difference", "value"], direct)
# Key result: the planted association shows up as false positives on the targeted groups' harmless sentences,
# and the equalized-odds interval excludes zero.
assert gaps.fpr_gap > 0.15, "targeted identity terms should be flagged more often"
assert report.disparities.loc["equalized_odds_difference", "ci_low"] > 0
"""),
    md("""
The pattern is the one Dixon et al. reported for a real classifier: harmless sentences that mention a
targeted identity are flagged (high FPR), and toxic ones about it are caught more readily (low FNR) —
the term itself has become evidence of toxicity.

```{note}
Bootstrap intervals of a **max − min** over many groups are shifted upwards: in each replicate the
largest of several noisy rates is likely to be too large. With 12 groups the point estimate of a
difference can even sit at the edge of (or below) its interval. Per-group intervals, or the gap between
two named groups, are the reliable read-out; the difference's interval mostly tells you whether the gap
is far from zero.
```

## Mitigation: group-specific thresholds

Fairlearn's `ThresholdOptimizer` (Hardt et al. 2016) keeps the trained scorer and chooses a threshold
(randomising between two where needed) **per group** so that the groups' TPR and FPR match, maximising
accuracy under that constraint. It needs labelled data with group labels: we split the suite's frames
in half — thresholds are fitted on one half and evaluated on the frames of the other half. The
comparison that isolates the *constraint's* cost is with the best **single** threshold chosen on the same
dev half. The experiment is repeated over `N_SEEDS` training seeds and splits.
"""),
    code("""
frame_of = suite["template"].str.rsplit("-", n=1).str[0]  # the frame, without its prefix variant
rows = []
for seed in tqdm(range(SEED, SEED + N_SEEDS), desc="seeds"):
    train_s = toxicity_training_set(n=N_TRAIN, identity_bias=IDENTITY_BIAS, seed=seed)
    model = train_toxicity_classifier(train_s["text"], train_s["label"], seed=seed)
    frames = frame_of.unique()
    dev_frames = np.random.default_rng(seed).choice(frames, len(frames) // 2, replace=False)
    dev, test = suite[frame_of.isin(dev_frames)], suite[~frame_of.isin(dev_frames)]
    dev_scores, test_scores = model.predict_proba(dev[["text"]])[:, 1], model.predict_proba(test[["text"]])[:, 1]
    grid = np.linspace(0.05, 0.95, 19)
    best = grid[np.argmax([((dev_scores >= t) == dev["label"]).mean() for t in grid])]
    optimizer = ThresholdOptimizer(estimator=model, constraints="equalized_odds", prefit=True,
                                   predict_method="predict_proba")
    optimizer.fit(dev[["text"]], dev["label"], sensitive_features=dev["group"])
    decisions = {
        "threshold 0.5": (test_scores >= 0.5).astype(int),
        "best single threshold": (test_scores >= best).astype(int),
        "ThresholdOptimizer (equalized odds)": optimizer.predict(test[["text"]], sensitive_features=test["group"],
                                                                 random_state=seed),
    }
    for method, decision in decisions.items():
        r = group_metrics(test["label"], decision, sensitive_features=test["group"])
        rows.append({"seed": seed, "method": method, "accuracy": r.overall["accuracy"],
                     "equalized odds difference": r.disparities.loc["equalized_odds_difference", "value"],
                     "FPR difference": r.disparities.loc["false_positive_rate_difference", "value"]})
mitigation = pd.DataFrame(rows)
summary = mitigation.groupby("method")[["accuracy", "equalized odds difference", "FPR difference"]].mean()
summary.round(3)
"""),
    code("""
cost = summary.loc["best single threshold", "accuracy"] - summary.loc["ThresholdOptimizer (equalized odds)", "accuracy"]
before = summary.loc["threshold 0.5", "equalized odds difference"]
after = summary.loc["ThresholdOptimizer (equalized odds)", "equalized odds difference"]
print(f"equalized-odds difference: {before:.3f} at threshold 0.5 -> {after:.3f} with group thresholds")
print(f"accuracy cost of the constraint (best single threshold - ThresholdOptimizer): {cost:+.3f}")
assert after < before, "group-specific thresholds should shrink the equalized-odds difference"
"""),
    md("""
Read the cost with care. On held-out *frames* the equalized-odds difference shrinks but does not vanish:
thresholds fitted on some sentences are not exactly right on others. The accuracy cost of the
constraint — against the best single threshold on the same data — is within about a point of zero in
our runs (at full size: −0.009, i.e. the constrained thresholds were slightly *more* accurate), and its
sign changes with the seed: the planted term effect is mostly a *shift* of the targeted groups' scores,
which a per-group threshold undoes without losing accuracy. When groups differ in how *separable* they are,
equalized odds forces the better-served group down to the other's ROC curve and the cost is real.

## The trade-off over the threshold

One global threshold for everyone: how do each group's FPR and FNR move? The static figure
summarises targeted terms against their counterparts; the slider steps through the precomputed
thresholds (it works on the static site); the live explorer also retrains with another planted bias
(it needs a running kernel).
"""),
    code("""
thresholds = np.round(np.linspace(0.1, 0.9, 9), 2)
is_targeted = suite.groupby("group")["targeted"].first()

def per_group_rates(scores, threshold):
    r = group_metrics(suite["label"], (scores >= threshold).astype(int), sensitive_features=suite["group"])
    rates = r.by_group[["false_positive_rate", "false_negative_rate"]].rename(
        columns={"false_positive_rate": "FPR", "false_negative_rate": "FNR"})
    long = rates.reset_index().melt(id_vars="group", var_name="metric", value_name="error rate")
    return long.assign(threshold=threshold, targeted=long["group"].map(is_targeted))

grid = pd.concat([per_group_rates(scores, t) for t in thresholds], ignore_index=True)
summary_grid = (grid.assign(curve=grid["metric"] + np.where(grid["targeted"], ", targeted", ", counterpart"))
                .groupby(["threshold", "curve"], as_index=False)["error rate"].mean())
static_figure(summary_grid, x="threshold", y="error rate", hue="curve",
              title="Mean error rate of targeted terms vs counterparts");
"""),
    code("""
slider_figure(grid, slider="threshold", x="group", y="error rate", hue="metric",
              title="Per-group error rates at one global threshold")
"""),
    code("""
def live(threshold=0.5, identity_bias=IDENTITY_BIAS):
    data = toxicity_training_set(n=N_TRAIN, identity_bias=identity_bias, seed=SEED)
    model = train_toxicity_classifier(data["text"], data["label"], seed=SEED)
    return per_group_rates(model.predict_proba(suite[["text"]])[:, 1], threshold)

live_explorer(live, x="group", y="error rate", hue="metric", threshold=(0.05, 0.95, 0.05),
              identity_bias=(0.0, 0.95, 0.05))
"""),
    md("""
Moving one global threshold trades FPR against FNR for everybody, but the *gap* between targeted terms
and counterparts persists at every threshold: a single threshold cannot undo a shift that only some
groups' scores have.

## The intent classifier, by speaker attribute

The same metrics apply to any classifier. The smart-speaker intent classifier (the fairness overview's
model) is evaluated per speaker attribute with `group_accuracy`, which handles multi-class predictions.
The corpus gives the minority dialect other words for some requests and more recognition errors
(planted, after Koenecke et al. 2020); gender and age group change nothing in how utterances are
generated.
"""),
    code("""
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
torch.manual_seed(SEED)
intent_model = EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes)
train_classifier(intent_model, task.train, epochs=EPOCHS, seed=SEED)
intent_pred = predict(intent_model, task.test).argmax(-1).numpy()
intent_true = task.test.tensors[1].numpy()
reports = {attribute: group_accuracy(intent_true, intent_pred, sensitive_features=task.test_frame[attribute],
                                     n_boot=N_BOOT, seed=SEED)
           for attribute in ("dialect", "gender", "age_group")}
pd.concat({a: r.by_group for a, r in reports.items()}).round(3)
"""),
    code("""
pd.concat({a: r.disparities for a, r in reports.items()}).round(3)
"""),
    code("""
dialect = reports["dialect"].by_group
print(f"accuracy: majority {dialect.loc['majority', 'accuracy']:.3f}, "
      f"minority {dialect.loc['minority', 'accuracy']:.3f}")
assert dialect.loc["minority", "accuracy_high"] < dialect.loc["majority", "accuracy_low"], \\
    "the planted dialect gap should be resolved by the confidence intervals"
"""),
    md("""
The dialect gap is large and its intervals are well separated. For gender the difference's interval
starts near zero — and, as the note above explains, an interval for a max − min never quite reaches
zero, so "no gap" shows as an interval hugging zero rather than one centred on it.

```{exercise}
:label: fairness-group-ex1

Set `IDENTITY_BIAS = 0.0` in the parameters cell and rerun the chapter. What happens to the FPR gap,
to the equalized-odds difference and its interval, and to the accuracy cost of `ThresholdOptimizer`?
Which assertion would now fail, and why is that the right outcome?
```

```{solution} fairness-group-ex1
:class: dropdown

Without the planted association the term carries no information about toxicity in the training data,
so the classifier has no reason to use it: the FPR gap between targeted terms and counterparts is close
to zero (it changes sign with the seed), and the equalized-odds difference is small — its interval is
still above zero only because of the upward bias of a max − min over 12 noisy groups.
`ThresholdOptimizer` has little to correct and its accuracy cost is close to zero. The assertion
`gaps.fpr_gap > 0.15` fails — correctly: the chapter's claim is that the *planted* bias produces the
gap, and with no bias there is none to find.
```

```{exercise}
:label: fairness-group-ex2

Fit `ThresholdOptimizer` with `constraints="demographic_parity"` instead. Why is demographic parity a
questionable goal on this test suite (hint: what is the share of toxic sentences in each group)?
```

```{solution} fairness-group-ex2
:class: dropdown

Every group has exactly half toxic and half non-toxic sentences, so a perfect classifier already has
equal selection rates; demographic parity is then implied by accuracy and adds nothing. In real data the
base rates differ between groups, and demographic parity would force the classifier to flag the same
share of comments in each group whatever they say — it trades errors on one group for errors on another
rather than equalising error *rates* as equalized odds does.
```
"""),
])
