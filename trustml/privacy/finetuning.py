"""DP fine-tuning of a pretrained encoder (chapter privacy/06): four ways to train an intent classifier under DP.

- ``scratch``: chapter 3's embedding classifier, trained from random initialisation;
- ``head``: all-MiniLM-L6-v2 frozen, its mean-pooled sentence vectors computed once, a DP linear head on them;
- ``lora``: MiniLM with LoRA adapters (Hu et al. 2022) on the attention's query and value projections, base
  frozen, adapters and head trained with DP-SGD (DP-LoRA, Yu et al. 2022);
- ``full``: every MiniLM weight trained with DP-SGD (Li et al. 2022).

All four train with :func:`trustml.privacy.train_private` (Poisson sampling, the fast clipping engine, the
accountant's ε). :func:`run_grid` trains each variant at each ε; ``python -m trustml.privacy.finetuning``
recomputes the grid shipped with the package (``GRID_PATH``), which the chapter reads for the runs that
take too long to repeat on two CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

VARIANTS = ("scratch", "head", "lora", "full")
GRID_PATH = pathlib.Path(__file__).with_name("dp_finetuning_grid.json")
LORA_TARGETS = ("query", "value")


class PooledClassifier(nn.Module):
    """``encoder`` → mean of the last hidden states over the real tokens → linear head.

    ``forward(input_ids, attention_mask=None)``: without a mask, tokens equal to ``pad_token_id`` are
    padding. Columns that are padding in every row are cut off first (right padding): a batch of short
    utterances costs its longest one, not the tokenizer's maximum length.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, *, pad_token_id: int = 0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if getattr(encoder, "pooler", None) is not None:
            # BERT's [CLS] pooler is unused (mean pooling instead): no idle parameters
            # (torch types a submodule slot as Tensor | Module, but Module.__setattr__ accepts None there)
            nn.Module.__setattr__(encoder, "pooler", None)  # type: ignore[arg-type]
        self.encoder, self.pad_token_id = encoder, pad_token_id
        config: Any = encoder.config  # a Hugging Face PretrainedConfig
        self.head = nn.Linear(int(config.hidden_size), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **encoder_kwargs):
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        T = input_ids.shape[1]
        used = int(attention_mask.any(0).nonzero().max()) + 1 if attention_mask.any() else 1
        if used < T:  # contiguous copies (a few integers per example): Opacus' ghost mode views ids flat
            input_ids, attention_mask = input_ids[:, :used].contiguous(), attention_mask[:, :used].contiguous()
            encoder_kwargs = {k: v[:, :used].contiguous() if isinstance(v, torch.Tensor) and v.dim() >= 2
                              and v.shape[1] == T else v for k, v in encoder_kwargs.items()}  # e.g. position ids
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_kwargs).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(pooled)


def add_lora(model: nn.Module, *, targets: Sequence[str] = LORA_TARGETS, rank: int = 8, alpha: int = 16,
             trainable: Sequence[str] = ("head",), fan_in_fan_out: bool = False) -> nn.Module:
    """Inject LoRA adapters (``peft``) into the ``targets`` layers of ``model`` in place; freeze everything else
    except the modules named in ``trainable``. Returns ``model`` (same class, adapters inside)."""
    import peft

    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
                             fan_in_fan_out=fan_in_fan_out)
    peft.inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or any(name.startswith(f"{prefix}.") for prefix in trainable))
    return model


def minilm_classifier(num_classes: int, *, train: str = "full", rank: int = 8, seed: int = 0, encoder=None):
    """MiniLM (offline wheel) + mean pooling + head; ``train``: ``"full"``, ``"lora"`` or ``"head"``."""
    from trustml.models import load_minilm

    if train not in ("full", "lora", "head"):
        raise ValueError(f"train must be 'full', 'lora' or 'head', got {train!r}")
    encoder = encoder if encoder is not None else load_minilm()
    torch.manual_seed(seed)
    # a copy: training (and LoRA's injection) must not change the loaded encoder that other runs start from
    model = PooledClassifier(copy.deepcopy(encoder.model), num_classes, pad_token_id=encoder.tokenizer.pad_token_id)
    model.train()
    if train == "lora":
        add_lora(model, rank=rank)
    elif train == "head":
        model.encoder.requires_grad_(False)
    return model


def tokenize(tokenizer, texts: Sequence[str], *, max_length: int = 32) -> torch.Tensor:
    """(N, max_length) token ids with right padding (the mask is ``ids != pad_token_id``)."""
    if not len(texts):
        raise ValueError("texts must not be empty")
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                     return_tensors="pt")["input_ids"]


@torch.no_grad()
def sentence_features(model: PooledClassifier, input_ids: torch.Tensor, *, batch_size: int = 256,
                      progress: bool = False) -> torch.Tensor:
    """The pooled sentence vectors that ``model``'s head reads, for every row of ``input_ids``: (N, hidden)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    head, model.head = model.head, nn.Identity()  # type: ignore[assignment]  # pooled vectors instead of logits
    try:
        return torch.cat([model(input_ids[i:i + batch_size])
                          for i in tqdm(range(0, len(input_ids), batch_size), desc="features", disable=not progress)])
    finally:
        model.head = head
        model.train(was_training)


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one variant is trained (Adam; Poisson batches of expected size ``batch_size``)."""

    epochs: float
    batch_size: int
    lr: float
    max_grad_norm: float = 1.0
    train_size: int | None = None  # a class-stratified subset of the training set (CPU time), None: all


#: The grid's settings per dataset and variant: chapter 3's for the model from scratch; the pretrained
#: variants that run the encoder every step train on a subset for fewer steps (two CPU cores).
SETTINGS: dict[str, dict[str, Setting]] = {
    "clinc150": {"scratch": Setting(10, 1024, 0.05), "head": Setting(20, 1024, 0.02),
                 "lora": Setting(2, 100, 1e-2, train_size=800), "full": Setting(2, 100, 1e-3, train_size=800)},
    "synthetic": {"scratch": Setting(5, 512, 0.05), "head": Setting(20, 512, 0.02),
                  "lora": Setting(2, 100, 1e-2, train_size=800), "full": Setting(2, 100, 1e-3, train_size=800)},
}
TEST_SIZE = 1000  # a stratified test subset, the same for every variant (the encoder variants are slow to evaluate)


def stratified_subset(labels: torch.Tensor, size: int, *, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` rows with the classes in their proportions (at least one row per class)."""
    if not 0 < size <= len(labels):
        raise ValueError(f"size must be in [1, {len(labels)}], got {size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    classes = labels.unique()
    per_class = max(1, size // len(classes))
    chosen = torch.cat([order[labels[order] == c][:per_class] for c in classes])
    return chosen[torch.randperm(len(chosen), generator=generator)][:size]


def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(inputs[i:i + batch_size]).argmax(-1) for i in range(0, len(inputs), batch_size)])
    model.train(was_training)
    return float((predictions == labels).float().mean())


def run_variant(variant: str, epsilon: float, *, train_inputs: torch.Tensor, train_labels: torch.Tensor,
                test_inputs: torch.Tensor, test_labels: torch.Tensor, num_classes: int, setting: Setting,
                vocab_size: int | None = None, encoder=None, delta: float = 1e-5, seed: int = 0,
                progress: bool = False) -> dict:
    """Train one variant at one ε and return its row of the grid (test accuracy, the accountant's ε, ...).

    Inputs: the word ids of chapter 3's tokenizer (``scratch``), MiniLM's sentence vectors (``head``) or
    MiniLM token ids (``lora``, ``full``).
    """
    from trustml.models import EmbeddingClassifier
    from trustml.privacy.dpsgd import train_private

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    rows = (stratified_subset(train_labels, setting.train_size, seed=seed) if setting.train_size
            else torch.arange(len(train_labels)))
    torch.manual_seed(seed)
    if variant == "scratch":
        if vocab_size is None:
            raise ValueError("vocab_size is needed for the scratch variant")
        model: nn.Module = EmbeddingClassifier(vocab_size, num_classes)
    elif variant == "head":
        model = nn.Linear(train_inputs.shape[1], num_classes)
    else:
        model = minilm_classifier(num_classes, train=variant, seed=seed, encoder=encoder)
    data = TensorDataset(train_inputs[rows], train_labels[rows])
    start = time.perf_counter()
    run = train_private(model, data, epsilon=epsilon, delta=delta, epochs=setting.epochs,
                        batch_size=min(setting.batch_size, len(rows)), lr=setting.lr,
                        max_grad_norm=setting.max_grad_norm, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    return {"variant": variant, "epsilon": epsilon, "reported_epsilon": run.epsilon,
            "noise_multiplier": run.noise_multiplier, "steps": run.steps, "train_size": len(rows),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "test_accuracy": _accuracy(model, test_inputs, test_labels), "train_seconds": round(seconds, 1),
            **{f"setting_{k}": v for k, v in dataclasses.asdict(setting).items()}}


def load_dataset(name: str, *, clinc_path=None, n_devices: int = 300, test_size: int = TEST_SIZE, seed: int = 0):
    """(task, train texts, test texts, test rows): the intent task and its raw utterances; a stratified test subset
    of ``test_size`` rows (the same for every variant)."""
    from trustml.data import load_intent_task

    task = (load_intent_task("clinc150", path=clinc_path) if name == "clinc150" else
            load_intent_task(n_devices=n_devices, seed=seed))
    test_rows = stratified_subset(task.test.tensors[1], min(test_size, len(task.test)), seed=seed)
    return task, list(task.train_frame["text"]), list(task.test_frame["text"]), test_rows


def run_grid(datasets: Sequence[str] = ("synthetic", "clinc150"), *, epsilons: Sequence[float] = (math.inf, 8, 3, 1),
             variants: Sequence[str] = VARIANTS, clinc_path=None, delta: float = 1e-5, seed: int = 0,
             progress: bool = True) -> list[dict]:
    """Every (dataset, variant, ε) of the chapter's comparison: a list of rows (see :func:`run_variant`)."""
    from tqdm.auto import tqdm

    from trustml.models import load_minilm

    encoder = load_minilm()
    rows = []
    for name in datasets:
        task, texts_train, texts_test, test_rows = load_dataset(name, clinc_path=clinc_path, seed=seed)
        ids_train = tokenize(encoder.tokenizer, texts_train)
        ids_test = tokenize(encoder.tokenizer, texts_test)[test_rows]
        labels_train, labels_test = task.train.tensors[1], task.test.tensors[1][test_rows]
        features = None
        if "head" in variants:
            probe = minilm_classifier(task.num_classes, train="head", encoder=encoder)
            features = (sentence_features(probe, ids_train, progress=progress),
                        sentence_features(probe, ids_test, progress=progress))
        inputs = {"scratch": (task.train.tensors[0], task.test.tensors[0][test_rows]),
                  "lora": (ids_train, ids_test), "full": (ids_train, ids_test)}
        if features is not None:
            inputs["head"] = features
        for variant in variants:
            for epsilon in tqdm(epsilons, desc=f"{name} {variant}", disable=not progress):
                row = run_variant(variant, epsilon, train_inputs=inputs[variant][0], train_labels=labels_train,
                                  test_inputs=inputs[variant][1], test_labels=labels_test,
                                  num_classes=task.num_classes, vocab_size=task.tokenizer.vocab_size,
                                  setting=SETTINGS[name][variant], encoder=encoder, delta=delta, seed=seed)
                rows.append({"dataset": name, **row})
                if progress:
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def load_grid(path: pathlib.Path | str = GRID_PATH):
    """The shipped grid as a DataFrame (one row per dataset, variant and ε) and its metadata."""
    import pandas as pd

    payload = json.loads(pathlib.Path(path).read_text())
    frame = pd.DataFrame(payload["rows"])
    frame["epsilon"] = frame["epsilon"].astype(float)
    return frame, {k: v for k, v in payload.items() if k != "rows"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustml.privacy.finetuning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinc150", default=None, help="local CLINC150 folder (default: download/cache)")
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "clinc150"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(GRID_PATH))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run_grid(args.datasets, variants=args.variants, clinc_path=args.clinc150)
    command = "python -m trustml.privacy.finetuning " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"command": command.strip(), "torch": torch.__version__, "threads": args.threads,
               "seconds": round(time.perf_counter() - start), "delta": 1e-5, "seed": 0, "rows": rows}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(payload, indent=1, default=float) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


__all__ = ["GRID_PATH", "SETTINGS", "VARIANTS", "PooledClassifier", "Setting", "add_lora", "load_grid",
           "minilm_classifier", "run_grid", "run_variant", "sentence_features", "stratified_subset", "tokenize"]

if __name__ == "__main__":
    sys.exit(main())
