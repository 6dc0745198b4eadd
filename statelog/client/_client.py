"""``AsyncClient``: the service's API on one pooled ``httpx.AsyncClient``.

Every call takes ``timeout=`` like httpx (a ``Timeout``, or seconds for the
total). Every call goes through ``_send``: at most ``Limits.max_concurrency`` calls in
flight, a per-attempt connect/read timeout and a total timeout per call, and
retries with exponential backoff and jitter where repeating is safe:

* a connection that could not be made (nothing was sent): any call;
* a dropped connection, a read timeout, or a 429/502/503/504 answer (honouring
  ``Retry-After``): only GET/DELETE, and POSTs that carry an ``Idempotency-Key``
  (``start_run`` always does, so a retried start never starts two runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from ._config import RETRY_STATUSES, Limits, Retries, Timeout
from ._errors import (
    ApiStatusError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    TotalTimeoutError,
    translate,
)

__all__ = ["FINAL_STATUSES", "AsyncClient"]

#: Operation statuses that do not change any more.
FINAL_STATUSES = frozenset(
    {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})
_STREAM_READ = 60.0  # an event stream sends a keep-alive every 15 s
_TIMEOUT, _LIMITS, _RETRIES = Timeout(), Limits(), Retries()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else max(when.timestamp() - time.time(), 0.0)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": response.reason_phrase, "detail": response.text[:500]}
    return body if isinstance(body, dict) else {"detail": str(body)[:500]}


def _op_id(operation: str | Mapping[str, Any]) -> str:
    return operation if isinstance(operation, str) else str(operation["id"])


class AsyncClient:
    """An asyncio client for ``statelog serve``; use it as ``async with AsyncClient(url)``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: Timeout | float = _TIMEOUT,
        limits: Limits = _LIMITS,
        retries: Retries | int = _RETRIES,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout if isinstance(timeout, Timeout) else Timeout(total=timeout)
        self.retries = retries if isinstance(retries, Retries) else Retries(attempts=retries)
        self.limits = limits
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=sent,
            timeout=self._httpx_timeout(self.timeout, None),
            limits=httpx.Limits(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive,
                keepalive_expiry=limits.keepalive_expiry,
            ),
        )
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._in_flight = 0
        #: Most calls this client had in flight at once (for tests and tuning).
        self.max_in_flight = 0

    @staticmethod
    def _httpx_timeout(timeout: Timeout, remaining: float | None) -> httpx.Timeout:
        def cap(value: float) -> float:
            return value if remaining is None else max(min(value, remaining), 0.001)

        return httpx.Timeout(
            connect=cap(timeout.connect),
            read=cap(timeout.read),
            write=cap(timeout.write),
            pool=cap(timeout.connect),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> httpx.Response:
        limits = self._call_timeout(timeout)
        safe = method in _SAFE_METHODS or bool(headers and "Idempotency-Key" in headers)
        clean = None if params is None else {k: v for k, v in params.items() if v is not None}
        deadline = None if limits.total is None else time.monotonic() + limits.total
        async with self._slots:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                return await self._attempts(
                    method, path, clean, json, headers, limits, safe, deadline
                )
            finally:
                self._in_flight -= 1

    def _call_timeout(self, timeout: Timeout | float | None) -> Timeout:
        if timeout is None:
            return self.timeout
        if isinstance(timeout, Timeout):
            return timeout
        return Timeout(
            connect=self.timeout.connect,
            read=self.timeout.read,
            write=self.timeout.write,
            total=timeout,
        )

    async def _attempts(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        limits: Timeout,
        safe: bool,
        deadline: float | None,
    ) -> httpx.Response:
        retries = self.retries
        url = f"{self._http.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TotalTimeoutError(f"{method} {url}: no time left for attempt {attempt}")
            wait: float | None = None
            try:
                async with asyncio.timeout(remaining):
                    response = await self._http.request(
                        method,
                        path,
                        params=params,
                        json=json,
                        headers=headers,
                        timeout=self._httpx_timeout(limits, remaining),
                    )
            except TimeoutError as exc:
                if isinstance(exc, ClientError):
                    raise
                raise TotalTimeoutError(
                    f"{method} {url}: no answer within the total timeout of {limits.total} s"
                ) from exc
            except httpx.HTTPError as exc:
                error = translate(exc, method, url)
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt >= retries.attempts or not (safe or unsent):
                    raise error from exc
                wait = retries.delay(attempt)
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status not in RETRY_STATUSES or not safe or attempt >= retries.attempts:
                    raise ApiStatusError(method, url, status, _problem(response))
                wait = retries.delay(attempt, _retry_after(response))
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TotalTimeoutError(
                    f"{method} {url}: the next attempt would start after the total timeout "
                    f"of {limits.total} s"
                )
            await asyncio.sleep(wait)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        return response.json()

    # ------------------------------------------------------------------ runs

    async def start_run(
        self,
        graph: str,
        *,
        app_id: str | None = None,
        partition_key: str = "",
        inputs: Mapping[str, Any] | None = None,
        halt_before: Sequence[str] = (),
        halt_after: Sequence[str] = (),
        max_steps: int | None = None,
        run_timeout: float | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """Queue a run (a new app, or resume ``app_id``); return its operation at once.

        The call carries an ``Idempotency-Key`` (a new one unless given), so its
        retries return the same operation and never start a second run.
        """
        body: dict[str, Any] = {"graph": graph, "partition_key": partition_key}
        if app_id is not None:
            body["app_id"] = app_id
        if inputs:
            body["inputs"] = dict(inputs)
        if halt_before:
            body["halt_before"] = list(halt_before)
        if halt_after:
            body["halt_after"] = list(halt_after)
        if max_steps is not None:
            body["max_steps"] = max_steps
        if run_timeout is not None:
            body["timeout"] = run_timeout
        if actor is not None:
            body["actor"] = actor
        key = idempotency_key or uuid.uuid4().hex
        result: dict[str, Any] = await self._json(
            "POST", "/v1/runs", json=body, headers={"Idempotency-Key": key}, timeout=timeout
        )
        return result

    async def get_operation(
        self,
        operation: str | Mapping[str, Any],
        *,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """An operation's current status."""
        result: dict[str, Any] = await self._json(
            "GET", f"/v1/operations/{_op_id(operation)}", timeout=timeout
        )
        return result

    async def list_operations(
        self,
        *,
        status: str | None = None,
        cursor: int | None = None,
        limit: int | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """A page of operations: ``{"operations": [...], "next_cursor": ...}``."""
        params = {"status": status, "cursor": cursor, "limit": limit}
        result: dict[str, Any] = await self._json(
            "GET", "/v1/operations", params=params, timeout=timeout
        )
        return result

    async def cancel(
        self,
        operation: str | Mapping[str, Any],
        *,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """Cancel a run (queued: at once; running: at its next step boundary)."""
        result: dict[str, Any] = await self._json(
            "DELETE", f"/v1/operations/{_op_id(operation)}", timeout=timeout
        )
        return result

    async def wait(
        self,
        operation: str | Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
        poll_interval: float = 0.05,
        max_poll_interval: float = 1.0,
    ) -> dict[str, Any]:
        """Until the operation ends (halted, completed, failed, cancelled, ...); return it.

        Listens to the app's event stream and checks the operation when the
        stream reports a status change; if the stream is not available it polls
        with backoff (``poll_interval`` doubling up to ``max_poll_interval``).
        ``timeout`` (seconds, ``None``: no limit) raises ``TotalTimeoutError``.
        """
        op_id = _op_id(operation)
        try:
            async with asyncio.timeout(timeout):
                current = await self.get_operation(op_id)
                if current["status"] in FINAL_STATUSES:
                    return current
                with contextlib.suppress(ClientConnectionError, ApiStatusError, ClientTimeoutError):
                    found = await self._wait_streaming(current)
                    if found is not None:
                        return found
                return await self._wait_polling(op_id, poll_interval, max_poll_interval)
        except TimeoutError as exc:
            if isinstance(exc, ClientError):
                raise
            raise TotalTimeoutError(f"operation {op_id} did not end within {timeout} s") from exc

    async def _wait_streaming(self, current: dict[str, Any]) -> dict[str, Any] | None:
        start = (current.get("sequence_id") or -1) + 1
        async for message in self._sse(
            current["app_id"], current["partition_key"], start, statuses=True
        ):
            if message[0] != "status":
                continue
            if message[2].get("status") in ("queued", "running"):
                continue
            again = await self.get_operation(current["id"])
            if again["status"] in FINAL_STATUSES:
                return again
        return None

    async def _wait_polling(
        self, op_id: str, interval: float, max_interval: float
    ) -> dict[str, Any]:
        while True:
            await asyncio.sleep(interval)
            current = await self.get_operation(op_id)
            if current["status"] in FINAL_STATUSES:
                return current
            interval = min(interval * 2, max_interval)

    # ------------------------------------------------------------------ apps

    async def list_apps(
        self,
        *,
        status: str | None = None,
        graph: str | None = None,
        partition_key: str | None = None,
        cursor: int | None = None,
        limit: int | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """A page of apps with their status: ``{"apps": [...], "next_cursor": ...}``."""
        params = {
            "status": status,
            "graph": graph,
            "partition_key": partition_key,
            "cursor": cursor,
            "limit": limit,
        }
        result: dict[str, Any] = await self._json("GET", "/v1/apps", params=params, timeout=timeout)
        return result

    async def get_app(
        self,
        app_id: str,
        *,
        partition_key: str = "",
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """An app's status, position and last sequence id."""
        result: dict[str, Any] = await self._json(
            "GET", f"/v1/apps/{app_id}", params={"partition_key": partition_key}, timeout=timeout
        )
        return result

    async def get_events(
        self,
        app_id: str,
        *,
        partition_key: str = "",
        from_sequence: int = 0,
        limit: int | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """A page of an app's events: ``{"events": [...], "next_from": ...}``."""
        params = {"partition_key": partition_key, "from": from_sequence, "limit": limit}
        result: dict[str, Any] = await self._json(
            "GET", f"/v1/apps/{app_id}/events", params=params, timeout=timeout
        )
        return result

    async def get_state(
        self,
        app_id: str,
        *,
        partition_key: str = "",
        at: int | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """The app's state now (or after event ``at``): ``{"sequence_id", "state", ...}``."""
        params = {"partition_key": partition_key, "at": at}
        result: dict[str, Any] = await self._json(
            "GET", f"/v1/apps/{app_id}/state", params=params, timeout=timeout
        )
        return result

    async def verify(
        self,
        app_id: str,
        *,
        partition_key: str = "",
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """Walk the app's hash chain: ``{"ok": bool, "broken": ...}``."""
        result: dict[str, Any] = await self._json(
            "GET",
            f"/v1/apps/{app_id}/verify",
            params={"partition_key": partition_key},
            timeout=timeout,
        )
        return result

    async def export(
        self,
        app_id: str,
        *,
        partition_key: str = "",
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> bytes:
        """The app's events as an export file (JSON lines, hashes intact)."""
        response = await self._send(
            "GET",
            f"/v1/apps/{app_id}/export",
            params={"partition_key": partition_key},
            timeout=timeout,
        )
        return response.content

    async def provide_input(
        self,
        app_id: str,
        inputs: Mapping[str, Any],
        *,
        partition_key: str = "",
        actor: str | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """Human input for an app that waits for it."""
        body: dict[str, Any] = {"inputs": dict(inputs)}
        if actor is not None:
            body["actor"] = actor
        result: dict[str, Any] = await self._json(
            "POST",
            f"/v1/apps/{app_id}/input",
            params={"partition_key": partition_key},
            json=body,
            timeout=timeout,
        )
        return result

    async def fork(
        self,
        app_id: str,
        new_app_id: str,
        *,
        partition_key: str = "",
        sequence_id: int | None = None,
        new_partition_key: str | None = None,
        graph: str | None = None,
        timeout: Timeout | float | None = None,  # noqa: ASYNC109 - httpx's per-call timeout
    ) -> dict[str, Any]:
        """A new app from ``app_id``'s state at ``sequence_id`` (default: its last event)."""
        body: dict[str, Any] = {"new_app_id": new_app_id}
        if sequence_id is not None:
            body["sequence_id"] = sequence_id
        if new_partition_key is not None:
            body["partition_key"] = new_partition_key
        if graph is not None:
            body["graph"] = graph
        result: dict[str, Any] = await self._json(
            "POST",
            f"/v1/apps/{app_id}/fork",
            params={"partition_key": partition_key},
            json=body,
            timeout=timeout,
        )
        return result

    async def health(self, *, timeout: Timeout | float | None = None) -> bool:  # noqa: ASYNC109 - httpx's per-call timeout
        """``True`` when ``/readyz`` says the service takes runs."""
        try:
            await self._send("GET", "/readyz", timeout=timeout)
        except ApiStatusError:
            return False
        return True

    async def metrics(self, *, timeout: Timeout | float | None = None) -> str:  # noqa: ASYNC109 - httpx's per-call timeout
        """The Prometheus text of ``/metrics``."""
        return (await self._send("GET", "/metrics", timeout=timeout)).text

    # ------------------------------------------------------------------ event streams

    async def events(
        self,
        app_id: str,
        *,
        partition_key: str = "",
        from_sequence: int = 0,
        follow: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """An app's events in order. ``follow=True`` keeps listening (Server-Sent
        Events) and reconnects after a dropped connection with ``Last-Event-ID``, so
        no event is missed or repeated; otherwise it pages through what is there."""
        if not follow:
            start: int | None = from_sequence
            while start is not None:
                page = await self.get_events(
                    app_id, partition_key=partition_key, from_sequence=start
                )
                for event in page["events"]:
                    yield event
                start = page["next_from"]
            return
        async for _, _, event in self._sse(app_id, partition_key, from_sequence, statuses=False):
            yield event

    async def _sse(
        self, app_id: str, partition_key: str, start: int, *, statuses: bool
    ) -> AsyncIterator[tuple[str, int | None, dict[str, Any]]]:
        """(event, id, data) of the app's stream, reconnecting where it is safe."""
        import json as _json

        retries = self.retries
        next_seq = start
        failures = 0
        url = f"/v1/apps/{app_id}/events/stream"
        timeout = httpx.Timeout(
            connect=self.timeout.connect, read=_STREAM_READ, write=self.timeout.write, pool=None
        )
        while True:
            headers = {"Accept": "text/event-stream"}
            params: dict[str, Any] = {"partition_key": partition_key}
            if next_seq > 0:
                headers["Last-Event-ID"] = str(next_seq - 1)
            try:
                async with self._http.stream(
                    "GET", url, params=params, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        if (
                            response.status_code in RETRY_STATUSES
                            and failures + 1 < retries.attempts
                        ):
                            failures += 1
                            await asyncio.sleep(retries.delay(failures, _retry_after(response)))
                            continue
                        raise ApiStatusError("GET", url, response.status_code, _problem(response))
                    kind: str = "message"
                    ident: int | None = None
                    data: list[str] = []
                    async for line in response.aiter_lines():
                        if line == "":
                            if data:
                                payload = _json.loads("\n".join(data))
                                if ident is not None:
                                    next_seq = ident + 1
                                    failures = 0
                                    yield kind, ident, payload
                                elif statuses:
                                    yield kind, None, payload
                            kind, ident, data = "message", None, []
                        elif line.startswith(":"):
                            continue
                        else:
                            field, _, value = line.partition(":")
                            value = value.removeprefix(" ")
                            if field == "event":
                                kind = value
                            elif field == "id":
                                ident = int(value)
                            elif field == "data":
                                data.append(value)
            except httpx.HTTPError as exc:
                error = translate(exc, "GET", url)
                failures += 1
                if failures >= retries.attempts:
                    raise error from exc
                await asyncio.sleep(retries.delay(failures))
                continue
            # the server ended the stream (it is shutting down): reconnect
            failures += 1
            if failures >= retries.attempts:
                raise ClientConnectionError(f"GET {url}: the stream ended {failures} times")
            await asyncio.sleep(retries.delay(failures))
