"""Time the in-process FL loop: 1000 devices × 100 rounds × 10 devices per round on the embedding intent model.

    python -m trustml.bench simulate [--devices 1000] [--rounds 100] [--per-round 10] [--threads 2]

For uniform and activity selection (γ = 1) it times ``trustml.federated.simulate.run_federated`` (FedAvg,
1 local epoch, batch 16, evaluation only at the end) and a naive loop on the same selections — a deep copy
of the ``nn.Module`` per device, ``torch.optim.SGD`` and a ``DataLoader``, ``state_dict`` averaging —
for ``--naive-rounds`` rounds, scaled to the full run by local steps. Both loops run with one torch
intra-op thread (the fast loop's default: its tensors are tiny, see ``trustml.threads``);
``--threads`` sets the process default (evaluation, data preparation). The corpus is generated once and not timed. It
prints seconds, device updates and local steps per second, the speed-up over the naive loop, and as the
last line one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from trustml.threads import limit_threads


def naive_rounds(model, data, selected_per_round, weights_per_round, *, lr: float, batch_size: int, seed: int):
    """FedAvg the textbook way (the reference the fast loop is measured against)."""
    global_module = copy.deepcopy(model.module)
    for selected, weights in zip(selected_per_round, weights_per_round):
        states = []
        for k in selected:
            local = copy.deepcopy(global_module)
            optimiser = torch.optim.SGD(local.parameters(), lr=lr)
            loader = DataLoader(TensorDataset(*data.device(int(k))), batch_size=batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            for x, y in loader:
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(local(x), y).backward()
                optimiser.step()
            states.append(local.state_dict())
        global_module.load_state_dict({name: sum(w * s[name] for w, s in zip(weights, states)) for name in states[0]})
    return global_module


def local_steps(data, selected_per_round, batch_size: int) -> int:
    return int(sum(np.ceil(data.counts[s] / batch_size).sum() for s in selected_per_round))


def run(*, devices: int, rounds: int, per_round: int, naive_rounds_count: int, seed: int) -> dict:
    from trustml.data import load_intent_task
    from trustml.federated.selection import Selection
    from trustml.federated.simulate import FederatedData, LocalTraining, embedding_model, run_federated

    start = time.perf_counter()
    task = load_intent_task(n_devices=devices, seed=seed)
    data = FederatedData.by_column(task.train, task.train_frame)
    print(f"corpus: {data.num_devices} devices with data, {int(data.counts.sum())} training utterances "
          f"(generated and encoded in {time.perf_counter() - start:.1f} s, not timed below)")
    training = LocalTraining(epochs=1, batch_size=16, lr=0.5)
    results = {}
    for name, selection in {"uniform": Selection("uniform"), "activity": Selection("activity", gamma=1.0)}.items():
        model = embedding_model(task.tokenizer.vocab_size, task.num_classes, seed=seed)
        start = time.perf_counter()
        result = run_federated(model, data, rounds=rounds, devices_per_round=per_round, selection=selection,
                               training=training, test=task.test, eval_every=rounds, seed=seed, progress=False)
        fast = time.perf_counter() - start
        steps = local_steps(data, result.selected, training.batch_size)
        start = time.perf_counter()
        with limit_threads(1):  # the same single intra-op thread as the fast loop: a like-for-like ratio
            naive_rounds(model, data, result.selected[:naive_rounds_count], result.weights[:naive_rounds_count],
                         lr=training.lr, batch_size=training.batch_size, seed=seed)
        naive_part = time.perf_counter() - start
        naive_steps = local_steps(data, result.selected[:naive_rounds_count], training.batch_size)
        naive = naive_part * steps / max(1, naive_steps)  # scaled by local steps to the full run
        results[name] = {"seconds": round(fast, 2), "updates_per_s": round(rounds * per_round / fast, 1),
                         "steps_per_s": round(steps / fast, 1), "naive_seconds_scaled": round(naive, 2),
                         "speedup_vs_naive": round(naive / fast, 2), "accuracy": round(result.final_accuracy, 3)}
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=1000, help="devices of the corpus (default 1000)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=10, help="devices per round")
    parser.add_argument("--naive-rounds", type=int, default=10, help="rounds of the naive loop (scaled)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the target machine)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    with limit_threads(args.threads):
        results = run(devices=args.devices, rounds=args.rounds, per_round=args.per_round,
                      naive_rounds_count=args.naive_rounds, seed=args.seed)
    print(f"\n{args.devices} devices × {args.rounds} rounds × {args.per_round} devices/round, "
          f"{args.threads} threads (target: ≤ 60 s)")
    print(f"{'selection':10s} {'seconds':>8s} {'updates/s':>10s} {'steps/s':>9s} {'naive s':>8s} "
          f"{'speed-up':>9s} {'acc':>6s}")
    for name, r in results.items():
        print(f"{name:10s} {r['seconds']:8.2f} {r['updates_per_s']:10.1f} {r['steps_per_s']:9.1f} "
              f"{r['naive_seconds_scaled']:8.2f} {r['speedup_vs_naive']:8.2f}x {r['accuracy']:6.3f}")
    print(json.dumps(results))
    return 0

