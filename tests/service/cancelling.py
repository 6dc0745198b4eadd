"""Cancel a request's task at its k-th await, and drive the real ASGI app without a server.

``CancelAt`` wraps an ASGI call; ``post`` sends one POST through the whole app (its
``receive`` and ``send`` each take a loop turn, as a server's may, so they are awaits
to cancel at too); ``idle`` waits until the scheduler holds nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Generator
from typing import Any

from fastapi import FastAPI
from starlette.types import Message

from statelog.service._operations import Operation
from statelog.service._service import Service

#: (content type, with Content-Length): ``_Edge`` answers application/json itself (a
#: chunked body is read whole first) and hands a +json one, which FastAPI reads as
#: JSON, to the route
ENTRANCES = {
    "edge": (b"application/json", True),
    "edge-chunked": (b"application/json", False),
    "route": (b"application/vnd.statelog+json", True),
}


class CancelAt:
    """Await ``coro``; at its ``k``-th suspension cancel the task awaiting it.

    As ``Task.cancel`` does from outside: the future it waits on is cancelled and
    ``CancelledError`` comes out of that await. ``cancelled`` says whether the call
    got that far (``False``: it ended in fewer than ``k + 1`` suspensions).
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], k: int) -> None:
        self.coro = coro
        self.k = k
        self.cancelled = False

    def __await__(self) -> Generator[Any, Any, Any]:
        n = 0
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = self.coro.send(value) if error is None else self.coro.throw(error)
            except StopIteration as stop:
                return stop.value
            if n == self.k:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                self.cancelled = True
            n += 1
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine
                value, error = None, exc


async def awaiting(call: CancelAt) -> Any:
    return await call


async def cancelled_at(coro: Coroutine[Any, Any, list[Message]], k: int) -> list[Message] | None:
    """Run ``coro`` in a task cancelled at its ``k``-th suspension: its answer's messages,
    or ``None`` if the cancel came first (and then it did come)."""
    call = CancelAt(coro, k)
    try:
        first: list[Message] | None = await asyncio.create_task(awaiting(call))
    except asyncio.CancelledError:
        first = None
    assert call.cancelled == (first is None)
    return first


def post(
    app: FastAPI, entrance: str, body: dict[str, Any], key: str, path: str = "/v1/runs"
) -> Coroutine[Any, Any, list[Message]]:
    """One POST through the whole ASGI app; returns the answer's messages."""
    content_type, with_length = ENTRANCES[entrance]
    data = json.dumps(body).encode()
    headers = [(b"content-type", content_type)]
    if with_length:
        headers.append((b"content-length", str(len(data)).encode()))
    headers.append((b"idempotency-key", key.encode()))
    return request(app, "POST", path, headers, data)


def request(
    app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> Coroutine[Any, Any, list[Message]]:
    """One request through the whole ASGI app; returns the answer's messages."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    # as a server's, each may wait (a turn here): both are awaits to cancel at too
    async def receive() -> Message:
        await asyncio.sleep(0)
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await asyncio.sleep(0)
        sent.append(message)

    async def call() -> list[Message]:
        await app(scope, receive, send)
        return sent

    return call()


def answer(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


async def all_operations(service: Service) -> list[Operation]:
    return await service.operations.listing(
        after=0, limit=100_000, status=None, partition_keys=lambda _: True
    )


async def idle(service: Service) -> None:
    """Until the scheduler holds nothing (a condition, not a time: bounded in turns)."""
    scheduler = service.scheduler
    for _ in range(100_000):
        if scheduler.queued == 0 and scheduler.running == 0:
            # a run may be between the queue and its worker for a turn
            await asyncio.sleep(0)
            if scheduler.queued == 0 and scheduler.running == 0:
                return
        await asyncio.sleep(0.001)
    raise AssertionError("the scheduler never became idle")
