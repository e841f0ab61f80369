"""One helper to limit CPU threads for a block: ``with limit_threads(1): ...``.

The book's models are small (a few 10k parameters, batches of tens of rows): splitting each matrix product
over threads costs more in synchronisation than it saves, and on a shared 2-core machine the spinning
threads of several processes slow training, inversion and the FL loop down several-fold. Benchmarks use
the same helper so that their ratios compare like with like.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def limit_threads(threads: int | None = 1) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads and as many BLAS/OpenMP threads; restore the
    previous settings after. ``None`` leaves everything as it is."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1 (or None to leave the setting alone), got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(previous)


__all__ = ["limit_threads"]
