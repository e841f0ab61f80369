"""Benchmarks as commands (speed goals live here, not in unit tests): ``python -m trustml.bench <name>``.

``SUBCOMMANDS`` maps a name to the module that implements it; the module defines
``add_arguments(parser)`` and ``main(args) -> int``. Add a benchmark by adding one line here.
"""

SUBCOMMANDS: dict[str, str] = {
    "dpsgd": "trustml.bench.dpsgd",  # one DP-SGD training step: trustml vs Opacus vs a naive loop
    "ceat": "trustml.bench.ceat",  # CEAT with and without the embedding cache
    "simulate": "trustml.bench.simulate",  # the in-process FL loop: devices × rounds throughput
    "secagg": "trustml.bench.secagg",  # SecAgg+ on a loopback Flower deployment: time, messages, a dropout
}

__all__ = ["SUBCOMMANDS"]
