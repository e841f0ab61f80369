"""One intra-op thread for the book's tiny models.

The attacked models are small (a few 10k parameters, batches of tens of rows): splitting each matrix
product over threads costs more in synchronisation than it saves, and on a shared 2-core machine the
spinning threads of several processes slow training and inversion down by an order of magnitude.
"""

from __future__ import annotations

import contextlib

import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def single_thread():
    """Run the block with one torch thread and one BLAS/OpenMP thread; restore the settings after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)
