"""The built-in read models audit users need: ``audit_trail``, ``current_state``, ``app_index``.

All three are idempotent on ``(partition_key, app_id, sequence_id)``: an event
delivered twice (Kafka is at least once) changes nothing the second time.
JSON columns are TEXT, so SQLite's JSON functions work on them
(``json_extract(state, '$.count')``). Times are ISO-8601 UTC text with
microseconds (``2026-11-22T15:04:05.123456Z``), so they sort and compare as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from statelog.eventstore import EventKind, Recorded, apply_event

from ._errors import ProjectionError
from ._projection import Projection, ProjectionContext, SyncProjectionContext

__all__ = [
    "BUILTIN_PROJECTIONS",
    "AppIndexProjection",
    "AuditTrailProjection",
    "CurrentStateProjection",
    "get_projection",
    "register_projection",
]

_json = msgspec.json.Encoder()
_ATTEMPT_FAILED = EventKind.ATTEMPT_FAILED.value
_decode = msgspec.json.Decoder(dict[str, Any])


def _dumps(value: Any) -> str:
    if not value:
        return "[]" if isinstance(value, list) else "{}" if isinstance(value, dict) else "null"
    return _json.encode(value).decode()


def iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text (``2026-01-01T00:00:00.000000Z``), so times sort as text."""
    offset = moment.utcoffset()
    if offset:
        moment = moment.astimezone(UTC)
    text = _json.encode(moment)[1:-1].decode()  # msgspec: RFC 3339, fast
    if offset is None:  # naive: taken as UTC
        text += "Z"
    elif not text.endswith("Z"):  # "+00:00"
        text = text[:-6] + "Z"
    if moment.microsecond == 0:
        text = text[:-1] + ".000000Z"
    return text


class AuditTrailProjection(Projection):
    """One row per event: when, which app, which action, inputs, changes, attempt, error."""

    name = "audit_trail"
    version = 2
    tables = ("audit_trail",)

    async def setup(self, ctx: ProjectionContext) -> None:
        await ctx.db.execute(
            f"""CREATE TABLE {ctx.table("audit_trail")} (
                position INTEGER,
                partition_key TEXT NOT NULL,
                app_id TEXT NOT NULL,
                sequence_id INTEGER NOT NULL,
                kind TEXT NOT NULL,
                action TEXT,
                next_action TEXT,
                timestamp TEXT NOT NULL,
                duration_us INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                inputs TEXT NOT NULL,
                ops TEXT NOT NULL,
                data TEXT NOT NULL,
                error_type TEXT,
                error_message TEXT,
                error_traceback TEXT,
                actor TEXT,
                correlation_id TEXT,
                hash TEXT NOT NULL,
                PRIMARY KEY (partition_key, app_id, sequence_id)
            )"""
        )

    async def create_indexes(self, ctx: ProjectionContext) -> None:
        table = ctx.table("audit_trail")
        await ctx.db.execute(f"CREATE INDEX {table}_app ON {table} (app_id, timestamp)")
        await ctx.db.execute(f"CREATE INDEX {table}_action ON {table} (action, timestamp)")
        await ctx.db.execute(f"CREATE INDEX {table}_time ON {table} (timestamp)")

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        await ctx.db.executemany(_audit_insert(ctx.table("audit_trail")), audit_rows(records))

    def handle_batch_sync(self, ctx: SyncProjectionContext, records: Sequence[Recorded]) -> None:
        ctx.db.executemany(_audit_insert(ctx.table("audit_trail")), audit_rows(records))


def _audit_insert(table: str) -> str:
    # NULLIF(?, 0): audit_rows passes 0 for a missing text value (see there).
    return (
        f"INSERT OR IGNORE INTO {table} VALUES (NULLIF(?, 0), ?, ?, ?, ?, NULLIF(?, 0), "
        "NULLIF(?, 0), ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0), NULLIF(?, 0), "
        "NULLIF(?, 0), NULLIF(?, 0), ?)"
    )


_timestamps = msgspec.json.Decoder(list[str])


def audit_rows(records: Sequence[Recorded]) -> list[tuple[Any, ...]]:
    """The ``audit_trail`` rows of ``records``, for ``_audit_insert``'s statement.

    A missing text value (and position 0) is passed as the integer 0 and
    turned into NULL by the statement's ``NULLIF(?, 0)``: binding ``None``
    costs Python's sqlite3 a failed adapter lookup per value, about a third of
    the insert. A real text value is never the integer 0, so nothing else
    becomes NULL. Timestamps are encoded in one call per batch; the ones that
    are not already fixed-width UTC go through ``iso``.
    """
    events = [record[1] for record in records]
    stamps = _timestamps.decode(_json.encode([e.timestamp for e in events]))
    encode = _json.encode
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for (position, e), stamp in zip(records, stamps, strict=True):
        if len(stamp) != 27 or stamp[26] != "Z":
            stamp = iso(e.timestamp)
        error = e.error
        ops = e.ops
        data = e.data
        append(
            (
                position,
                e.partition_key,
                e.app_id,
                e.sequence_id,
                e.kind,
                0 if e.action is None else e.action,
                0 if e.next_action is None else e.next_action,
                stamp,
                e.duration_us,
                e.attempt,
                encode(e.inputs).decode() if e.inputs else "{}",
                encode(ops).decode() if ops else "[]",
                encode(data).decode() if data else "{}",
                0 if error is None else error.type,
                0 if error is None else error.message,
                0 if error is None or not error.traceback else "\n".join(error.traceback),
                0 if e.actor is None else e.actor,
                0 if e.correlation_id is None else e.correlation_id,
                e.hash,
            )
        )
    return rows


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class CurrentStateProjection(Projection):
    """The latest folded state of every app, as JSON."""

    name = "current_state"
    version = 1
    tables = ("current_state",)

    async def setup(self, ctx: ProjectionContext) -> None:
        await ctx.db.execute(
            f"""CREATE TABLE {ctx.table("current_state")} (
                partition_key TEXT NOT NULL,
                app_id TEXT NOT NULL,
                sequence_id INTEGER NOT NULL,
                state TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (partition_key, app_id)
            )"""
        )

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        table = ctx.table("current_state")
        touched: dict[tuple[str, str], list[Recorded]] = {}
        for rec in records:
            touched.setdefault((rec.event.partition_key, rec.event.app_id), []).append(rec)
        states: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        for chunk in _chunks(list(touched), 400):
            marks = ", ".join("(?, ?)" for _ in chunk)
            params = [part for key in chunk for part in key]
            async with ctx.db.execute(
                f"SELECT partition_key, app_id, sequence_id, state FROM {table} "
                f"WHERE (partition_key, app_id) IN (VALUES {marks})",
                params,
            ) as cursor:
                for pk, app, seq, state in await cursor.fetchall():
                    states[(pk, app)] = (seq, _decode.decode(state))
        rows = []
        for key, recs in touched.items():
            last, state = states.get(key, (-1, {}))
            updated = None
            for rec in recs:
                if rec.event.sequence_id <= last:
                    continue  # a duplicate delivery
                apply_event(state, rec.event)
                last = rec.event.sequence_id
                updated = rec.event.timestamp
            if updated is not None:
                rows.append((key[0], key[1], last, _dumps(state), iso(updated)))
        await ctx.db.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?) ON CONFLICT (partition_key, app_id) "
            "DO UPDATE SET sequence_id = excluded.sequence_id, state = excluded.state, "
            "updated_at = excluded.updated_at",
            rows,
        )


#: The status an app is in after an event of each kind (others: "running";
#: an action_completed with no next action - a v1 log's end - "completed").
_STATUS = {
    EventKind.ACTION_FAILED.value: "failed",
    EventKind.HALTED.value: "halted",
    EventKind.WAITING_FOR_INPUT.value: "waiting_for_input",
    EventKind.COMPLETED.value: "completed",
    EventKind.CANCELLED.value: "cancelled",
}
#: The statuses ``app_index`` uses.
APP_STATUSES = ("running", "halted", "waiting_for_input", "completed", "failed", "cancelled")


def app_status(kind: str, next_action: str | None) -> str:
    """The ``app_index`` status after an event of ``kind`` that leaves ``next_action``."""
    status = _STATUS.get(kind)
    if status is not None:
        return status
    if next_action is None and kind == EventKind.ACTION_COMPLETED.value:
        return "completed"
    return "running"


class AppIndexProjection(Projection):
    """Per app: status (``APP_STATUSES``), last sequence, last action, created and
    updated times, lineage, and how many attempts failed."""

    name = "app_index"
    version = 2
    tables = ("app_index",)

    async def setup(self, ctx: ProjectionContext) -> None:
        await ctx.db.execute(
            f"""CREATE TABLE {ctx.table("app_index")} (
                partition_key TEXT NOT NULL,
                app_id TEXT NOT NULL,
                status TEXT NOT NULL,
                last_sequence INTEGER NOT NULL,
                last_kind TEXT NOT NULL,
                last_action TEXT,
                next_action TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                parent_partition_key TEXT,
                parent_app_id TEXT,
                parent_sequence_id INTEGER,
                relation TEXT,
                failed_attempts INTEGER NOT NULL,
                PRIMARY KEY (partition_key, app_id)
            )"""
        )

    async def create_indexes(self, ctx: ProjectionContext) -> None:
        table = ctx.table("app_index")
        await ctx.db.execute(f"CREATE INDEX {table}_status ON {table} (status, updated_at)")
        await ctx.db.execute(
            f"CREATE INDEX {table}_parent ON {table} (parent_partition_key, parent_app_id)"
        )

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        rows = []
        for _, e in records:
            parent = e.parent
            rows.append(
                (
                    e.partition_key,
                    e.app_id,
                    app_status(e.kind, e.next_action),
                    e.sequence_id,
                    e.kind,
                    e.action,
                    e.next_action,
                    iso(e.timestamp),
                    iso(e.timestamp),
                    None if parent is None else parent.partition_key,
                    None if parent is None else parent.app_id,
                    None if parent is None else parent.sequence_id,
                    None if parent is None else parent.relation,
                    1 if e.kind == _ATTEMPT_FAILED else 0,
                )
            )
        # A later event wins; an older or duplicate one changes nothing. The
        # created time is the first event's; lineage is kept once known.
        await ctx.db.executemany(
            f"INSERT INTO {ctx.table('app_index')} AS a VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (partition_key, app_id) DO UPDATE SET "
            "status = excluded.status, last_sequence = excluded.last_sequence, "
            "last_kind = excluded.last_kind, last_action = excluded.last_action, "
            "next_action = excluded.next_action, updated_at = excluded.updated_at, "
            "created_at = CASE WHEN excluded.last_sequence = 0 THEN excluded.created_at "
            "ELSE a.created_at END, "
            "parent_partition_key = COALESCE(a.parent_partition_key, "
            "excluded.parent_partition_key), "
            "parent_app_id = COALESCE(a.parent_app_id, excluded.parent_app_id), "
            "parent_sequence_id = COALESCE(a.parent_sequence_id, excluded.parent_sequence_id), "
            "relation = COALESCE(a.relation, excluded.relation), "
            "failed_attempts = a.failed_attempts + excluded.failed_attempts "
            "WHERE excluded.last_sequence > a.last_sequence",
            rows,
        )


#: name -> projection class; the CLI looks names up here.
BUILTIN_PROJECTIONS: dict[str, type[Projection]] = {
    "app_index": AppIndexProjection,
    "audit_trail": AuditTrailProjection,
    "current_state": CurrentStateProjection,
}

_REGISTRY: dict[str, type[Projection]] = dict(BUILTIN_PROJECTIONS)


def register_projection(projection: type[Projection]) -> type[Projection]:
    """Make a projection class known by its name (usable as a class decorator)."""
    if not projection.name:
        raise ProjectionError(projection.__name__, None, "a projection needs a name")
    _REGISTRY[projection.name] = projection
    return projection


def get_projection(name: str) -> Projection:
    """A new instance of the projection called ``name``; ``ProjectionError`` if unknown."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ProjectionError(name, None, f"unknown projection; known: {known}") from None


def known_projections() -> list[type[Projection]]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]
