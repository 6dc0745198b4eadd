"""verify's fast path (``sqlite/_audit_hash.py``) gives the reference's bytes or declines.

``view_bytes`` turns a stored body straight into the bytes the hash covers.
It must never give other bytes than ``canonical_bytes`` of the event the
reference decoder makes of the same row: a body it could get wrong (a float,
an unsafe integer, a non-str member name, a v1 body, characters whose UTF-16
order differs, a timestamp msgspec writes otherwise) is declined (``None``)
and the reference path decides. Checked on hypothesis-generated events in both
codecs, on crafted bodies, and end to end on a log whose bodies were crafted.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statelog.eventstore import (
    EncodingError,
    ErrorInfo,
    Event,
    Lineage,
    SQLiteEventStore,
    canonical_bytes,
)
from statelog.eventstore._chain import seal
from statelog.eventstore._codec import JSON, MSGPACK, Codec, format_timestamp
from statelog.eventstore.sqlite._audit import audit_file
from statelog.eventstore.sqlite._audit_hash import DEPTH, body_decoder, view_bytes

CODECS = {"json": JSON, "msgpack": MSGPACK}

# names weighted towards the characters whose order differs in UTF-16
names = st.text(
    st.one_of(
        st.characters(max_codepoint=0x7F),
        st.characters(min_codepoint=0xE000, max_codepoint=0xE010),
        st.characters(min_codepoint=0xFFF0, max_codepoint=0x1F64F, blacklist_categories=("Cs",)),
    ),
    max_size=4,
)
plain_leaves = (
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=5)
)
values = st.recursive(
    plain_leaves | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
ops = st.lists(
    st.builds(lambda k, v: {"op": "set", "key": k, "value": v}, names, values)
    | st.builds(lambda k, v: {"op": "append", "key": k, "value": v}, names, values)
    | st.builds(lambda k, b: {"op": "increment", "key": k, "by": b}, names, st.integers(-9, 9))
    | st.builds(lambda k: {"op": "delete", "key": k}, names),
    max_size=3,
)
events = st.builds(
    Event,
    partition_key=names,
    app_id=names.filter(bool),
    sequence_id=st.integers(0, 10**6),
    kind=st.sampled_from(["action_completed", "run_started", "x"]),
    action=st.none() | names,
    next_action=st.none() | names,
    inputs=st.dictionaries(names, values, max_size=3),
    ops=ops,
    result=values,
    error=st.none()
    | st.builds(ErrorInfo, type=names, message=names, traceback=st.lists(names, max_size=2)),
    timestamp=st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))]),
    )
    | st.just(datetime(2026, 1, 1, tzinfo=UTC)),
    duration_us=st.integers(0, 10**9),
    attempt=st.integers(1, 9),
    parent=st.none()
    | st.builds(
        Lineage,
        partition_key=names,
        app_id=names,
        sequence_id=st.integers(0, 99),
        relation=st.sampled_from(["fork", "child"]),
    ),
    actor=st.none() | names,
    correlation_id=st.none() | names,
    data=st.dictionaries(names, values, max_size=2),
)
prev_hashes = st.binary(min_size=32, max_size=32) | st.just(b"")


def reference(codec: Codec, body: bytes, event: Event, prev: bytes) -> bytes:
    """``canonical_bytes`` of the row as the reference path decodes it."""
    decoded = codec.decode_body(
        body,
        partition_key=event.partition_key,
        app_id=event.app_id,
        sequence_id=event.sequence_id,
        prev_hash=prev.hex(),
        hash="",
    )
    return canonical_bytes(decoded)


def fast(codec: Codec, body: bytes, event: Event, prev: bytes) -> bytes | None:
    try:
        b = body_decoder(codec.name)(body)
    except msgspec.DecodeError:
        return None
    return view_bytes(b, event.partition_key, event.app_id, event.sequence_id, prev.hex())


def plain(value: Any, depth: int = 0) -> bool:
    """No float, and nested at most DEPTH deep (what the fast path takes)."""
    if isinstance(value, float) or depth > DEPTH:
        return False
    if isinstance(value, list):
        return all(plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(plain(item, depth + 1) for item in value.values())
    return True


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@settings(max_examples=400, deadline=None)
@given(event=events, prev=prev_hashes)
def test_the_fast_path_gives_the_reference_bytes_or_declines(
    codec: str, event: Event, prev: bytes
) -> None:
    (sealed,) = seal([event], prev.hex())
    body = CODECS[codec].encode_body(sealed)
    expected = reference(CODECS[codec], body, sealed, prev)
    assert expected == canonical_bytes(sealed)
    got = fast(CODECS[codec], body, sealed, prev)
    if got is not None:
        assert got == expected
    values_plain = all(
        plain(v) for v in (event.inputs, event.ops, event.result, event.data)
    ) and not any(ord(c) >= 0x10000 for c in expected.decode())
    if values_plain:  # and it does not decline what it can do
        assert got == expected


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ).filter(lambda ts: ts.microsecond != 0)
)
def test_msgspec_writes_a_utc_timestamp_as_the_canonical_form_does(ts: datetime) -> None:
    assert msgspec.json.encode(ts) == f'"{format_timestamp(ts)}"'.encode()


def _crafted() -> list[tuple[str, str, bytes]]:
    """Bodies no writer makes (each decodes as a stored body) that the fast path must
    decline or get exactly right."""
    mp = msgspec.msgpack.encode
    float32 = b"\x83\xa1k\xa1x\xa1v\x02\xa1r\xca\x3f\xc0\x00\x00"  # {"k","v":2,"r":1.5f32}
    return [
        ("msgpack", "float32 result", float32),
        ("msgpack", "float64 in data", mp({"k": "x", "v": 2, "x": {"a": 0.5}})),
        ("msgpack", "int member name", mp({"k": "x", "v": 2, "r": {1: 2}})),
        ("msgpack", "unsafe int", mp({"k": "x", "v": 2, "r": 2**60})),
        ("msgpack", "bytes value", mp({"k": "x", "v": 2, "r": b"\x00"})),
        ("msgpack", "timestamp value", mp({"k": "x", "v": 2, "x": {"t": datetime.now(UTC)}})),
        ("msgpack", "legacy", mp({"k": "x", "v": 2, "l": {"writes": {}}})),
        ("msgpack", "v1 body", mp({"k": "x", "w": {"a": 1}, "du": 0.5})),
        (
            "msgpack",
            "ops and writes",
            mp({"k": "x", "v": 2, "o": [{"op": "delete", "key": "z"}], "w": {"a": 1}}),
        ),
        (
            "msgpack",
            "empty writes and ops",
            mp({"k": "x", "v": 2, "w": {}, "d": [], "o": [{"op": "delete", "key": "z"}]}),
        ),
        ("json", "empty writes, a delete", b'{"k":"x","v":2,"w":{},"d":["z"],"o":[]}'),
        ("msgpack", "deep", mp({"k": "x", "v": 2, "r": [[[[[[[[1]]]]]]]]})),
        (
            "msgpack",
            "astral and private-use names",
            mp({"k": "x", "v": 2, "x": {"\ue000": 1, "\U0001f600": 2}}),
        ),
        ("json", "float", b'{"k":"x","v":2,"r":1.0}'),
        ("json", "exponent", b'{"k":"x","v":2,"r":1e2}'),
        ("json", "big int", b'{"k":"x","v":2,"r":12345678901234567890}'),
        ("json", "offset timestamp", b'{"k":"x","v":2,"t":"2026-01-01T01:00:00.5+01:00"}'),
        ("json", "naive timestamp", b'{"k":"x","v":2,"t":"2026-01-01T01:00:00.5"}'),
        ("json", "whole second", b'{"k":"x","v":2,"t":"2026-01-01T01:00:00Z"}'),
        ("json", "escaped astral name", b'{"k":"x","v":2,"x":{"\\ud83d\\ude00":1,"\\ue000":2}}'),
        ("json", "duplicate member", b'{"k":"x","v":2,"x":{"a":1,"a":2}}'),
        ("json", "unknown member", b'{"k":"x","v":2,"zz":1.5}'),
    ]


@pytest.mark.parametrize(("codec", "what", "body"), _crafted(), ids=[c[1] for c in _crafted()])
def test_crafted_bodies_are_declined_or_exact(codec: str, what: str, body: bytes) -> None:
    event = Event(partition_key="p", app_id="a", sequence_id=3, kind="x")
    prev = hashlib.sha256(b"prev").digest()
    try:
        expected: bytes | None = reference(CODECS[codec], body, event, prev)
    except Exception:  # no canonical form, or does not decode: the reference refuses
        expected = None
    got = fast(CODECS[codec], body, event, prev)
    assert got is None or got == expected, what


def _log(path: Path, codec: str) -> None:
    async def build() -> None:
        async with SQLiteEventStore(path, codec=codec) as store:
            await store.append(
                [
                    Event(partition_key="p", app_id="a", sequence_id=i, kind="x", result=i)
                    for i in range(6)
                ],
                expected_sequence=-1,
            )

    asyncio.run(build())


def _rows(path: Path) -> list[tuple[int, bytes, bytes]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT sequence_id, body, hash FROM events ORDER BY position").fetchall()


def _set(path: Path, seq: int, body: bytes, digest: bytes) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE events SET body = ?, hash = ? WHERE sequence_id = ?", (body, digest, seq)
        )


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_a_body_that_spills_into_the_next_row_is_not_decoded_with_it(
    tmp_path: Path, codec: str
) -> None:
    """Two rows whose bodies only decode joined (one holds an event and the start of the
    next): decoded page-wise they would pass for two events, and with their hashes
    recomputed for that reading the chain would hold. Each body is decoded alone."""
    path = tmp_path / "log.db"
    _log(path, codec)
    rows = _rows(path)
    first = Event(partition_key="p", app_id="a", sequence_id=2, kind="x", result="A")
    second = Event(partition_key="p", app_id="a", sequence_id=3, kind="x", result="BB")
    a, b = seal([first, second], rows[1][2].hex())
    body_a, body_b = CODECS[codec].encode_body(a), CODECS[codec].encode_body(b)
    if codec == "json":  # "[" + x + "," + y + "]" must read as [a, b]: cut b at a comma
        comma = body_b.index(b",")
        x, y = body_a + b"," + body_b[:comma], body_b[comma + 1 :]
    else:  # msgpack: the page is an array header and the bodies back to back
        x, y = body_a + body_b[:3], body_b[3:]
    _set(path, 2, x, bytes.fromhex(a.hash))
    _set(path, 3, y, bytes.fromhex(b.hash))
    # rows 4 and 5 link to the new hashes, as a forger would make them
    (c, d) = seal(
        [
            Event(partition_key="p", app_id="a", sequence_id=4, kind="x", result=4),
            Event(partition_key="p", app_id="a", sequence_id=5, kind="x", result=5),
        ],
        b.hash,
    )
    _set(path, 4, CODECS[codec].encode_body(c), bytes.fromhex(c.hash))
    _set(path, 5, CODECS[codec].encode_body(d), bytes.fromhex(d.hash))
    report = asyncio.run(audit_file(path, workers=1))
    found = {(f.sequence_id, f.reason) for f in report.findings}
    assert (2, "its stored body does not decode") in found, report.findings
    assert (3, "its stored body does not decode") in found, report.findings
    # and the store's readers decode each row alone too: they name row 2, never
    # return the two events the joined bytes would spell
    asyncio.run(_read_refuses(path, codec))


async def _read_refuses(path: Path, codec: str) -> None:
    async with SQLiteEventStore(path, codec=codec, read_only=True) as store:
        for read in (lambda: store.read("p", "a"), store.read_all):
            with pytest.raises(EncodingError) as info:
                await read()
            assert "corrupt stored event" in str(info.value)


def test_more_workers_than_streams(tmp_path: Path) -> None:
    """Workers started ahead with nothing to do exit quietly; the report is the same."""
    path = tmp_path / "log.db"
    _log(path, "msgpack")
    one = asyncio.run(audit_file(path, workers=1))
    four = asyncio.run(audit_file(path, workers=4))
    assert one.ok and four.ok
    assert (four.streams, four.events) == (one.streams, one.events) == (1, 6)
    _set(path, 3, b"\x00", b"\x00")
    broken = asyncio.run(audit_file(path, workers=3))
    assert {f.sequence_id for f in broken.findings} == {3, 4}, broken.findings


def test_the_fast_structs_follow_the_codecs() -> None:
    """``VerifyBody`` mirrors ``_Body`` member for member and ``HashView`` the codec's
    hash view: a field added there and not here fails this test, not a verify."""
    from statelog.eventstore._codec import _Body, _HashView
    from statelog.eventstore.sqlite._audit_hash import HashView, VerifyBody

    body = {f.name: f for f in msgspec.structs.fields(_Body)}
    fast_body = {f.name: f for f in msgspec.structs.fields(VerifyBody)}
    assert body.keys() == fast_body.keys()
    for name, field in body.items():
        mine = fast_body[name]
        assert mine.encode_name == field.encode_name, name
        assert mine.required == field.required, name
        if field.default is not msgspec.NODEFAULT:  # plain defaults are the same value
            assert mine.default == field.default, name
        elif field.default_factory is not msgspec.NODEFAULT:
            # a factory's value: an empty dict or list there, an empty one here
            assert not field.default_factory() and not msgspec.json.encode(mine.default)[1:-1]
    assert HashView.__struct_fields__ == _HashView.__struct_fields__
    assert list(HashView.__struct_fields__) == sorted(HashView.__struct_fields__)


def _long_log(path: Path, events: int) -> None:
    """One stream of ``events`` events whose bodies decode to GC-tracked lists (``append``)."""

    async def build() -> None:
        async with SQLiteEventStore(path) as store:
            for start in range(0, events, 1000):
                await store.append(
                    [
                        Event(
                            partition_key="p",
                            app_id="a",
                            sequence_id=i,
                            kind="x",
                            ops=[{"op": "append", "key": "items", "value": [i, [i]]}],
                        )
                        for i in range(start, min(start + 1000, events))
                    ],
                    expected_sequence=start - 1,
                )

    asyncio.run(build())


def test_a_walk_on_a_thread_sets_off_no_gc_of_the_older_generations(tmp_path: Path) -> None:
    """The walk on a thread of the caller's process reads pages small enough that its
    live rows stay under gen 0's threshold: no collection of gen 1 or 2 (a full one
    holds the GIL, so the caller's event loop, for as long as the whole heap takes)
    and hardly one of gen 0. Pages of 1,000 rows set off 35 of gen 0 and 3 of gen 1 here
    (their survivors go to gen 2, whose full collections then follow)."""
    import gc

    path = tmp_path / "log.db"
    _long_log(path, 6_000)
    counts = [0, 0, 0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.collect()
    gc.callbacks.append(count)
    try:
        report = asyncio.run(audit_file(path, workers=1))
    finally:
        gc.callbacks.remove(count)
    assert report.ok and report.events == 6_000, report.findings
    assert counts[1] == counts[2] == 0, counts
    assert counts[0] <= 10, counts


@pytest.mark.parametrize("workers", [1, 2])
def test_problems_at_page_boundaries_are_named(tmp_path: Path, workers: int) -> None:
    """The walk carries the chain from page to page (pages of ``THREAD_PAGE`` rows on
    a thread, ``PAGE`` in a worker): an edit on a page's first row, and a hole across
    the end of a page, are named as anywhere else."""
    from statelog.eventstore.sqlite import _audit

    path = tmp_path / "log.db"
    _long_log(path, 2_500)
    page = _audit.THREAD_PAGE if workers == 1 else _audit.PAGE
    edited, hole = page, 2 * page - 1  # the first row of page 2; the last of 2 and first of 3
    with sqlite3.connect(path) as db:  # (one stored hash edited: it and its successor's link)
        db.execute("UPDATE events SET hash = ? WHERE sequence_id = ?", (bytes(32), edited))
        db.execute("DELETE FROM events WHERE sequence_id IN (?, ?)", (hole, hole + 1))
    # a second, empty, stream makes workers=2 split: the walk of "a" runs in a worker
    asyncio.run(_append_other(path))
    report = asyncio.run(audit_file(path, workers=workers))
    found = {(f.sequence_id, f.reason) for f in report.findings}
    bad_hash = "its hash does not match its content and its predecessor's hash"
    missing = f"is missing: sequence_id {hole} to {hole + 1} deleted"
    missing += f" (the stream jumps to {hole + 2})"
    assert found == {
        (edited, bad_hash),
        (edited + 1, bad_hash),
        (hole, missing),
    }, report.findings


async def _append_other(path: Path) -> None:
    async with SQLiteEventStore(path) as store:
        await store.append(
            [Event(partition_key="p", app_id="b", sequence_id=0, kind="x")], expected_sequence=-1
        )
