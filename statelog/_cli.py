"""The ``statelog`` command line.

Each area registers its own sub-commands from one module (``_cli_log`` for the
log, ``_cli_engine`` for applications, ...); this module only wires them up.
A command handler returns the process exit code.

Exit codes: 0 done, 1 only when a check found a problem (``verify``), 2 for
any error the user can act on: a bad argument (argparse, through the types in
``_cli_types``), a ``StatelogError`` or an ``OSError``. Every error is ONE
line on stderr, ``statelog: error: ...``; a user error never shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from statelog import __version__
from statelog.eventstore import StatelogError

#: Modules whose ``register(subparsers)`` adds sub-commands, in help order.
COMMAND_MODULES = [
    "statelog._cli_log",
    "statelog._cli_keys",
    "statelog._cli_engine",
    "statelog._cli_kafka",
    "statelog._cli_projections",
    "statelog._cli_serve",
    "statelog._cli_ui",
    "statelog._cli_worker",
]


class HelpFormatter(argparse.HelpFormatter):
    """Option help ends with ``(default: X)`` when the option has a default to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        default = action.default
        if (
            "%(default)" in help
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
            or not action.option_strings
        ):
            return help
        shown = '""' if default == "" else "%(default)s"
        return f"{help} (default: {shown})".strip()


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``statelog: error: ...``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("statelog").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"statelog: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="statelog",
        description="Event-sourced workflow state on an append-only log.",
    )
    parser.add_argument("--version", action="version", version=f"statelog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def one_line(error: BaseException) -> str:
    """An error's message on one line (a message never spans lines on stderr)."""
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.strerror and not isinstance(error, StatelogError):
        name = error.filename
        text = f"{error.strerror}: {name!r}" if name is not None else error.strerror
    return text or type(error).__name__


def fail(message: str) -> int:
    """Print ``statelog: error: message`` (one line) and return exit code 2."""
    print(f"statelog: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except BrokenPipeError:  # `statelog apps | head`: the reader has all it wanted
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (StatelogError, OSError) as exc:
        return fail(one_line(exc))
    except KeyboardInterrupt:
        print("statelog: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
