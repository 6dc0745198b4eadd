"""Operation ids: 32 lowercase hex digits in UUIDv7's layout, so ids made later sort
after earlier ones (the inserts of a group land at the right edge of the ``id``
index); the uuid4 ids of an older operations file still work after a restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from statelog.service import _operations
from statelog.service._operations import (
    Operation,
    OperationStore,
    RunRequest,
    new_operation_id,
)

from .conftest import wait_status


def _create(
    store: OperationStore, app_id: str, key: str | None = None
) -> asyncio.Future[tuple[Operation, bool]]:
    return store.queue_create(
        graph="g",
        partition_key="pk",
        app_id=app_id,
        principal="anonymous",
        idempotency_key=key,
        request=RunRequest(),
        fingerprint="" if key is None else f"fp-{app_id}",
    )


def _millis(op_id: str) -> int:
    return int(op_id[:12], 16)


def test_a_new_id_is_a_uuid7_in_hex() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_operation_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for op_id in ids:
        assert len(op_id) == 32 and op_id == op_id.lower()
        parsed = uuid.UUID(op_id)
        assert parsed.hex == op_id
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= _millis(op_id) <= after
    # 74 random bits: the ids of one millisecond differ in them
    randoms = {int(op_id, 16) & ((1 << 62) - 1) for op_id in ids}
    assert len(randoms) == len(ids)


async def test_ids_follow_creation_order_across_a_burst(tmp_path: Path) -> None:
    store = await OperationStore(tmp_path / "ops").open()
    try:
        made: list[Operation] = []
        for wave in range(5):  # plain starts (one INSERT a group) and keyed ones
            futures = [
                _create(store, f"a{wave}-{n}", key=f"k{wave}-{n}" if n % 7 == 0 else None)
                for n in range(64)
            ]
            made += [op for op, _ in await asyncio.gather(*futures)]
            await asyncio.sleep(0.002)  # the next wave in a later millisecond
    finally:
        await store.aclose()
    assert len({op.id for op in made}) == len(made)
    in_order = sorted(made, key=lambda op: op.cursor)
    millis = [_millis(op.id) for op in in_order]
    assert millis == sorted(millis)  # uuid4 ids: not ordered at all
    assert _millis(in_order[-1].id) > _millis(in_order[0].id)


async def test_uuid4_ids_of_an_older_file_work_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ops"
    with monkeypatch.context() as old:  # the ids as the service made them before
        old.setattr(_operations, "new_operation_id", lambda: uuid.uuid4().hex)
        store = await OperationStore(path).open()
        try:
            queued = [
                op for op, _ in await asyncio.gather(*(_create(store, f"o{n}") for n in range(5)))
            ]
            keyed, _ = await _create(store, "okeyed", key="k-old")
        finally:
            await store.aclose()
    assert all(uuid.UUID(op.id).version == 4 for op in [*queued, keyed])

    store = await OperationStore(path).open()
    try:
        new, _ = await _create(store, "n0")
        assert uuid.UUID(new.id).version == 7
        unfinished = await store.unfinished()
        assert [op.id for op in unfinished] == [*(op.id for op in queued), keyed.id, new.id]
        again, replayed = await _create(store, "okeyed", key="k-old")
        assert replayed and again.id == keyed.id
        assert (await store.get(queued[0].id)) == queued[0]
        running = await store.mark_running(queued[1].id, 0)
        assert running is not None and running.phase == "running"
        ended = await store.finish(
            queued[1].id, "finished", "completed", sequence_id=3, position=None
        )
        assert ended is not None and ended.status == "completed"
        listed = await store.listing(after=0, limit=100, status=None, partition_keys=lambda _: True)
        assert [op.id for op in listed] == [op.id for op in unfinished]
    finally:
        await store.aclose()


def test_a_start_without_app_id_gets_a_time_ordered_one(make_server: Any) -> None:
    served = make_server()
    with httpx.Client(base_url=served.url, timeout=10) as http:
        ops = []
        for _ in range(3):
            ops.append(http.post("/v1/runs", json={"graph": "counter"}).json())
            time.sleep(0.002)  # the next one in a later millisecond
        done = [wait_status(http, op["id"], {"completed"}) for op in ops]
        apps = [op["app_id"] for op in done]
        assert len(set(apps)) == 3
        for app_id in apps:
            assert uuid.UUID(app_id).hex == app_id and uuid.UUID(app_id).version == 7
            assert http.get(f"/v1/apps/{app_id}").status_code == 200
        assert sorted(apps) == apps and _millis(apps[0]) < _millis(apps[-1])
        ids = [op["id"] for op in ops]
        assert sorted(ids) == ids and all(uuid.UUID(i).version == 7 for i in ids)
    assert served.stop() == 0


async def test_the_writer_keeps_statement_journals_in_memory(tmp_path: Path) -> None:
    """A group's savepoints and multi-row INSERTs journal the pages they change; past
    64 KB SQLite would spill that journal to a new temp file in every group."""
    store = await OperationStore(tmp_path / "ops").open()
    try:
        await asyncio.gather(*(_create(store, f"m{n}") for n in range(300)))
        assert store._conn().execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
    finally:
        await store.aclose()
