"""Time one DP-SGD training step: trustml's engine against Opacus and a naive per-example loop.

    python -m trustml.bench dpsgd [--quick] [--device cpu|cuda] [--threads N]
    python -m trustml.bench dpsgd --model minilm|gpt2   # pretrained-size models (trustml.bench.dpsgd_pretrained)

For each model (the embedding intent classifier and the small Transformer) and each method, one
training step (forward, backward, clipping, noise, Adam update) on the same batch of the book's intent
data (batch 256, padded length 24) is timed; methods are interleaved round-robin so that load on a
shared machine hits all of them alike, and the median of the repeats is kept (on CPU the process's CPU
time, so that time the machine spends on other jobs is not counted). The table gives each
median as a multiple of the non-private step; the last line of output is one JSON object
``{"model": {"method": ratio, ...}, ...}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from trustml.threads import limit_threads

Step = Callable[[], object]
LOSS = nn.CrossEntropyLoss()


def _losses(model, x, y):
    return nn.functional.cross_entropy(model(x), y, reduction="none")


# ------------------------------------------------------------------ methods: (model, x, y) -> step
def non_private(model, x, y) -> Step:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        LOSS(model(x), y).backward()
        opt.step()
    return step


def trustml_step(**options) -> Callable[..., Step]:
    def make(model, x, y) -> Step:
        from trustml.privacy import DPSGD

        dp = DPSGD(model, torch.optim.Adam(model.parameters(), lr=1e-3), noise_multiplier=1.0, max_grad_norm=1.0,
                   seed=0, **options)
        return lambda: dp.step(_losses(model, x, y))
    return make


def opacus_step(grad_sample_mode: str) -> Callable[..., Step]:
    def make(model, x, y) -> Step:
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=len(y))
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                # Opacus' ghost-mode embedding norm calls input_ids.view(-1, 1), which fails on the
                # position ids arange(T).expand(B, T) (not contiguous); hand it a contiguous copy.
                module.register_forward_pre_hook(lambda _, inputs: (inputs[0].contiguous(), *inputs[1:]))
        engine = PrivacyEngine(accountant="rdp")
        wrapped = engine.make_private(module=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                      data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
                                      poisson_sampling=False, grad_sample_mode=grad_sample_mode,
                                      criterion=nn.CrossEntropyLoss())
        module, opt, criterion = wrapped[0], wrapped[1], (wrapped[2] if len(wrapped) == 4 else LOSS)

        def step():
            opt.zero_grad()
            criterion(module(x), y).backward()
            opt.step()
        return step
    return make


def naive_loop(model, x, y) -> Step:
    from trustml.privacy import naive_clipped_sum

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = dict(model.named_parameters())

    def step():
        sums = naive_clipped_sum(model, lambda m, batch: _losses(m, *batch), (x, y), max_grad_norm=1.0)
        for name, p in params.items():
            p.grad = (sums[name] + torch.randn_like(p)) / len(y)
        opt.step()
    return step


#: name -> (factory, share of the repeats it gets: the slowest methods run fewer times). Both Opacus
#: modes get every repeat: the speed-up is taken against the faster of their two medians, and a
#: minimum of two noisy medians is biased low, less so the more repeats they have.
METHODS: dict[str, tuple[Callable[..., Step], float]] = {
    "non_private": (non_private, 1.0),
    "trustml_per_example": (trustml_step(), 1.0),
    "trustml_micro_batch": (trustml_step(mode="micro_batch", micro_batch_size=16), 1.0),
    "opacus_hooks": (opacus_step("hooks"), 1.0),
    "opacus_ghost": (opacus_step("ghost"), 1.0),
    "naive_loop": (naive_loop, 0.2),
}


def _models(vocab_size: int, num_classes: int, max_length: int) -> dict[str, Callable[[], nn.Module]]:
    from trustml.models import EmbeddingClassifier, TransformerClassifier

    return {"embedding": lambda: EmbeddingClassifier(vocab_size, num_classes),
            "transformer": lambda: TransformerClassifier(vocab_size, num_classes, max_length=max_length)}


def intent_batch(batch_size: int = 256, *, max_length: int = 24, seed: int = 0):
    """A batch of the book's intent data: (input_ids, labels, vocab size, number of classes)."""
    from trustml.data import load_intent_task

    task = load_intent_task(n_devices=300, max_length=max_length, seed=seed)
    if batch_size > len(task.train):
        raise ValueError(f"batch_size must be <= {len(task.train)}, got {batch_size}")
    rows = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    return task.train.tensors[0][rows], task.train.tensors[1][rows], task.tokenizer.vocab_size, task.num_classes


def step_clock(device: torch.device) -> Callable[[], float]:
    """CPU: the process's CPU time (time preempted by other jobs on a shared machine is not the step's
    cost; use one torch thread so that it equals the step's work). CUDA: wall time after a synchronise."""
    if device.type == "cuda":
        def clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return clock
    return time.process_time


def benchmark_dpsgd(*, quick: bool = False, device: str = "cpu", batch_size: int = 256, max_length: int = 24,
                    repeats: int | None = None, models: tuple[str, ...] = ("embedding", "transformer"),
                    methods: tuple[str, ...] | None = None, threads: int | None = 1, seed: int = 0,
                    progress: bool = False):
    """Median seconds per training step of each (model, method), and the ratio to non-private.

    ``threads``: torch CPU threads during the run (restored afterwards; None keeps the current setting).
    Returns a DataFrame with columns model, method, seconds, ratio, repeats.
    """
    with limit_threads(threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|Optimal order).*")  # advice
        return _benchmark(quick=quick, device=device, batch_size=batch_size, max_length=max_length,
                          repeats=repeats, models=models, methods=methods, seed=seed, progress=progress)


def _benchmark(*, quick, device, batch_size, max_length, repeats, models, methods, seed, progress):
    import pandas as pd
    from tqdm.auto import tqdm

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    methods = tuple(METHODS) if methods is None else methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "non_private" not in methods:
        raise ValueError(f"methods must include 'non_private' and come from {list(METHODS)}; unknown: {unknown}")
    repeats = repeats or (5 if quick else 25)
    x, y, vocab_size, num_classes = intent_batch(batch_size, max_length=max_length, seed=seed)
    x, y = x.to(device), y.to(device)
    rows = []
    for model_name in models:
        torch.manual_seed(seed)
        initial = _models(vocab_size, num_classes, max_length)[model_name]().to(device)
        steps, counts = {}, {}
        for name in methods:
            factory, share = METHODS[name]
            steps[name] = factory(copy.deepcopy(initial), x, y)
            counts[name] = max(1, round(share * repeats))
            steps[name]()  # warm-up (allocator, thread pool, lazy initialisation)
        times, clock = {name: [] for name in methods}, step_clock(device)
        for r in tqdm(range(repeats), desc=model_name, disable=not progress):
            for name in methods:  # round-robin: load on a shared machine hits every method alike
                if r < counts[name]:
                    start = clock()
                    steps[name]()
                    times[name].append(clock() - start)
        base = statistics.median(times["non_private"])
        for name in methods:
            seconds = statistics.median(times[name])
            rows.append({"model": model_name, "method": name, "seconds": seconds, "ratio": seconds / base,
                         "repeats": len(times[name])})
    return pd.DataFrame(rows)


def ratios(table) -> dict[str, dict[str, float]]:
    """``{"model": {"method": ratio}}`` from :func:`benchmark_dpsgd`'s table."""
    return {model: {row.method: round(float(row.ratio), 2) for row in part.itertuples()}
            for model, part in table.groupby("model", sort=False)}


def speedup_over_opacus(table) -> dict[str, float]:
    """Per model: the fastest Opacus mode's step time divided by trustml per_example's (unrounded)."""
    out = {}
    for model, part in table.groupby("model", sort=False):
        seconds = part.set_index("method")["seconds"]
        opacus = [m for m in ("opacus_hooks", "opacus_ghost") if m in seconds.index]
        if opacus and "trustml_per_example" in seconds.index:
            out[model] = float(seconds[opacus].min() / seconds["trustml_per_example"])
    return out


def ratio_table(table):
    """Methods × models, each cell the step time as a multiple of the non-private step."""
    return table.pivot(index="method", columns="model", values="ratio").loc[table["method"].unique()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute on one CPU core)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the steadiest ratios on a shared machine; "
                             "0 = torch's default)")
    parser.add_argument("--model", default="small", choices=["small", "minilm", "gpt2"],
                        help="small: the book's two classifiers (default); minilm: the pretrained MiniLM-L6, full "
                             "fine-tuning, batch 32 x 32; gpt2: a GPT-2-small-shaped LM, batch 8 x 64")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 (small), 32 (minilm), 8 (gpt2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per method (small: 5 quick, 25 full; minilm/gpt2: 1 quick, 3 full)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    if args.model != "small":
        from trustml.bench.dpsgd_pretrained import run_and_print

        result = run_and_print(args.model, quick=args.quick, device=args.device, threads=args.threads or None,
                               repeats=args.repeats, batch_size=args.batch_size)
        print(json.dumps({args.model: result}))
        return 0
    args.batch_size = args.batch_size or 256
    table = benchmark_dpsgd(quick=args.quick, device=args.device, batch_size=args.batch_size, repeats=args.repeats,
                            threads=args.threads or None, seed=args.seed, progress=True)
    used = args.threads or torch.get_num_threads()
    clock = "process CPU time" if args.device == "cpu" else "wall time (synchronised)"
    print(f"one training step, batch {args.batch_size}, device {args.device}, torch threads {used}, {clock}, "
          "median of repeats")
    print("step time as a multiple of the non-private step:")
    print(ratio_table(table).round(2).to_string())
    print("milliseconds per step:")
    print((table.pivot(index="method", columns="model", values="seconds") * 1e3).loc[table["method"].unique()]
          .round(1).to_string())
    for model, speedup in speedup_over_opacus(table).items():
        print(f"{model}: trustml per_example is {speedup:.2f}x faster than Opacus' fastest mode")
    print(json.dumps(ratios(table)))
    return 0
