"""Multi-process DP-SGD with ``torch.distributed``: one global Poisson batch, clipped on every rank, noised once.

Launch one process per CPU socket or GPU with ``torchrun`` (gloo on CPU, NCCL on GPUs, chosen automatically):

    torchrun --standalone --nproc_per_node=2 -m trustml.privacy.distributed --epochs 1

One step of :class:`DistributedDPSGD`, with W ranks:

1. every rank draws the same global Poisson batch (:class:`DistributedPoissonBatches`: one seed for all, so
   each example joins with probability q, independently, exactly as in one process) and keeps every W-th
   sampled example: each sampled example is processed by exactly one rank, and the global batch is
   Poisson-sampled with rate q;
2. each rank writes the clipped sum of its examples into ``p.grad`` (the engine);
3. rank 0 adds the Gaussian noise N(0, σ²Δ²) to its sum, then an all-reduce adds up the ranks' sums, so
   every rank holds Σ_i clip(g_i) + noise — the noise of one step, added once for the global batch;
4. every rank divides by the expected global batch qN, steps its optimizer and records (σ, q) with its
   accountant: the replicas stay identical and every rank reports the same ε.

A step that fails on one rank (a non-finite loss is refused before anything is written) leaves the other
ranks waiting in the all-reduce until the process group's timeout ends the job: fix the data, not the rank.

Why the noise is added on rank 0 before the all-reduce, not drawn identically on every rank after it: one
generator holds the noise stream, and the all-reduce hands every rank the same result, so the replicas
stay bit-for-bit identical by construction. Identical draws on W ranks would need W generators kept in
lock-step (a skipped or extra draw on one rank silently desynchronises the models), for the same
privacy (the sum holds one noise draw either way) and the same cost per rank.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn
from torch.utils.data import Dataset, TensorDataset, default_collate

from trustml.privacy.dpsgd import DPSGD
from trustml.privacy.sampling import PoissonBatches


def _require_process_group(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: launch with torchrun and call "
                           "torch.distributed.init_process_group() first (see trustml.privacy.distributed)")
    return dist.get_rank(group), dist.get_world_size(group)


def shared_seed(seed: int | None, group=None) -> int:
    """``seed``, or (None) a random seed drawn on rank 0 and broadcast: every rank must sample the same batches."""
    value = torch.tensor([seed if seed is not None else int(torch.randint(0, 2**62, ()))], dtype=torch.long)
    dist.broadcast(value, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    return int(value)


class DistributedPoissonBatches(PoissonBatches):
    """This rank's share of global Poisson batches: the batch of one process, split among ``world_size`` ranks.

    Every rank draws the same global batch (same seed) and keeps the sampled examples at positions
    ``rank, rank + W, ...``: each example joins the global batch with probability q, independently, and
    is processed by one rank only. A rank's share may be empty (its step then adds nothing).
    """

    def __init__(self, dataset: Dataset, *, sample_rate: float, steps: int, seed: int, rank: int,
                 world_size: int, on_batch=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if seed is None:
            raise ValueError("seed must be given (the same on every rank: see shared_seed)")
        super().__init__(dataset, sample_rate=sample_rate, steps=steps, seed=seed, on_batch=on_batch)
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator:
        sampler = UniformWithReplacementSampler(num_samples=self.size, sample_rate=self.sample_rate,
                                                generator=self.generator, steps=self.steps)
        for indices in sampler:
            mine = torch.as_tensor(indices, dtype=torch.long)[self.rank::self.world_size]
            if self.on_batch is not None:
                self.on_batch()
            if isinstance(self.dataset, TensorDataset):
                yield tuple(t[mine] for t in self.dataset.tensors)
            elif len(mine):
                yield default_collate([self.dataset[int(i)] for i in mine])
            else:  # an empty share: the layout of one example's batch, with 0 rows
                example = default_collate([self.dataset[0]])
                yield tuple(t[:0] for t in example) if isinstance(example, (tuple, list)) else example[:0]


class DistributedDPSGD(DPSGD):
    """:class:`~trustml.privacy.DPSGD` across the ranks of a ``torch.distributed`` process group.

    Same arguments as ``DPSGD`` (per-example mode only: a micro-batch would span ranks) plus
    ``process_group`` (default: the world). The model's parameters and buffers are broadcast from rank 0
    so that the replicas start equal. Use :meth:`poisson_loader` for the batches: ε is reported for the
    global sample rate, the same on every rank.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, process_group=None, **options):
        self.rank, self.world_size = _require_process_group(process_group)
        if options.get("mode", "per_example") != "per_example":
            raise ValueError(f"mode must be 'per_example' for multi-process DP-SGD, got {options['mode']!r} "
                             "(a micro-batch's mean would span ranks)")
        self.process_group = process_group
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                dist.broadcast(tensor.data, src=self._global_rank(0), group=process_group)
        super().__init__(model, optimizer, **options)
        self._seed = shared_seed(self._seed, process_group)  # the noise seed matters on rank 0 only

    def _global_rank(self, rank: int) -> int:
        return rank if self.process_group is None else dist.get_global_rank(self.process_group, rank)

    def poisson_loader(self, dataset: Dataset, *, batch_size: float | None = None, sample_rate: float | None = None,
                       epochs: float | None = None, steps: int | None = None,
                       seed: int | None = None) -> DistributedPoissonBatches:
        """This rank's share of Poisson batches of ``dataset`` (the whole dataset, the same on every rank) with
        global rate q = ``batch_size``/N: the batches one process would draw with the same seed."""
        single = super().poisson_loader(dataset, batch_size=batch_size, sample_rate=sample_rate, epochs=epochs,
                                        steps=steps, seed=seed)
        seed = shared_seed(self._seed if seed is None else seed, self.process_group)
        return DistributedPoissonBatches(dataset, sample_rate=single.sample_rate, steps=single.steps, seed=seed,
                                         rank=self.rank, world_size=self.world_size, on_batch=self._mark_poisson)

    def expected_units(self, batch_size: int) -> float:
        """qN for Poisson batches; else the global batch size (this rank's ``batch_size`` summed over ranks)."""
        if self.sample_rate is None:
            total = torch.tensor([batch_size], dtype=torch.long)
            dist.all_reduce(total, group=self.process_group)
            batch_size = int(total)
            if batch_size == 0:
                raise ValueError("empty global batch: only Poisson-sampled batches (poisson_loader) may be empty")
        return super().expected_units(batch_size)

    def _noise_and_average(self, grads: list[torch.Tensor], *, std: float, divisor: float) -> None:
        if self.rank == 0:
            self._add_noise(grads, std=std)
        # One all-reduce per dtype over a flat buffer (many small collectives cost more than one copy).
        for dtype in dict.fromkeys(g.dtype for g in grads):
            same = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in same])
            dist.all_reduce(flat, group=self.process_group)
            for g, part in zip(same, flat.split([g.numel() for g in same])):
                g.copy_(part.view_as(g))
        torch._foreach_div_(grads, divisor)


# ---------------------------------------------------------------------------------------- the command
def train(*, steps: int, batch_size: int = 64, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0,
          lr: float = 1e-2, delta: float = 1e-5, seed: int = 0, dtype: str = "float32", n_devices: int = 100,
          distributed: bool | None = None) -> dict:
    """DP-SGD on the book's intent task (``n_devices`` speakers' data) with the small Transformer, in one process
    or across torchrun's ranks.

    ``distributed=None``: multi-process when launched by torchrun (``WORLD_SIZE`` > 1). Returns the final
    ``state_dict``, ε at ``delta``, the steps and the number of processes.
    """
    from trustml.data import load_intent_task
    from trustml.models import TransformerClassifier

    if distributed is None:
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    task = load_intent_task(max_length=16, seed=seed, n_devices=n_devices)
    torch.manual_seed(seed)
    model = TransformerClassifier(task.tokenizer.vocab_size, task.num_classes, max_length=16).to(getattr(torch, dtype))
    device = torch.device("cpu")
    if distributed:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
            if backend == "nccl":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
        model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    options: dict[str, Any] = dict(noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, delta=delta,
                                   seed=seed)
    dp = DistributedDPSGD(model, optimizer, **options) if distributed else DPSGD(model, optimizer, **options)
    for ids, labels in dp.poisson_loader(task.train, batch_size=batch_size, steps=steps, seed=seed):
        logits = model(ids.to(device))
        dp.step(nn.functional.cross_entropy(logits, labels.to(device), reduction="none"))
    dp.detach()
    return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "epsilon": dp.epsilon(),
            "steps": dp.steps_taken, "processes": dist.get_world_size() if distributed else 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun --standalone --nproc_per_node=N -m trustml.privacy.distributed",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="DP-SGD steps (default: one epoch)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64, help="expected global batch size qN")
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=int, default=100, help="speakers in the synthetic intent corpus")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", default=None, help="rank 0 saves the final state_dict and ε here (torch.save)")
    args = parser.parse_args(argv)
    steps = args.steps
    if steps is None:
        from trustml.data import load_intent_task

        n = len(load_intent_task(max_length=16, seed=args.seed, n_devices=args.devices).train)
        steps = max(1, round(args.epochs * n / args.batch_size))
    result = train(steps=steps, batch_size=args.batch_size, noise_multiplier=args.noise_multiplier,
                   max_grad_norm=args.max_grad_norm, seed=args.seed, dtype=args.dtype, n_devices=args.devices)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"{result['processes']} process(es), {result['steps']} steps: ε = {result['epsilon']:.4f} at δ = 1e-5")
        if args.out:
            torch.save(result, args.out)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


__all__ = ["DistributedDPSGD", "DistributedPoissonBatches", "shared_seed", "train"]

if __name__ == "__main__":
    sys.exit(main())
