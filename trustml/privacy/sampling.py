"""Poisson sampling: every example joins each batch independently with probability q.

The accountants' guarantees assume exactly this sampling (the Sampled Gaussian Mechanism), so an ε is
reported only for steps whose batches came from here. Indices come from Opacus'
``UniformWithReplacementSampler``; a ``TensorDataset`` is indexed in one go (fast), any other dataset goes
through Opacus' ``DPDataLoader`` (which also handles empty batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import cast

import torch
from opacus.data_loader import DPDataLoader
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import Dataset, TensorDataset

from trustml.privacy.validation import check_sample_rate, check_steps


class PoissonBatches:
    """``steps`` Poisson-sampled batches of ``dataset`` at rate ``sample_rate`` (an iterable; ``len`` = steps).

    ``on_batch`` is called before each batch is handed out (the DP optimizer uses it to know that the
    next step is on a Poisson batch). Iterating again draws fresh batches.
    """

    def __init__(self, dataset: Dataset, *, sample_rate: float, steps: int, seed: int | None = None,
                 on_batch: Callable[[], None] | None = None):
        self.size = len(cast(Sized, dataset))  # a map-style dataset with __len__
        if self.size < 1:
            raise ValueError("dataset must not be empty")
        self.dataset, self.sample_rate, self.steps = dataset, check_sample_rate(sample_rate), check_steps(steps)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.on_batch = on_batch

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.size

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        if isinstance(self.dataset, TensorDataset):
            sampler = UniformWithReplacementSampler(num_samples=self.size, sample_rate=self.sample_rate,
                                                    generator=self.generator, steps=self.steps)
            batches = (tuple(t[torch.as_tensor(indices, dtype=torch.long)] for t in self.dataset.tensors)
                       for indices in sampler)
        else:
            loader = DPDataLoader(self.dataset, sample_rate=self.sample_rate, generator=self.generator)
            loader.batch_sampler.steps = self.steps
            batches = iter(loader)
        for batch in batches:
            if self.on_batch is not None:
                self.on_batch()
            yield batch
