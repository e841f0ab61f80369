"""What SecAgg+ costs on a real Flower deployment (SuperLink + SuperNodes on 127.0.0.1), with and without a dropout.

    python -m trustml.bench secagg [--devices 4] [--rounds 1] [--output PATH]

Four runs of the trustml Flower app on one loopback federation (one SuperNode per device, every device selected,
uniform selection, plain mean — so all runs train the same devices identically):

- ``plain``: FedAvg, updates in the clear;
- ``secagg``: the same with SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``): four message rounds per round
  (keys, key shares, masked vectors, unmasking);
- ``plain, one dropout`` / ``secagg, one dropout``: device ``--drop`` fails while training (``fail-partitions``),
  the round proceeds with the others (``min-replies`` = devices − 1); under SecAgg+ the server reconstructs the
  dropped device's pairwise masks from its neighbours' key shares.

It prints each run's server seconds, messages sent and received, and the largest difference between the final
models of SecAgg+ and the plain run (SecAgg+ quantises each update to ``quantization_range`` = 2²² levels on
``[-secagg-clipping-range, secagg-clipping-range]``), then one JSON object (written to ``--output`` if given; the
chapter federated/05 reads the copy shipped as ``trustml/federated/flower/measured/secagg_loopback.json``).
Each message starts a fresh ClientApp process on its SuperNode (Flower's deployment model), which dominates the
time here: the ratios, not the seconds, carry over to other machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform

import numpy as np

SHIPPED = pathlib.Path(__file__).resolve().parents[1] / "federated" / "flower" / "measured" / "secagg_loopback.json"


def run(*, devices: int, rounds: int, drop: int, clipping_range: float) -> dict:
    from trustml.federated.flower.loopback import LoopbackFederation

    base = {"n-devices": devices, "num-server-rounds": rounds, "devices-per-round": devices, "selection": "uniform",
            "aggregation": "mean", "secagg-clipping-range": clipping_range, "secagg-num-shares": 3,
            "secagg-threshold": 2}
    dropout: dict[str, object] = {"fail-partitions": str(drop), "min-replies": devices - 1}
    runs: dict[str, dict[str, object]] = {"plain": {}, "secagg": {"secagg": True}, "plain, one dropout": dropout,
            "secagg, one dropout": {"secagg": True, **dropout}}
    results: dict[str, dict] = {}
    with LoopbackFederation(devices) as federation:
        for name, extra in runs.items():
            result = federation.run({**base, **extra}, timeout=600)
            results[name] = result
            print(f"{name:22s} {result['seconds']:7.1f} s  sent {result['messages']['sent']:3d}  "
                  f"replies {result['messages']['replies']:3d} (errors {result['messages']['error_replies']})  "
                  f"trained {result['trained']}", flush=True)

    def difference(a: str, b: str) -> float:
        return float(np.abs(np.asarray(results[a]["final_params"]) - np.asarray(results[b]["final_params"])).max())

    table = {name: {key: r[key] for key in ("seconds", "wall_seconds", "messages", "trained", "failed", "accuracy",
                                            "change_norm")} for name, r in results.items()}
    return {
        "runs": table,
        "max_abs_difference": {"secagg vs plain": difference("secagg", "plain"),
                               "secagg vs plain, one dropout": difference("secagg, one dropout",
                                                                          "plain, one dropout")},
        "quantization_step": 2 * clipping_range / 2**22,
        "settings": {"devices": devices, "rounds": rounds, "dropped_device": drop, **base},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "date": datetime.date.today().isoformat()},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=4, help="SuperNodes = devices, all selected (default 4)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--drop", type=int, default=2, help="the device that fails in the dropout runs")
    parser.add_argument("--clipping-range", type=float, default=1.0, help="SecAgg+ clipping range of update entries")
    parser.add_argument("--output", type=pathlib.Path, default=None, help="also write the JSON here")


def main(args: argparse.Namespace) -> int:
    if not 3 <= args.devices or not 0 <= args.drop < args.devices:
        raise SystemExit("--devices must be >= 3 (SecAgg+ with a dropout needs two neighbours) and --drop one of them")
    record = run(devices=args.devices, rounds=args.rounds, drop=args.drop, clipping_range=args.clipping_range)
    print("largest |difference| of the final models:", record["max_abs_difference"],
          f"(quantisation step {record['quantization_step']:.1e})")
    text = json.dumps(record, indent=1)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(json.dumps(record))
    return 0
