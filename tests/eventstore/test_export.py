"""Export to JSON lines and import back: byte-for-byte, hashes intact, tampering refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from statelog import eventstore
from statelog.eventstore import (
    ConcurrencyError,
    EncodingError,
    ErrorInfo,
    Event,
    EventStore,
    IntegrityError,
    Lineage,
    MemoryEventStore,
    SchemaVersionError,
    export_streams,
    import_streams,
    iter_export,
)
from tests.ops_support import v2

StoreFactory = Callable[..., Awaitable[EventStore]]
BACKENDS = ["memory-json", "memory-msgpack", "sqlite-json", "sqlite-msgpack"]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    kind, codec = request.param.split("-")
    opened: list[EventStore] = []
    counter = iter(range(1000))

    async def factory(**kw: Any) -> EventStore:
        store: EventStore
        if kind == "memory":
            store = MemoryEventStore(codec=codec, **kw)
        else:
            path = tmp_path / f"store-{next(counter)}.db"
            store = await eventstore.SQLiteEventStore.open(path, codec=codec, **kw)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.aclose()


T0 = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def rich_events(app_id: str, n: int, partition_key: str = "tenant") -> list[Event]:
    events = []
    for seq in range(n):
        events.append(
            v2(
                partition_key=partition_key,
                app_id=app_id,
                sequence_id=seq,
                kind="action_completed" if seq else "app_initialized",
                action=f"step{seq % 3}",
                next_action=f"step{(seq + 1) % 3}",
                inputs={"prompt": f"hello é {seq}", "n": seq},
                writes={"count": seq, "nested": {"xs": [1, 2.5, None, True, "s"]}, "f": 0.1 * seq},
                deletes=["tmp"] if seq % 4 == 3 else [],
                result={"ok": seq % 2 == 0},
                error=ErrorInfo(type="ValueError", message="bad") if seq == 2 else None,
                timestamp=T0 + timedelta(microseconds=1234567 * seq),
                duration=0.001 * seq,
                attempt=1 + seq % 2,
                parent=Lineage(partition_key="", app_id="root", sequence_id=3)
                if seq == 0
                else None,
                correlation_id=f"corr-{seq}" if seq % 2 else None,
            )
        )
    return events


async def fill(store: EventStore) -> None:
    # Interleave appends so that creation order and global order differ from name order.
    await store.append(rich_events("zeta", 5), expected_sequence=-1)
    await store.append(rich_events("alpha", 3, partition_key=""), expected_sequence=-1)
    more = rich_events("zeta", 12)[5:]
    await store.append(more, expected_sequence=4)
    await store.append(rich_events("mid", 7, partition_key="other"), expected_sequence=-1)


async def test_round_trip_is_byte_for_byte(make_store: StoreFactory, tmp_path: Path) -> None:
    source = await make_store()
    await fill(source)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert await export_streams(source, first) == 22
    target = await make_store()
    assert await import_streams(target, first) == 22
    assert await export_streams(target, second) == 22
    assert first.read_bytes() == second.read_bytes()
    assert await target.verify() is None
    assert await target.streams() == await source.streams()
    for stream in await source.streams():
        assert await target.read(*stream) == await source.read(*stream)


async def test_file_layout_streams_in_creation_order(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await make_store()
    await fill(store)
    path = tmp_path / "out.jsonl"
    await export_streams(store, path)
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[0]) == {"statelog_export": 1}
    order = [(e["app_id"], e["sequence_id"]) for e in map(json.loads, lines[1:])]
    assert order == (
        [("zeta", s) for s in range(12)]
        + [("alpha", s) for s in range(3)]
        + [("mid", s) for s in range(7)]
    )
    # Each line is exactly the JSON wire encoding of the stored event.
    stored = await store.read("tenant", "zeta")
    assert lines[1] == eventstore.JSON.encode_event(stored[0])
    assert list(iter_export(path)) == [
        *stored,
        *await store.read("", "alpha"),
        *await store.read("other", "mid"),
    ]


async def test_export_selected_streams(make_store: StoreFactory, tmp_path: Path) -> None:
    store = await make_store()
    await fill(store)
    path = tmp_path / "some.jsonl"
    count = await export_streams(
        store, path, streams=[("other", "mid"), ("", "alpha"), ("x", "missing")]
    )
    assert count == 10
    assert [e.app_id for e in iter_export(path)] == ["alpha"] * 3 + ["mid"] * 7
    empty = tmp_path / "empty.jsonl"
    assert await export_streams(store, empty, streams=[]) == 0
    assert list(iter_export(empty)) == []


async def test_hmac_store_round_trips_with_the_same_key(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    source = await make_store(hmac_key=b"k1")
    await fill(source)
    path = tmp_path / "signed.jsonl"
    await export_streams(source, path)
    same = await make_store(hmac_key=b"k1")
    assert await import_streams(same, path) == 22
    assert await same.verify() is None

    other = await make_store(hmac_key=b"k2")
    with pytest.raises(IntegrityError, match="different HMAC key") as info:
        await import_streams(other, path)
    assert info.value.stream == ("tenant", "zeta") and info.value.sequence_id == 0
    assert await other.streams() == []


def tamper(path: Path, line_no: int, change: Callable[[dict[str, Any]], None]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    event = json.loads(lines[line_no])
    change(event)
    lines[line_no] = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("line_no", "change", "stream", "seq", "reason"),
    [
        (4, lambda e: e["ops"][0].update(value=999), ("tenant", "zeta"), 3, "hash in the file"),
        (6, lambda e: e.update(hash="0" * 64), ("tenant", "zeta"), 5, "hash in the file"),
        (14, lambda e: e.update(prev_hash="ab" * 32), ("", "alpha"), 1, "prev_hash"),
        (17, lambda e: e.update(sequence_id=5), ("other", "mid"), 5, "expected sequence_id 1"),
    ],
)
async def test_tampered_file_is_refused_and_nothing_written(
    make_store: StoreFactory,
    tmp_path: Path,
    line_no: int,
    change: Callable[[dict[str, Any]], None],
    stream: tuple[str, str],
    seq: int,
    reason: str,
) -> None:
    source = await make_store()
    await fill(source)
    path = tmp_path / "t.jsonl"
    await export_streams(source, path)
    tamper(path, line_no, change)
    target = await make_store()
    with pytest.raises(IntegrityError, match=reason) as info:
        await import_streams(target, path)
    assert (info.value.stream, info.value.sequence_id) == (stream, seq)
    assert await target.streams() == []
    assert await target.read_all() == []


async def test_import_skips_what_the_store_already_holds(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    source = await make_store()
    await fill(source)
    path = tmp_path / "all.jsonl"
    await export_streams(source, path)
    # An interrupted import: the target holds the first 5 events of zeta already.
    target = await make_store()
    await target.append(rich_events("zeta", 5), expected_sequence=-1)
    assert await import_streams(target, path) == 17
    again = tmp_path / "again.jsonl"
    await export_streams(target, again)
    assert again.read_bytes() == path.read_bytes()
    # Importing the same file again is a no-op.
    assert await import_streams(target, path) == 0
    assert len(await target.read_all()) == 22


async def test_import_into_a_stream_with_other_events_is_refused(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    source = await make_store()
    await fill(source)
    path = tmp_path / "all.jsonl"
    await export_streams(source, path)
    target = await make_store()
    await target.append(rich_events("alpha", 2, partition_key=""), expected_sequence=-1)
    other = [
        msgspec.structs.replace(e, ops=[{"op": "set", "key": "other", "value": True}])
        for e in rich_events("mid", 9, "other")
    ]
    await target.append(other, expected_sequence=-1)  # longer than the file's 7, different
    with pytest.raises(ConcurrencyError) as info:
        await import_streams(target, path)
    assert info.value.stream == ("other", "mid") and info.value.actual == 8
    assert [s.app_id for s in await target.streams()] == ["alpha", "mid"]
    assert len(await target.read_all()) == 11


async def test_import_refuses_a_stream_that_starts_midway(tmp_path: Path) -> None:
    source = MemoryEventStore()
    await source.append(rich_events("a", 4), expected_sequence=-1)
    path = tmp_path / "all.jsonl"
    await export_streams(source, path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"".join(lines[3:]))  # header, then events 2 and 3
    target = MemoryEventStore()
    with pytest.raises(IntegrityError, match="starts this stream at sequence_id 2") as info:
        await import_streams(target, path)
    assert info.value.sequence_id == 2
    assert await target.streams() == []


async def test_import_is_batched_for_long_streams(tmp_path: Path) -> None:
    source = MemoryEventStore()
    events = [
        v2(partition_key="", app_id="long", sequence_id=i, kind="k", writes={"i": i})
        for i in range(2500)
    ]
    await source.append(events, expected_sequence=-1)
    path = tmp_path / "long.jsonl"
    await export_streams(source, path)
    target = MemoryEventStore()
    assert await import_streams(target, path) == 2500
    # Batches of 1,000: three appends, so positions are still dense and in order.
    assert [r.position for r in await target.read_all()] == list(range(1, 2501))
    assert await target.read("", "long") == await source.read("", "long")


# --------------------------------------------------------------------------- bad files


def write_lines(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def good_line(seq: int = 0) -> bytes:
    from statelog.eventstore import seal

    (event,) = seal([v2(partition_key="", app_id="a", sequence_id=seq, kind="k")], "")
    return eventstore.JSON.encode_event(event)


@pytest.mark.parametrize(
    ("lines", "bad_line", "match"),
    [
        ((b'{"statelog_export":1}', good_line(), b"{not json"), 3, "malformed"),
        ((good_line(), b'{"app_id":"a"}'), 2, "not a statelog event"),
        ((good_line(), b"", good_line(1)), 2, "empty line"),
        ((b'{"statelog_export":3}', good_line()), 1, "format version 3"),
        ((good_line(), b"[1,2,3]"), 2, "not a statelog event"),
    ],
)
def test_bad_lines_name_the_line(
    tmp_path: Path, lines: tuple[bytes, ...], bad_line: int, match: str
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(EncodingError, match=match) as info:
        list(iter_export(path))
    assert str(info.value).startswith(f"{path}:{bad_line}: ")


async def test_bad_line_imports_nothing(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", good_line(), b"{oops")
    store = MemoryEventStore()
    with pytest.raises(EncodingError, match=":2: "):
        await import_streams(store, path)
    assert await store.streams() == []


def test_future_schema_version_in_a_file(tmp_path: Path) -> None:
    future = json.loads(good_line())
    future["schema_version"] = eventstore.SCHEMA_VERSION + 1
    path = write_lines(tmp_path / "f.jsonl", good_line(), json.dumps(future).encode())
    with pytest.raises(SchemaVersionError) as info:
        list(iter_export(path))
    assert str(info.value).startswith(f"{path}:2: ")
    assert info.value.found == eventstore.SCHEMA_VERSION + 1


def test_file_without_header_is_read(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "plain.jsonl", good_line())
    assert [e.app_id for e in iter_export(path)] == ["a"]
    (event,) = eventstore.seal(
        [v2(partition_key="", app_id="statelog_export", sequence_id=0, kind="k")], ""
    )
    tricky = write_lines(tmp_path / "tricky.jsonl", eventstore.JSON.encode_event(event))
    assert list(iter_export(tricky)) == [event]


async def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    class Broken(MemoryEventStore):
        async def read(self, *args: Any, **kw: Any) -> list[Event]:
            raise RuntimeError("disk gone")

    store = Broken()
    await store.append(rich_events("a", 2), expected_sequence=-1)
    path = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        await export_streams(store, path)
    assert list(tmp_path.iterdir()) == []
