"""The ``statelog`` command line.

Each area registers its own sub-commands from one module (``_cli_log`` for the
log, ``_cli_engine`` for applications, ...); this module only wires them up.
A command handler returns the process exit code; ``StatelogError`` ends the
run with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from statelog.eventstore import StatelogError

#: Modules whose ``register(subparsers)`` adds sub-commands, in help order.
COMMAND_MODULES = [
    "statelog._cli_log",
    "statelog._cli_engine",
    "statelog._cli_kafka",
    "statelog._cli_projections",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statelog",
        description="Event-sourced workflow state on an append-only log.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except StatelogError as exc:
        print(f"statelog: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("statelog: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
