"""SQLiteEventStore beyond the shared contract: opening, file layout, errors."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from statelog.eventstore import (
    JSON,
    MSGPACK,
    ConcurrencyError,
    ConfigError,
    Event,
    InvalidEventError,
    SQLiteEventStore,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    _codec,
    fold,
    register_upcaster,
)
from statelog.eventstore.sqlite._schema import translate_error as _translate
from tests.ops_support import v2

PK = "tenant"


def ev(app_id: str, seq: int, **writes: Any) -> Event:
    return v2(
        partition_key=PK,
        app_id=app_id,
        sequence_id=seq,
        kind="action_completed",
        action="step",
        next_action="step",
        writes=writes or {"count": seq},
    )


def _pragma(db: sqlite3.Connection, name: str) -> list[Any]:
    return db.execute(f"PRAGMA {name}").fetchall()


# ---------------------------------------------------------------- opening


async def test_open_connect_and_context_manager(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = await SQLiteEventStore.open(path)
    assert store.path == str(path)
    assert await store.connect() is store  # idempotent
    await store.append([ev("a", 0)], expected_sequence=-1)
    await store.aclose()
    async with SQLiteEventStore(path) as again:
        assert await again.last_sequence(PK, "a") == 0
    async with await SQLiteEventStore.open(path) as third:
        assert await third.last_sequence(PK, "a") == 0
    assert "closed" in repr(third)


async def test_first_use_connects_lazily(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "log.db")
    try:
        await store.append([ev("a", 0)], expected_sequence=-1)
        assert await store.read(PK, "a") != []
    finally:
        await store.aclose()


async def test_concurrent_connects_open_once(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "log.db")
    try:
        await asyncio.gather(*(store.connect() for _ in range(5)))
        await asyncio.gather(
            *(store.append([ev(f"s{i}", 0)], expected_sequence=-1) for i in range(5))
        )
        assert len(await store.streams()) == 5
    finally:
        await store.aclose()


async def test_a_store_dropped_open_warns(tmp_path: Path) -> None:
    store = await SQLiteEventStore.open(tmp_path / "log.db")
    await store.append([ev("a", 0)], expected_sequence=-1)
    threads = {t for t in threading.enumerate() if t.name.endswith(str(tmp_path / "log.db"))}
    assert len(threads) == 2  # its writer and its reader
    with pytest.warns(ResourceWarning):
        del store
        gc.collect()
    for _ in range(500):  # both threads close their connections and end
        if not any(t.is_alive() for t in threads):
            break
        await asyncio.sleep(0.01)
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"synchronous": "OFF"}, "synchronous"),
        ({"codec": "pickle"}, "codec"),
        ({"max_event_size": 0}, "max_event_size"),
        ({"max_event_size": 1.5}, "max_event_size"),
        ({"hmac_key": "text"}, "hmac_key"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": "5"}, "busy_timeout"),
    ],
    ids=["synchronous", "codec", "size", "float-size", "hmac-text", "negative-wait", "text-wait"],
)
def test_options_are_checked(tmp_path: Path, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        SQLiteEventStore(tmp_path / "log.db", **options)
    assert isinstance(caught.value, ValueError)
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened


async def test_an_unhashable_id_is_refused_as_invalid(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "log.db") as store:
        await store.append([ev("a", 0)], expected_sequence=-1)  # the writer knows a head
        for bad in ([], {"x": 1}):
            event = Event(partition_key=PK, app_id=bad, sequence_id=0, kind="k")  # type: ignore[arg-type]
            with pytest.raises(InvalidEventError, match=r"\$\.app_id"):
                await store.append([event], expected_sequence=-1)
            event = Event(partition_key=bad, app_id="a", sequence_id=1, kind="k")  # type: ignore[arg-type]
            with pytest.raises(InvalidEventError, match=r"\$\.partition_key"):
                await store.append([event], expected_sequence=0)
        assert await store.last_sequence(PK, "a") == 0


@pytest.mark.parametrize(("mode", "value"), [("NORMAL", 1), ("FULL", 2), ("full", 2)])
async def test_synchronous_mode(tmp_path: Path, mode: Any, value: int) -> None:
    async with SQLiteEventStore(tmp_path / "log.db", synchronous=mode) as store:
        assert await store._read(_pragma, "synchronous") == [(value,)]
        assert await store._read(_pragma, "journal_mode") == [("wal",)]
        await store.append([ev("a", 0)], expected_sequence=-1)


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
async def test_the_wal_is_reused_early_under_full(tmp_path: Path, mode: str) -> None:
    """At FULL every commit syncs the WAL, so it restarts after ~800 KiB (overwritten
    in place, not grown); NORMAL keeps SQLite's 1,000 pages (~4 MiB)."""
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path, synchronous=mode) as store:  # type: ignore[arg-type]
        assert await store._read(_pragma, "wal_autocheckpoint") == [
            (200 if mode == "FULL" else 1000,)
        ]
        blob = "x" * 3000  # a page or so per event: ~1,200 pages of WAL in all
        for seq in range(1200):
            await store.append([ev("a", seq, blob=blob)], expected_sequence=seq - 1)
        wal = Path(f"{path}-wal").stat().st_size
    if mode == "FULL":
        assert wal < 1024 * 1024
    else:
        assert wal > 2 * 1024 * 1024


async def test_an_existing_file_keeps_its_codec(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path, codec="json") as store:
        await store.append([ev("a", 0)], expected_sequence=-1)
    async with SQLiteEventStore(path) as store:
        assert store.codec is JSON
        assert len(await store.read(PK, "a")) == 1
    with pytest.raises(StoreError, match="codec 'json'"):
        await SQLiteEventStore.open(path, codec="msgpack")


async def test_new_files_default_to_msgpack(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "log.db") as store:
        assert store.codec is MSGPACK


async def test_two_processes_creating_one_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    stores = [SQLiteEventStore(path) for _ in range(4)]
    try:
        await asyncio.gather(*(s.connect() for s in stores))
        await stores[0].append([ev("a", 0)], expected_sequence=-1)
        assert await stores[3].last_sequence(PK, "a") == 0
    finally:
        for s in stores:
            await s.aclose()


# ---------------------------------------------------------------- file layout


async def test_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        recorded = await store.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
    conn = sqlite3.connect(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM eventstore_meta"))
        assert meta == {"format": "statelog-eventstore", "format_version": "1", "codec": "msgpack"}
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
        assert columns == ["position", "stream_id", "sequence_id", "hash", "body"]
        rows = conn.execute(
            "SELECT e.position, s.partition_key, s.app_id, e.sequence_id, e.hash, e.body "
            "FROM events e JOIN streams s ON s.id = e.stream_id ORDER BY e.position"
        ).fetchall()
    finally:
        conn.close()
    for (position, pk, app, seq, digest, body), rec in zip(rows, recorded, strict=True):
        assert (position, pk, app, seq) == (rec.position, PK, "a", rec.event.sequence_id)
        assert isinstance(digest, bytes) and len(digest) == 32
        assert digest.hex() == rec.event.hash
        assert body == MSGPACK.encode_body(rec.event)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_bytes_per_event_on_disk(tmp_path: Path, codec: Any) -> None:
    path = tmp_path / "log.db"
    count = 3000
    async with SQLiteEventStore(path, codec=codec) as store:
        for start in range(0, count, 500):
            batch = [ev("a", seq) for seq in range(start, start + 500)]
            await store.append(batch, expected_sequence=start - 1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    per_event = path.stat().st_size / count
    assert per_event <= 300, per_event


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_read_all_pages_carry_each_streams_chain(tmp_path: Path, codec: Any) -> None:
    """prev_hash comes from an earlier row of the page or, for a stream's first
    row in the page, from one extra query: every page size and start agrees
    with ``read``, whatever the interleaving of streams."""
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path, codec=codec) as store:
        for round_ in range(4):
            for app, size in (("a", 3), ("b", 1), ("c", 5)):
                start = round_ * size
                await store.append(
                    [ev(app, seq) for seq in range(start, start + size)],
                    expected_sequence=start - 1,
                )
        by_id = {
            (e.app_id, e.sequence_id): e
            for app in ("a", "b", "c")
            for e in await store.read(PK, app)
        }
        assert len(by_id) == 36
        for limit in (1, 2, 4, 7, 100):
            for start in (0, 1, 5, 17):
                page = await store.read_all(from_position=start, limit=limit)
                assert [r.event for r in page] == [
                    by_id[(r.event.app_id, r.event.sequence_id)] for r in page
                ]
                assert [r.position for r in page] == list(
                    range(max(start, 1), max(start, 1) + len(page))
                )
        assert await store.read(PK, "a", from_sequence=5, to_sequence=6) == [
            by_id[("a", 5)],
            by_id[("a", 6)],
        ]


# ---------------------------------------------------------------- errors at the boundary


async def test_a_locked_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path, busy_timeout=0.1) as store:
        await store.append([ev("a", 0)], expected_sequence=-1)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailableError) as info:
                await store.append([ev("a", 1)], expected_sequence=0)
            assert isinstance(info.value, ConnectionError)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            other.execute("ROLLBACK")
        finally:
            other.close()
        await store.append([ev("a", 1)], expected_sequence=0)  # the head was reloaded
        assert await store.verify() is None


async def test_an_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        await SQLiteEventStore.open(tmp_path / "missing-dir" / "log.db")


def _real_error(sql: str, path: Path) -> sqlite3.Error:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


def test_translate_maps_driver_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    assert isinstance(_translate(_real_error("SELECT 1 FROM t", junk), "p"), StoreCorruptError)
    empty = tmp_path / "empty.db"
    other = _translate(_real_error("SELECT * FROM nowhere", empty), "p")
    assert type(other) is StoreError and "no such table" in str(other)
    assert isinstance(_translate(ValueError("Connection closed"), "p"), StoreClosedError)
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    assert isinstance(_translate(locked, "p"), StoreUnavailableError)
    same = StoreClosedError("x")
    assert _translate(same, "p") is same


# ---------------------------------------------------------------- fold


async def test_fold_stream_upcasts_old_bodies(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(_codec, "_UPCASTERS", dict(_codec._UPCASTERS))
    register_upcaster(0, lambda raw: {**raw, "writes": {"upcast": True}, "schema_version": 1})
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        await store.append([ev("a", 0), ev("a", 1), ev("a", 2)], expected_sequence=-1)
        conn = sqlite3.connect(path)
        with conn:
            body = MSGPACK._raw_dec.decode(
                conn.execute("SELECT body FROM events WHERE sequence_id = 1").fetchone()[0]
            )
            conn.execute(
                "UPDATE events SET body = ? WHERE sequence_id = 1",
                (MSGPACK._enc.encode({**body, "v": 0}),),
            )
        conn.close()
        state, last = await store.fold_stream(PK, "a")
        assert state == fold(await store.read(PK, "a")) == {"count": 2, "upcast": True}
        assert last == 2


async def test_creating_a_stream_another_handle_created(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as one, SQLiteEventStore(path) as two:
        await one.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
        with pytest.raises(ConcurrencyError) as info:  # two has never seen "a"
            await two.append([ev("a", 0)], expected_sequence=-1)
        assert (info.value.expected, info.value.actual) == (-1, 1)
        await two.append([ev("a", 2)], expected_sequence=1)
        assert await one.verify() is None
        assert await one.streams() == [(PK, "a")]


async def test_last_position(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "log.db") as store:
        assert await store.last_position() == 0
        await store.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
        await store.append([ev("b", 0)], expected_sequence=-1)
        assert await store.last_position() == 3
