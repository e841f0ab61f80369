"""Multi-process DP-SGD: torchrun with 2 gloo processes on CPU equals one process (same seed, same data)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from trustml.data import load_intent_task
from trustml.models import TransformerClassifier
from trustml.privacy import DPSGD, PoissonBatches
from trustml.privacy.distributed import DistributedDPSGD, DistributedPoissonBatches, train


def dataset(n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.arange(n), torch.randint(0, 3, (n,), generator=generator))


def test_rank_shares_partition_the_global_poisson_batch():
    data = dataset()
    single = [batch[0].tolist() for batch in PoissonBatches(data, sample_rate=0.1, steps=20, seed=5)]
    shares = [[batch[0].tolist() for batch in DistributedPoissonBatches(data, sample_rate=0.1, steps=20, seed=5,
                                                                         rank=rank, world_size=3)]
              for rank in range(3)]
    for step, global_batch in enumerate(single):
        parts = [shares[rank][step] for rank in range(3)]
        assert sorted(sum(parts, [])) == sorted(global_batch)  # each sampled example on exactly one rank
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_two_processes_give_the_update_and_epsilon_of_one(tmp_path):
    """torchrun --nproc_per_node=2 (gloo) against the plain single-process DPSGD, 3 steps of the book's model."""
    out = tmp_path / "two.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "trustml.privacy.distributed", "--steps", "3", "--batch-size", "48", "--out", str(out)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 process(es), 3 steps" in completed.stdout
    two = torch.load(out)
    one = train(steps=3, batch_size=48, distributed=False)
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["epsilon"] == pytest.approx(one["epsilon"], rel=1e-12) and one["epsilon"] > 0
    task = load_intent_task(max_length=16, seed=0, n_devices=100)
    torch.manual_seed(0)  # the initial model of train(seed=0)
    initial = TransformerClassifier(task.tokenizer.vocab_size, task.num_classes, max_length=16).state_dict()
    moved = 0
    for name, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][name], value, rtol=0, atol=1e-6)
        moved += int(not torch.allclose(value, initial[name]))
    assert moved > 0  # the comparison is of trained models, not of two initialisations


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_group_of_one_process_is_plain_dpsgd(one_process_group):
    data = TensorDataset(torch.randn(300, 5), torch.randint(0, 3, (300,)))
    results = []
    for kind in (DPSGD, DistributedDPSGD):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        dp = kind(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.1, max_grad_norm=0.5,
                  delta=1e-4, seed=3)
        for x, y in dp.poisson_loader(data, batch_size=30, steps=4):
            dp.step(nn.functional.cross_entropy(model(x), y, reduction="none"))
        results.append((model.state_dict(), dp.epsilon()))
    (one, eps_one), (group, eps_group) = results
    assert eps_group == eps_one
    for name in one:
        torch.testing.assert_close(group[name], one[name], rtol=0, atol=1e-7)


def test_micro_batches_are_refused_across_processes(one_process_group):
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="per_example"):
        DistributedDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
                         mode="micro_batch", micro_batch_size=4)


def test_without_a_process_group_the_error_says_how_to_launch():
    model = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="torchrun"):
        DistributedDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0)


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="rank"):
        DistributedPoissonBatches(dataset(), sample_rate=0.1, steps=1, seed=0, rank=2, world_size=2)
