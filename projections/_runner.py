"""``ProjectionRunner``: applies a source's events to a projection, exactly once.

Each batch is applied in one SQLite transaction together with the checkpoint
that follows it: after a crash the runner resumes from the last committed
checkpoint, so no event is applied twice or skipped.

* ``rebuild(source)`` builds a new generation from the start of ``source``
  (or resumes an interrupted rebuild of the same version from the same
  source), then swaps it in. The old generation serves until the swap.
* ``run(source)`` keeps the live generation current. If the projection's
  version differs from the live one (or none is live) it first builds the new
  generation from the start, blue/green, then swaps and follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Self, TypeVar

import msgspec

from statelog.eventstore import (
    SCHEMA_VERSION,
    AsyncResource,
    ConfigError,
    Recorded,
    SchemaVersionError,
)

from ._checkpoint import Checkpoint, Generation, Item, advance
from ._errors import ProjectionError
from ._projection import Projection, sync_handler
from ._readmodel import ReadModel
from ._sources import Source

__all__ = ["Progress", "ProjectionRunner"]

T = TypeVar("T")


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far a rebuild (or catch-up) is; ``total``/``eta`` are None when unknown."""

    projection: str
    generation: int
    events: int
    total: int | None
    elapsed: float
    rate: float
    eta: float | None
    done: bool = False


class _RetiredError(Exception):
    """Internal: this generation's row is gone (a newer one was swapped in)."""


class ProjectionRunner(AsyncResource):
    """Drive one projection into one read-model file. Use ``async with``.

    ``on_progress`` is called about every ``progress_interval`` seconds while
    rebuilding or catching up; ``on_commit(items, checkpoint)`` after every
    committed batch (metrics, lag). ``read_ahead`` fetches the next batch while
    one is applied: it helps when reading waits on I/O, and can hurt on few
    cores where the reader and the writer thread fight for the GIL.
    """

    def __init__(
        self,
        projection: Projection,
        into: str | Path,
        *,
        batch_size: int = 2000,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 1.0,
        on_commit: Callable[[Sequence[Item], Checkpoint], None] | None = None,
        read_ahead: bool = False,
    ) -> None:
        if not projection.name:
            raise ProjectionError(type(projection).__name__, None, "a projection needs a name")
        if type(batch_size) is not int or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.projection = projection
        self.into = Path(into)
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.on_commit = on_commit
        self.read_ahead = read_ahead
        self._model: ReadModel | None = None
        self._generation: Generation | None = None
        self._checkpoint = Checkpoint()
        self._kinds = projection.kinds
        self._sync = sync_handler(projection)
        self.caught_up = asyncio.Event()

    def __repr__(self) -> str:
        return f"ProjectionRunner({self.projection!r}, into={str(self.into)!r})"

    # --- lifecycle

    async def open(self) -> Self:
        if self._model is None:
            self._model = await ReadModel.open(self.into, projection=self.projection.name)
        return self

    async def aclose(self) -> None:
        if self._model is not None:
            model, self._model = self._model, None
            await model.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    @property
    def model(self) -> ReadModel:
        if self._model is None:
            raise ProjectionError(self.projection.name, None, "the runner is not open")
        return self._model

    @property
    def checkpoint(self) -> Checkpoint:
        """The last committed checkpoint of the generation being written."""
        return self._checkpoint

    @property
    def generation(self) -> Generation | None:
        return self._generation

    # --- the two modes

    async def rebuild(self, source: Source) -> Generation:
        """Rebuild from the start of ``source`` into a new generation, then swap it in."""
        gen = await self._building(source, fresh=True)
        await self._consume(gen, source, follow=False)
        return await self._swap(gen)

    async def run(self, source: Source, *, stop: asyncio.Event | None = None) -> None:
        """Keep the read model current from ``source`` until cancelled or ``stop`` is set."""
        work = asyncio.create_task(self._run(source), name=f"projection {self.projection.name}")
        if stop is None:
            try:
                await work
            finally:
                await _cancel(work)
            return
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(stopper)
            if not work.done():
                await _cancel(work)
        if not work.cancelled():
            work.result()

    async def _run(self, source: Source) -> None:
        live = await self.model.live(self.projection.name)
        if live is None or live.version != self.projection.version:
            gen = await self._building(source, fresh=False)
            await self._consume(gen, source, follow=False)
            live = await self._swap(gen)
        elif live.source != source.uri:
            raise ProjectionError(
                self.projection.name,
                live.checkpoint.position,
                f"the live read model follows {live.source!r}, not {source.uri!r}; "
                "rebuild it from the new source first",
            )
        self._generation = live
        self._checkpoint = live.checkpoint
        self.caught_up.set()
        await self._consume(live, source, follow=True)

    # --- generations

    async def _building(self, source: Source, *, fresh: bool) -> Generation:
        """The generation to build into: an interrupted one to resume, or a new one."""
        for gen in await self.model.generations(self.projection.name):
            if (
                gen.status == "building"
                and gen.version == self.projection.version
                and gen.source == source.uri
            ):
                self._generation = gen
                self._checkpoint = gen.checkpoint
                return gen
        gen = await self.model.start_generation(self.projection, source.uri)
        self._generation = gen
        self._checkpoint = gen.checkpoint
        return gen

    async def _swap(self, gen: Generation) -> Generation:
        await self.model.swap(self.projection, gen.generation)
        swapped = await self.model.generation(self.projection.name, gen.generation)
        if swapped is None:  # pragma: no cover - we just wrote it
            raise ProjectionError(self.projection.name, None, "the swapped generation vanished")
        self._generation = swapped
        self._checkpoint = swapped.checkpoint
        return swapped

    # --- applying

    async def _consume(self, gen: Generation, source: Source, *, follow: bool) -> None:
        start = time.monotonic()
        first = self._checkpoint.events
        total = None if follow else await source.total()
        last_report = start
        batches = source.items(self._checkpoint, batch_size=self.batch_size, follow=follow)
        if not follow and self.read_ahead:
            batches = _prefetch(batches, depth=2)
        try:
            async for items in batches:
                await self._apply(gen.generation, items)
                now = time.monotonic()
                if self.on_progress is not None and now - last_report >= self.progress_interval:
                    last_report = now
                    self.on_progress(self._progress(gen, start, first, total, done=False))
        finally:
            await batches.aclose()  # type: ignore[attr-defined]
        if self.on_progress is not None and not follow:
            self.on_progress(self._progress(gen, start, first, total, done=True))

    def _progress(
        self, gen: Generation, start: float, first: int, total: int | None, *, done: bool
    ) -> Progress:
        elapsed = time.monotonic() - start
        events = self._checkpoint.events
        rate = (events - first) / elapsed if elapsed > 0 else 0.0
        eta = None
        if total is not None and rate > 0:
            eta = max(total - events, 0) / rate
        return Progress(
            projection=self.projection.name,
            generation=gen.generation,
            events=events,
            total=total,
            elapsed=elapsed,
            rate=rate,
            eta=0.0 if done else eta,
            done=done,
        )

    def _wanted(self, items: Sequence[Item]) -> list[Recorded]:
        for item in items:
            version = item.record.event.schema_version
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(version, SCHEMA_VERSION)
        kinds = self._kinds
        if kinds is None:
            return [item.record for item in items]
        return [item.record for item in items if item.record.event.kind in kinds]

    async def _apply(self, generation: int, items: Sequence[Item]) -> None:
        if not items:
            return
        records = self._wanted(items)
        after = advance(self._checkpoint, items)
        try:
            await self._commit(generation, records, after)
            if self.on_commit is not None:
                self.on_commit(items, after)
        except _RetiredError:
            raise self._retired(generation) from None
        except Exception as exc:
            if len(items) == 1:
                raise self._failed(items[0], exc) from exc
            # Find the event that fails, committing the ones before it.
            for item in items:
                one = self._wanted([item])
                try:
                    await self._commit(generation, one, advance(self._checkpoint, [item]))
                    if self.on_commit is not None:
                        self.on_commit([item], self._checkpoint)
                except _RetiredError:
                    raise self._retired(generation) from None
                except Exception as exc_one:
                    raise self._failed(item, exc_one) from exc_one
            return

    async def _commit(
        self, generation: int, records: Sequence[Recorded], after: Checkpoint
    ) -> None:
        if self._sync is not None:
            # The sync handler's transaction runs on a worker thread, never on
            # the event loop. If we are cancelled, the thread still owns the
            # connection: let it finish (commit or roll back) before the
            # cancellation goes on to close it.
            work = asyncio.ensure_future(
                asyncio.to_thread(self._commit_sync, generation, records, after)
            )
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await work
                raise
            self._checkpoint = after
            return
        model = self.model
        db = model.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            if records:
                ctx = model.context(self.projection, generation)
                await self.projection.handle_batch(ctx, records)
            if not await model.save_checkpoint(self.projection, generation, after):
                raise _RetiredError
            await db.execute("COMMIT")
        except BaseException:
            await model._rollback()
            raise
        self._checkpoint = after

    def _commit_sync(self, generation: int, records: Sequence[Recorded], after: Checkpoint) -> None:
        """One batch and its checkpoint in one transaction on the stdlib connection.

        Runs on a worker thread (see ``_commit``); the connection waits out
        another writer's lock for up to the read model's ``busy_timeout``.
        """
        model = self.model
        db = model.sync_db
        handler = self._sync
        assert db is not None and handler is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            if records:
                handler(model.sync_context(self.projection, generation), records)
            if not model.save_checkpoint_sync(self.projection, generation, after):
                raise _RetiredError
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _failed(self, item: Item, exc: BaseException) -> ProjectionError:
        event = item.record.event
        where = (
            f"Kafka partition {item.partition} offset {item.offset}: "
            if item.partition >= 0
            else ""
        )
        return ProjectionError(
            self.projection.name,
            item.offset,
            f"{where}{type(exc).__name__}: {exc} (the checkpoint stays before this event)",
            stream=(event.partition_key, event.app_id),
            sequence_id=event.sequence_id,
        )

    def _retired(self, generation: int) -> ProjectionError:
        return ProjectionError(
            self.projection.name,
            self._checkpoint.position,
            f"generation {generation} was replaced by a newer one; restart the runner",
        )


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _prefetch(source: AsyncIterator[T], *, depth: int) -> AsyncIterator[T]:
    """Read ahead ``depth`` items of ``source`` in a task, so reading overlaps applying."""
    queue: asyncio.Queue[tuple[bool, T | BaseException | None]] = asyncio.Queue(maxsize=depth)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put((True, item))
            await queue.put((False, None))
        except Exception as exc:
            await queue.put((False, exc))

    task = asyncio.create_task(pump())
    try:
        while True:
            more, value = await queue.get()
            if not more:
                if isinstance(value, BaseException):
                    raise value
                return
            yield value  # type: ignore[misc]
    finally:
        await _cancel(task)
        closer = getattr(source, "aclose", None)
        if closer is not None:
            await closer()
