"""Server-Sent Events: every event of a run, in order; resumed with Last-Event-ID."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .conftest import ServeProcess, wait_status

FINAL = {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}


def read_messages(
    response: httpx.Response, *, stop_after: int | None = None, until_kind: str | None = None
) -> list[tuple[str, int | None, dict[str, Any]]]:
    """(event, id, data) of an SSE response, until ``stop_after`` events with ids or an
    event of ``until_kind``."""
    found: list[tuple[str, int | None, dict[str, Any]]] = []
    kind, ident, data = "message", None, []
    with_ids = 0
    for line in response.iter_lines():
        if line == "":
            if data:
                found.append((kind, ident, json.loads("\n".join(data))))
                if ident is not None:
                    with_ids += 1
                if stop_after is not None and with_ids >= stop_after:
                    return found
                if until_kind is not None and kind == until_kind:
                    return found
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
    return found


def test_sse_sends_every_event_of_a_run_in_order(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        op = http.post(
            "/v1/runs", json={"graph": "long", "app_id": "sse-all", "inputs": {"delay": 0.01}}
        ).json()
        with http.stream("GET", "/v1/apps/sse-all/events/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = read_messages(response, stop_after=34)
        events = [(kind, ident, data) for kind, ident, data in messages if ident is not None]
        assert [ident for _, ident, _ in events] == list(range(34))
        assert [data["sequence_id"] for _, _, data in events] == list(range(34))
        assert events[0][0] == "app_initialized"
        assert events[-1][2]["action"] == "finish"
        assert all(kind == data["kind"] for kind, _, data in events)
        stored = http.get("/v1/apps/sse-all/events").json()["events"]
        assert [data for _, _, data in events] == stored  # the same events, byte for byte
        assert wait_status(http, op["id"], FINAL)["status"] == "completed"


def test_sse_resumes_after_a_dropped_connection_with_last_event_id(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        op = http.post(
            "/v1/runs", json={"graph": "long", "app_id": "sse-drop", "inputs": {"delay": 0.02}}
        ).json()
        with http.stream("GET", "/v1/apps/sse-drop/events/stream") as response:
            first = read_messages(response, stop_after=5)
        # the connection is closed mid-run here; the run goes on meanwhile
        seen = [ident for _, ident, _ in first if ident is not None]
        assert seen == [0, 1, 2, 3, 4]
        with http.stream(
            "GET", "/v1/apps/sse-drop/events/stream", headers={"Last-Event-ID": str(seen[-1])}
        ) as response:
            rest = read_messages(response, stop_after=29)
        again = [ident for _, ident, _ in rest if ident is not None]
        assert seen + again == list(range(34))  # no gap, no repeat
        done = wait_status(http, op["id"], FINAL)
        assert done["status"] == "completed"
        # once the run is over the stream says so with a status message
        with http.stream(
            "GET", "/v1/apps/sse-drop/events/stream", headers={"Last-Event-ID": "33"}
        ) as response:
            status = read_messages(response, until_kind="status")
        assert status[-1][0] == "status" and status[-1][2]["status"] == "completed"
        assert [m for m in status if m[1] is not None] == []


def test_sse_refuses_what_it_cannot_resume(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        bad = http.get("/v1/apps/sse-all/events/stream", headers={"Last-Event-ID": "abc"})
        assert bad.status_code == 422 and bad.json()["type"].endswith(":invalid-request")
        missing = http.get("/v1/apps/nobody/events/stream")
        assert missing.status_code == 404 and missing.json()["type"].endswith(":unknown-app")
