"""SQLiteEventStore under faults: racing writers, SIGKILL, tampering, corrupt files.

Real files, real processes: the writers in other processes run
``tests/sqlite_worker.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statelog.eventstore import (
    MSGPACK,
    ConcurrencyError,
    EncodingError,
    Event,
    SchemaVersionError,
    SQLiteEventStore,
    StoreCorruptError,
    verify_events,
)
from statelog.eventstore.sqlite._schema import FULL_WAL_CHECKPOINT
from tests.ops_support import v2, writes_of

PK = "tenant"
ROOT = Path(__file__).resolve().parents[2]


def ev(app_id: str, seq: int, **writes: object) -> Event:
    return v2(
        partition_key=PK,
        app_id=app_id,
        sequence_id=seq,
        kind="action_completed",
        writes=writes or {"n": seq},
    )


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sqlite_worker", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if json.loads(line or "{}").get("status") != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"worker did not start: {line!r} {err}")


def kill_when_ready(*args: str, after: float) -> str:
    """Start a worker, ``kill -9`` it ``after`` seconds past its ready line; its output."""
    proc = start_worker(*args)
    try:
        wait_ready(proc)
        time.sleep(after)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return out


async def assert_intact(path: Path) -> dict[str, int]:
    """Open the file and check every stream is dense and its chain verifies."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    lasts: dict[str, int] = {}
    async with SQLiteEventStore(path) as store:
        for stream in await store.streams():
            events = await store.read(stream.partition_key, stream.app_id)
            assert [e.sequence_id for e in events] == list(range(len(events))), stream
            assert verify_events(events) is None, stream
            lasts[stream.app_id] = len(events) - 1
        assert await store.verify() is None
        records = await store.read_all()
        assert [r.position for r in records] == sorted({r.position for r in records})
        assert len(records) == sum(n + 1 for n in lasts.values())
    return lasts


# ---------------------------------------------------------------- racing writers


async def test_two_tasks_race_for_every_sequence(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    won: dict[int, list[str]] = {}
    lost: dict[int, list[str]] = {}

    async with SQLiteEventStore(path) as store:

        async def writer(name: str) -> None:
            for _ in range(60):
                last = await store.last_sequence(PK, "race")
                try:
                    await store.append([ev("race", last + 1, by=name)], expected_sequence=last)
                except ConcurrencyError as exc:
                    assert exc.actual >= last + 1
                    lost.setdefault(last + 1, []).append(name)
                else:
                    won.setdefault(last + 1, []).append(name)

        await asyncio.gather(writer("x"), writer("y"))
        events = await store.read(PK, "race")

    assert lost, "the two writers never collided"
    assert all(len(names) == 1 for names in won.values())
    assert sorted(won) == list(range(len(events)))
    for seq, names in won.items():
        assert writes_of(events[seq]) == {"by": names[0]}
    await assert_intact(path)


def test_two_processes_race_for_every_sequence(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    rounds = 150
    workers = [start_worker("race", str(path), name, str(rounds)) for name in ("p1", "p2")]
    for proc in workers:
        wait_ready(proc)
    for proc in workers:  # go
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes: list[dict[str, object]] = []
    for proc in workers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes += [
            {**json.loads(line), "by": proc.args[5]}  # type: ignore[index]
            for line in out.splitlines()
            if "outcome" in line
        ]
    won: dict[int, list[object]] = {}
    for item in outcomes:
        if item["outcome"] == "won":
            won.setdefault(int(item["seq"]), []).append(item["by"])  # type: ignore[call-overload]
    lasts = asyncio.run(assert_intact(path))
    assert any(o["outcome"] == "lost" for o in outcomes), "the processes never collided"
    assert all(len(names) == 1 for names in won.values()), "two winners for one sequence"
    assert sorted(won) == list(range(lasts["race"] + 1))
    assert len(won) + sum(1 for o in outcomes if o["outcome"] == "lost") == 2 * rounds

    async def check_writers() -> None:
        async with SQLiteEventStore(path) as store:
            events = await store.read(PK, "race")
        for seq, names in won.items():
            assert writes_of(events[seq]) == {"by": names[0]}

    asyncio.run(check_writers())


async def test_subscriber_sees_appends_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "sub.db"
    async with SQLiteEventStore(path) as store:
        await store.append([ev("mine", 0)], expected_sequence=-1)
        agen = store.subscribe(from_position=2, poll_interval=0.02)
        try:
            proc = start_worker("append", str(path), "theirs", "5")
            got = []
            for _ in range(5):
                got.append(await asyncio.wait_for(agen.__anext__(), 60))
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        finally:
            await agen.aclose()
    assert [(r.position, r.event.app_id, r.event.sequence_id) for r in got] == [
        (p, "theirs", p - 2) for p in range(2, 7)
    ]


# ---------------------------------------------------------------- SIGKILL


def test_sigkill_while_appending_never_leaves_a_partial_event(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    rng = random.Random(20261122)
    kills = 18
    deadline = time.monotonic() + 25
    done = 0
    for round_ in range(kills):
        kill_when_ready("loop", str(path), str(round_), after=rng.uniform(0.0, 0.12))
        done += 1
        if round_ % 6 == 5:
            asyncio.run(assert_intact(path))
        if time.monotonic() > deadline:
            break
    lasts = asyncio.run(assert_intact(path))
    assert done >= 10
    assert sum(1 for app in lasts if app.startswith("ready-")) == done
    assert sum(n + 1 for app, n in lasts.items() if app.startswith("s")) > 0


def test_sigkill_at_full_during_its_frequent_checkpoints_loses_no_acknowledged_append(
    tmp_path: Path,
) -> None:
    """At ``synchronous=FULL`` the store checkpoints every ``FULL_WAL_CHECKPOINT``
    pages; killed at random points (some inside a checkpoint: a ~4 KB event a
    time fills 200 pages in a few dozen appends), every append that returned is
    in the file afterwards, and the file is intact."""
    path = tmp_path / "full.db"
    rng = random.Random(20261207)
    acknowledged: dict[str, int] = {}
    for round_ in range(8):
        out = kill_when_ready("acked", str(path), str(round_), after=rng.uniform(0.05, 0.4))
        acks = [json.loads(line)["acked"] for line in out.splitlines() if line.strip()]
        if acks:
            acknowledged[f"acked-{round_}"] = acks[-1]
    lasts = asyncio.run(assert_intact(path))
    for app_id, last in acknowledged.items():
        assert lasts.get(app_id, -1) >= last, (app_id, last, lasts.get(app_id))
    assert len(acknowledged) >= 6  # the rounds got going before their kill
    # and the WAL was checkpointed under them: each event takes two pages or more
    assert sum(n + 1 for n in acknowledged.values()) * 2 >= 4 * FULL_WAL_CHECKPOINT


# ---------------------------------------------------------------- tampering


async def _filled(path: Path) -> None:
    async with SQLiteEventStore(path) as store:
        for app in ("a", "b"):
            await store.append(
                [ev(app, s, x=s, name=f"v{s}") for s in range(8)], expected_sequence=-1
            )


def _tamper(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            cur = conn.execute(sql, params)
            assert cur.rowcount == 1
    finally:
        conn.close()


def _row(path: Path, app_id: str, seq: int) -> tuple[int, bytes, bytes]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT e.position, e.hash, e.body FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE s.app_id = ? AND e.sequence_id = ?",
            (app_id, seq),
        ).fetchone()
    finally:
        conn.close()
    assert row is not None
    return row[0], bytes(row[1]), bytes(row[2])


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("index", [-1, -3, 0, 5])
async def test_a_flipped_body_byte_is_named(tmp_path: Path, index: int) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    position, _, body = _row(path, "b", 4)
    _tamper(path, "UPDATE events SET body = ? WHERE position = ?", _flip(body, index), position)
    async with SQLiteEventStore(path) as store:
        broken = await store.verify()
        assert broken is not None
        assert (broken.app_id, broken.sequence_id) == ("b", 4), broken
        assert await store.verify(PK, "a") is None
        assert (await store.verify(PK, "b")) == broken


@pytest.mark.parametrize("index", [0, 17, 31])
async def test_a_flipped_hash_byte_is_named(tmp_path: Path, index: int) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    position, digest, _ = _row(path, "a", 6)
    _tamper(path, "UPDATE events SET hash = ? WHERE position = ?", _flip(digest, index), position)
    async with SQLiteEventStore(path) as store:
        broken = await store.verify()
    assert broken is not None
    assert (broken.app_id, broken.sequence_id) == ("a", 6)
    assert "hash" in broken.reason


async def test_a_changed_sequence_id_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    position, _, _ = _row(path, "a", 3)
    _tamper(path, "UPDATE events SET sequence_id = 100 WHERE position = ?", position)
    async with SQLiteEventStore(path) as store:
        broken = await store.verify()
    assert broken is not None
    assert (broken.app_id, broken.sequence_id) == ("a", 3)


async def test_swapped_sequence_ids_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    p2, _, _ = _row(path, "b", 2)
    p3, _, _ = _row(path, "b", 3)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE events SET sequence_id = -1 WHERE position = ?", (p2,))
        conn.execute("UPDATE events SET sequence_id = 2 WHERE position = ?", (p3,))
        conn.execute("UPDATE events SET sequence_id = 3 WHERE position = ?", (p2,))
    conn.close()
    async with SQLiteEventStore(path) as store:
        broken = await store.verify()
    assert broken is not None
    assert (broken.app_id, broken.sequence_id) == ("b", 2)


async def test_a_deleted_event_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    position, _, _ = _row(path, "a", 5)
    _tamper(path, "DELETE FROM events WHERE position = ?", position)
    async with SQLiteEventStore(path) as store:
        broken = await store.verify()
    assert broken is not None
    assert (broken.app_id, broken.sequence_id) == ("a", 5)


async def test_a_deleted_middle_event_is_corruption_for_every_read(tmp_path: Path) -> None:
    """A hole in a stream is never folded past: each read names the stream and the id."""
    path = tmp_path / "t.db"
    await _filled(path)
    position, _, _ = _row(path, "a", 5)
    _tamper(path, "DELETE FROM events WHERE position = ?", position)
    hole = r"stream 'tenant/a' .* is missing sequence_id 5"
    async with SQLiteEventStore(path) as store:
        with pytest.raises(StoreCorruptError, match=hole):
            await store.read(PK, "a")
        with pytest.raises(StoreCorruptError, match=hole):
            await store.read(PK, "a", from_sequence=3, to_sequence=7)
        with pytest.raises(StoreCorruptError, match=hole):
            await store.read(PK, "a", from_sequence=6)  # its first event's prev_hash is gone
        with pytest.raises(StoreCorruptError, match=hole):
            await store.fold_stream(PK, "a")
        with pytest.raises(StoreCorruptError, match=hole):
            await store.fold_stream(PK, "a", from_sequence=2)
        with pytest.raises(StoreCorruptError, match=hole):
            await store.fold_stream(PK, "a", from_sequence=5)
        with pytest.raises(StoreCorruptError, match=hole):
            await store.read_all()
        with pytest.raises(StoreCorruptError, match=hole):  # the page starts after the hole
            await store.read_all(from_position=position + 1)
        broken = await store.verify(PK, "a")
        assert broken is not None and broken.sequence_id == 5 and "missing" in broken.reason
        # what lies wholly before or after the hole still reads
        assert [e.sequence_id for e in await store.read(PK, "a", to_sequence=4)] == list(range(5))
        assert [e.sequence_id for e in await store.read(PK, "a", from_sequence=7)] == [7]
        assert (await store.fold_stream(PK, "a", from_sequence=7))[1] == 7
        assert await store.verify(PK, "b") is None


async def test_a_deleted_last_event_reads_as_a_shorter_stream(tmp_path: Path) -> None:
    """Without signed checkpoints a truncated tail cannot be told (another issue)."""
    path = tmp_path / "t.db"
    await _filled(path)
    position, _, _ = _row(path, "a", 7)
    _tamper(path, "DELETE FROM events WHERE position = ?", position)
    async with SQLiteEventStore(path) as store:
        assert [e.sequence_id for e in await store.read(PK, "a")] == list(range(7))
        assert (await store.fold_stream(PK, "a"))[1] == 6
        assert await store.verify() is None


# ---------------------------------------------------------------- corrupt files


async def test_a_non_sqlite_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreCorruptError):
        await SQLiteEventStore.open(path)
    assert path.read_text().startswith("these are my notes")


async def test_random_bytes_are_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.db"
    path.write_bytes(random.Random(1).randbytes(64 * 1024))
    with pytest.raises(StoreCorruptError):
        await SQLiteEventStore.open(path)


async def test_a_corrupted_page_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with SQLiteEventStore(path) as store:
        for app in range(20):
            await store.append(
                [ev(f"s{app}", s, pad="p" * 300) for s in range(50)], expected_sequence=-1
            )
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 20 * page_size
    for page in range(2, len(data) // page_size, 3):  # wreck every third page
        start = page * page_size
        data[start : start + 64] = b"\xde\xad\xbe\xef" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError):
        async with SQLiteEventStore(path) as store:
            for app in range(20):
                await store.read(PK, f"s{app}")
            await store.read_all()


async def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError, match="not a statelog event log"):
        await SQLiteEventStore.open(path)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("format_version", "2", "format version"),
        ("format", "someone-else", "not a statelog event log"),
        ("codec", "pickle", "unknown codec"),
    ],
)
async def test_foreign_meta_is_refused(tmp_path: Path, key: str, value: str, match: str) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    _tamper(path, "UPDATE eventstore_meta SET value = ? WHERE key = ?", value, key)
    with pytest.raises(StoreCorruptError, match=match):
        await SQLiteEventStore.open(path)


async def test_a_stored_event_from_the_future_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await _filled(path)
    position, _, body = _row(path, "a", 2)
    raw = MSGPACK._raw_dec.decode(body)
    raw["v"] = 99
    _tamper(
        path, "UPDATE events SET body = ? WHERE position = ?", MSGPACK._enc.encode(raw), position
    )
    async with SQLiteEventStore(path) as store:
        with pytest.raises(SchemaVersionError) as info:
            await store.read(PK, "a")
        assert info.value.found == 99
        with pytest.raises(SchemaVersionError):
            await store.fold_stream(PK, "a")
        assert len(await store.read(PK, "a", to_sequence=1)) == 2
        broken = await store.verify()
        assert broken is not None
        assert (broken.app_id, broken.sequence_id) == ("a", 2)


async def test_cancelled_appends_never_fail_the_others(tmp_path: Path) -> None:
    path = tmp_path / "cancel.db"
    streams = 30
    async with SQLiteEventStore(path) as store:
        lasts = [-1] * streams
        for round_ in range(24):
            tasks = [
                asyncio.create_task(
                    store.append([ev(f"s{i}", lasts[i] + 1)], expected_sequence=lasts[i])
                )
                for i in range(streams)
            ]
            for _ in range(round_ % 5):
                await asyncio.sleep(0)
            for i in range(round_ % 3, streams, 3):
                tasks[i].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for i, result in enumerate(results):
                if (i - round_ % 3) % 3 != 0:  # not cancelled: must have been written
                    assert isinstance(result, list), (round_, i, result)
                else:
                    assert isinstance(result, list | asyncio.CancelledError), (round_, i, result)
            lasts = [await store.last_sequence(PK, f"s{i}") for i in range(streams)]
        assert await store.verify() is None
    await assert_intact(path)


async def test_a_body_holding_two_events_is_not_read_as_two(tmp_path: Path) -> None:
    """A page decodes its bodies as one array; a body carrying two maps next to an
    emptied one must not shift the others onto the wrong rows."""
    path = tmp_path / "t.db"
    await _filled(path)
    first, _, body = _row(path, "a", 1)
    second, _, _ = _row(path, "a", 2)
    _tamper(path, "UPDATE events SET body = ? WHERE position = ?", body + body, first)
    _tamper(path, "UPDATE events SET body = ? WHERE position = ?", b"", second)
    async with SQLiteEventStore(path) as store:
        with pytest.raises(EncodingError):
            await store.read(PK, "a")
        with pytest.raises(EncodingError):
            await store.read_all()
        broken = await store.verify(PK, "a")
        assert broken is not None and broken.sequence_id == 1
