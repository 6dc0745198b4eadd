"""The client against a server that drops connections, answers 503, or stalls - and
against the real service through such a proxy."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from statelog.client import (
    ApiStatusError,
    AsyncClient,
    Client,
    ClientConnectionError,
    ClientError,
    Limits,
    ReadTimeoutError,
    Retries,
    Timeout,
    TotalTimeoutError,
)
from statelog.eventstore import StatelogError, UsageError

from .conftest import ServeProcess
from .faults import FaultServer

FAST = Retries(attempts=3, backoff=0.01, max_backoff=0.05)


async def test_a_get_is_retried_after_dropped_connections() -> None:
    async with FaultServer() as faults, AsyncClient(faults.url, retries=FAST) as client:
        faults.script("/v1/apps/x", "drop", "drop", "ok")
        assert (await client.get_app("x"))["n"] == 3
        assert faults.count("/v1/apps/x") == 3


async def test_a_post_without_a_key_is_not_repeated_after_a_drop() -> None:
    async with FaultServer() as faults, AsyncClient(faults.url, retries=FAST) as client:
        faults.script("/v1/apps/x/input", "drop", "ok")
        with pytest.raises(ClientConnectionError) as caught:
            await client.provide_input("x", {"a": 1})
        assert isinstance(caught.value, ConnectionError | StatelogError)
        assert faults.count("/v1/apps/x/input") == 1


async def test_503_with_retry_after_is_honoured_only_where_safe() -> None:
    async with FaultServer() as faults, AsyncClient(faults.url, retries=FAST) as client:
        faults.script("/v1/operations/op1", (503, {"Retry-After": "0.3"}), "ok")
        assert (await client.get_operation("op1"))["ok"] is True
        (first, _), (second, _) = faults.requests["/v1/operations/op1"]
        assert second - first >= 0.25  # waited as told, not the 0.01 s backoff
        faults.script("/v1/apps/x/input", (503, {"Retry-After": "0"}), "ok")
        with pytest.raises(ApiStatusError) as caught:
            await client.provide_input("x", {})
        assert caught.value.status_code == 503 and caught.value.problem_type == "test"
        assert faults.count("/v1/apps/x/input") == 1
        faults.script("/v1/operations/op2", (503, {"Retry-After": "0"}))
        with pytest.raises(ApiStatusError):
            await client.get_operation("op2")
        assert faults.count("/v1/operations/op2") == FAST.attempts  # then it gives up


async def test_a_start_is_retried_with_the_same_idempotency_key() -> None:
    async with FaultServer() as faults, AsyncClient(faults.url, retries=FAST) as client:
        faults.script("/v1/runs", (502, {}), "drop", "ok")
        await client.start_run("counter", app_id="a")
        keys = [headers["idempotency-key"] for _, headers in faults.requests["/v1/runs"]]
        assert len(keys) == 3 and len(set(keys)) == 1


async def test_timeouts_fire_as_configured() -> None:
    async with FaultServer() as faults:
        faults.script("/v1/apps/x/input", "stall")
        faults.script("/v1/apps/x", "stall")
        quick = Timeout(connect=1, read=0.2, total=10)
        async with AsyncClient(faults.url, timeout=quick, retries=FAST) as client:
            with pytest.raises(ReadTimeoutError) as caught:
                await client.provide_input("x", {})
            assert isinstance(caught.value, TimeoutError)
            assert faults.count("/v1/apps/x/input") == 1  # a POST without a key: once
            with pytest.raises(ReadTimeoutError):
                await client.get_app("x")
            assert faults.count("/v1/apps/x") == FAST.attempts  # a GET: tried again
        total = Timeout(connect=1, read=30, total=0.3)
        async with AsyncClient(faults.url, timeout=total, retries=FAST) as client:
            with pytest.raises(TotalTimeoutError):
                await client.get_app("x")
            with pytest.raises(TotalTimeoutError):  # a per-call override
                await client.get_app("x", timeout=Timeout(read=30, total=0.2))


async def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with AsyncClient(f"http://127.0.0.1:{port}", retries=FAST) as client:
            with pytest.raises(ClientConnectionError):
                await client.start_run("counter")


async def test_the_concurrency_cap_holds() -> None:
    async with FaultServer() as faults:
        faults.script("/v1/apps/x", "slow")
        async with AsyncClient(faults.url, limits=Limits(max_concurrency=4)) as client:
            await asyncio.gather(*(client.get_app("x") for _ in range(20)))
            assert faults.count("/v1/apps/x") == 20
            assert faults.max_in_flight <= 4 and client.max_in_flight == 4


async def test_idempotency_keys_prevent_double_starts(server: ServeProcess) -> None:
    async with FaultServer(upstream=server.url) as proxy:
        # the first POST reaches the service, which queues the run; the answer is lost
        proxy.script("/v1/runs", "forward_then_drop", "forward")
        async with AsyncClient(proxy.url, retries=FAST) as client:
            op = await client.start_run("counter", app_id="cl-idem")
            assert proxy.count("/v1/runs") == 2
            done = await client.wait(op, timeout=30)
            assert done["status"] == "completed" and done["id"] == op["id"]
    async with AsyncClient(server.url) as direct:
        ops = (await direct.list_operations(limit=1000))["operations"]
        assert [o["id"] for o in ops if o["app_id"] == "cl-idem"] == [op["id"]]
        events = (await direct.get_events("cl-idem"))["events"]
        assert [e["sequence_id"] for e in events] == list(range(14))


async def test_wait_falls_back_to_polling_without_the_stream(server: ServeProcess) -> None:
    async with FaultServer(upstream=server.url) as proxy:
        stream = "/v1/apps/cl-poll/events/stream"
        proxy.script(stream, (503, {"Retry-After": "0"}))
        async with AsyncClient(proxy.url, retries=FAST) as client:
            op = await client.start_run("long", app_id="cl-poll", inputs={"delay": 0.01})
            done = await client.wait(op, timeout=30)
            assert done["status"] == "completed"
            assert proxy.count(stream) == FAST.attempts
            assert proxy.count(f"/v1/operations/{op['id']}") >= 2
            with pytest.raises(TotalTimeoutError):
                slow = await client.start_run("long", app_id="cl-slow", inputs={"delay": 0.2})
                await client.wait(slow, timeout=0.3)
            await client.cancel(slow)


async def test_followed_events_resume_after_cut_streams(server: ServeProcess) -> None:
    async with FaultServer(upstream=server.url) as proxy:
        stream = "/v1/apps/cl-follow/events/stream"
        proxy.script(stream, ("cut", 5), ("cut", 7), ("cut", 1000))
        async with AsyncClient(proxy.url, retries=Retries(attempts=5, backoff=0.01)) as client:
            await client.start_run("long", app_id="cl-follow", inputs={"delay": 0.01})
            seen = []
            async for event in client.events("cl-follow", follow=True):
                seen.append(event["sequence_id"])
                if len(seen) == 34:
                    break
            assert seen == list(range(34))  # no gap, no repeat across two cut connections
            resumed = [h.get("last-event-id") for _, h in proxy.requests[stream]]
            assert resumed[:3] == [None, "4", "11"]
            paged = [e["sequence_id"] async for e in client.events("cl-follow")]
            assert paged == list(range(34))


async def test_every_endpoint_through_the_async_client(server: ServeProcess) -> None:
    async with AsyncClient(server.url) as client:
        op = await client.start_run("counter", app_id="cl-all", partition_key="p1")
        assert (await client.wait(op, timeout=30))["status"] == "completed"
        assert (await client.get_app("cl-all", partition_key="p1"))["status"] == "completed"
        assert (await client.get_state("cl-all", partition_key="p1", at=3))["state"]["count"] == 2
        assert (await client.verify("cl-all", partition_key="p1"))["ok"] is True
        assert (await client.export("cl-all", partition_key="p1")).count(b"\n") == 15
        forked = await client.fork("cl-all", "cl-all-2", partition_key="p1", sequence_id=3)
        assert forked["app_id"] == "cl-all-2" and forked["partition_key"] == "p1"
        apps = await client.list_apps(partition_key="p1")
        assert [a["app_id"] for a in apps["apps"]] == ["cl-all", "cl-all-2"]
        with pytest.raises(ApiStatusError) as caught:
            await client.provide_input("cl-all", {"ok": True}, partition_key="p1")
        assert caught.value.status_code == 409
        assert caught.value.problem_type == "not-waiting-for-input"
        assert isinstance(caught.value, ClientError)
        with pytest.raises(ApiStatusError) as missing:
            await client.get_app("nobody")
        assert missing.value.problem_type == "unknown-app"
        assert await client.health() is True
        assert "statelog_steps_total" in await client.metrics()
        running = await client.start_run("long", app_id="cl-cancel", inputs={"delay": 0.05})
        await client.cancel(running)
        assert (await client.wait(running, timeout=30))["status"] == "cancelled"


def test_the_sync_client_wraps_the_async_one(server: ServeProcess) -> None:
    with Client(server.url) as client:
        op = client.start_run("counter", app_id="cl-sync")
        assert client.wait(op, timeout=30)["status"] == "completed"
        assert client.get_state("cl-sync")["state"] == {"count": 10, "done": True}
        assert [e["sequence_id"] for e in client.events("cl-sync")] == list(range(14))
        followed = client.events("cl-sync", follow=True)
        assert [next(followed)["sequence_id"] for _ in range(3)] == [0, 1, 2]
        followed.close()
    with pytest.raises(UsageError):
        client.get_app("cl-sync")  # closed


async def test_the_sync_client_refuses_a_running_loop(server: ServeProcess) -> None:
    with pytest.raises(UsageError):
        Client(server.url)


def test_client_has_every_call_of_async_client() -> None:
    public = {
        name
        for name in vars(AsyncClient)
        if not name.startswith("_") and callable(getattr(AsyncClient, name))
    }
    assert public - {"aclose"} <= set(vars(Client)), public - set(vars(Client))


def test_httpx_errors_are_translated_in_one_place() -> None:
    from statelog.client._errors import translate

    assert type(translate(httpx.ConnectTimeout("x"), "GET", "u")).__name__ == "ConnectTimeoutError"
    assert isinstance(translate(httpx.ReadTimeout("x"), "GET", "u"), ReadTimeoutError)
    assert isinstance(translate(httpx.RemoteProtocolError("x"), "GET", "u"), ConnectionError)
    assert isinstance(translate(httpx.DecodingError("x"), "GET", "u"), ClientError)
