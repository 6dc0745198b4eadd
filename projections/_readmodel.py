"""``ReadModel``: one SQLite file that holds read models, their generations and checkpoints."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import aiosqlite

from statelog.eventstore import AsyncResource
from statelog.eventstore._aiosqlite import connect_aiosqlite

from ._checkpoint import (
    META_COLUMNS,
    META_SCHEMA,
    META_TABLE,
    Checkpoint,
    Generation,
    encode_offsets,
    row_to_generation,
)
from ._errors import ProjectionError
from ._projection import Projection, ProjectionContext, SyncProjectionContext

__all__ = ["ReadModel"]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _probe(path: Path, busy_timeout: float) -> None:
    """Open ``path``, switch it to WAL and create the generations table, or raise."""
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the directory {str(path.parent)!r} does not exist")
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(META_SCHEMA)
    finally:
        db.close()


_SAVE_CHECKPOINT = (
    f"UPDATE {META_TABLE} SET position = ?, offsets = ?, events = ?, updated_at = ? "
    "WHERE name = ? AND generation = ?"
)


def _checkpoint_params(
    projection: Projection, generation: int, checkpoint: Checkpoint
) -> tuple[object, ...]:
    return (
        checkpoint.position,
        encode_offsets(checkpoint.offsets),
        checkpoint.events,
        now_iso(),
        projection.name,
        generation,
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ReadModel(AsyncResource):
    """An open read-model file (aiosqlite, WAL). Use ``await ReadModel.open(path)``.

    It keeps the generations table (see ``_checkpoint``) and does the
    blue/green swap; the runner uses it to apply batches.
    """

    def __init__(
        self,
        path: Path,
        db: aiosqlite.Connection,
        sync_db: sqlite3.Connection | None = None,
        *,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = path
        self.db = db
        #: A stdlib connection to the same file for ``handle_batch_sync`` handlers:
        #: ``busy_timeout`` 0, so a lock held elsewhere raises at once instead of
        #: blocking the event loop (the runner then retries on a thread).
        self.sync_db = sync_db
        self.busy_timeout = busy_timeout
        self._closed = False

    def __repr__(self) -> str:
        return f"ReadModel({str(self.path)!r})"

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        projection: str = "",
        busy_timeout: float = 30.0,
        cache_mib: int = 32,
    ) -> Self:
        """Open (or create) the read-model file; ``ProjectionError`` if it cannot be written."""
        path = Path(path)
        # Probe with plain sqlite3 first: a failed aiosqlite connect leaves its
        # worker thread to report on a loop that may be gone.
        try:
            await asyncio.to_thread(_probe, path, busy_timeout)
        except sqlite3.Error as exc:
            raise ProjectionError(
                projection, None, f"cannot write the read model at {str(path)!r}: {exc}"
            ) from exc
        except OSError as exc:
            raise ProjectionError(
                projection, None, f"cannot open the read model at {str(path)!r}: {exc}"
            ) from exc
        db = await connect_aiosqlite(path, isolation_level=None)
        sync_db: sqlite3.Connection | None = None
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            await db.execute("PRAGMA synchronous = NORMAL")
            # Room for the B-trees a bulk load touches, and sorts for index builds.
            await db.execute(f"PRAGMA cache_size = {-cache_mib * 1024}")
            await db.execute("PRAGMA temp_store = MEMORY")
            # Used only on worker threads (the runner's sync-handler commits).
            sync_db = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            sync_db.execute("PRAGMA synchronous = NORMAL")
            sync_db.execute(f"PRAGMA cache_size = {-cache_mib * 1024}")
            sync_db.execute("PRAGMA temp_store = MEMORY")
        except BaseException:
            if sync_db is not None:
                sync_db.close()
            await db.close()
            raise
        return cls(path, db, sync_db, busy_timeout=busy_timeout)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                if self.sync_db is not None:
                    self.sync_db.close()
            finally:
                await self.db.close()

    # --- generations

    async def generations(self, name: str | None = None) -> list[Generation]:
        sql = f"SELECT {META_COLUMNS} FROM {META_TABLE}"
        params: tuple[str, ...] = ()
        if name is not None:
            sql += " WHERE name = ?"
            params = (name,)
        async with self.db.execute(sql + " ORDER BY name, generation", params) as cursor:
            rows = await cursor.fetchall()
        return [row_to_generation(row) for row in rows]

    async def live(self, name: str) -> Generation | None:
        for gen in await self.generations(name):
            if gen.status == "live":
                return gen
        return None

    async def generation(self, name: str, generation: int) -> Generation | None:
        for gen in await self.generations(name):
            if gen.generation == generation:
                return gen
        return None

    def context(self, projection: Projection, generation: int) -> ProjectionContext:
        return ProjectionContext(self.db, projection.name, generation)

    def sync_context(self, projection: Projection, generation: int) -> SyncProjectionContext:
        if self.sync_db is None:
            raise ProjectionError(projection.name, None, "the read model has no sync connection")
        return SyncProjectionContext(self.sync_db, projection.name, generation)

    async def start_generation(self, projection: Projection, source: str) -> Generation:
        """Create a new 'building' generation with empty tables; drop stale building ones."""
        stamp = now_iso()
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            for gen in await self.generations(projection.name):
                if gen.status == "building":
                    await self._drop(projection, gen.generation)
            async with self.db.execute(
                f"SELECT COALESCE(MAX(generation), 0) + 1 FROM {META_TABLE} WHERE name = ?",
                (projection.name,),
            ) as cursor:
                row = await cursor.fetchone()
            number = int(row[0]) if row else 1
            ctx = self.context(projection, number)
            for table in projection.tables:
                await self.db.execute(f"DROP TABLE IF EXISTS {_quote(ctx.table(table))}")
            await projection.setup(ctx)
            await self.db.execute(
                f"INSERT INTO {META_TABLE} (name, generation, version, status, source, "
                "created_at, updated_at) VALUES (?, ?, ?, 'building', ?, ?, ?)",
                (projection.name, number, projection.version, source, stamp, stamp),
            )
            await self.db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        return Generation(
            name=projection.name,
            generation=number,
            version=projection.version,
            status="building",
            source=source,
            checkpoint=Checkpoint(),
            created_at=stamp,
            updated_at=stamp,
        )

    async def swap(self, projection: Projection, generation: int) -> None:
        """Make ``generation`` live: build its indexes, re-point the views, drop the old one.

        The views and the generations table change in one transaction, so a
        reader sees either the old read model or the new one, never a mix.
        """
        ctx = self.context(projection, generation)
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await projection.create_indexes(ctx)
            for table in projection.tables:
                await self.db.execute(f"DROP VIEW IF EXISTS {_quote(table)}")
                await self.db.execute(
                    f"CREATE VIEW {_quote(table)} AS SELECT * FROM {_quote(ctx.table(table))}"
                )
            for gen in await self.generations(projection.name):
                if gen.generation != generation:
                    await self._drop(projection, gen.generation)
            stamp = now_iso()
            await self.db.execute(
                f"UPDATE {META_TABLE} SET status = 'live', live_at = ?, updated_at = ? "
                "WHERE name = ? AND generation = ?",
                (stamp, stamp, projection.name, generation),
            )
            await self.db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _drop(self, projection: Projection, generation: int) -> None:
        for table in projection.tables:
            name = f"{table}_g{generation}"
            await self.db.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
        await self.db.execute(
            f"DELETE FROM {META_TABLE} WHERE name = ? AND generation = ?",
            (projection.name, generation),
        )

    async def save_checkpoint(
        self, projection: Projection, generation: int, checkpoint: Checkpoint
    ) -> bool:
        """Write the checkpoint inside the caller's transaction; False if the row is gone."""
        cursor = await self.db.execute(
            _SAVE_CHECKPOINT, _checkpoint_params(projection, generation, checkpoint)
        )
        changed = cursor.rowcount
        await cursor.close()
        return changed == 1

    def save_checkpoint_sync(
        self, projection: Projection, generation: int, checkpoint: Checkpoint
    ) -> bool:
        """``save_checkpoint`` on the sync connection, inside its transaction."""
        assert self.sync_db is not None
        cursor = self.sync_db.execute(
            _SAVE_CHECKPOINT, _checkpoint_params(projection, generation, checkpoint)
        )
        return cursor.rowcount == 1

    async def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                await self.db.execute("ROLLBACK")
        except sqlite3.Error:  # pragma: no cover - the connection is gone
            pass
