import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny language models: on a shared CPU, thread hand-offs cost more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
