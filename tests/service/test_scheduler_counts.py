"""The scheduler counts every operation it holds, queued or running, at every moment.

``/readyz`` reports ``queued`` and ``running``; a client (and the speed bench) waits
for both to be 0 to know every accepted run has ended. Here the real scheduler of a
real service (SQLite files in tmp_path) is watched at every turn of the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from statelog.service import ServiceConfig, load_workflow
from statelog.service._operations import RunRequest
from statelog.service._service import Service


async def test_an_operation_is_counted_from_submit_to_its_end(tmp_path: Path) -> None:
    service = Service(
        ServiceConfig(
            db=str(tmp_path / "log.db"),
            workflows=[load_workflow("counter=tests.service.workflows:counter")],
            max_concurrent_runs=2,
        )
    )
    await service.start()
    try:
        scheduler, metrics = service.scheduler, service.metrics
        ops = []
        for n in range(3):
            op, _ = await service.operations.queue_create(
                graph="counter",
                partition_key="",
                app_id=f"a{n}",
                principal="anonymous",
                idempotency_key=None,
                request=RunRequest(),
                fingerprint=f"f{n}",
            )
            ops.append(op)
        for op in ops:
            scheduler.submit(op)
        uncounted = []
        turns = 0
        while sum(metrics.runs_finished.values()) < len(ops) and turns < 100_000:
            held = scheduler.queued + scheduler.running
            ended = sum(metrics.runs_finished.values())
            if held + ended < len(ops):  # an operation neither queued, running nor ended
                uncounted.append((turns, scheduler.queued, scheduler.running, ended))
            await asyncio.sleep(0)
            turns += 1
        assert sum(metrics.runs_finished.values()) == len(ops)
        assert uncounted == []
        assert (scheduler.queued, scheduler.running) == (0, 0)
        for op in ops:
            found = await service.operations.get(op.id)
            assert found is not None and found.status == "completed"
    finally:
        await service.stop()
