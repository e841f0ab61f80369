"""Source of book/privacy/02_fast_dpsgd.ipynb (run: python -m tools.chapters.privacy_02_fast_dpsgd)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/privacy/02_fast_dpsgd.ipynb", [
    md(r"""
# Fast DP-SGD: per-example clipping without per-example gradients

DP-SGD (Abadi et al. 2016) clips **each example's** gradient to norm $C$ before summing and adding
noise. Deep-learning frameworks compute the gradient of a *sum* of losses, never the per-example terms,
so a direct implementation is slow — up to two orders of magnitude for NLU models. This chapter shows
why, derives the two tricks that remove the cost (ghost norms and book-keeping), checks trustml's
engine against the slow definition, times it against Opacus, and compares per-example with micro-batch
clipping.

**Learning objectives**

- Explain where the time and memory of per-example gradients go, and estimate them for a model.
- Derive the ghost norm of a Linear and an Embedding layer and the book-keeping clipped sum on a
  whiteboard.
- Verify that the fast engine computes exactly the clipped sum of the definition.
- Read a benchmark table of DP-SGD implementations, and explain why micro-batch clipping costs utility.

*Expected runtime: about 30 s with `QUICK = True`, about 2 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: fewer benchmark repeats, smaller corpus and grid
SEED = 0
N_DEVICES = 1000
BENCH_REPEATS = 7
EPOCHS = 5
BATCH_SIZE = 512
LR = 0.05
EPSILONS = [8.0, 4.0, 2.0]
MICRO_BATCH_SIZES = [1, 4, 16, 64]  # 1 = per-example clipping
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, BENCH_REPEATS, EPOCHS, EPSILONS, MICRO_BATCH_SIZES = 200, 2, 3, [8.0, 2.0], [1, 4, 16]
"""),
    code("""
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

from trustml.bench.dpsgd import benchmark_dpsgd, intent_batch, ratio_table, speedup_over_opacus
from trustml.data import load_intent_task
from trustml.models import EmbeddingClassifier, TransformerClassifier, accuracy
from trustml.privacy import ClippingEngine, naive_clipped_sum, per_example_gradient_memory, train_private
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
torch.set_num_threads(1)  # these models are small: one thread is as fast, and steady on a busy machine
setup_plotly();
"""),
    md(r"""
## Why per-example gradients are expensive

DP-SGD needs, for every example $i$ in a batch of $B$, the clipping factor
$c_i = \min\big(1, C/\lVert\nabla\ell_i\rVert\big)$ and then $\sum_i c_i\nabla\ell_i$. The two obvious
implementations:

- **a loop**: one forward/backward per example — $B$ small passes instead of one big one (no batching
  on the hardware);
- **materialise all per-example gradients** (Opacus' default "hooks" mode): one pass, but $B\times P$
  numbers for a model with $P$ parameters.
"""),
    code("""
x, y, vocab_size, num_classes = intent_batch(256)
models = {"embedding classifier": EmbeddingClassifier(vocab_size, num_classes),
          "small Transformer": TransformerClassifier(vocab_size, num_classes)}
memory = pd.DataFrame([{"model": name, "parameters": sum(p.numel() for p in m.parameters()),
                        "per-example gradients, B = 256 (MB)": per_example_gradient_memory(m, 256) / 2**20}
                       for name, m in models.items()])
bert = {"model": "BERT-base (for scale)", "parameters": 110_000_000}
bert["per-example gradients, B = 256 (MB)"] = 256 * bert["parameters"] * 4 / 2**20
memory = pd.concat([memory, pd.DataFrame([bert])], ignore_index=True)
memory.round(1)
"""),
    md(r"""
For BERT-base that is over 100 GB for one batch — more than any accelerator holds. The fast methods
below never store them: their extra memory is a $B\times T\times T$ Gram matrix per layer
($256\cdot 24^2$ floats ≈ 0.6 MB here).

## Ghost norms (the whiteboard part)

**Linear layer.** With input $A_i\in\mathbb R^{T\times d}$ (the $T$ token activations of example $i$)
and output gradient $G_i\in\mathbb R^{T\times p}$, the weight gradient is $\nabla W_i = G_i^\top A_i$.
Its squared norm never needs the $p\times d$ matrix:

$$\lVert G_i^\top A_i\rVert_F^2 = \operatorname{tr}(A_i^\top G_i G_i^\top A_i)
= \langle A_iA_i^\top,\; G_iG_i^\top\rangle ,$$

two $T\times T$ Gram matrices: cost $T^2(d+p)$ instead of $Tdp$. For $T=1$ it is
$\lVert a_i\rVert^2\lVert g_i\rVert^2$. The engine takes whichever formula is cheaper, per layer
(Li et al. 2022). The bias gradient is $\sum_t g_{it}$, and its squared norm
$\sum_{t,s}\langle g_{it}, g_{is}\rangle$ is the sum of the entries of $G_iG_i^\top$, already computed.
Layers that read the same input, such as attention's query, key and value projections, share
$A_iA_i^\top$. Flat clipping needs only the sum of their squared norms, and
$\sum_l\langle A_iA_i^\top, G_{l,i}G_{l,i}^\top\rangle = \langle A_iA_i^\top, [G_q\,G_k\,G_v]_i[G_q\,G_k\,G_v]_i^\top\rangle$.
So one Gram matrix of the joined gradients replaces three.

**Embedding layer.** Row $v$ of $\nabla E_i$ is $\sum_{t:\,\mathrm{id}_t=v} g_t$, so

$$\lVert\nabla E_i\rVert^2 = \sum_{t,s}[\mathrm{id}_t=\mathrm{id}_s]\,\langle g_t, g_s\rangle ,$$

no $V\times d$ matrix per example. One subtlety: PyTorch never updates the **padding row**, so the true
per-example gradient excludes padding positions — counting them would over-estimate the norm and clip
too much.

**LayerNorm**: the per-example gradients $\sum_t g_t\odot\hat x_t$ are only $d$ numbers; compute them
(with $\hat x_t = (x_t-\mu_t)/\sqrt{\sigma_t^2+\epsilon}$ rebuilt from the mean and inverse deviation that
autograd saved in the forward pass).

## Book-keeping: the clipped sum for the price of one gradient

Once the $c_i$ are known, the clipped sum of a Linear layer is

$$\sum_i c_i G_i^\top A_i = (c\cdot G)^\top A ,$$

one matrix product over all $B\cdot T$ rows — exactly the cost of the ordinary weight gradient, from
the same stored $A$ and $G$ (Bu et al. 2023). The alternative, **ghost clipping** (Li et al. 2022), runs
a second backward pass on $\sum_i c_i\ell_i$; trustml uses it only for layers whose rule has no
book-keeping sum. And because trustml's first backward asks autograd for the output gradients $G$ only,
it skips the weight-gradient products entirely: the one weight-gradient product that is computed is the
clipped one.

## Check: the engine computes the definition

On a real batch of the small Transformer, in float64: the engine's clipped sum against the plain loop
(one backward per example, clip, sum).
"""),
    code("""
torch.manual_seed(SEED)
check_model = TransformerClassifier(vocab_size, num_classes).double()
batch = (x[:32], y[:32])
loss_fn = lambda model, b: nn.functional.cross_entropy(model(b[0]), b[1], reduction="none")
probe = ClippingEngine(check_model, max_grad_norm=1e9)  # first only the norms, to pick C = their median
C = probe.clipped_sum(loss_fn(check_model, batch)).norms.median().item()
probe.remove()
engine = ClippingEngine(check_model, max_grad_norm=C)
stats = engine.clipped_sum(loss_fn(check_model, batch))
fast = {name: p.grad.clone() for name, p in check_model.named_parameters()}
engine.remove()
slow = naive_clipped_sum(check_model, loss_fn, batch, max_grad_norm=C)
worst = max((fast[n] - slow[n]).abs().max().item() for n in slow)
print(f"{stats.clipped_fraction:.0%} of the examples were clipped; largest difference {worst:.1e}")
assert worst < 1e-6, "the fast engine must equal the per-example loop"
"""),
    md(r"""
## Benchmark

`python -m trustml.bench dpsgd` times one training step (forward, backward, clipping, noise, Adam) on a
batch of 256 utterances padded to 24 tokens, for: the non-private step, trustml's engine (per-example
and micro-batch clipping), Opacus 1.6 in its `hooks` (materialised per-example gradients) and `ghost`
(ghost clipping) modes, and the naive loop. Each entry is the median step time divided by the
non-private step's; the methods take turns so that load on the machine affects them alike. Below is the
same code in quick mode; run the command for more repeats, or with `--device cuda` on a GPU.
"""),
    code("""
bench = benchmark_dpsgd(quick=True, repeats=BENCH_REPEATS, seed=SEED, progress=True)
table = ratio_table(bench)
print(table.round(2).to_string())
fast_ratio = table.loc["trustml_per_example"]
assert (fast_ratio * 5 < table.loc["naive_loop"]).all(), "the engine should be far faster than the loop"
speedup = speedup_over_opacus(bench)  # Opacus' fastest mode's step time / trustml per_example's
print({model: round(value, 2) for model, value in speedup.items()})
assert speedup["embedding"] > 1, "and faster than Opacus on the embedding model"
from trustml.viz import glue  # for the book's front page

glue("dpsgd_ratio_transformer", float(fast_ratio["transformer"]))
glue("dpsgd_ratio_embedding", float(fast_ratio["embedding"]))
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 3.5))
table.drop(index="naive_loop").plot.bar(ax=ax, logy=True)
ax.axhline(1, color="k", lw=0.8)
ax.set_ylabel("step time / non-private"); ax.set_title("One DP-SGD step (naive loop omitted: off the chart)")
fig.tight_layout()
"""),
    md(r"""
## Micro-batch clipping: faster for naive engines, worse for utility

Micro-batch clipping (TF Privacy's `num_microbatches`; used by eDP-SGD to cut the cost of per-example
gradients) clips the **mean gradient of each micro-batch** of $m$ examples instead of each example. It
is still example-level DP, but look at the sensitivity under adding or removing one example: the
example's micro-batch mean can swing from one clipped vector to another, so the sum can change by up to
$2C$ (not $C$). trustml therefore adds noise $\sigma\cdot 2C$ in this mode and assigns examples to
micro-batches at random, independently, so that one example affects only its own micro-batch. With
ghost norms the per-example mode is as fast anyway (see the table), and it is much more accurate at the
same ε:
"""),
    code("""
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)

def train_and_score(epsilon, micro_batch_size, seed=SEED, epochs=EPOCHS, batch_size=BATCH_SIZE):
    mode = "per_example" if micro_batch_size == 1 else "micro_batch"
    torch.manual_seed(seed)
    run = train_private(EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes), task.train,
                        epsilon=epsilon, epochs=epochs, batch_size=batch_size, lr=LR, max_grad_norm=1.0, mode=mode,
                        micro_batch_size=None if mode == "per_example" else micro_batch_size, seed=seed)
    return {"epsilon": epsilon, "micro-batch size": micro_batch_size, "mode": mode,
            "test accuracy": accuracy(run.model, task.test), "reported epsilon": run.epsilon}

grid = pd.DataFrame([train_and_score(e, m) for e in EPSILONS for m in MICRO_BATCH_SIZES])
grid.pivot(index="micro-batch size", columns="epsilon", values="test accuracy").round(3)
"""),
    code("""
for epsilon, part in grid.groupby("epsilon"):
    per_example = part.loc[part["micro-batch size"] == 1, "test accuracy"].item()
    assert per_example > part.loc[part["micro-batch size"] >= 16, "test accuracy"].max() + 0.05, \\
        f"per-example clipping should beat large micro-batches at ε = {epsilon}"
assert (grid["reported epsilon"] <= grid["epsilon"] + 1e-9).all()
static_figure(grid, x="micro-batch size", y="test accuracy", hue="epsilon", logx=True,
              title="Same ε, coarser clipping units: less accuracy");
"""),
    code("""
slider_figure(grid, slider="epsilon", x="micro-batch size", y="test accuracy", logx=True,
              title="Accuracy against micro-batch size; slider: ε")
"""),
    code("""
def explore(epsilon=4.0, micro_batch_size=4):
    rows = [train_and_score(epsilon, m, epochs=2) for m in sorted({1, micro_batch_size})]
    return pd.DataFrame(rows)

live_explorer(explore, x="micro-batch size", y="test accuracy", title="Re-trained for each setting (2 epochs)",
              epsilon=(1.0, 8.0, 1.0), micro_batch_size=[2, 4, 8, 16, 32, 64])
"""),
    md(r"""
## Exercise

```{exercise}
:label: privacy-fast-dpsgd-ex1

For a Linear layer with $d$ inputs and $p$ outputs applied to $T$ tokens, when is the ghost norm
$\langle A_iA_i^\top, G_iG_i^\top\rangle$ cheaper than forming $G_i^\top A_i$? Which formula does the engine
choose for the Transformer's feed-forward input layer ($d=64$, $p=128$) at $T=24$, and at $T=512$?
```

```{solution} privacy-fast-dpsgd-ex1
:class: dropdown

The ghost norm costs about $T^2(d+p)$ multiply-adds per example, the direct gradient $Tdp$, so the ghost
norm wins when $T(d+p) < dp$, i.e. $T < dp/(d+p)$. For $d=64$, $p=128$: $dp/(d+p) = 8192/192 \approx
42.7$. At $T=24$ the engine uses the ghost norm; at $T=512$ it forms the $128\times 64$ per-example
gradient (one layer at a time, so memory stays small). With padding trimmed — tokens whose output
gradient is zero are dropped first — the effective $T$ is the longest real utterance in the batch.
```

## Summary

- Per-example gradients are slow to loop over and too big to store; neither is needed.
- Ghost norms give each example's gradient norm from the layer's input and output gradient; the
  book-keeping sum gives the clipped gradient for the price of one ordinary weight gradient.
- The engine equals the per-example definition to float64 precision; on this machine it runs one
  DP-SGD step within a small factor of a non-private step.
- Micro-batch clipping doubles the sensitivity and clips coarser units: at the same ε it is less
  accurate, and with ghost norms it is not even faster.
"""),
])
