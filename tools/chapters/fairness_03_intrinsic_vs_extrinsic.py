"""Source of book/fairness/03_intrinsic_vs_extrinsic.ipynb
(run: python -m tools.chapters.fairness_03_intrinsic_vs_extrinsic)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/fairness/03_intrinsic_vs_extrinsic.ipynb", [
    md("""
# Intrinsic vs extrinsic bias: do they agree?

The two previous chapters measured bias in two places: in a deployed classifier's errors (extrinsic)
and inside an encoder's vectors (intrinsic). If intrinsic metrics predicted extrinsic harm, one could
audit an encoder once and skip auditing every application. Studies that tested this — Goldfarb-Tarrant
et al. (2021) for static embeddings, Cao et al. (2022) and others for contextual encoders — mostly found
that the two **do not correlate**, and argued that part of the disagreement comes from measuring them
on **different words and data**. This chapter repeats the experiment in miniature, on encoders we can
vary, and reports what comes out.

**Learning objectives**

- Build encoder *variants* with different amounts of intrinsic bias: layers of a pretrained encoder, a
  projection-debiased version, a randomly initialised one.
- For each variant, compute an intrinsic score (CEAT) and an extrinsic gap (false-positive and score gaps
  of a toxicity classifier trained on the variant's features).
- Compute the Spearman rank correlation between them, with and without **aligning** the intrinsic test's
  words and contexts to the extrinsic benchmark — and read it honestly.

*Expected runtime: about 40 s with `QUICK = True` and a cold embedding cache (about 15 s warm), about
3 min at full size with a cold cache (2 CPU cores).*
"""),
    code("""
QUICK = False
SEED = 0
# Encoder variants: pretrained layers, projection-debiased layers, randomly initialised layers.
LAYERS = [1, 2, 3, 4, 5, 6]
DEBIAS_LAYERS = [2, 4, 6]
RANDOM_LAYERS = [2, 4, 6]
N_COMPONENTS = 2
# Downstream classifier: training comments, the test suite's harmless prefixes, planted data bias values.
N_TRAIN = 2000
SUITE_PREFIXES = ["", "honestly, ", "to be clear, "]
IDENTITY_BIASES = [0.0, 0.4, 0.8]
# CEAT: samples and contexts per word.
N_SAMPLES = 300
CONTEXTS_PER_WORD = 10
""", tags=["parameters"]),
    code("""
if QUICK:
    LAYERS, DEBIAS_LAYERS, RANDOM_LAYERS = [2, 4, 6], [6], [6]
    N_TRAIN, SUITE_PREFIXES, IDENTITY_BIASES, N_SAMPLES, CONTEXTS_PER_WORD = 400, [""], [0.0, 0.8], 100, 3
"""),
    md("""
## Encoder variants

- **Pretrained layers**: all-MiniLM-L6-v2 at several layers (sentence vector = mean of the layer's token
  vectors).
- **Projection-debiased** (after Bolukbasi et al. 2016 and SENT-DEBIAS, Liang et al. 2020): the
  *counterfactual* sentence pairs of counterfactual data augmentation — *"he is gay."* / *"he is
  straight."*, one pair per identity pair and frame — define a bias subspace (the top `N_COMPONENTS`
  principal directions of the pair differences), which is projected out of every vector. We chose
  projection over CDA **fine-tuning** of the encoder because it needs no training on 2 CPU cores; it
  uses the same counterfactual pairs, but changes the vectors, not the weights. The pairs use frames
  that are *not* in the test suite.
- **Random initialisation**: the same architecture and tokenizer with fresh random weights (seeded) — an
  encoder that has learned no associations at all.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from trustml.fairness import (
    ALIGNED_FRAMES, GENERIC_FRAMES, WEAT_TESTS, EmbeddingCache, EncoderView, aligned_association_test, ceat,
    context_corpus, counterfactual_pairs, identity_gaps, identity_test_suite, projection_debias, random_init_encoder,
    toxicity_training_set, train_toxicity_classifier,
)
from trustml.models import load_minilm
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
encoder = load_minilm()
cache = EmbeddingCache()
random_encoder = random_init_encoder(encoder, seed=SEED)
pairs = counterfactual_pairs()
print(pairs[:2])

variants = {}
for layer in LAYERS:
    variants[f"pretrained L{layer}"] = EncoderView(encoder, layer=layer, cache=cache)
for layer in DEBIAS_LAYERS:
    base = EncoderView(encoder, layer=layer, cache=cache)
    variants[f"debiased L{layer}"] = base.with_projection(
        projection_debias(base, pairs, n_components=N_COMPONENTS), name=f"debiased L{layer}")
for layer in RANDOM_LAYERS:
    variants[f"random init L{layer}"] = EncoderView(random_encoder, layer=layer, cache=cache)
kind = {name: name.split(" L")[0] for name in variants}
list(variants)
"""),
    md("""
## Extrinsic: the toxicity gap of a classifier on each variant's features

For each variant, a logistic regression is trained on the variant's sentence vectors of the synthetic
comments (chapter 1's training set) and evaluated on the identity test suite. The **extrinsic gap** is
signed: targeted identity terms minus their counterparts, for the false-positive rate at threshold 0.5
(`FPR gap`) and for the mean toxicity score on the suite's *harmless* sentences (`score gap`, which
needs no threshold and is less noisy). We train with several planted data biases: at
`identity_bias = 0` the training data say nothing about the terms, so any gap comes from the
representation; with a planted bias, the data push every variant the same way.
"""),
    code("""
suite = identity_test_suite(prefixes=SUITE_PREFIXES)
rows = []
for bias in tqdm(IDENTITY_BIASES, desc="planted bias"):
    train = toxicity_training_set(n=N_TRAIN, identity_bias=bias, seed=SEED)
    for name, view in variants.items():
        model = train_toxicity_classifier(train["text"], train["label"], features="encoder", view=view, seed=SEED)
        scores = model.predict_proba(suite[["text"]])[:, 1]
        gaps = identity_gaps(scores, suite)
        rows.append({"identity bias": bias, "variant": name, "kind": kind[name],
                     "accuracy": ((scores >= 0.5) == suite["label"]).mean(),
                     "FPR gap": gaps.fpr_gap, "score gap": gaps.score_gap})
extrinsic = pd.DataFrame(rows)
extrinsic.pivot(index="variant", columns="identity bias", values="score gap").round(3)
"""),
    code("""
extrinsic.pivot(index="variant", columns="identity bias", values="accuracy").round(3)
"""),
    md("""
## Intrinsic: CEAT, with three degrees of alignment

The same metric — CEAT's combined effect size — on three sets of words and contexts:

1. **not aligned**: WEAT 5 (European vs African American names, pleasant vs unpleasant) in generic
   contexts — an off-the-shelf social-bias test, as one would run it on an encoder before knowing the
   application;
2. **aligned words**: targets = the benchmark's targeted identity terms vs their counterparts,
   attributes = the insults vs praise words of its training data, in generic contexts
   (*"the word gay was written on the board."*);
3. **aligned words and data**: the same words in the benchmark's own sentences — identity terms in the
   suite's harmless frames (the very sentences whose false positives make the extrinsic gap), insults
   and praise in training-style frames.

Projection debiasing is applied to the contextual word vectors as to the sentence vectors.
"""),
    code("""
aligned = aligned_association_test()
intrinsic_specs = {
    "not aligned (WEAT 5)": (WEAT_TESTS["weat5"], context_corpus(
        WEAT_TESTS["weat5"], contexts_per_word=CONTEXTS_PER_WORD, seed=SEED)),
    "aligned words": (aligned, context_corpus(aligned, frames=GENERIC_FRAMES, contexts_per_word=CONTEXTS_PER_WORD,
                                               seed=SEED)),
    "aligned words and data": (aligned, context_corpus(aligned, frames=ALIGNED_FRAMES,
                                                       contexts_per_word=CONTEXTS_PER_WORD, seed=SEED)),
}
rows = []
for name, view in tqdm(variants.items(), desc="CEAT per variant"):
    for spec, (test, corpus) in intrinsic_specs.items():
        result = ceat(view, test, corpus=corpus, n_samples=N_SAMPLES, seed=SEED)
        rows.append({"variant": name, "intrinsic test": spec, "CES": result.combined_effect_size})
intrinsic = pd.DataFrame(rows)
intrinsic.pivot(index="variant", columns="intrinsic test", values="CES").round(3)
"""),
    md("""
## Do they agree? Spearman rank correlation across variants

One point per variant; $\\rho$ is the rank correlation between its intrinsic score and its extrinsic
gap (scipy's `spearmanr`), for each intrinsic test, extrinsic measure and planted data bias — over all
variants, and over the pretrained and debiased variants only (the random encoders sit far from the
rest on both axes and can dominate a rank correlation of a dozen points).
"""),
    code("""
joined = extrinsic.merge(intrinsic, on="variant")
rows = []
for (bias, spec), part in joined.groupby(["identity bias", "intrinsic test"]):
    for subset, rows_used in (("all variants", part), ("without random init", part[part["kind"] != "random init"])):
        for measure in ("FPR gap", "score gap"):
            result = spearmanr(rows_used["CES"], rows_used[measure])
            rows.append({"identity bias": bias, "intrinsic test": spec, "variants": subset, "extrinsic": measure,
                         "n": len(rows_used), "rho": result.statistic, "p": result.pvalue})
correlations = pd.DataFrame(rows)
correlations.pivot_table(index=["variants", "extrinsic", "intrinsic test"], columns="identity bias",
                         values="rho").round(2)
"""),
    code("""
# Consistency checks (robust whatever the correlations turn out to be):
n_variants = len(variants)
assert (correlations.loc[correlations["variants"] == "all variants", "n"] == n_variants).all()
assert correlations["rho"].between(-1, 1).all()
one = joined[(joined["identity bias"] == IDENTITY_BIASES[0]) & (joined["intrinsic test"] == "aligned words and data")]
assert np.isclose(spearmanr(one["CES"].rank(), one["score gap"].rank()).statistic,
                  np.corrcoef(one["CES"].rank(), one["score gap"].rank())[0, 1])  # Spearman = Pearson on ranks
# Robust facts about the variants: debiasing removes the aligned association it was built against, the random
# encoder is a much worse feature extractor, and the planted data bias raises the mean extrinsic gap.
ces = intrinsic.pivot(index="variant", columns="intrinsic test", values="CES")
for layer in DEBIAS_LAYERS:
    debiased, pretrained = ces.loc[f"debiased L{layer}"], ces.loc[f"pretrained L{layer}"]
    assert abs(debiased["aligned words and data"]) < abs(pretrained["aligned words and data"])
mean_accuracy = extrinsic.groupby("kind")["accuracy"].mean()
assert mean_accuracy["random init"] < mean_accuracy["pretrained"] - 0.1
mean_gap = extrinsic.groupby("identity bias")["score gap"].mean()
assert mean_gap[IDENTITY_BIASES[-1]] > mean_gap[IDENTITY_BIASES[0]]
"""),
    md("""
## Three views: intrinsic score against extrinsic gap

Each line is one intrinsic test; its points are the variants, sorted by their intrinsic score. A line
that only rises means perfect rank agreement ($\\rho = 1$); a zig-zag means disagreement. The static
figure shows the data-bias-free case; the slider steps through the planted data bias; the live explorer
retrains the classifiers for any bias (cached features make that a few seconds).
"""),
    code("""
scatter = joined.rename(columns={"CES": "intrinsic CES"})
static_figure(scatter[scatter["identity bias"] == IDENTITY_BIASES[0]], x="intrinsic CES", y="score gap",
              hue="intrinsic test", title="identity_bias = 0: gaps come from the representation only");
"""),
    code("""
slider_figure(scatter, slider="identity bias", x="intrinsic CES", y="score gap", hue="intrinsic test",
              title="Intrinsic CEAT vs extrinsic score gap, by planted data bias")
"""),
    code("""
def retrain(identity_bias=0.0):
    data = toxicity_training_set(n=N_TRAIN, identity_bias=identity_bias, seed=SEED)
    out = []
    for name, view in variants.items():
        model = train_toxicity_classifier(data["text"], data["label"], features="encoder", view=view, seed=SEED)
        gap = identity_gaps(model.predict_proba(suite[["text"]])[:, 1], suite).score_gap
        for spec in intrinsic_specs:
            out.append({"intrinsic CES": ces.loc[name, spec], "score gap": gap, "intrinsic test": spec})
    return pd.DataFrame(out)

live_explorer(retrain, x="intrinsic CES", y="score gap", hue="intrinsic test", identity_bias=(0.0, 0.95, 0.05))
"""),
    code("""
fig, axes = plt.subplots(1, len(intrinsic_specs), figsize=(12, 3.4), sharey=True)
part = scatter[scatter["identity bias"] == IDENTITY_BIASES[0]]
for ax, spec in zip(axes, intrinsic_specs):
    for k, group in part[part["intrinsic test"] == spec].groupby("kind"):
        ax.scatter(group["intrinsic CES"], group["score gap"], label=k)
        for _, r in group.iterrows():
            ax.annotate(r["variant"].split(" ")[-1], (r["intrinsic CES"], r["score gap"]), fontsize=7)
    rho = correlations[(correlations["identity bias"] == IDENTITY_BIASES[0]) & (correlations["intrinsic test"] == spec)
                       & (correlations["variants"] == "all variants") & (correlations["extrinsic"] == "score gap")]
    ax.set_title(f"{spec}: rho = {rho['rho'].item():+.2f}", fontsize="small")
    ax.set_xlabel("intrinsic CES")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("extrinsic score gap")
axes[0].legend(fontsize="small")
fig.tight_layout()
"""),
    code("""
def rho(bias, spec, subset="all variants", measure="score gap"):
    row = correlations[(correlations["identity bias"] == bias) & (correlations["intrinsic test"] == spec)
                       & (correlations["variants"] == subset) & (correlations["extrinsic"] == measure)]
    return row["rho"].item()

for bias in IDENTITY_BIASES:
    print(f"identity_bias = {bias}: " + ", ".join(
        f"{spec}: rho = {rho(bias, spec):+.2f} (without random init {rho(bias, spec, 'without random init'):+.2f})"
        for spec in intrinsic_specs))
"""),
    md("""
## What the numbers show

The printout above is this run's result. At full size with `SEED = 0` (12 variants) we measured, for
the score gap:

| planted data bias | not aligned (WEAT 5) | aligned words | aligned words and data |
|---|---|---|---|
| 0.0, all variants | +0.88 | +0.90 | +0.93 |
| 0.0, without random init | +0.78 | +0.83 | +0.90 |
| 0.4, without random init | +0.72 | +0.78 | +0.80 |
| 0.8, all variants | −0.36 | −0.34 | −0.37 |
| 0.8, without random init | +0.43 | +0.50 | +0.42 |

- **When only the representation differs** (`identity_bias = 0`), intrinsic and extrinsic scores agree
  in rank. Part of that agreement is cheap: the random encoders have neither associations nor useful
  features and sit at one end of both axes. Without them the agreement remains, and the test aligned
  with the benchmark's words *and* sentences agrees best — but only by a little (0.90 against 0.78), and
  a dozen related variants cannot resolve a difference that small. Projection debiasing lowers the
  aligned intrinsic score *and* the extrinsic gap (at `identity_bias = 0`, e.g. layer 4: gap 0.045 →
  0.012), which is most of the correlation among pretrained variants.
- **When the data carry the bias** (`identity_bias = 0.8`), the agreement breaks: every variant is
  trained on the same skewed comments, the gap is set mostly by the data, and the encoder that learned
  nothing (random initialisation) leans on the identity tokens as a shortcut and gets one of the largest
  gaps — so over all variants $\\rho$ turns negative. Among the pretrained variants a weak-to-moderate
  agreement remains (0.42–0.50), and alignment makes no consistent difference there.
- So, in this miniature, intrinsic metrics describe the representation, and whether that predicts
  downstream harm depends on where the downstream bias comes from. Aligning evaluation words and data
  helps at the margin; it cannot make an intrinsic audit see a bias that enters through the fine-tuning
  data. And a rank correlation over a handful of hand-picked, related variants is fragile — which
  variants one builds decides much of the answer (try the exercise).

```{exercise}
:label: fairness-ivse-ex1

Add two more variants: a projection-debiased version of the **random** encoder, and the pretrained last
layer debiased with `N_COMPONENTS = 8`. Where do they land, and what do they do to the correlations?
```

```{solution} fairness-ivse-ex1
:class: dropdown

`projection_debias(EncoderView(random_encoder, layer=6, cache=cache), pairs, n_components=2)` gives the
projection; add `view.with_projection(...)` to `variants` and rerun the cells below the variants. For the
random encoder the pair differences are nearly random directions, so removing two of them changes almost
nothing: the point barely moves. With eight components the pretrained encoder loses more of the
identity information: the aligned intrinsic score drops close to zero and the extrinsic gap at
`identity_bias = 0` shrinks, which adds a point near the origin and tends to *raise* the correlation —
a reminder that a correlation over hand-picked variants depends on which variants you pick.
```

```{exercise}
:label: fairness-ivse-ex2

Replace the extrinsic measure by the FPR gap and compare the correlation table. Why is the FPR gap a
noisier target than the score gap?
```

```{solution} fairness-ivse-ex2
:class: dropdown

The FPR gap counts harmless suite sentences whose score crosses 0.5: with 48 such sentences per term
(16 with `QUICK`) each term's FPR moves in steps of about 0.02 (0.06), and a score just below or above the
threshold flips it. The score gap averages the continuous scores instead, so small shifts in the
representation show up in it smoothly; rank correlations with the FPR gap are therefore more erratic.
```
"""),
])
