"""``DELETE /v1/operations/ID`` of a queued run, cancelled at every await.

The cancel is marked in the operations file (on its own thread, so it commits even
when the request is cancelled meanwhile) and the run is taken out of the queue; the
operation must then end ``cancelled`` (or, if nothing was marked, run), never stay
``queued`` with its app refused as busy until a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from statelog.engine import ApplicationBuilder, State, action
from statelog.service import ServiceConfig, Workflow, load_workflow
from statelog.service._app import create_app, service_of
from statelog.service._service import Service

from .cancelling import all_operations, answer, cancelled_at, idle, post, request

#: what the ``gated`` run waits for: it holds the one worker until the test opens it
_gate: list[asyncio.Event] = []


@action(reads=["count"], writes=["count"])
async def wait_gate(state: State) -> State:
    await _gate[-1].wait()
    return state.update(count=1)


@action(reads=["count"], writes=["done"])
def finish(state: State) -> State:
    return state.update(done=True)


def gated() -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(wait=wait_gate, finish=finish)
        .with_transitions(("wait", "finish"))
        .with_state(count=0, done=False)
        .with_entrypoint("wait")
    )


async def one_worker_service(tmp_path: Path) -> tuple[Any, Service]:
    """A started service with ``counter`` and ``gated`` and one worker."""
    app = create_app(
        ServiceConfig(
            db=str(tmp_path / "log.db"),
            workflows=[
                load_workflow("counter=tests.service.workflows:counter"),
                Workflow("gated", gated),
            ],
            max_concurrent_runs=1,
        )
    )
    service = service_of(app)
    await service.start()
    return app, service


async def test_a_cancelled_delete_of_a_queued_run_never_leaves_it_queued(tmp_path: Path) -> None:
    app, service = await one_worker_service(tmp_path)
    try:
        for k in range(1000):
            _gate.append(asyncio.Event())
            status, blocker = answer(
                await post(app, "edge", {"graph": "gated", "app_id": f"gate-{k}"}, f"g{k}")
            )
            assert status == 202, blocker
            while service.scheduler.running == 0:  # the one worker holds the gated run
                await asyncio.sleep(0)
            app_id = f"victim-{k}"
            status, victim = answer(
                await post(app, "edge", {"graph": "counter", "app_id": app_id}, app_id)
            )
            assert status == 202 and service.scheduler.queued == 1
            delete = request(app, "DELETE", f"/v1/operations/{victim['id']}", [])
            first = await cancelled_at(delete, k)
            _gate[-1].set()
            await idle(service)
            ops = {op.app_id: op for op in await all_operations(service)}
            assert ops[f"gate-{k}"].status == "completed"
            ended = ops[app_id]
            # marked: it ends cancelled; not marked: it ran; never left queued
            expected = "cancelled" if ended.cancel_requested else "completed"
            assert ended.status == expected, ended
            # and its app takes a new run
            status, again = answer(
                await post(app, "edge", {"graph": "counter", "app_id": app_id}, f"again-{k}")
            )
            assert status == 202, again
            await idle(service)
            if first is not None:  # ended uncancelled: every await was tried
                status, answered = answer(first)
                assert status == 200 and answered["status"] == "cancelled"
                assert k > 1
                assert await service.store.verify() is None
                return
        raise AssertionError("the call never ended uncancelled")
    finally:
        _gate[-1].set()
        await service.stop()


async def test_a_skipped_run_counts_as_running_until_it_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DELETE whose request was cancelled after the mark leaves the run to be skipped:
    the worker that takes it off the queue ends it. Meanwhile it counts as running, so
    /readyz (and ``idle``) never see it gone while the file still says ``queued``."""
    app, service = await one_worker_service(tmp_path)
    scheduler = service.scheduler
    release = asyncio.Event()
    try:
        _gate.append(asyncio.Event())
        status, _ = answer(await post(app, "edge", {"graph": "gated", "app_id": "gate"}, "g"))
        assert status == 202
        for _ in range(10_000):
            if scheduler.running:
                break
            await asyncio.sleep(0)
        status, victim = answer(
            await post(app, "edge", {"graph": "counter", "app_id": "victim"}, "v")
        )
        assert status == 202 and scheduler.queued == 1
        # what a DELETE cancelled after its mark leaves: the mark, and the run to skip
        scheduler._skip.add(victim["id"])
        assert await service.operations.request_cancel(victim["id"]) is not None
        store = scheduler._store
        original = store.last_sequence

        async def held(partition_key: str, app_id: str) -> int:
            if app_id == "victim":  # the skipped run's end waits here
                await release.wait()
            return await original(partition_key, app_id)

        monkeypatch.setattr(store, "last_sequence", held)
        _gate[-1].set()
        for _ in range(10_000):  # until the worker takes the victim off the queue
            if not scheduler._skip:
                break
            await asyncio.sleep(0.001)
        assert not scheduler._skip and scheduler.queued == 0  # taken, its end held
        held_op = await service.operations.get(victim["id"])
        assert held_op is not None and held_op.status == "queued"
        assert scheduler.running == 1  # counted while it ends
        release.set()
        await idle(service)
        ended = await service.operations.get(victim["id"])
        assert ended is not None and ended.status == "cancelled"
    finally:
        release.set()
        _gate[-1].set()
        await service.stop()
