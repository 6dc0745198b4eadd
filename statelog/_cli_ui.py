"""``statelog ui --db FILE``: the history browser on one log, read-only, on loopback.

The log is opened read-only (nothing is created or written, a running writer
may keep appending: live timelines follow it). The server binds 127.0.0.1 only
and prints ``statelog ui: http://127.0.0.1:PORT/ui/`` once it listens; Ctrl-C
or SIGTERM ends it with exit code 0. Needs the ``service`` extra.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

from statelog.eventstore import ConfigError, SQLiteEventStore

from ._cli_keys import add_key_options

__all__ = ["register"]

_HOST = "127.0.0.1"


def register(subparsers: Any) -> None:
    ui = subparsers.add_parser(
        "ui",
        help="browse a log's apps, timelines, state and diffs in a web browser (read-only)",
        description="Serve the history browser over one SQLite log on 127.0.0.1, read-only: "
        "apps, timelines, state at any sequence, diffs, chain status and live timelines. "
        "Prints the URL to open. Needs the service extra.",
    )
    ui.add_argument("--db", required=True, metavar="FILE", help="the SQLite log to browse")
    ui.add_argument("--port", type=_port, default=8765, help="0 picks a free port")
    add_key_options(ui, hmac=False)  # --public-key: the chain card checks signed heads
    ui.set_defaults(handler=_ui)


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}")
    return value


async def _ui(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from statelog.ui import create_read_only_app
    except ImportError as exc:
        raise ConfigError(
            f"ui needs the service extra: pip install 'statelog[service]' ({exc})"
        ) from exc

    # Open it once first: a missing or foreign file is one line and exit 2, not a
    # traceback from the server's startup.
    store = await SQLiteEventStore.open(args.db, read_only=True)
    await store.aclose()

    app = create_read_only_app(args.db, public_keys=args.public_keys or ())  # bad key: exit 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    uv = logging.getLogger("uvicorn")
    uv.addHandler(handler)
    uv.setLevel(logging.WARNING)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((_HOST, args.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {_HOST}:{args.port}: {exc.strerror or exc}") from exc
    port = sock.getsockname()[1]

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                print(f"statelog ui: http://{_HOST}:{port}/ui/", flush=True)

    server = Server(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise ConfigError("the ui server did not start (see the log above)")
    return 0
