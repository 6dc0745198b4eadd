"""``POST /v1/runs`` cancelled at every await: no operation is committed and left behind.

A request's task is cancelled when its client goes away or when uvicorn's graceful
shutdown runs out of grace. Here the real app (``create_app``) of a real service
(SQLite files in tmp_path) is called as ASGI, once on each entrance (``_Edge``'s
plain path and the FastAPI route), and the task is cancelled at its k-th suspension
for k = 0, 1, 2, ... until the call ends uncancelled. Afterwards every committed
operation has run to its end (none sits "queued" while the scheduler is idle), a
retry with the same Idempotency-Key finds the same operation, no app has two
operations, every stream is dense and ``verify`` passes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statelog.service import ServiceConfig, load_workflow
from statelog.service._app import create_app, service_of
from statelog.service._service import Service

from .cancelling import (
    ENTRANCES,
    CancelAt,
    all_operations,
    answer,
    awaiting,
    cancelled_at,
    idle,
    post,
)


def _config(tmp_path: Path) -> ServiceConfig:
    return ServiceConfig(
        db=str(tmp_path / "log.db"),
        workflows=[
            load_workflow("counter=tests.service.workflows:counter"),
            load_workflow("refund=tests.service.workflows:refund"),
        ],
        max_concurrent_runs=2,
    )


async def _check(service: Service, apps: set[str]) -> None:
    """Every operation ran to its end, one per app; streams dense; verify passes."""
    await idle(service)
    ops = await all_operations(service)
    left = [(op.app_id, op.status) for op in ops if op.status != "completed"]
    assert left == [], "operations committed but never run (the scheduler is idle)"
    per_app = [op.app_id for op in ops]
    assert len(per_app) == len(set(per_app)), "an app got two operations"
    assert set(per_app) <= apps
    for op in ops:
        events = await service.store.read(op.partition_key, op.app_id)
        assert [e.sequence_id for e in events] == list(range(len(events)))
        assert events[-1].kind == "completed" and op.sequence_id == len(events) - 1
        steps = [e.action for e in events if e.kind == "action_completed"]
        assert steps == ["tick"] * 10 + ["finish"]  # ran once
    assert await service.store.verify() is None


@pytest.mark.parametrize("entrance", ENTRANCES)
async def test_a_cancelled_post_leaves_no_operation_that_never_runs(
    tmp_path: Path, entrance: str
) -> None:
    app = create_app(_config(tmp_path))
    service = service_of(app)
    await service.start()
    try:
        apps: set[str] = set()
        for k in range(1000):
            app_id, key = f"{entrance}-{k}", f"key-{entrance}-{k}"
            apps.add(app_id)
            body = {"graph": "counter", "app_id": app_id}
            first = await cancelled_at(post(app, entrance, body, key), k)
            before = [op for op in await all_operations(service) if op.app_id == app_id]
            # the client retries with the same key: the same operation, or a new one
            status, again = answer(await post(app, entrance, body, key))
            if before:
                assert status in (200, 202) and again["id"] == before[0].id
            else:
                assert status == 202, again
            if first is not None:
                status, op = answer(first)
                assert status == 202 and op["id"] == again["id"]
            await _check(service, apps)
            if first is not None:  # ended uncancelled: every await was tried
                assert k > 1
                return
        raise AssertionError("the call never ended uncancelled")
    finally:
        await service.stop()


@pytest.mark.parametrize("entrance", ENTRANCES)
async def test_a_post_cancelled_by_a_graceful_shutdown_runs_after_the_restart(
    tmp_path: Path, entrance: str
) -> None:
    """As uvicorn does when its grace runs out: cancel the request, then at once run the
    lifespan's shutdown; at the next start every committed operation runs."""
    config = _config(tmp_path)
    apps: set[str] = set()
    for k in range(1000):
        app = create_app(config)
        service = service_of(app)
        await service.start()
        app_id = f"{entrance}-{k}"
        apps.add(app_id)
        body = {"graph": "counter", "app_id": app_id}
        call = CancelAt(post(app, entrance, body, app_id), k)
        task = asyncio.create_task(awaiting(call))
        for _ in range(1_000_000):  # until the task is cancelled (or done)
            if call.cancelled or task.done():
                break
            await asyncio.sleep(0)
        await service.stop()
        ended = await asyncio.gather(task, return_exceptions=True)
        restarted = Service(config)
        await restarted.start()
        try:
            await _check(restarted, apps)
        finally:
            await restarted.stop()
        if not call.cancelled:  # ended uncancelled: every await was tried
            assert not isinstance(ended[0], BaseException), ended
            return
    raise AssertionError("the call never ended uncancelled")


async def test_a_cancelled_input_post_leaves_no_operation_that_never_runs(
    tmp_path: Path,
) -> None:
    """``POST /v1/apps/ID/input`` commits and submits an operation too (the same pair);
    a retry with its key after the app went on is answered by the key, not 409."""
    app = create_app(_config(tmp_path))
    service = service_of(app)
    await service.start()
    try:
        for k in range(1000):
            app_id, key = f"input-{k}", f"key-input-{k}"
            status, started = answer(
                await post(app, "edge", {"graph": "refund", "app_id": app_id}, app_id)
            )
            assert status == 202, started
            await idle(service)
            path = f"/v1/apps/{app_id}/input"
            body = {"inputs": {"approval": {"ok": True, "by": "ann"}}}
            first = await cancelled_at(post(app, "edge", body, key, path), k)
            before = [op for op in await all_operations(service) if op.app_id == app_id]
            # the client sends it again with the same key: the same operation, or a new one
            status, again = answer(await post(app, "edge", body, key, path))
            if len(before) == 2:  # the cancelled one was committed: its key finds it
                assert status in (200, 202) and again["id"] == before[1].id, again
            else:
                assert status == 202, again
            await idle(service)
            ops_before_refusals = await all_operations(service)
            ops = [op for op in ops_before_refusals if op.app_id == app_id]
            assert [op.status for op in ops] == ["waiting_for_input", "completed"]
            events = await service.store.read("", app_id)
            assert [e.sequence_id for e in events] == list(range(len(events)))
            kinds = [e.kind for e in events]
            assert kinds.count("input_received") == 1 and kinds[-1] == "completed"
            if first is not None:  # ended uncancelled: every await was tried
                assert answer(first)[1]["id"] == ops[1].id == again["id"]
                # the same key with another value, or another input's name: refused
                for other in ({"approval": {"ok": False, "by": "bo"}}, {"refund": True}):
                    status, refused = answer(await post(app, "edge", {"inputs": other}, key, path))
                    assert status == 422, refused
                    assert refused["type"].endswith(":idempotency-key-reused")
                assert len(await all_operations(service)) == len(ops_before_refusals)
                assert await service.store.verify() is None
                return
        raise AssertionError("the call never ended uncancelled")
    finally:
        await service.stop()
