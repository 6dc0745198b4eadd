"""``create_app``: the FastAPI application of ``statelog serve``.

One pure-ASGI middleware in front of the routes gives every request an id,
refuses bodies over ``max_body_bytes`` (413, before the route reads them),
times it for ``/metrics`` and writes one structured access-log line (logger
``statelog.service.access``, a JSON object per request).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statelog import __version__
from statelog.ui import mount_ui

from ._problems import install_problem_handlers, problem_response
from ._routes import router
from ._service import Service, ServiceConfig

__all__ = ["create_app"]

_access = logging.getLogger("statelog.service.access")


class _Edge:
    """Request id, body size limit, latency metrics and the access log."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.service.config.max_body_bytes
        status = 500
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False
                if too_large:
                    response = problem_response(
                        "payload-too-large",
                        f"the body is {int(value)} bytes; the limit is {limit}",
                        instance=scope.get("path"),
                    )
                    await response(scope, receive, send)
                    self._done(scope, request_id, 413, started)
                    return
        # A body without Content-Length (chunked) is read here first, up to the limit,
        # and handed on whole; one over the limit is refused before any route sees it.
        receive_app = receive
        if scope["method"] in ("POST", "PUT", "PATCH") and not any(
            name == b"content-length" for name, _ in scope.get("headers", ())
        ):
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                more = bool(message.get("more_body", False))
                if len(body) > limit:
                    response = problem_response(
                        "payload-too-large",
                        f"the body is over the limit of {limit} bytes",
                        instance=scope.get("path"),
                    )
                    await response(scope, receive, send)
                    self._done(scope, request_id, 413, started)
                    return
            replay: list[Message] = [{"type": "http.request", "body": bytes(body)}]

            async def replayed() -> Message:
                return replay.pop() if replay else await receive()

            receive_app = replayed

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive_app, send_with_id)
        finally:
            self._done(scope, request_id, status, started)

    def _done(self, scope: Scope, request_id: str, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.service.metrics.observe_http(scope["method"], template, status, seconds)
        if _access.isEnabledFor(logging.INFO):
            client = scope.get("client")
            _access.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                        "client": None if client is None else client[0],
                    }
                )
            )


def create_app(config: ServiceConfig) -> FastAPI:
    """The service as an ASGI app; its lifespan opens the stores and runs the scheduler."""
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="statelog",
        version=__version__,
        description="Runs, operations and the audited history of statelog apps.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_problem_handlers(app)
    app.include_router(router)
    mount_ui(app)
    app.add_middleware(_Edge, service=service)
    return app


def service_of(app: Any) -> Service:
    """The ``Service`` behind an app made by ``create_app``."""
    found: Service = app.state.service
    return found
