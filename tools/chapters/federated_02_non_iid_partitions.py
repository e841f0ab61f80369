"""Source of book/federated/02_non_iid_partitions.ipynb (run: python -m tools.chapters.federated_02_non_iid_partitions)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/federated/02_non_iid_partitions.ipynb", [
    md("""
# Non-IID partitions

Federated data are not a random split of one dataset: each client has its own label mix, its own
amount of data, its own style of language. To study that systematically, FedNLP (Lin et al., Findings
of NAACL 2022) partitions a centralized dataset in controlled ways. This chapter builds those partitions
(`trustml.federated.partition`, shaped like and partly built on flwr-datasets), plots them, and measures
how far federated training falls behind centralized training as the skew grows.

**Learning objectives**

- Partition a dataset IID, by label skew $q_k \\sim \\mathrm{Dir}(\\alpha p)$, by quantity skew
  $\\mathrm{Dir}(\\beta \\mathbf{1})$, by feature skew (clusters of sentence embeddings), naturally (one
  client per device) and with heavy-tailed client sizes.
- Read per-client label-distribution plots and a skew score (total-variation distance to the global mix).
- Measure the centralized-vs-FedAvg accuracy gap as $\\alpha$ shrinks, and try FedProx.

*Expected runtime: about 20 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: fewer devices, clients and rounds
SEED = 0
N_DEVICES = 500
N_CLIENTS = 50
ROUNDS = 30
CLIENTS_PER_ROUND = 10
N_SEEDS = 2
ALPHAS = [100.0, 10.0, 1.0, 0.1]
FEATURE_EMBEDDINGS = "tfidf"  # or "minilm": all-MiniLM-L6-v2 sentence vectors (minutes on a CPU, then cached)
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, N_CLIENTS, ROUNDS, CLIENTS_PER_ROUND = 300, 30, 15, 5
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustml.data import load_intent_task
from trustml.federated import label_counts, partition, plot_label_distributions
from trustml.federated.experiments import alpha_sweep, centralized_accuracy, seed_mean
from trustml.federated.partition import mean_tv_distance
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
frame = task.train_frame
print(f"{len(frame)} training utterances, {task.num_classes} intents, {frame['device_id'].nunique()} devices")
"""),
    md("""
## The FedNLP partitions

With $K$ clients and the global label prior $p$:

| partition | client $k$ gets |
|---|---|
| IID | a random equal share |
| label skew | $N/K$ rows whose labels follow $q_k \\sim \\mathrm{Dir}(\\alpha p)$; a label that runs out is back-filled |
| quantity skew | a share $s_k$ of the rows, $s \\sim \\mathrm{Dir}(\\beta \\mathbf{1})$, labels IID |
| feature skew | label skew applied to k-means clusters of sentence embeddings instead of labels |
| natural | the rows of one device (or domain) |
| heavy-tailed | log-normal sizes, labels IID (or label-skewed) |

Small $\\alpha$ concentrates $q_k$ on a few labels; $\\alpha \\to \\infty$ gives every client the global
mix. Each partitioner is a flwr-datasets `Partitioner` (`num_partitions`, `load_partition(i)`); IID,
quantity skew and natural reuse flwr-datasets' own `IidPartitioner`, `SizePartitioner` and
`NaturalIdPartitioner`. Feature skew embeds the texts with TF-IDF + truncated SVD by default (seconds);
`FEATURE_EMBEDDINGS = "minilm"` uses MiniLM sentence vectors instead (`sentence_embeddings`, cached on disk).
"""),
    code("""
options = {
    "IID": ("iid", {"num_partitions": N_CLIENTS, "seed": SEED}),
    "label skew α = 10": ("label_skew", {"num_partitions": N_CLIENTS, "alpha": 10.0, "seed": SEED}),
    "label skew α = 0.1": ("label_skew", {"num_partitions": N_CLIENTS, "alpha": 0.1, "seed": SEED}),
    "quantity skew β = 1": ("quantity_skew", {"num_partitions": N_CLIENTS, "beta": 1.0, "seed": SEED}),
    "feature skew α = 0.1": ("feature_skew", {"num_partitions": N_CLIENTS, "alpha": 0.1, "n_clusters": 12,
                                               "method": FEATURE_EMBEDDINGS, "seed": SEED}),
    "heavy-tailed sizes": ("heavy_tailed", {"num_partitions": N_CLIENTS, "tail": 1.5, "seed": SEED}),
    "natural (devices)": ("natural", {}),
}
partitioners = {name: partition(frame, kind, **opts)[0] for name, (kind, opts) in options.items()}
summary = pd.DataFrame({
    "clients": [p.num_partitions for p in partitioners.values()],
    "label skew (mean TV distance)": [mean_tv_distance(label_counts(p)) for p in partitioners.values()],
    "client size: min": [label_counts(p).sum(axis=1).min() for p in partitioners.values()],
    "client size: max": [label_counts(p).sum(axis=1).max() for p in partitioners.values()],
}, index=list(partitioners))
summary.round(3)
"""),
    code("""
fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharey=False)
for ax, name in zip(axes.flat, ["IID", "label skew α = 10", "label skew α = 0.1", "quantity skew β = 1",
                                "feature skew α = 0.1", "natural (devices)"]):
    plot_label_distributions(partitioners[name], max_num_partitions=20, axis=ax, title=name)
    ax.set_xlabel("client"); ax.set_ylabel("utterances")
fig.tight_layout()
"""),
    md("""
Each bar is a client, each colour an intent. Label skew with $\\alpha = 0.1$ leaves most clients with one
or two intents; feature skew skews the *words* clients use (clusters), and with them the labels only
partly; the natural device partition mixes both with heavy-tailed sizes.

## Centralized against federated, as α shrinks

The same model and optimiser: trained centrally on the pooled data, and with FedAvg on label-skewed
partitions ($K$ = `N_CLIENTS` clients, `CLIENTS_PER_ROUND` per round, one local epoch). FedProx adds the
proximal term $\\frac{\\mu}{2}\\lVert w - w_t \\rVert^2$ to the local loss, which limits client drift.
"""),
    code("""
seeds = list(range(SEED, SEED + N_SEEDS))
central = centralized_accuracy(task, epochs=3, seeds=seeds)
sweep = alpha_sweep(task, alphas=ALPHAS, num_partitions=N_CLIENTS, rounds=ROUNDS, devices_per_round=CLIENTS_PER_ROUND,
                    seeds=seeds, mus=(0.0, 0.1), eval_every=5, partition_seed=SEED)
sweep["training"] = np.where(sweep["mu"] > 0, "FedProx μ = 0.1", "FedAvg")
final = seed_mean(sweep[sweep["round"] == ROUNDS], ["alpha", "training"])
final["gap to centralized"] = central - final["accuracy"]
print(f"centralized accuracy (3 epochs): {central:.3f}")
final.pivot(index="alpha", columns="training", values="gap to centralized").sort_index(ascending=False).round(3)
"""),
    code("""
fedavg_gap = final[final["training"] == "FedAvg"].set_index("alpha")["gap to centralized"]
print("FedAvg gap to centralized by α:", {a: round(float(g), 3) for a, g in fedavg_gap.items()})
glue("noniid_gap_alpha_small", round(float(fedavg_gap[min(ALPHAS)]), 3))
glue("noniid_gap_alpha_large", round(float(fedavg_gap[max(ALPHAS)]), 3))
assert fedavg_gap[min(ALPHAS)] > fedavg_gap[max(ALPHAS)] + 0.1, "the gap should grow as α shrinks"
assert fedavg_gap[1.0] > fedavg_gap[max(ALPHAS)], "already moderate skew should cost accuracy"
"""),
    md("""
The gap grows as $\\alpha$ shrinks: with one or two intents per client, each local update pulls the
model towards the client's few intents, and averaging ten such pulls is a poor substitute for a step on
the pooled data. With one local epoch, client drift is small, so FedProx's pull towards the global
model mostly slows learning here; the first exercise makes drift larger.

## The trade-off three ways

Accuracy against rounds for each $\\alpha$ (static figure), one $\\alpha$ at a time with FedAvg, FedProx
and the centralized reference (slider, precomputed), and a live explorer that re-partitions and retrains
a small federation for any $\\alpha$ and $\\mu$.
"""),
    code("""
curves = seed_mean(sweep, ["alpha", "training", "round"])
fedavg_curves = curves[curves["training"] == "FedAvg"].assign(alpha=lambda t: t["alpha"].map("{:g}".format))
static_figure(fedavg_curves, x="round", y="accuracy", hue="alpha", title="FedAvg on label-skewed partitions");
"""),
    code("""
rounds = sorted(curves["round"].unique())
reference = pd.concat([pd.DataFrame({"alpha": a, "training": "centralized", "round": rounds, "accuracy": central})
                       for a in ALPHAS])
slider_figure(pd.concat([curves, reference]), slider="alpha", x="round", y="accuracy", hue="training",
              title="Label skew Dir(α·p): move α")
"""),
    code("""
small_task = load_intent_task(n_devices=200, seed=SEED)

def explore(alpha=1.0, mu=0.0):
    table = alpha_sweep(small_task, alphas=[alpha], num_partitions=20, rounds=15, devices_per_round=5, seeds=[SEED],
                        mus=(0.0, mu) if mu > 0 else (0.0,), eval_every=3, progress=False)
    return table.assign(training=np.where(table["mu"] > 0, f"FedProx μ = {mu:g}", "FedAvg"))

live_explorer(explore, x="round", y="accuracy", hue="training", alpha=[0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
              mu=(0.0, 1.0, 0.05))
"""),
    md("""
## Exercises

```{exercise}
:label: federated-noniid-ex1

With $\\alpha = 0.1$, raise the local epochs (`training=LocalTraining(epochs=5)` in `alpha_sweep`). Does
FedAvg get closer to or further from centralized training, and what does FedProx's $\\mu$ change?
```

```{solution} federated-noniid-ex1
:class: dropdown

More local epochs let each client fit its own one- or two-intent mix: the client models drift apart and
their average is worse per round, even though more computation was spent (client drift, Karimireddy et
al. 2020). FedProx's proximal term pulls each client back towards the global model and reduces that
drift; with larger $\\mu$ it also slows learning, so there is a sweet spot.
```

```{exercise}
:label: federated-noniid-ex2

Set `FEATURE_EMBEDDINGS = "minilm"` and compare the label skew score of feature skew with the TF-IDF
version. Why do meaning-based clusters skew the labels more than word-based ones?
```

```{solution} federated-noniid-ex2
:class: dropdown

MiniLM's sentence vectors group paraphrases of the same request together, so its clusters align with
intents and skewing clusters skews labels. TF-IDF clusters group texts that share words — slot values,
fillers, recogniser errors — which cut across intents, so the label skew is weaker.
```
"""),
])
