"""Source of book/privacy/00_overview.ipynb (run: python -m tools.chapters.privacy_00_overview)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/privacy/00_overview.ipynb", [
    md("""
# Privacy: overview and the non-private baseline

This page opens the privacy part. It introduces the data and the model every privacy chapter uses and
trains the **non-private baseline** that differentially private training is measured against.

**Learning objectives**

- Know the smart-speaker corpus: intents, devices with heavy-tailed activity, planted canaries.
- Train the intent classifier without privacy and read its accuracy as a function of data size.
- Meet the three views of a trade-off used throughout the book: static figure, slider twin, live explorer.

*Expected runtime: about 20 s with `QUICK = True`, about 1 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: smaller corpus, fewer epochs
SEED = 0
N_DEVICES = 1000
EPOCHS = 5
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, EPOCHS = 200, 2
"""),
    md("""
## The corpus

`trustml.data.make_corpus` generates a deterministic synthetic corpus of smart-speaker requests: each
device (speaker) has an activity level drawn from a heavy-tailed distribution, its own mix of intents,
speaker attributes, and a time period per utterance. The chapters that follow reuse exactly this data.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from trustml.data import load_intent_task, make_corpus
from trustml.models import EmbeddingClassifier, accuracy, train_classifier
from trustml.viz import glue, live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
corpus = make_corpus(n_devices=N_DEVICES, seed=SEED)
corpus.utterances.sample(5, random_state=SEED)[["text", "intent", "device_id", "period"]]
"""),
    code("""
activity = np.sort(corpus.devices["n_utterances"].to_numpy())[::-1]
top_decile_share = activity[: len(activity) // 10].sum() / activity.sum()
print(f"{len(activity)} devices; the most active 10% hold {top_decile_share:.0%} of the utterances")
assert top_decile_share > 0.3, "device activity should be heavy-tailed"
"""),
    md("""
## The non-private baseline

The mean-pooled embedding classifier, trained with Adam on growing fractions of the training data.
"""),
    code("""
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
fractions = [0.1, 0.3, 1.0]
rows = []
for fraction in fractions:
    n = int(fraction * len(task.train))
    generator = torch.Generator().manual_seed(SEED)
    rows_used = torch.randperm(len(task.train), generator=generator)[:n]
    train_part = torch.utils.data.TensorDataset(*(t[rows_used] for t in task.train.tensors))
    torch.manual_seed(SEED)
    model = EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes)
    for epoch in range(1, EPOCHS + 1):
        train_classifier(model, train_part, epochs=1, seed=SEED + epoch)
        rows.append({"training fraction": fraction, "epoch": epoch, "test accuracy": accuracy(model, task.test)})
results = pd.DataFrame(rows)
results.pivot(index="epoch", columns="training fraction", values="test accuracy").round(3)
"""),
    code("""
final = results[results["epoch"] == EPOCHS].set_index("training fraction")["test accuracy"]
print(f"non-private test accuracy with all data: {final[1.0]:.3f}")
glue("baseline_accuracy", round(float(final[1.0]), 3))
assert final[1.0] > 0.8, "the baseline should learn the intents"
assert final[1.0] >= final[0.1], "more data should not hurt"
"""),
    md("""
## Three views of one trade-off

Accuracy against epochs, for each training fraction: a static figure, then a plotly figure whose slider
steps through the precomputed fractions (it works on the static site), then a live explorer that
retrains on every move (needs a running kernel: Jupyter or Colab).
"""),
    code("""
static_figure(results, x="epoch", y="test accuracy", hue="training fraction", title="Non-private baseline");
"""),
    code("""
slider_figure(results, slider="training fraction", x="epoch", y="test accuracy", title="Move the slider")
"""),
    code("""
def retrain(fraction=0.3):
    n = max(1, int(fraction * len(task.train)))
    part = torch.utils.data.TensorDataset(*(t[:n] for t in task.train.tensors))
    model = EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes)
    return pd.DataFrame([
        {"epoch": e, "test accuracy": (train_classifier(model, part, epochs=1, seed=e), accuracy(model, task.test))[1]}
        for e in range(1, 3)
    ])

live_explorer(retrain, x="epoch", y="test accuracy", fraction=(0.05, 1.0, 0.05))
"""),
    md("""
## Exercise

```{exercise}
:label: privacy-overview-ex1

Regenerate the corpus with `activity_tail=0.0` (every device equally active). What share of utterances
do the most active 10 % of devices hold now, and why does this matter for sampling devices later?
```

```{solution} privacy-overview-ex1
:class: dropdown

About 10 %: with `activity_tail=0` every device has the same number of utterances, so any tenth of
the devices holds a tenth of the data. With a heavy tail, a few devices hold much of the data; which
devices a training round samples then changes how much data it sees (the federated part builds on this).
```

## What comes next

The following chapters make this training differentially private and measure what it costs and what
it protects.
"""),
])
