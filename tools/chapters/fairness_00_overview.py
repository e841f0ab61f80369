"""Source of book/fairness/00_overview.ipynb (run: python -m tools.chapters.fairness_00_overview)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/fairness/00_overview.ipynb", [
    md("""
# Fairness: overview — who does the intent classifier fail?

This page opens the fairness part with the simplest question: is the intent classifier equally
accurate for every group of speakers? The corpus has speaker attributes (gender, age group, dialect);
speakers of the minority dialect use other words for some requests, and there are fewer of them in
the training data. The chapters after this one measure bias with group metrics, inside embeddings,
and in generated text.

**Learning objectives**

- Compute per-group accuracy of a text classifier by a speaker attribute.
- See how the share of a group in the training data moves its accuracy gap.

*Expected runtime: about 15 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False
SEED = 0
N_DEVICES = 1000
EPOCHS = 4
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, EPOCHS = 400, 3
"""),
    code("""
import numpy as np
import pandas as pd
import torch

from trustml.data import load_intent_task
from trustml.fairness import group_accuracy
from trustml.models import EmbeddingClassifier, predict, train_classifier
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
task.train_frame["dialect"].value_counts(normalize=True).round(3)
"""),
    md("""
## Per-group accuracy

Train on the corpus as it is, then compare accuracy on the test utterances of each group
(`trustml.fairness.group_accuracy`, built on Fairlearn's `MetricFrame`; the group-fairness chapter
covers it and its confidence intervals).
"""),
    code("""
def accuracy_by_dialect(train_rows, seed=SEED):
    torch.manual_seed(seed)
    model = EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes)
    train_classifier(model, task.tensors(task.train_frame.loc[train_rows]), epochs=EPOCHS, seed=seed)
    report = group_accuracy(task.test.tensors[1].numpy(), predict(model, task.test).argmax(-1).numpy(),
                            sensitive_features=task.test_frame["dialect"].to_numpy())
    return report.by_group["accuracy"]

by_dialect = accuracy_by_dialect(task.train_frame.index)
by_dialect.round(3)
"""),
    code("""
gap = by_dialect["majority"] - by_dialect["minority"]
print(f"accuracy gap majority - minority dialect: {gap:.3f}")
glue("dialect_gap", round(float(gap), 3))
assert gap > 0.01, "the under-represented dialect should be served worse"
"""),
    md("""
## The gap against the minority group's share of training data

Keep only a fraction of the minority-dialect training utterances and watch the gap.
"""),
    code("""
rng = np.random.default_rng(SEED)
minority_rows = task.train_frame.index[task.train_frame["dialect"] == "minority"].to_numpy()
majority_rows = task.train_frame.index[task.train_frame["dialect"] == "majority"].to_numpy()

def gap_table(kept_fraction, seed=SEED):
    kept = rng.permutation(minority_rows)[: max(1, int(kept_fraction * len(minority_rows)))]
    accuracy = accuracy_by_dialect(np.concatenate([majority_rows, kept]), seed=seed)
    return pd.DataFrame({"group": accuracy.index, "test accuracy": accuracy.to_numpy(),
                         "minority data kept": kept_fraction})

grid = pd.concat([gap_table(f) for f in (0.05, 0.25, 1.0)], ignore_index=True)
wide = grid.pivot(index="minority data kept", columns="group", values="test accuracy")
wide["gap"] = wide["majority"] - wide["minority"]
wide.round(3)
"""),
    code("""
assert wide.loc[0.05, "gap"] > wide.loc[1.0, "gap"], "less minority data should widen the gap"
"""),
    code("""
grid["group (0=majority, 1=minority)"] = (grid["group"] == "minority").astype(int)
static_figure(grid, x="minority data kept", y="test accuracy", hue="group", logx=True);
"""),
    code("""
slider_figure(grid, slider="minority data kept", x="group (0=majority, 1=minority)", y="test accuracy")
"""),
    code("""
def live_gap(kept_fraction=0.25):
    table = gap_table(kept_fraction)
    return table.assign(**{"group (0=majority, 1=minority)": (table["group"] == "minority").astype(int)})

live_explorer(live_gap, x="group (0=majority, 1=minority)", y="test accuracy", kept_fraction=(0.05, 1.0, 0.05))
"""),
    md("""
```{exercise}
:label: fairness-overview-ex1

Repeat the per-group accuracy for `gender` and `age_group`. Do you expect a gap there? Check your
answer against how the corpus is generated (`trustml/data/corpus.py`).
```

```{solution} fairness-overview-ex1
:class: dropdown

No systematic gap is expected: gender and age group change nothing in how utterances are generated,
so any difference is sampling noise (it changes sign across seeds). The dialect gap is planted — the
minority dialect rewrites words — and it is also a data-share effect, as the second experiment shows.
```
"""),
])
