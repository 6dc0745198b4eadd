"""Checkpoints and read-model generations, kept in the read model's own SQLite file.

One row per projection generation in ``statelog_projections``::

    name        TEXT     the projection's name
    generation  INTEGER  1, 2, 3 ... (tables are named ``<table>_g<generation>``)
    version     INTEGER  the projection's version that built it
    status      TEXT     'building' or 'live' (the one the views point at)
    source      TEXT     where its events come from (``sqlite:/x.db``, ``kafka://h:p/t``)
    position    INTEGER  last log position (or file ordinal) applied, 0 = none
    offsets     TEXT     Kafka: JSON {"partition": next offset}, else '{}'
    events      INTEGER  events consumed so far
    created_at, updated_at, live_at   ISO-8601 UTC

The checkpoint columns are updated in the same transaction as the read-model
change, so a crash never applies an event twice nor skips one. Readers query
the views (``audit_trail``), which point at the live generation; a swap
re-points every view and drops the old generation in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from statelog.eventstore import Recorded

__all__ = ["META_TABLE", "Checkpoint", "Generation", "Item", "advance"]

META_TABLE = "statelog_projections"

META_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {META_TABLE} (
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('building', 'live')),
    source TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    offsets TEXT NOT NULL DEFAULT '{{}}',
    events INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    live_at TEXT,
    PRIMARY KEY (name, generation)
)
"""


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """How far a generation has read its source.

    ``position`` is the last log position (or export-file ordinal) applied, 0
    for none; ``offsets`` maps a Kafka partition to the next offset to read.
    """

    position: int = 0
    offsets: dict[int, int] = {}
    events: int = 0


class Item(NamedTuple):
    """One event as a source delivers it, with where it sits in that source.

    ``partition`` is -1 for sources with one global order (a log, a file); then
    ``offset`` is the log position (or file ordinal). For Kafka it is the
    partition and the record's offset, and ``record.position`` is 0.
    """

    record: Recorded
    partition: int
    offset: int


def advance(checkpoint: Checkpoint, items: Sequence[Item]) -> Checkpoint:
    """The checkpoint after ``items`` (pure)."""
    if not items:
        return checkpoint
    if items[0].partition < 0 and items[-1].partition < 0:  # one global order (fast path)
        return Checkpoint(
            position=items[-1].offset,
            offsets=checkpoint.offsets,
            events=checkpoint.events + len(items),
        )
    position = checkpoint.position
    offsets = checkpoint.offsets
    changed = False
    for item in items:
        if item.partition < 0:
            position = item.offset
        else:
            if not changed:
                offsets = dict(offsets)
                changed = True
            offsets[item.partition] = max(offsets.get(item.partition, 0), item.offset + 1)
    return Checkpoint(position=position, offsets=offsets, events=checkpoint.events + len(items))


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``statelog_projections``."""

    name: str
    generation: int
    version: int
    status: str
    source: str
    checkpoint: Checkpoint
    created_at: str
    updated_at: str
    live_at: str | None = None


_offsets_encoder = msgspec.json.Encoder()
_offsets_decoder = msgspec.json.Decoder(dict[int, int])


def encode_offsets(offsets: dict[int, int]) -> str:
    return _offsets_encoder.encode(offsets).decode()


def decode_offsets(text: str) -> dict[int, int]:
    return _offsets_decoder.decode(text)


def row_to_generation(row: Iterable[object]) -> Generation:
    (
        name,
        generation,
        version,
        status,
        source,
        position,
        offsets,
        events,
        created,
        updated,
        live_at,
    ) = tuple(row)
    return Generation(
        name=str(name),
        generation=int(generation),  # type: ignore[call-overload]
        version=int(version),  # type: ignore[call-overload]
        status=str(status),
        source=str(source),
        checkpoint=Checkpoint(
            position=int(position),  # type: ignore[call-overload]
            offsets=decode_offsets(str(offsets)),
            events=int(events),  # type: ignore[call-overload]
        ),
        created_at=str(created),
        updated_at=str(updated),
        live_at=None if live_at is None else str(live_at),
    )


META_COLUMNS = (
    "name, generation, version, status, source, position, offsets, events, "
    "created_at, updated_at, live_at"
)
