"""``create_app``: the FastAPI application of ``statelog serve``.

One pure-ASGI middleware in front of the routes gives every request an id,
refuses bodies over ``max_body_bytes`` (413, before the route reads them),
times it for ``/metrics`` and writes one structured access-log line (logger
``statelog.service.access``, a JSON object per request).

It also answers the plain case of ``POST /v1/runs`` itself (``_start_run``): a
JSON body that the route's model accepts, at most one token and one
Idempotency-Key. That skips FastAPI's routing and dependency solving, about a
quarter of the service's CPU per run (docs/benchmarks.md, Service); every other
request, including every one the route would refuse for its body or headers,
goes to the route, which shares ``start_operation`` with this path.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, Self

import msgspec
from fastapi import FastAPI
from pydantic import model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statelog import __version__
from statelog.ui import mount_ui

from ._auth import ANONYMOUS
from ._models import StartRunRequest
from ._problems import ProblemError, install_problem_handlers, problem_response
from ._routes import router, start_operation
from ._service import Service, ServiceConfig
from ._status import ACTIVE

__all__ = ["create_app"]

_access = logging.getLogger("statelog.service.access")


class _Edge:
    """Request id, body size limit, latency metrics and the access log."""

    def __init__(self, app: ASGIApp, service: Service, api: FastAPI) -> None:
        self.app = app
        self.service = service
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # 16 hex digits as uuid4().hex[:16] gave, cheaper (one of the per-POST cuts: +15 %
        # closed-loop posts/s together, same-run A/B, docs/benchmarks.md session 7)
        request_id = os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.service.config.max_body_bytes
        status = 500
        has_length = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                has_length = True
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
        if not has_length and scope["method"] in ("POST", "PUT", "PATCH"):
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
            if scope["method"] == "POST" and scope["path"] == "/v1/runs":
                replay_app = await self._start_run(scope, receive_app, send_with_id)
                if replay_app is None:
                    return  # answered here
                receive_app = replay_app
            await self.app(scope, receive_app, send_with_id)
        finally:
            self._done(scope, request_id, status, started)

    async def _start_run(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer ``POST /v1/runs`` in its plain case and return ``None``; otherwise
        return a ``receive`` that hands the body, already read, on to the route.

        Same answers as the route (they share ``start_operation`` and the problem handlers);
        anything the route would refuse for the body or the headers goes to the route,
        so its refusals stay FastAPI's own. Same-run A/B: service CPU per run -27 %,
        runs/s +31 % (docs/benchmarks.md, Service).
        """
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return _replaying(messages, receive)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        # from its whole body to its answer, run steps give way to this request (bounded
        # and FIFO: _admission.AdmissionFirst; docs/service.md, Scheduling); a client
        # that sends its body slowly holds nothing back
        admission = self.service.admission
        admission.enter()
        try:
            return await self._answer_run(scope, receive, send, messages, body)
        finally:
            admission.leave()

    async def _answer_run(
        self, scope: Scope, receive: Receive, send: Send, messages: list[Message], body: bytes
    ) -> Receive | None:
        """``_start_run`` once the body is read."""
        found: dict[bytes, list[bytes]] = {}
        for name, value in scope.get("headers", ()):
            if name in _RUN_HEADERS:
                found.setdefault(name, []).append(value)
        content_type = found.get(b"content-type", [])
        authorization = found.get(b"authorization", [None])
        keys = found.get(b"idempotency-key", [None])
        if (
            len(content_type) != 1
            or content_type[0].split(b";", 1)[0].strip().lower() != b"application/json"
            or len(authorization) != 1
            or len(keys) != 1
        ):
            return _replaying(messages, receive)
        key = None if keys[0] is None else keys[0].decode("latin-1")
        if key is not None and len(key) > 200:  # the route's Header(max_length=200)
            return _replaying(messages, receive)
        # msgspec reads UTF-8 JSON into the same objects as json.loads (which FastAPI
        # uses), in fewer microseconds; what it refuses (NaN, a BOM, UTF-16, a lone
        # surrogate, ...) goes to the route, read as ever (same-run A/B, closed loop 64,
        # two runs: +6.2 / +4.9 % posts/s; in-process loop CPU per POST -8 %)
        try:  # then the model in python mode, as FastAPI reads a model body
            run = _DecodedStartRun.model_validate(_decode(body))
        except Exception:  # noqa: BLE001 - the route answers it (400, 422) as ever
            return _replaying(messages, receive)
        scope["route"] = _RUNS_ROUTE  # the metrics' route label, as the route would set it
        service = self.service
        try:
            tokens = service.config.tokens
            principal = (
                ANONYMOUS
                if tokens is None
                else tokens.authenticate(
                    None if authorization[0] is None else authorization[0].decode("latin-1")
                )
            )
            op, replayed = await start_operation(service, principal, run, key)
        except Exception as exc:  # the app's own handlers: a problem, or a 500
            handler = self.api.exception_handlers[
                ProblemError if isinstance(exc, ProblemError) else Exception
            ]
            answered = handler(Request(scope, receive), exc)
            response: Response = await answered if inspect.isawaitable(answered) else answered
            await response(scope, receive, send)
            return None
        # the route's answer (_routes.queue_run: the same status, headers in the same order,
        # the same body; tests/service/test_plain_answer.py) without a Starlette response.
        # Same-run A/B with the one header scan above, closed loop 64, 18 levels each:
        # +6 % posts/s, p99 -10 % (docs/benchmarks.md, Service 202 latency (session 8))
        body = _encode(op.to_json())
        headers = [(b"location", f"/v1/operations/{op.id}".encode())]
        status = 202
        if replayed:
            status = 202 if op.status in ACTIVE else 200
            headers.append((b"idempotent-replayed", b"true"))
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return None

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


class _DecodedStartRun(StartRunRequest):
    """``StartRunRequest`` read from a body msgspec decoded: msgspec refuses a lone
    surrogate anywhere in its JSON (such a body goes to the route), so none of its
    strings needs the model's walk for one (~4 us a POST; same-run A/B: docs/benchmarks.md,
    Service 202 latency (session 10)); every field and its limits as the route's model."""

    @model_validator(mode="after")
    def _utf8(self) -> Self:  # the same name: replaces the model's check
        return self


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_RUNS_ROUTE = SimpleNamespace(path="/v1/runs")
_RUN_HEADERS = frozenset((b"content-type", b"authorization", b"idempotency-key"))


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` again from the start: ``messages`` first, then the connection."""
    pending = list(reversed(messages))

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


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

    app = _ServiceAPI(
        title="statelog",
        version=__version__,
        description="Runs, operations and the audited history of statelog apps.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_problem_handlers(app)
    app.include_router(router)
    mount_ui(app)
    app.edge = _Edge(functools.partial(FastAPI.__call__, app), service=service, api=app)
    return app


class _ServiceAPI(FastAPI):
    """FastAPI with ``_Edge`` in front of all of it (before Starlette's and FastAPI's own
    middleware, not among them): a plain ``POST /v1/runs`` is answered without passing
    through their layers, every other request as before (their error handling included).
    Same-run A/B, closed loop 64: see docs/benchmarks.md, Service 202 latency (session 7)."""

    edge: _Edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # as Starlette sets it (the fast path's error handlers see it)
        await self.edge(scope, receive, send)


def service_of(app: Any) -> Service:
    """The ``Service`` behind an app made by ``create_app``."""
    found: Service = app.state.service
    return found
