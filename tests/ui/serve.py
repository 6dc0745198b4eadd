"""A real uvicorn on 127.0.0.1 for the UI tests: ``python -m tests.ui.serve --db F``.

``statelog serve``'s app (``create_app``, which mounts the UI at ``/ui``) with a
faster SSE poll and a short shutdown grace; prints ``listening on URL`` once up.
(``statelog ui`` is tested through the real command.)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import uvicorn

from statelog.service import ServiceConfig, create_app, load_token_file, load_workflow

from .workflows import APPS


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--token-file")
    parser.add_argument("--signing-key")
    parser.add_argument("--public-key", action="append", default=[])
    args = parser.parse_args()
    config = ServiceConfig(
        db=args.db,
        workflows=[load_workflow(spec) for spec in APPS],
        tokens=None if args.token_file is None else load_token_file(args.token_file),
        sse_poll_interval=0.2,
        shutdown_grace=2.0,
        signing_key=args.signing_key,
        public_keys=args.public_key,
    )
    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            print(f"listening on http://127.0.0.1:{port}", flush=True)

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
