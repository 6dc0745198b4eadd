"""The ``EventStore`` contract: one suite, run against every backend.

A backend's test module subclasses ``StoreContract`` and provides only
``make_store``::

    class TestMyStore(StoreContract):
        async def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
            return await MyStore.open(tmp_path / "log", **options)

``make_store`` returns an open store; ``options`` are ``hmac_key`` and
``max_event_size`` (pass them through). The suite closes what it makes.

Switches for what a backend cannot do (class attributes). A test that needs a
capability is marked ``@pytest.mark.requires("name")``; tests/conftest.py
deselects it (it is not collected, so it is neither run nor skipped) for a
backend whose switch is off:

* ``durable`` - calling ``make_store`` again with the same ``tmp_path`` opens
  the same log after the first store is closed (a restart).
* ``supports_cross_process`` - two stores made from the same ``tmp_path`` at
  once share one log, as two processes would: appends through one are seen by
  the other, and the two writers race on the same sequence ids.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import pytest

from statelog.eventstore import (
    MAX_VALUE_DEPTH,
    ConcurrencyError,
    ConfigError,
    EncodingError,
    ErrorInfo,
    Event,
    EventStore,
    EventTooLargeError,
    InvalidEventError,
    Lineage,
    Recorded,
    StoreClosedError,
    StreamId,
    compute_hash,
    fold,
    verify_events,
)
from tests.ops_support import v2, writes_of

PK = "tenant"


def ev(app_id: str, seq: int, *, pk: str = PK, **fields: Any) -> Event:
    """A small event; without ``ops`` or ``writes`` it sets ``n`` to ``seq``."""
    if "ops" not in fields:
        fields.setdefault("writes", {"n": seq})
    fields.setdefault("kind", "action_completed")
    return v2(partition_key=pk, app_id=app_id, sequence_id=seq, **fields)


def evs(app_id: str, start: int, count: int, *, pk: str = PK) -> list[Event]:
    return [ev(app_id, seq, pk=pk) for seq in range(start, start + count)]


class _Unencodable:
    def __repr__(self) -> str:
        return "<unencodable>"


class _Float(float):
    """A float subclass: msgspec cannot encode it."""


def _deep(levels: int) -> Any:
    """``levels`` lists, one inside the other, around a 0."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _names_path_and_types(error: BaseException, path: str, got: str) -> None:
    """A refusal names where (``path``), what was expected and what came in (``got``)."""
    message = str(error)
    assert f"`{path}" in message, message
    assert "expected" in message, message
    assert got in message, message
    if isinstance(error, EncodingError):
        assert error.path is not None and error.path.startswith(path), (error.path, path)


#: Values the log cannot store so that they read back identically (with the
#: error, and a word the message must hold about what came in). Each is tried
#: in every place of ``PLACES``.
BAD_VALUES: dict[str, tuple[Any, type[Exception], str]] = {
    "set": ({1, 2}, EncodingError, "set"),
    "frozenset": (frozenset({"a"}), EncodingError, "frozenset"),
    "bytes": (b"ab", EncodingError, "bytes"),
    "bytearray": (bytearray(b"ab"), EncodingError, "bytearray"),
    "datetime": (datetime(2026, 1, 2, tzinfo=UTC), EncodingError, "datetime"),
    "decimal": (Decimal("1.5"), EncodingError, "Decimal"),
    "uuid": (UUID(int=7), EncodingError, "UUID"),
    "struct": (ErrorInfo(type="T", message="m"), EncodingError, "ErrorInfo"),
    "object": (_Unencodable(), EncodingError, "_Unencodable"),
    "tuple": ((1, 2), EncodingError, "tuple"),
    "nan": (math.nan, EncodingError, "nan"),
    "inf": (math.inf, EncodingError, "inf"),
    "-inf": (-math.inf, EncodingError, "-inf"),
    "int-key": ({1: "x"}, EncodingError, "int"),
    "none-key": ({None: "x"}, EncodingError, "None"),
    # a JSON number holds ints within +-(2**53 - 1) exactly; the hash needs them so
    "int-over": (2**53, EncodingError, str(2**53)),
    "int-under": (-(2**53), EncodingError, str(-(2**53))),
    "int-huge": (2**64, EncodingError, str(2**64)),
    "surrogate": ("ab\ud800", EncodingError, "surrogate"),
    "surrogate-key": ({"k\udc00": 1}, EncodingError, "surrogate"),
    "too-deep": (_deep(MAX_VALUE_DEPTH + 1), EncodingError, str(MAX_VALUE_DEPTH)),
    "float-subclass": (_Float(1.5), EncodingError, "_Float"),
}

#: Where a bad value goes: the path the error names, and the event fields.
PLACES: dict[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "ops": (
        "$.ops[1].value",
        lambda v: {
            "ops": [
                {"op": "set", "key": "ok", "value": 1},
                {"op": "set", "key": "bad", "value": v},
            ]
        },
    ),
    "nested": (
        "$.ops[0].value.tags[2]",
        lambda v: {
            "ops": [
                {"op": "append", "key": "profile", "value": {"name": "x", "tags": ["a", "b", v]}}
            ]
        },
    ),
    "inputs": ("$.inputs.x.y[0]", lambda v: {"inputs": {"x": {"y": [v]}}}),
    "result": ("$.result", lambda v: {"result": v}),
    "data": ("$.data.x", lambda v: {"data": {"x": v}}),
}

_OFFSET = timezone(timedelta(hours=2))

#: Event fields of the wrong type (InvalidEventError) or with a value that
#: would not read back (EncodingError): fields, error, path, what came in.
_FIELD_CASES: dict[str, tuple[dict[str, Any], type[Exception], str, str]] = {
    "kind-int": ({"kind": 5}, InvalidEventError, "$.kind", "int"),
    "kind-surrogate": ({"kind": "\ud800"}, EncodingError, "$.kind", "surrogate"),
    "action-int": ({"action": 5}, InvalidEventError, "$.action", "int"),
    "next-action-bytes": ({"next_action": b"x"}, InvalidEventError, "$.next_action", "bytes"),
    "action-surrogate": ({"action": "a\udfff"}, EncodingError, "$.action", "surrogate"),
    "inputs-list": ({"inputs": [1]}, InvalidEventError, "$.inputs", "list"),
    "ops-str": ({"ops": "x"}, InvalidEventError, "$.ops", "str"),
    "ops-none": ({"ops": None}, InvalidEventError, "$.ops", "None"),
    "ops-tuple": ({"ops": ({"op": "delete", "key": "a"},)}, InvalidEventError, "$.ops", "tuple"),
    "op-str": ({"ops": ["set"]}, InvalidEventError, "$.ops[0]", "str"),
    "op-kind": ({"ops": [{"op": "zap", "key": "a"}]}, InvalidEventError, "$.ops[0].op", "zap"),
    "op-key-int": (
        {"ops": [{"op": "delete", "key": "a"}, {"op": "delete", "key": 1}]},
        InvalidEventError,
        "$.ops[1].key",
        "int",
    ),
    "op-surrogate": (
        {"ops": [{"op": "delete", "key": "\ud800"}]},
        EncodingError,
        "$.ops[0]",
        "surrogate",
    ),
    "data-list": ({"data": [1]}, InvalidEventError, "$.data", "list"),
    "actor-int": ({"actor": 1}, InvalidEventError, "$.actor", "int"),
    "traceback-int": (
        {"error": ErrorInfo(type="T", message="m", traceback=[1])},  # type: ignore[list-item]
        InvalidEventError,
        "$.error.traceback[0]",
        "int",
    ),
    "error-str": ({"error": "boom"}, InvalidEventError, "$.error", "str"),
    "error-type": (
        {"error": ErrorInfo(type=1, message="m")},  # type: ignore[arg-type]
        InvalidEventError,
        "$.error.type",
        "int",
    ),
    "timestamp-str": ({"timestamp": "x"}, InvalidEventError, "$.timestamp", "str"),
    "timestamp-float": ({"timestamp": 1.5}, InvalidEventError, "$.timestamp", "float"),
    "timestamp-offset": (
        {"timestamp": datetime(2026, 1, 2, tzinfo=_OFFSET)},
        EncodingError,
        "$.timestamp",
        "+02:00",
    ),
    "duration-str": ({"duration_us": "x"}, InvalidEventError, "$.duration_us", "str"),
    "duration-float": ({"duration_us": 1.5}, InvalidEventError, "$.duration_us", "float"),
    "duration-huge": ({"duration_us": 2**64}, EncodingError, "$.duration_us", str(2**64)),
    "attempt-str": ({"attempt": "x"}, InvalidEventError, "$.attempt", "str"),
    "attempt-bool": ({"attempt": True}, InvalidEventError, "$.attempt", "bool"),
    "attempt-float": ({"attempt": 1.0}, InvalidEventError, "$.attempt", "float"),
    "attempt-huge": ({"attempt": 2**64}, EncodingError, "$.attempt", str(2**64)),
    "parent-str": ({"parent": "p"}, InvalidEventError, "$.parent", "str"),
    "parent-sequence": (
        {"parent": Lineage(partition_key="p", app_id="x", sequence_id="1")},  # type: ignore[arg-type]
        InvalidEventError,
        "$.parent.sequence_id",
        "str",
    ),
    "correlation-int": ({"correlation_id": 1}, InvalidEventError, "$.correlation_id", "int"),
    "schema-bool": ({"schema_version": True}, InvalidEventError, "$.schema_version", "bool"),
}
BAD_FIELDS = list(_FIELD_CASES.values())
BAD_FIELD_IDS = list(_FIELD_CASES)


class StoreContract:
    """Every behaviour an ``EventStore`` promises. Subclass and give ``make_store``."""

    durable: ClassVar[bool] = True
    supports_cross_process: ClassVar[bool] = True

    async def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        store = await self.make_store(tmp_path)
        try:
            yield store
        finally:
            await store.aclose()

    async def _nothing_written(self, store: EventStore, app_id: str = "a") -> None:
        assert await store.last_sequence(PK, app_id) == -1
        assert await store.read(PK, app_id) == []
        assert await store.read_all() == []
        assert await store.streams() == []

    # ------------------------------------------------------------------ empty store

    async def test_empty_store(self, store: EventStore) -> None:
        assert await store.streams() == []
        assert await store.last_sequence(PK, "none") == -1
        assert await store.read(PK, "none") == []
        assert await store.read_all() == []
        assert await store.verify() is None
        assert await store.fold_stream(PK, "none") == ({}, -1)

    # ------------------------------------------------------------------ append

    async def test_append_returns_sealed_events_with_positions(self, store: EventStore) -> None:
        recorded = await store.append(evs("a", 0, 3), expected_sequence=-1)
        assert [r.position for r in recorded] == [1, 2, 3]
        assert all(isinstance(r, Recorded) for r in recorded)
        prev = ""
        for r in recorded:
            assert r.event.prev_hash == prev
            assert r.event.hash == compute_hash(r.event, store.hmac_key)
            prev = r.event.hash

    async def test_append_continues_the_chain_across_appends(self, store: EventStore) -> None:
        first = await store.append(evs("a", 0, 2), expected_sequence=-1)
        second = await store.append(evs("a", 2, 2), expected_sequence=1)
        assert second[0].event.prev_hash == first[-1].event.hash
        assert [r.position for r in second] == [3, 4]
        events = await store.read(PK, "a")
        assert verify_events(events, key=store.hmac_key) is None

    async def test_store_sets_the_chain_not_the_caller(self, store: EventStore) -> None:
        bogus = ev("a", 0, prev_hash="00" * 32, hash="ff" * 32)
        [rec] = await store.append([bogus], expected_sequence=-1)
        assert rec.event.prev_hash == ""
        assert rec.event.hash != "ff" * 32
        assert await store.verify() is None

    async def test_positions_are_global_commit_order(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        await store.append(evs("b", 0, 1), expected_sequence=-1)
        await store.append(evs("a", 2, 1), expected_sequence=1)
        records = await store.read_all()
        assert [r.position for r in records] == [1, 2, 3, 4]
        assert [(r.event.app_id, r.event.sequence_id) for r in records] == [
            ("a", 0),
            ("a", 1),
            ("b", 0),
            ("a", 2),
        ]

    async def test_append_accepts_a_tuple(self, store: EventStore) -> None:
        recorded = await store.append(tuple(evs("a", 0, 2)), expected_sequence=-1)
        assert len(recorded) == 2

    async def test_large_batch_is_one_append(self, store: EventStore) -> None:
        await store.append(evs("small", 0, 1), expected_sequence=-1)
        recorded = await store.append(evs("a", 0, 2500), expected_sequence=-1)
        assert [r.position for r in recorded] == list(range(2, 2502))
        assert await store.last_sequence(PK, "a") == 2499
        assert await store.verify() is None

    async def test_every_field_round_trips(self, store: EventStore) -> None:
        event = v2(
            partition_key="pk ü",
            app_id="app/1 ✓",
            sequence_id=0,
            kind="action_failed",
            action="charge",
            next_action="retry",
            inputs={"amount": 12.5, "items": [1, "two", None, True], "nested": {"k": "v"}},
            writes={"count": 3, "name": "Zoë", "big": 2**53 - 1, "small": -(2**53 - 1)},
            deletes=["old", "older"],
            ops=[
                {"op": "append", "key": "log", "value": {"m": "hi"}},
                {"op": "extend", "key": "log", "values": [1, 2.5]},
                {"op": "increment", "key": "n", "by": 2},
                {"op": "merge", "key": "cfg", "value": {"a": {"b": None}}},
            ],
            result={"ok": False},
            error=ErrorInfo(type="ValueError", message="boom", traceback=["x.py:1 in f"]),
            timestamp=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            duration=0.25,
            attempt=3,
            parent=Lineage(partition_key="pk", app_id="parent", sequence_id=7, relation="child"),
            actor="alice",
            correlation_id="corr-1",
            data={"graph": "sha256:00", "halt": "after"},
        )
        [rec] = await store.append([event], expected_sequence=-1)
        [back] = await store.read("pk ü", "app/1 ✓")
        assert back == rec.event
        sealed_fields = {"prev_hash", "hash"}
        for name in Event.__struct_fields__:
            if name not in sealed_fields:
                assert getattr(back, name) == getattr(event, name), name
        [(position, via_all)] = await store.read_all()
        assert position == rec.position
        assert via_all == rec.event

    # ------------------------------------------------------------------ reading

    async def test_read_ranges(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 10), expected_sequence=-1)
        seqs = [e.sequence_id for e in await store.read(PK, "a", from_sequence=3)]
        assert seqs == list(range(3, 10))
        seqs = [e.sequence_id for e in await store.read(PK, "a", to_sequence=4)]
        assert seqs == [0, 1, 2, 3, 4]
        seqs = [e.sequence_id for e in await store.read(PK, "a", from_sequence=2, to_sequence=5)]
        assert seqs == [2, 3, 4, 5]
        assert await store.read(PK, "a", from_sequence=5, to_sequence=4) == []
        assert await store.read(PK, "a", from_sequence=10) == []
        assert [e.sequence_id for e in await store.read(PK, "a", to_sequence=99)] == list(range(10))

    async def test_read_from_the_middle_keeps_prev_hash(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 5), expected_sequence=-1)
        whole = await store.read(PK, "a")
        tail = await store.read(PK, "a", from_sequence=3)
        assert tail == whole[3:]
        assert tail[0].prev_hash == whole[2].hash
        assert (
            verify_events(tail, prev_hash=whole[2].hash, first_sequence=3, key=store.hmac_key)
            is None
        )

    async def test_streams_are_separate(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        await store.append(evs("a", 0, 3, pk="other"), expected_sequence=-1)
        assert len(await store.read(PK, "a")) == 2
        assert len(await store.read("other", "a")) == 3
        assert await store.last_sequence(PK, "a") == 1
        assert await store.last_sequence("other", "a") == 2
        assert await store.last_sequence("nope", "a") == -1

    async def test_streams_in_order_of_creation_and_by_partition(self, store: EventStore) -> None:
        await store.append(evs("z", 0, 1), expected_sequence=-1)
        await store.append(evs("a", 0, 1, pk="p2"), expected_sequence=-1)
        await store.append(evs("m", 0, 1), expected_sequence=-1)
        await store.append(evs("z", 1, 1), expected_sequence=0)
        assert await store.streams() == [
            StreamId(PK, "z"),
            StreamId("p2", "a"),
            StreamId(PK, "m"),
        ]
        assert await store.streams(PK) == [StreamId(PK, "z"), StreamId(PK, "m")]
        assert await store.streams("p2") == [StreamId("p2", "a")]
        assert await store.streams("missing") == []

    async def test_empty_partition_key(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2, pk=""), expected_sequence=-1)
        assert len(await store.read("", "a")) == 2
        assert await store.streams("") == [StreamId("", "a")]
        assert await store.verify("", "a") is None

    async def test_read_all_from_position_and_limit(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 4), expected_sequence=-1)
        await store.append(evs("b", 0, 4), expected_sequence=-1)
        assert [r.position for r in await store.read_all(from_position=0)] == list(range(1, 9))
        assert [r.position for r in await store.read_all(from_position=1)] == list(range(1, 9))
        assert [r.position for r in await store.read_all(from_position=5)] == [5, 6, 7, 8]
        assert [r.position for r in await store.read_all(from_position=3, limit=2)] == [3, 4]
        assert await store.read_all(from_position=9) == []

    async def test_read_all_events_carry_their_chain(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        await store.append(evs("b", 0, 2), expected_sequence=-1)
        await store.append(evs("a", 2, 1), expected_sequence=1)
        by_stream: dict[str, list[Event]] = {}
        for rec in await store.read_all():
            by_stream.setdefault(rec.event.app_id, []).append(rec.event)
        for app_id, events in by_stream.items():
            assert events == await store.read(PK, app_id)
            assert verify_events(events, key=store.hmac_key) is None

    async def test_iter_all_pages(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 25), expected_sequence=-1)
        pages = [page async for page in store.iter_all(batch_size=10)]
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [r.position for p in pages for r in p] == list(range(1, 26))
        tail = [r.position async for p in store.iter_all(from_position=21) for r in p]
        assert tail == [21, 22, 23, 24, 25]

    # ------------------------------------------------------------------ fold

    async def test_fold_stream_equals_fold_of_read(self, store: EventStore) -> None:
        events = [
            ev("a", 0, writes={"x": 1, "y": 2}),
            ev("a", 1, writes={"x": 3}, deletes=["y"]),
            ev("a", 2, writes={"z": [1, 2]}, deletes=["missing"]),
            ev("a", 3, writes={}),
        ]
        await store.append(events, expected_sequence=-1)
        state, last = await store.fold_stream(PK, "a")
        assert state == fold(await store.read(PK, "a")) == {"x": 3, "z": [1, 2]}
        assert last == 3

    async def test_fold_stream_from_a_state(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 6), expected_sequence=-1)
        base = {"n": 2, "keep": True}
        state, last = await store.fold_stream(PK, "a", from_sequence=3, state=base)
        assert state == {"n": 5, "keep": True}
        assert last == 5
        assert base == {"n": 2, "keep": True}
        assert await store.fold_stream(PK, "a", from_sequence=6, state=base) == (base, 5)

    # ------------------------------------------------------------------ verify

    async def test_verify_intact_store(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 5), expected_sequence=-1)
        await store.append(evs("b", 0, 5, pk="other"), expected_sequence=-1)
        assert await store.verify() is None
        assert await store.verify(PK) is None
        assert await store.verify("other", "b") is None
        assert await store.verify(PK, "missing") is None

    async def test_hmac_key_signs_the_chain(self, tmp_path: Path) -> None:
        key = b"secret key"
        store = await self.make_store(tmp_path, hmac_key=key)
        try:
            recorded = await store.append(evs("a", 0, 3), expected_sequence=-1)
            events = [r.event for r in recorded]
            assert events[0].hash == compute_hash(events[0], key)
            assert events[0].hash != compute_hash(events[0])
            assert await store.verify() is None
            assert verify_events(await store.read(PK, "a"), key=key) is None
            broken = verify_events(await store.read(PK, "a"), key=b"other key")
            assert broken is not None and broken.sequence_id == 0
        finally:
            await store.aclose()

    # ------------------------------------------------------------------ concurrency

    async def test_writer_behind_gets_concurrency_error(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 3), expected_sequence=-1)
        with pytest.raises(ConcurrencyError) as info:
            await store.append([ev("a", 2)], expected_sequence=1)
        assert info.value.stream == (PK, "a")
        assert (info.value.expected, info.value.actual) == (1, 2)
        assert await store.last_sequence(PK, "a") == 2
        assert len(await store.read_all()) == 3
        assert await store.verify() is None

    async def test_writer_ahead_gets_concurrency_error(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        with pytest.raises(ConcurrencyError) as info:
            await store.append([ev("a", 5)], expected_sequence=4)
        assert (info.value.expected, info.value.actual) == (4, 1)
        assert await store.last_sequence(PK, "a") == 1

    async def test_appending_to_a_missing_stream_needs_minus_one(self, store: EventStore) -> None:
        with pytest.raises(ConcurrencyError) as info:
            await store.append([ev("a", 1)], expected_sequence=0)
        assert (info.value.expected, info.value.actual) == (0, -1)
        await self._nothing_written(store)

    async def test_creating_an_existing_stream_is_a_conflict(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 1), expected_sequence=-1)
        with pytest.raises(ConcurrencyError):
            await store.append(evs("a", 0, 1), expected_sequence=-1)
        assert len(await store.read(PK, "a")) == 1

    async def test_racing_tasks_one_winner_per_sequence(self, store: EventStore) -> None:
        rounds = 30
        outcomes: dict[int, list[str]] = {}

        async def writer(name: str) -> None:
            for _ in range(rounds):
                last = await store.last_sequence(PK, "race")
                seq = last + 1
                try:
                    await store.append(
                        [ev("race", seq, writes={"by": name})], expected_sequence=last
                    )
                except ConcurrencyError:
                    outcomes.setdefault(seq, []).append(f"{name}:lost")
                else:
                    outcomes.setdefault(seq, []).append(f"{name}:won")

        await asyncio.gather(writer("x"), writer("y"))
        events = await store.read(PK, "race")
        assert [e.sequence_id for e in events] == list(range(len(events)))
        for seq, results in outcomes.items():
            assert sum(r.endswith(":won") for r in results) <= 1, (seq, results)
            if seq < len(events):
                assert sum(r.endswith(":won") for r in results) == 1
                winner = next(r for r in results if r.endswith(":won")).split(":")[0]
                assert writes_of(events[seq]) == {"by": winner}
        assert await store.verify() is None

    async def test_same_expected_sequence_twice_at_once(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 1), expected_sequence=-1)
        results = await asyncio.gather(
            store.append([ev("a", 1, writes={"w": 1})], expected_sequence=0),
            store.append([ev("a", 1, writes={"w": 2})], expected_sequence=0),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], ConcurrencyError)
        assert errors[0].actual == 1
        assert await store.last_sequence(PK, "a") == 1
        assert await store.verify() is None

    async def test_many_streams_at_once(self, store: EventStore) -> None:
        async def writer(app_id: str) -> None:
            for seq in range(20):
                await store.append([ev(app_id, seq)], expected_sequence=seq - 1)

        await asyncio.gather(*(writer(f"s{i}") for i in range(30)))
        assert len(await store.streams()) == 30
        for i in range(30):
            assert await store.last_sequence(PK, f"s{i}") == 19
        records = await store.read_all()
        assert [r.position for r in records] == list(range(1, 601))
        assert await store.verify() is None

    async def test_a_conflict_does_not_fail_other_streams(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 1), expected_sequence=-1)
        results = await asyncio.gather(
            store.append(evs("b", 0, 1), expected_sequence=-1),
            store.append([ev("a", 6)], expected_sequence=5),
            store.append(evs("c", 0, 2), expected_sequence=-1),
            return_exceptions=True,
        )
        assert isinstance(results[1], ConcurrencyError)
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        assert await store.last_sequence(PK, "b") == 0
        assert await store.last_sequence(PK, "c") == 1

    # ------------------------------------------------------------------ bad input

    @pytest.mark.parametrize(
        ("batch", "expected", "match"),
        [
            ([], -1, "empty batch"),
            ([ev("", 0)], -1, "app_id"),
            ([ev("a", 0), ev("a", 2)], -1, "gap"),
            ([ev("a", 1)], -1, "expected sequence_id 0"),
            ([ev("a", 0), ev("b", 1)], -1, "one stream"),
            ([ev("a", 0, kind="")], -1, "kind"),
            ([ev("a", 0, schema_version=99)], -1, "schema_version"),
            ([ev("a", 0)], -2, "expected_sequence"),
            (["not an event"], -1, "Event"),
        ],
        ids=[
            "empty",
            "empty-app-id",
            "gap",
            "wrong-first",
            "mixed",
            "no-kind",
            "schema",
            "bad-expected",
            "not-event",
        ],
    )
    async def test_invalid_batch_is_refused(
        self, store: EventStore, batch: list[Any], expected: int, match: str
    ) -> None:
        with pytest.raises(InvalidEventError, match=match):
            await store.append(batch, expected_sequence=expected)
        await self._nothing_written(store)

    @pytest.mark.parametrize(
        ("event", "expected", "error", "match"),
        [
            (ev("a", 3), 1, InvalidEventError, "expected sequence_id 2"),
            (ev("a", 2, kind=""), 1, InvalidEventError, "kind"),
            (ev("a", 2, schema_version=99), 1, InvalidEventError, "schema_version"),
            (ev("a", 2), 1.0, InvalidEventError, "expected_sequence"),
            (ev("a", 2, writes={"x": _Unencodable()}), 1, EncodingError, r"\$\.ops\[0\]"),
            (ev("a", 2, writes={"x": "y" * 1_100_000}), 1, EventTooLargeError, "#2 encodes"),
        ],
        ids=["gap", "no-kind", "schema", "float-expected", "unencodable", "too-large"],
    )
    async def test_bad_event_on_a_known_stream_is_refused(
        self, store: EventStore, event: Event, expected: Any, error: type[Exception], match: str
    ) -> None:
        # One event for a stream the store has written to takes a store's
        # shortest path (the SQLite store's skips the stream-wide checks): the
        # event's own checks still run, and nothing is written.
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        with pytest.raises(error, match=match):
            await store.append([event], expected_sequence=expected)
        assert await store.last_sequence(PK, "a") == 1
        assert len(await store.read_all()) == 2
        await store.append([ev("a", 2)], expected_sequence=1)
        assert [e.sequence_id for e in await store.read(PK, "a")] == [0, 1, 2]
        assert await store.verify() is None

    @pytest.mark.parametrize("big", [2**53, -(2**53), 2**60])
    async def test_an_int_beyond_the_json_range_is_refused_with_nothing_written(
        self, store: EventStore, big: int
    ) -> None:
        batch = [ev("a", 0), ev("a", 1, writes={"n": {"deep": [big]}}), ev("a", 2)]
        with pytest.raises(EncodingError) as info:
            await store.append(batch, expected_sequence=-1)
        assert info.value.path == "$.ops[0].value.deep[0]"
        await self._nothing_written(store)

    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"writes": {"bad": _Unencodable()}}, "$.ops[0].value"),
            ({"writes": {"a": {"b": [1, _Unencodable()]}}}, "$.ops[0].value.b[1]"),
            ({"inputs": {"x": _Unencodable()}}, "$.inputs.x"),
            ({"result": _Unencodable()}, "$.result"),
            ({"writes": {"k": {1: _Unencodable()}}}, "$.ops[0].value"),
        ],
        ids=["writes", "nested", "inputs", "result", "int-key"],
    )
    async def test_unencodable_value_names_its_path(
        self, store: EventStore, fields: dict[str, Any], path: str
    ) -> None:
        batch = [ev("a", 0), ev("a", 1, **fields), ev("a", 2)]
        with pytest.raises(EncodingError) as info:
            await store.append(batch, expected_sequence=-1)
        assert info.value.path == path
        await self._nothing_written(store)

    # ------------------------------------------------------------------ what append refuses

    @pytest.mark.parametrize(("value", "error", "got"), list(BAD_VALUES.values()), ids=BAD_VALUES)
    @pytest.mark.parametrize("where", list(PLACES.values()), ids=PLACES)
    async def test_a_value_that_would_not_read_back_is_refused(
        self,
        store: EventStore,
        where: tuple[str, Callable[[Any], dict[str, Any]]],
        value: Any,
        error: type[Exception],
        got: str,
    ) -> None:
        path, place = where
        await self._refused_everywhere(store, lambda: place(value), error, path, got)

    @pytest.mark.parametrize(("fields", "error", "path", "got"), BAD_FIELDS, ids=BAD_FIELD_IDS)
    async def test_a_field_of_the_wrong_type_or_value_is_refused(
        self,
        store: EventStore,
        fields: dict[str, Any],
        error: type[Exception],
        path: str,
        got: str,
    ) -> None:
        await self._refused_everywhere(store, lambda: fields, error, path, got)

    @pytest.mark.parametrize("wrong", [float, str, bool], ids=["float", "str", "bool"])
    async def test_a_sequence_id_of_the_wrong_type_is_refused(
        self, store: EventStore, wrong: Callable[[int], Any]
    ) -> None:
        # 1.0 == True == 1, but only an int reads back as the sequence id it is
        got = wrong.__name__
        await self._refused_everywhere(
            store, dict, InvalidEventError, "$.sequence_id", got, sequence=wrong, known_at=0
        )

    @pytest.mark.parametrize(
        ("identity", "error", "path", "got"),
        [
            ({"partition_key": 5}, InvalidEventError, "$.partition_key", "int"),
            ({"app_id": b"a"}, InvalidEventError, "$.app_id", "bytes"),
            ({"app_id": "a\ud800"}, EncodingError, "$.app_id", "surrogate"),
            ({"partition_key": "p\udfff"}, EncodingError, "$.partition_key", "surrogate"),
        ],
        ids=["pk-int", "app-bytes", "app-surrogate", "pk-surrogate"],
    )
    async def test_a_bad_stream_identity_is_refused(
        self,
        store: EventStore,
        identity: dict[str, Any],
        error: type[Exception],
        path: str,
        got: str,
    ) -> None:
        fields = {"partition_key": PK, "app_id": "a", **identity}
        for batch in (
            [Event(sequence_id=0, kind="k", **fields)],
            [Event(sequence_id=seq, kind="k", **fields) for seq in range(3)],
        ):
            with pytest.raises(error) as info:
                await store.append(batch, expected_sequence=-1)
            _names_path_and_types(info.value, path, got)
            assert await store.read_all() == []
            assert await store.streams() == []
        await store.append(evs("a", 0, 1), expected_sequence=-1)
        assert await store.verify() is None

    async def _refused_everywhere(
        self,
        store: EventStore,
        bad: Callable[[], dict[str, Any]],
        error: type[Exception],
        path: str,
        got: str,
        *,
        sequence: Callable[[int], Any] = lambda seq: seq,
        known_at: int = 1,
    ) -> None:
        """One bad event refused alone on a new stream, alone on a known stream
        and inside batches on both; nothing is written, and the streams go on."""

        def bad_event(app_id: str, seq: int) -> Event:
            fields = {
                "kind": "action_completed",
                "ops": [{"op": "set", "key": "n", "value": seq}],
                **bad(),
            }
            return Event(partition_key=PK, app_id=app_id, sequence_id=sequence(seq), **fields)

        await store.append(evs("known", 0, known_at + 1), expected_sequence=-1)
        k = known_at + 1  # the next sequence id of the known stream
        attempts = [
            ("new", [bad_event("new", 0)], -1),
            ("known", [bad_event("known", k)], k - 1),
            ("batch", [ev("batch", 0), bad_event("batch", 1), ev("batch", 2)], -1),
            ("known", [ev("known", k), bad_event("known", k + 1), ev("known", k + 2)], k - 1),
        ]
        for app_id, batch, expected in attempts:
            with pytest.raises(error) as info:
                await store.append(batch, expected_sequence=expected)
            _names_path_and_types(info.value, path, got)
            # nothing written: the stream is where it was and reads back whole
            assert await store.last_sequence(PK, app_id) == expected
            assert len(await store.read(PK, app_id)) == expected + 1
            assert len(await store.read_all()) == k
            assert await store.verify() is None
        # the streams go on: the next good append works, and everything verifies
        await store.append([ev("new", 0)], expected_sequence=-1)
        await store.append(evs("batch", 0, 3), expected_sequence=-1)
        await store.append(evs("known", k, 3), expected_sequence=k - 1)
        assert [e.sequence_id for e in await store.read(PK, "known")] == list(range(k + 3))
        assert await store.fold_stream(PK, "known") == ({"n": k + 2}, k + 2)
        assert len(await store.read_all()) == k + 7
        assert await store.verify() is None

    async def test_bad_event_in_a_batch_writes_nothing_of_it(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        batch = [ev("a", 2), ev("a", 3, writes={"x": _Unencodable()}), ev("a", 4)]
        with pytest.raises(EncodingError):
            await store.append(batch, expected_sequence=1)
        assert await store.last_sequence(PK, "a") == 1
        assert len(await store.read_all()) == 2
        await store.append(evs("a", 2, 1), expected_sequence=1)
        assert await store.verify() is None

    async def test_read_calls_refuse_arguments_of_the_wrong_type(self, store: EventStore) -> None:
        # a wrong type used to read as "no such stream" (an empty answer) or
        # fail deep in the backend with a bare TypeError or OverflowError
        await store.append(evs("a", 0, 3), expected_sequence=-1)
        huge = 1 << 63
        cases: list[tuple[str, Callable[[], Any], str]] = [
            ("read pk int", lambda: store.read(5, "a"), "partition_key"),  # type: ignore[arg-type]
            ("read app bytes", lambda: store.read(PK, b"a"), "app_id"),  # type: ignore[arg-type]
            ("read app empty", lambda: store.read(PK, ""), "app_id"),
            ("read from str", lambda: store.read(PK, "a", from_sequence="1"), "from_sequence"),  # type: ignore[arg-type]
            ("read from bool", lambda: store.read(PK, "a", from_sequence=True), "from_sequence"),
            ("read from float", lambda: store.read(PK, "a", from_sequence=1.0), "from_sequence"),  # type: ignore[arg-type]
            ("read from huge", lambda: store.read(PK, "a", from_sequence=huge), "from_sequence"),
            ("read to str", lambda: store.read(PK, "a", to_sequence="2"), "to_sequence"),  # type: ignore[arg-type]
            ("read to huge", lambda: store.read(PK, "a", to_sequence=-huge - 1), "to_sequence"),
            ("read after", lambda: store.read(PK, "a", after_position="1"), "after_position"),  # type: ignore[arg-type]
            ("last_sequence", lambda: store.last_sequence(PK, 1), "app_id"),  # type: ignore[arg-type]
            ("last_sequence pk", lambda: store.last_sequence(None, "a"), "partition_key"),  # type: ignore[arg-type]
            ("fold app", lambda: store.fold_stream(PK, ["a"]), "app_id"),  # type: ignore[arg-type]
            ("fold from", lambda: store.fold_stream(PK, "a", from_sequence="0"), "from_sequence"),  # type: ignore[arg-type]
            ("streams", lambda: store.streams(5), "partition_key"),  # type: ignore[arg-type]
            ("read_all from", lambda: store.read_all(from_position="1"), "from_position"),  # type: ignore[arg-type]
            ("read_all limit", lambda: store.read_all(limit=2.5), "limit"),  # type: ignore[arg-type]
            ("read_all huge", lambda: store.read_all(from_position=huge), "from_position"),
            ("position_of", lambda: store.position_of(PK, "a", "0"), "sequence_id"),  # type: ignore[arg-type]
            ("verify app", lambda: store.verify(PK, 5), "app_id"),  # type: ignore[arg-type]
            ("verify pk", lambda: store.verify(5), "partition_key"),  # type: ignore[arg-type]
            ("subscribe", lambda: anext(store.subscribe(from_position="0")), "from_position"),  # type: ignore[arg-type]
        ]
        for name, call, argument in cases:
            try:
                await call()
            except ConfigError as error:
                assert argument in str(error), (name, str(error))
                assert isinstance(error, ValueError), name
            else:
                raise AssertionError(f"{name}: no ConfigError")
        # and the right types still read the stream as it is; out-of-range ones
        # read as nothing
        assert [e.sequence_id for e in await store.read(PK, "a")] == [0, 1, 2]
        assert await store.read(PK, "a", from_sequence=huge - 1) == []
        assert await store.read(PK, "a", to_sequence=-huge) == []
        assert await store.position_of(PK, "a", -1) is None
        assert await store.position_of(PK, "a", huge - 1) is None
        assert await store.read_all(from_position=huge - 1) == []
        assert await store.last_sequence(PK, "a") == 2
        assert await store.verify(PK, "a") is None

    async def test_event_over_the_size_limit(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path, max_event_size=2000)
        try:
            await store.append([ev("a", 0, writes={"x": "small"})], expected_sequence=-1)
            batch = [ev("a", 1), ev("a", 2, writes={"blob": "x" * 5000})]
            with pytest.raises(EventTooLargeError) as info:
                await store.append(batch, expected_sequence=0)
            assert info.value.sequence_id == 2
            assert info.value.limit == 2000
            assert info.value.size > 5000
            assert isinstance(info.value, ValueError)
            assert await store.last_sequence(PK, "a") == 0
        finally:
            await store.aclose()

    async def test_default_size_limit_is_one_mib(self, store: EventStore) -> None:
        await store.append([ev("a", 0, writes={"x": "y" * 500_000})], expected_sequence=-1)
        with pytest.raises(EventTooLargeError):
            await store.append([ev("a", 1, writes={"x": "y" * 1_100_000})], expected_sequence=0)
        assert await store.last_sequence(PK, "a") == 0

    # ------------------------------------------------------------------ subscribe

    async def test_subscribe_catches_up_then_goes_live(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 3), expected_sequence=-1)
        seen: list[Recorded] = []

        async def consume() -> None:
            async for rec in store.subscribe(from_position=0, poll_interval=0.02):
                seen.append(rec)
                if len(seen) == 6:
                    return

        task = asyncio.create_task(consume())
        while len(seen) < 3:
            await asyncio.sleep(0.01)
        await store.append(evs("a", 3, 2), expected_sequence=2)
        await store.append(evs("b", 0, 1), expected_sequence=-1)
        await asyncio.wait_for(task, 10)
        assert [r.position for r in seen] == [1, 2, 3, 4, 5, 6]
        assert seen == await store.read_all()

    async def test_subscribe_from_a_position(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 5), expected_sequence=-1)
        agen = store.subscribe(from_position=4, poll_interval=0.02)
        try:
            got = [await asyncio.wait_for(agen.__anext__(), 10) for _ in range(2)]
        finally:
            await agen.aclose()
        assert [r.position for r in got] == [4, 5]

    async def test_subscribe_at_the_end_waits_for_new_events(self, store: EventStore) -> None:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        agen = store.subscribe(from_position=3, poll_interval=0.02)
        try:
            nxt = asyncio.ensure_future(agen.__anext__())
            await asyncio.sleep(0.05)
            assert not nxt.done()
            await store.append(evs("a", 2, 1), expected_sequence=1)
            rec = await asyncio.wait_for(nxt, 10)
        finally:
            await agen.aclose()
        assert (rec.position, rec.event.sequence_id) == (3, 2)

    async def test_subscriber_ends_when_the_store_closes(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path)

        async def consume() -> None:
            async for _ in store.subscribe(poll_interval=0.02):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        await store.aclose()
        with pytest.raises(StoreClosedError):
            await asyncio.wait_for(task, 10)

    # ------------------------------------------------------------------ lifecycle

    async def test_closed_store_refuses_everything(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path)
        await store.append(evs("a", 0, 1), expected_sequence=-1)
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(StoreClosedError):
            await store.append(evs("a", 1, 1), expected_sequence=0)
        with pytest.raises(StoreClosedError):
            await store.read(PK, "a")
        with pytest.raises(StoreClosedError):
            await store.read_all()
        with pytest.raises(StoreClosedError):
            await store.last_sequence(PK, "a")
        with pytest.raises(StoreClosedError):
            await store.streams()
        with pytest.raises(StoreClosedError):
            await store.fold_stream(PK, "a")
        with pytest.raises(StoreClosedError):
            await store.verify()
        with pytest.raises(StoreClosedError):
            await store.subscribe().__anext__()

    async def test_async_context_manager_closes(self, tmp_path: Path) -> None:
        async with await self.make_store(tmp_path) as store:
            await store.append(evs("a", 0, 1), expected_sequence=-1)
        with pytest.raises(StoreClosedError):
            await store.read(PK, "a")

    @pytest.mark.requires("durable")
    async def test_reopen_keeps_everything(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path)
        await store.append(evs("a", 0, 3), expected_sequence=-1)
        await store.append(evs("b", 0, 2), expected_sequence=-1)
        before = await store.read_all()
        await store.aclose()
        again = await self.make_store(tmp_path)
        try:
            assert await again.read_all() == before
            assert await again.streams() == [StreamId(PK, "a"), StreamId(PK, "b")]
            recorded = await again.append(evs("a", 3, 1), expected_sequence=2)
            assert recorded[0].position == 6
            assert recorded[0].event.prev_hash == before[2].event.hash
            with pytest.raises(ConcurrencyError):
                await again.append(evs("b", 1, 1), expected_sequence=0)
            assert await again.verify() is None
        finally:
            await again.aclose()

    # ------------------------------------------------------------------ two stores, one log

    @pytest.mark.requires("supports_cross_process")
    async def test_two_stores_see_each_others_appends(self, tmp_path: Path) -> None:
        one = await self.make_store(tmp_path)
        two = await self.make_store(tmp_path)
        try:
            await one.append(evs("a", 0, 2), expected_sequence=-1)
            assert await two.last_sequence(PK, "a") == 1
            await two.append(evs("a", 2, 1), expected_sequence=1)
            assert [e.sequence_id for e in await one.read(PK, "a")] == [0, 1, 2]
            # ``one`` last wrote seq 1; it is behind now and must be told so
            with pytest.raises(ConcurrencyError) as info:
                await one.append(evs("a", 2, 1), expected_sequence=1)
            assert info.value.actual == 2
            await one.append(evs("a", 3, 1), expected_sequence=2)
            assert await two.verify() is None
            assert [r.position for r in await two.read_all()] == [1, 2, 3, 4]
        finally:
            await one.aclose()
            await two.aclose()

    @pytest.mark.requires("supports_cross_process")
    async def test_subscriber_sees_another_stores_appends(self, tmp_path: Path) -> None:
        one = await self.make_store(tmp_path)
        two = await self.make_store(tmp_path)
        try:
            agen = one.subscribe(poll_interval=0.02)
            try:
                nxt = asyncio.ensure_future(agen.__anext__())
                await asyncio.sleep(0.05)
                await two.append(evs("x", 0, 1), expected_sequence=-1)
                rec = await asyncio.wait_for(nxt, 10)
            finally:
                await agen.aclose()
            assert rec.event.app_id == "x"
        finally:
            await one.aclose()
            await two.aclose()

    @pytest.mark.requires("supports_cross_process")
    async def test_two_stores_racing_one_stream(self, tmp_path: Path) -> None:
        one = await self.make_store(tmp_path)
        two = await self.make_store(tmp_path)
        wins = {"one": 0, "two": 0}

        async def writer(name: str, store: EventStore) -> None:
            for _ in range(25):
                last = await store.last_sequence(PK, "race")
                try:
                    await store.append([ev("race", last + 1)], expected_sequence=last)
                    wins[name] += 1
                except ConcurrencyError:
                    pass

        try:
            await asyncio.gather(writer("one", one), writer("two", two))
            events = await one.read(PK, "race")
            assert [e.sequence_id for e in events] == list(range(wins["one"] + wins["two"]))
            assert await two.verify() is None
        finally:
            await one.aclose()
            await two.aclose()
