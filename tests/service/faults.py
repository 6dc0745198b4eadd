"""A real TCP server that misbehaves on purpose, for the client's tests.

Each path has a script of behaviours, one per request (the last repeats):
``drop`` (close without answering), ``stall`` (never answer), ``ok``, ``slow``
(answer after 0.1 s), ``(status, headers)`` (a problem answer), ``forward``
(pass the request to the upstream service), ``forward_then_drop`` (pass it on,
then close without answering: the upstream did the work, the client saw nothing)
and ``("cut", n)`` (forward an event stream and cut it after ``n`` events; an event
stream must be scripted with ``cut``: ``forward`` reads a whole answer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

import httpx

Behaviour = Any


class FaultServer:
    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = upstream
        self.scripts: dict[str, list[Behaviour]] = {}
        self.default: Behaviour = "forward" if upstream else "ok"
        self.requests: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()
        self._http = httpx.AsyncClient(base_url=upstream or "http://unused", timeout=30)
        self.url = ""

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._closing.set()  # stalled answers end; connections close
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._server.wait_closed()
        await self._http.aclose()

    def script(self, path: str, *behaviours: Behaviour) -> None:
        self.scripts[path] = list(behaviours)

    def count(self, path: str) -> int:
        return len(self.requests[path])

    def _next(self, path: str) -> Behaviour:
        script = self.scripts.get(path)
        if not script:
            return self.default
        return script.pop(0) if len(script) > 1 else script[0]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self._closing.is_set():
            writer.close()
            return
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = target.split("?", 1)[0]
                self.requests[path].append((time.monotonic(), headers))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    keep = await self._answer(writer, method, target, path, headers, body)
                finally:
                    self.in_flight -= 1
                if not keep:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> bool:
        what = self._next(path)
        if what == "drop":
            return False
        if what == "stall":
            await self._closing.wait()
            return False
        if what in ("ok", "slow"):
            if what == "slow":
                await asyncio.sleep(0.1)
            await self._reply(writer, 200, {"ok": True, "path": path, "n": self.count(path)})
            return True
        if isinstance(what, tuple) and what[0] == "cut":
            await self._forward_stream(writer, method, target, headers, what[1])
            return False
        if isinstance(what, tuple):
            status, extra = what
            problem = {"type": "urn:statelog:problem:test", "status": status, "detail": "fault"}
            await self._reply(writer, status, problem, extra)
            return True
        forwarded = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
        response = await self._http.request(method, target, content=body, headers=forwarded)
        if what == "forward_then_drop":
            return False
        await self._raw(writer, response.status_code, response.content, dict(response.headers))
        return True

    async def _forward_stream(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: dict[str, str],
        cut: int,
    ) -> None:
        forwarded = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
        async with self._http.stream(method, target, headers=forwarded) as response:
            writer.write(
                f"HTTP/1.1 {response.status_code} OK\r\nContent-Type: "
                f"{response.headers.get('content-type', 'text/plain')}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            seen = 0
            async for line in response.aiter_lines():
                writer.write(line.encode() + b"\n")
                await writer.drain()
                if line.startswith("id:"):
                    seen += 1
                if line == "" and seen >= cut:
                    return  # cut mid-stream: the connection closes

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: Any,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json", **(extra or {})}
        await self._raw(writer, status, data, headers)

    async def _raw(
        self, writer: asyncio.StreamWriter, status: int, data: bytes, headers: dict[str, str]
    ) -> None:
        skip = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        lines = [f"HTTP/1.1 {status} X"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in skip]
        lines.append(f"content-length: {len(data)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        await writer.drain()
