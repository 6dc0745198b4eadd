"""The local index of a ``KafkaEventStore``: a SQLite cache of what the topic holds.

Per stream: its Kafka partition, its head (last sequence id and hash) and the
offset of every event. Per partition: the offset up to which the topic has
been read into the index (the checkpoint), and the offsets of records readers
skip (duplicates, records off the chain, fenced and foreign records), and the
fences (ownership epochs) opened in it, by offset. New rows are kept in
memory and written in one transaction by ``flush``, with the checkpoints, so a
crash loses only rows the next catch-up re-reads from the topic.
"""

from __future__ import annotations

import bisect
import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import aiosqlite

from .._aiosqlite import connect_aiosqlite
from .._errors import StoreCorruptError
from .._event import Event, StreamId
from ..sqlite._schema import translate_error
from ._wire import Fence

__all__ = ["FLUSH_ROWS", "KafkaIndex", "StreamHead"]

#: Flush the index when this many event rows wait in memory.
FLUSH_ROWS = 50_000


class StreamHead:
    """What the index knows of one stream (mutable; owned by ``KafkaIndex``)."""

    __slots__ = ("id", "last_hash", "last_seq", "partition")

    def __init__(self, id: int, partition: int, last_seq: int, last_hash: str) -> None:
        self.id = id
        self.partition = partition
        self.last_seq = last_seq
        self.last_hash = last_hash


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    partition_key TEXT NOT NULL,
    app_id TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    UNIQUE (partition_key, app_id)
);
CREATE TABLE IF NOT EXISTS events (
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS partitions (
    kafka_partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS skipped (
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    PRIMARY KEY (kafka_partition, kafka_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fences (
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (kafka_partition, kafka_offset)
) WITHOUT ROWID;
"""


class KafkaIndex:
    """Heads, offsets and checkpoints of one topic, in a SQLite file (or in memory)."""

    def __init__(self, topic: str, path: Path | None) -> None:
        self.topic = topic
        self.path = path
        self.heads: dict[StreamId, StreamHead] = {}
        self.order: list[StreamId] = []
        self.checkpoint: dict[int, int] = {}
        self.skipped: set[tuple[int, int]] = set()
        self.pending: dict[tuple[int, int], int] = {}
        #: per partition, the fences opened in it: ascending offsets and epochs
        self.fences: dict[int, list[tuple[int, Fence]]] = {}
        self._fence_rows: list[tuple[int, int, int, str]] = []
        self._db: aiosqlite.Connection | None = None
        self._next_id = 1
        self._skipped_rows: list[tuple[int, int]] = []
        self._new_streams: list[tuple[int, StreamId, int]] = []
        self._dirty_heads: set[StreamId] = set()

    @property
    def _where(self) -> str:
        return ":memory:" if self.path is None else str(self.path)

    async def close(self) -> None:
        """Flush what is pending (best effort: the topic has it) and close the file."""
        db = self._db
        if db is None:
            return
        try:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self.flush()
        finally:
            self._db = None
            await db.close()

    def skip(self, partition: int, offset: int) -> None:
        self.skipped.add((partition, offset))
        self._skipped_rows.append((partition, offset))

    def current_fence(self, partition: int) -> Fence | None:
        """The newest fence opened in ``partition`` (as far as the index has read)."""
        opened = self.fences.get(partition)
        return opened[-1][1] if opened else None

    def fence_at(self, partition: int, offset: int) -> Fence | None:
        """The fence open at ``offset`` of ``partition``: the last one opened before it."""
        opened = self.fences.get(partition)
        if not opened:
            return None
        at = bisect.bisect_left(opened, offset, key=lambda item: item[0])
        return opened[at - 1][1] if at else None

    def open_fence(self, partition: int, offset: int, fence: Fence) -> bool:
        """Record a fence record; True if it opens a newer epoch (else it is stale)."""
        current = self.current_fence(partition)
        if current is not None and fence.epoch <= current.epoch:
            return False
        self.fences.setdefault(partition, []).append((offset, fence))
        self._fence_rows.append((partition, offset, fence.epoch, fence.owner))
        return True

    async def forget_partition(self, partition: int) -> None:
        """Drop all the index knows of ``partition`` (the next catch-up re-reads it)."""
        await self.flush()
        gone = [s for s, h in self.heads.items() if h.partition == partition]
        ids = [self.heads[s].id for s in gone]
        for stream in gone:
            del self.heads[stream]
        dropped = set(gone)
        self.order = [s for s in self.order if s not in dropped]
        self.checkpoint.pop(partition, None)
        self.fences.pop(partition, None)
        self.skipped = {(p, o) for p, o in self.skipped if p != partition}
        db = self._db
        if db is None:
            return
        try:
            await db.executemany("DELETE FROM events WHERE stream = ?", [(i,) for i in ids])
            await db.executemany("DELETE FROM streams WHERE id = ?", [(i,) for i in ids])
            for table in ("partitions", "skipped", "fences"):
                await db.execute(f"DELETE FROM {table} WHERE kafka_partition = ?", (partition,))
            await db.commit()
        except (sqlite3.Error, ValueError) as exc:
            raise translate_error(exc, self._where, doing="cannot write the Kafka index") from exc

    async def open(self) -> None:
        """Open (or create) the file and load heads, checkpoints and skipped offsets."""
        path = ":memory:" if self.path is None else str(self.path)
        try:
            self._db = db = await connect_aiosqlite(path)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(_SCHEMA)
            rows = await db.execute_fetchall("SELECT key, value FROM meta")
            meta = {str(k): str(v) for k, v in rows}
            if "topic" in meta and meta["topic"] != self.topic:
                raise StoreCorruptError(
                    f"index {path!r} belongs to topic {meta['topic']!r}, not {self.topic!r}"
                )
            await db.execute("INSERT OR REPLACE INTO meta VALUES ('topic', ?)", (self.topic,))
            await db.commit()
            for sid, pk, app, part, seq, digest in await db.execute_fetchall(
                "SELECT id, partition_key, app_id, kafka_partition, last_seq, last_hash "
                "FROM streams ORDER BY id"
            ):
                stream = StreamId(pk, app)
                self.heads[stream] = StreamHead(sid, part, seq, digest)
                self.order.append(stream)
                self._next_id = sid + 1
            for part, offset in await db.execute_fetchall(
                "SELECT kafka_partition, next_offset FROM partitions"
            ):
                self.checkpoint[int(part)] = int(offset)
            self.skipped = {
                (int(p), int(o))
                for p, o in await db.execute_fetchall(
                    "SELECT kafka_partition, kafka_offset FROM skipped"
                )
            }
            for part, offset, epoch, owner in await db.execute_fetchall(
                "SELECT kafka_partition, kafka_offset, epoch, owner FROM fences "
                "ORDER BY kafka_partition, kafka_offset"
            ):
                self.fences.setdefault(int(part), []).append(
                    (int(offset), Fence(int(epoch), str(owner)))
                )
        except sqlite3.Error as exc:
            raise translate_error(exc, path, doing=f"cannot open the Kafka index {path!r}") from exc

    async def flush(self) -> None:
        """Write what the index learned since the last flush, in one transaction."""
        db = self._db
        if db is None or not (
            self.pending
            or self._new_streams
            or self._dirty_heads
            or self._skipped_rows
            or self._fence_rows
        ):
            if db is not None:
                await self._write_checkpoints(db)
            return
        new_streams, self._new_streams = self._new_streams, []
        # the rows stay in ``pending`` until committed: a read during the write finds them
        pending = dict(self.pending)
        dirty, self._dirty_heads = self._dirty_heads, set()
        skipped, self._skipped_rows = self._skipped_rows, []
        fences, self._fence_rows = self._fence_rows, []
        heads = [(self.heads[s].last_seq, self.heads[s].last_hash, self.heads[s].id) for s in dirty]
        try:
            await db.executemany(
                "INSERT INTO streams VALUES (?, ?, ?, ?, -1, '')",
                [(sid, s.partition_key, s.app_id, part) for sid, s, part in new_streams],
            )
            await db.executemany(
                "UPDATE streams SET last_seq = ?, last_hash = ? WHERE id = ?", heads
            )
            await db.executemany(
                "INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                [(sid, seq, off) for (sid, seq), off in pending.items()],
            )
            await db.executemany("INSERT OR IGNORE INTO skipped VALUES (?, ?)", skipped)
            await db.executemany("INSERT OR IGNORE INTO fences VALUES (?, ?, ?, ?)", fences)
            await self._write_checkpoints(db, commit=False)
            await db.commit()
            for key, offset in pending.items():
                if self.pending.get(key) == offset:
                    del self.pending[key]
        except BaseException as exc:
            # Keep the rows for the next flush; the topic still has everything.
            self._new_streams = new_streams + self._new_streams
            self._dirty_heads |= dirty
            self._skipped_rows = skipped + self._skipped_rows
            self._fence_rows = fences + self._fence_rows
            with contextlib.suppress(sqlite3.Error):
                await db.rollback()
            if isinstance(exc, sqlite3.Error | ValueError):
                raise translate_error(
                    exc, self._where, doing="cannot write the Kafka index"
                ) from exc
            raise

    async def _write_checkpoints(self, db: aiosqlite.Connection, *, commit: bool = True) -> None:
        await db.executemany(
            "INSERT OR REPLACE INTO partitions VALUES (?, ?)", list(self.checkpoint.items())
        )
        if commit:
            await db.commit()

    async def offsets_of(self, head: StreamHead, sequences: Iterable[int]) -> dict[int, int]:
        """Kafka offsets of the given sequence ids of a stream (those the index has)."""
        found: dict[int, int] = {}
        missing = []
        for seq in sequences:
            offset = self.pending.get((head.id, seq))
            if offset is None:
                missing.append(seq)
            else:
                found[seq] = offset
        if missing and self._db is not None:
            marks = ",".join("?" * len(missing))
            try:
                rows = await self._db.execute_fetchall(
                    f"SELECT seq, kafka_offset FROM events WHERE stream = ? AND seq IN ({marks})",
                    (head.id, *missing),
                )
            except (sqlite3.Error, ValueError) as exc:
                raise translate_error(
                    exc, self._where, doing="cannot read the Kafka index"
                ) from exc
            found.update({int(seq): int(off) for seq, off in rows})
        return found

    def new_head(self, stream: StreamId, partition: int) -> StreamHead:
        head = StreamHead(self._next_id, partition, -1, "")
        self._next_id += 1
        self.heads[stream] = head
        self.order.append(stream)
        self._new_streams.append((head.id, stream, partition))
        return head

    def advance(self, stream: StreamId, head: StreamHead, event: Event, offset: int) -> None:
        head.last_seq = event.sequence_id
        head.last_hash = event.hash
        self.pending[(head.id, event.sequence_id)] = offset
        self._dirty_heads.add(stream)
