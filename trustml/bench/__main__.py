"""``python -m trustml.bench <subcommand> [options]`` — see ``trustml.bench.SUBCOMMANDS``."""

from __future__ import annotations

import argparse
import importlib
import sys

from trustml.bench import SUBCOMMANDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustml.bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0],
                                    description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_main=module.main)
    args = parser.parse_args(argv)
    return args._main(args)


if __name__ == "__main__":
    sys.exit(main())
