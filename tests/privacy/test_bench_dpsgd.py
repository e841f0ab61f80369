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
