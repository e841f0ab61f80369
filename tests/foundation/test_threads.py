import pytest
import torch
from threadpoolctl import threadpool_info

from trustml.threads import limit_threads


def test_limit_threads_sets_and_restores_torch_and_blas_threads():
    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before


def test_limit_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), limit_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_none_leaves_the_setting_alone():
    before = torch.get_num_threads()
    with limit_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be an int >= 1"), limit_threads(bad):
        pass
