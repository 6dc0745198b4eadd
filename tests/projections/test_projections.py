"""Projections: built-ins, checkpoints, failures, blue/green and bad input (real SQLite files)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from statelog.eventstore import (
    EventKind,
    MemoryEventStore,
    Recorded,
    SchemaVersionError,
    StoreUnavailableError,
    export_streams,
)
from statelog.projections import (
    AuditTrailProjection,
    FileSource,
    Progress,
    Projection,
    ProjectionContext,
    ProjectionError,
    ProjectionRunner,
    ReadModel,
    StoreSource,
    get_projection,
    open_source,
)
from tests.ops_support import v2
from tests.projection_support import SeenProjection, append_simple, dump, wait_until


async def small_store() -> MemoryEventStore:
    store = MemoryEventStore()
    await append_simple(store, streams=3, per_stream=20, batch=5)
    return store


# --------------------------------------------------------------------------- built-ins


async def test_audit_trail_has_one_row_per_event_and_is_queryable(tmp_path: Path) -> None:
    store = await small_store()
    seen: list[Progress] = []
    async with ProjectionRunner(
        AuditTrailProjection(), tmp_path / "rm.db", batch_size=7, on_progress=seen.append
    ) as runner:
        gen = await runner.rebuild(StoreSource(store))
    assert gen.status == "live" and gen.checkpoint.position == 60 == gen.checkpoint.events
    assert seen[-1].done and seen[-1].events == 60 and seen[-1].total == 60
    rows = dump(tmp_path / "rm.db", "audit_trail")
    assert len(rows) == 60
    assert [r["position"] for r in sorted(rows, key=lambda r: r["position"])] == list(range(1, 61))
    db = sqlite3.connect(tmp_path / "rm.db")
    try:
        (count,) = db.execute(
            "SELECT count(*) FROM audit_trail WHERE app_id = 'app-1' AND action = 'step1' "
            "AND timestamp >= '2026-01-01T00:00:10' AND json_extract(ops, '$[0].value') >= 0"
        ).fetchone()
        assert count > 0
        plan = " ".join(
            str(r)
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM audit_trail WHERE action = 'x' "
                "AND timestamp > '2026'"
            )
        )
        assert "USING INDEX" in plan
    finally:
        db.close()


async def test_current_state_and_app_index(tmp_path: Path) -> None:
    store = MemoryEventStore()
    base = {"partition_key": "p", "app_id": "a"}
    await store.append(
        [
            v2(**base, sequence_id=0, kind=EventKind.APP_INITIALIZED, writes={"x": 1, "y": 2}),
            v2(
                **base,
                sequence_id=1,
                kind=EventKind.ACTION_COMPLETED,
                action="inc",
                writes={"x": {"deep": [1, 2]}},
                deletes=["y"],
            ),
            v2(**base, sequence_id=2, kind=EventKind.ACTION_FAILED, action="boom"),
        ],
        expected_sequence=-1,
    )
    from statelog.eventstore import Lineage

    await store.append(
        [
            v2(
                partition_key="p",
                app_id="child",
                sequence_id=0,
                kind=EventKind.FORKED,
                parent=Lineage(partition_key="p", app_id="a", sequence_id=1),
                writes={"x": 5},
            ),
            v2(partition_key="p", app_id="child", sequence_id=1, kind=EventKind.HALTED),
        ],
        expected_sequence=-1,
    )
    path = tmp_path / "rm.db"
    for name in ("current_state", "app_index"):
        async with ProjectionRunner(get_projection(name), path) as runner:
            await runner.rebuild(StoreSource(store))
    db = sqlite3.connect(path)
    try:
        assert db.execute(
            "SELECT json_extract(state, '$.x.deep[1]'), json_type(state, '$.y') "
            "FROM current_state WHERE app_id = 'a'"
        ).fetchone() == (2, None)
        assert db.execute(
            "SELECT app_id FROM current_state WHERE json_extract(state, '$.x') = 5"
        ).fetchall() == [("child",)]
        rows = dump(path, "app_index")
    finally:
        db.close()
    a, child = rows
    assert (a["status"], a["last_sequence"], a["last_action"]) == ("failed", 2, "boom")
    assert child["status"] == "halted"
    assert (child["parent_app_id"], child["parent_sequence_id"], child["relation"]) == (
        "a",
        1,
        "fork",
    )


# --------------------------------------------------------------------------- live runner


async def test_live_run_follows_appends_and_resumes(tmp_path: Path) -> None:
    store = await small_store()
    path = tmp_path / "rm.db"
    async with ProjectionRunner(SeenProjection(), path, batch_size=16) as runner:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(StoreSource(store), stop=stop))
        await wait_until(lambda: runner.checkpoint.position == 60)
        await append_simple_more(store, 40)
        await wait_until(lambda: runner.checkpoint.position == 100)
        stop.set()
        await task
    await append_simple_more(store, 10, start=40)
    async with ProjectionRunner(SeenProjection(), path) as runner:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(StoreSource(store), stop=stop))
        await wait_until(lambda: runner.checkpoint.position == 110)
        stop.set()
        await task
        gens = await runner.model.generations("seen")
    assert [g.generation for g in gens] == [1]  # resumed, not rebuilt
    assert len(dump(path, "seen")) == 110


async def append_simple_more(store: MemoryEventStore, count: int, start: int = 0) -> None:
    last = await store.last_sequence("p", "extra")
    events = [
        v2(
            partition_key="p",
            app_id="extra",
            sequence_id=last + 1 + i,
            kind="tick",
            writes={"i": start + i},
        )
        for i in range(count)
    ]
    for event in events:
        await store.append([event], expected_sequence=event.sequence_id - 1)


# --------------------------------------------------------------------------- failures


class Flaky(SeenProjection):
    """Raises on one (stream, sequence) while ``broken`` is set."""

    broken: tuple[str, int] | None = ("app-1", 7)

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        for r in records:
            if self.broken == (r.event.app_id, r.event.sequence_id):
                raise RuntimeError("handler bug")
        await super().handle_batch(ctx, records)


@pytest.mark.parametrize("batch_size", [1, 5, 1000])
async def test_a_failing_handler_names_the_event_and_keeps_the_checkpoint(
    tmp_path: Path, batch_size: int
) -> None:
    store = await small_store()
    path = tmp_path / "rm.db"
    bad = next(
        r for r in await store.read_all() if r.event.app_id == "app-1" and r.event.sequence_id == 7
    )
    projection = Flaky()
    async with ProjectionRunner(projection, path, batch_size=batch_size) as runner:
        with pytest.raises(ProjectionError) as caught:
            await runner.rebuild(StoreSource(store))
        err = caught.value
        assert (err.projection, err.position, err.stream, err.sequence_id) == (
            "seen",
            bad.position,
            ("p", "app-1"),
            7,
        )
        assert "handler bug" in str(err) and isinstance(err.__cause__, RuntimeError)
        (gen,) = await runner.model.generations("seen")
        assert gen.status == "building"
        assert gen.checkpoint.position == bad.position - 1
        assert runner.checkpoint.position == bad.position - 1
    # Nothing serves yet (no view); the building table holds exactly the events before it.
    db = sqlite3.connect(path)
    try:
        (count,) = db.execute("SELECT count(*) FROM seen_g1").fetchone()
        assert count == bad.position - 1
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'seen'").fetchall() == []
    finally:
        db.close()
    # The restart retries that event and resumes the same generation.
    projection.broken = None
    async with ProjectionRunner(projection, path, batch_size=batch_size) as runner:
        gen = await runner.rebuild(StoreSource(store))
    assert gen.generation == 1 and gen.status == "live"
    rows = dump(path, "seen")
    assert len(rows) == 60 and len({(r["app_id"], r["sequence_id"]) for r in rows}) == 60


async def test_live_failure_stops_the_runner_with_projection_error(tmp_path: Path) -> None:
    store = await small_store()
    projection = Flaky()
    async with ProjectionRunner(projection, tmp_path / "rm.db") as runner:
        with pytest.raises(ProjectionError) as caught:
            await asyncio.wait_for(runner.run(StoreSource(store)), 20)
    assert caught.value.stream == ("p", "app-1") and caught.value.sequence_id == 7


# --------------------------------------------------------------------------- blue/green


class SeenV2(SeenProjection):
    version = 2
    fail_at: int | None = None

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        for r in records:
            if r.position == self.fail_at:
                # Mid-build: the view must still show generation 1, complete.
                raise RuntimeError("interrupted")
        await super().handle_batch(ctx, records)


async def test_version_change_rebuilds_blue_green_and_swaps_atomically(tmp_path: Path) -> None:
    store = await small_store()
    path = tmp_path / "rm.db"
    async with ProjectionRunner(SeenProjection(), path) as runner:
        await runner.rebuild(StoreSource(store))
    await append_simple_more(store, 10)
    v2 = SeenV2()
    v2.fail_at = 30
    async with ProjectionRunner(v2, path, batch_size=4) as runner:
        with pytest.raises(ProjectionError):
            await runner.run(StoreSource(store))
        gens = {g.generation: g for g in await runner.model.generations("seen")}
    assert gens[1].status == "live" and gens[1].version == 1
    assert gens[2].status == "building" and gens[2].version == 2
    assert len(dump(path, "seen")) == 60  # the old read model still serves
    v2.fail_at = None
    async with ProjectionRunner(v2, path, batch_size=4) as runner:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(StoreSource(store), stop=stop))
        await runner.caught_up.wait()
        stop.set()
        await task
        (gen,) = await runner.model.generations("seen")
    assert (gen.generation, gen.version, gen.status) == (2, 2, "live")
    assert len(dump(path, "seen")) == 70
    db = sqlite3.connect(path)
    try:
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert "seen_g1" not in names and "seen_g2" in names


async def test_rebuild_keeps_serving_the_old_generation_until_the_swap(tmp_path: Path) -> None:
    store = await small_store()
    path = tmp_path / "rm.db"
    async with ProjectionRunner(SeenProjection(), path) as runner:
        await runner.rebuild(StoreSource(store))
    observed: list[int] = []

    class Peek(SeenProjection):
        async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
            reader = sqlite3.connect(path)  # another connection: what readers see
            try:
                observed.append(reader.execute("SELECT count(*) FROM seen").fetchone()[0])
            finally:
                reader.close()
            await super().handle_batch(ctx, records)

    await append_simple_more(store, 5)
    async with ProjectionRunner(Peek(), path, batch_size=10) as runner:
        gen = await runner.rebuild(StoreSource(store))
    assert gen.generation == 2 and set(observed) == {60}
    assert len(dump(path, "seen")) == 65


# --------------------------------------------------------------------------- bad input


async def test_unknown_projection_name() -> None:
    with pytest.raises(ProjectionError, match="unknown projection.*audit_trail"):
        get_projection("no_such_thing")


@pytest.mark.parametrize("where", ["missing_dir/rm.db", "a_directory"])
async def test_a_read_model_path_that_cannot_be_written(tmp_path: Path, where: str) -> None:
    (tmp_path / "a_directory").mkdir()
    store = await small_store()
    with pytest.raises(ProjectionError, match="cannot (open|write) the read model"):
        async with ProjectionRunner(AuditTrailProjection(), tmp_path / where) as runner:
            await runner.rebuild(StoreSource(store))


async def test_a_read_model_path_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(ProjectionError, match="cannot write the read model"):
        await ReadModel.open(path)
    assert path.read_bytes().startswith(b"this is not SQLite")


@pytest.mark.parametrize("uri", ["sqlite:{tmp}/none.db", "file:{tmp}/none.jsonl"])
async def test_a_log_source_that_does_not_exist(tmp_path: Path, uri: str) -> None:
    with pytest.raises(StoreUnavailableError, match="no "):
        await open_source(uri.format(tmp=tmp_path))
    assert not (tmp_path / "none.db").exists()


async def test_a_malformed_source_uri() -> None:
    with pytest.raises(ValueError, match="sqlite:PATH"):
        await open_source("postgres://x")


async def test_an_event_with_a_future_schema_version(tmp_path: Path) -> None:
    store = await small_store()
    export = tmp_path / "log.jsonl"
    await export_streams(store, export)
    lines = export.read_bytes().splitlines(keepends=True)
    lines[30] = lines[30].replace(b'"schema_version":2', b'"schema_version":99')
    export.write_bytes(b"".join(lines))
    path = tmp_path / "rm.db"
    async with ProjectionRunner(SeenProjection(), path, batch_size=8) as runner:
        with pytest.raises(SchemaVersionError):
            await runner.rebuild(FileSource(export))
        (gen,) = await runner.model.generations("seen")
    assert gen.status == "building" and gen.checkpoint.events < 30


async def test_a_future_event_from_a_store_is_refused_before_applying(tmp_path: Path) -> None:
    import msgspec

    store = await small_store()
    # Tamper with the in-memory log (no store writes future events itself).
    rec = store._log[10]
    store._log[10] = Recorded(rec.position, msgspec.structs.replace(rec.event, schema_version=7))
    async with ProjectionRunner(SeenProjection(), tmp_path / "rm.db", batch_size=4) as runner:
        with pytest.raises(SchemaVersionError):
            await runner.rebuild(StoreSource(store))
        assert runner.checkpoint.position == 8


async def test_a_projection_without_a_name() -> None:
    class Nameless(Projection):
        pass

    with pytest.raises(ProjectionError, match="needs a name"):
        ProjectionRunner(Nameless(), "x.db")


async def test_a_future_event_in_a_sqlite_log(tmp_path: Path) -> None:
    import msgspec

    from statelog.eventstore import SQLiteEventStore

    log = tmp_path / "log.db"
    async with await SQLiteEventStore.open(log) as store:
        await append_simple(store, streams=2, per_stream=10, batch=5)
    db = sqlite3.connect(log)
    try:
        (body,) = db.execute("SELECT body FROM events WHERE position = 7").fetchone()
        raw = msgspec.msgpack.decode(bytes(body))  # the store's default codec
        raw["v"] = 99
        db.execute("UPDATE events SET body = ? WHERE position = 7", (msgspec.msgpack.encode(raw),))
        db.commit()
    finally:
        db.close()
    source = await open_source(f"sqlite:{log}")
    try:
        async with ProjectionRunner(SeenProjection(), tmp_path / "rm.db", batch_size=3) as runner:
            with pytest.raises(SchemaVersionError):
                await runner.rebuild(source)
            assert runner.checkpoint.position == 6
    finally:
        await source.aclose()
