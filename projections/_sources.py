"""Where a projection's events come from: a store, an export file, a Kafka topic.

A ``Source`` yields batches of ``Item`` from a checkpoint on. With
``follow=False`` it stops at the end of what exists now (an offline rebuild,
or catching up); with ``follow=True`` it then waits for new events (live).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from statelog.eventstore import (
    AsyncResource,
    ConfigError,
    EventStore,
    Recorded,
    StoreUnavailableError,
    iter_export,
)

from ._checkpoint import Checkpoint, Item

__all__ = ["FileSource", "Source", "StoreSource", "open_source"]


class Source(AsyncResource, ABC):
    """A stream of events in a stable order, resumable from a ``Checkpoint``."""

    #: Where the events come from, e.g. ``sqlite:/data/log.db``; kept with the checkpoint.
    uri: str = ""

    @abstractmethod
    def items(
        self, checkpoint: Checkpoint, *, batch_size: int, follow: bool
    ) -> AsyncIterator[list[Item]]:
        """Batches of events after ``checkpoint``; with ``follow`` it never ends."""

    async def total(self) -> int | None:
        """How many events the source holds now (for progress and ETA), if cheap to know."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - most sources hold nothing
        """Release what the source opened."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class StoreSource(Source):
    """Any ``EventStore``: pages ``iter_all`` to catch up, then tails ``subscribe``.

    ``owned=True`` closes the store with the source. A ``SQLiteEventStore`` is
    named ``sqlite:<real path>`` (the same as ``open_source`` names it), so a
    read model built from one can be followed live from the other.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        uri: str | None = None,
        owned: bool = False,
        poll_interval: float = 0.02,
        head: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.store = store
        self.head = head
        path = getattr(store, "path", None)
        if isinstance(path, str) and path != ":memory:":
            # A SQLite log is named by its real path, however it was opened.
            uri = uri or f"sqlite:{os.path.realpath(path)}"
            if head is None:
                self.head = _sqlite_head(path)
        self.uri = uri or f"store:{type(store).__name__}"
        self.owned = owned
        self.poll_interval = poll_interval

    async def total(self) -> int | None:
        if self.head is not None:
            return await self.head()
        log = getattr(self.store, "_log", None)  # MemoryEventStore
        return len(log) if isinstance(log, list) else None

    async def items(
        self, checkpoint: Checkpoint, *, batch_size: int, follow: bool
    ) -> AsyncIterator[list[Item]]:
        position = checkpoint.position + 1
        async for batch in self.store.iter_all(from_position=position, batch_size=batch_size):
            yield [Item(rec, -1, rec.position) for rec in batch]
            position = batch[-1].position + 1
        if not follow:
            return
        queue: asyncio.Queue[Recorded] = asyncio.Queue(maxsize=batch_size * 4)

        async def feed() -> None:
            subscription = self.store.subscribe(
                from_position=position, poll_interval=self.poll_interval
            )
            try:
                async for rec in subscription:
                    await queue.put(rec)
            finally:
                closer = getattr(subscription, "aclose", None)
                if closer is not None:
                    await closer()

        feeder = asyncio.create_task(feed(), name=f"subscribe {self.uri}")
        getter: asyncio.Future[Recorded] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    feeder.result()  # re-raise the subscription's error
                    return
                batch = [getter.result()]
                getter = None
                while len(batch) < batch_size:
                    try:
                        batch.append(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                yield [Item(rec, -1, rec.position) for rec in batch]
        finally:
            for task in (getter, feeder):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def aclose(self) -> None:
        if self.owned:
            await self.store.aclose()


class FileSource(Source):
    """A JSON-lines export file (``export_streams``).

    The checkpoint position is the event's ordinal in the file (from 1); the
    file is not in log order, so handlers see ``Recorded.position == 0``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.uri = f"file:{self.path}"
        if not self.path.is_file():
            raise StoreUnavailableError(f"no export file at {str(self.path)!r}")

    async def total(self) -> int | None:
        def count() -> int:
            lines = 0
            with self.path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    lines += chunk.count(b"\n")
            return lines

        return await asyncio.to_thread(count)

    async def items(
        self, checkpoint: Checkpoint, *, batch_size: int, follow: bool
    ) -> AsyncIterator[list[Item]]:
        # iter_export reads the file synchronously: pull whole batches in a thread.
        events = iter_export(self.path)
        skip = checkpoint.position
        state = {"ordinal": 0}

        def next_batch() -> list[Item]:
            batch: list[Item] = []
            ordinal = state["ordinal"]
            for event in events:
                ordinal += 1
                if ordinal > skip:
                    batch.append(Item(Recorded(0, event), -1, ordinal))
                    if len(batch) >= batch_size:
                        break
            state["ordinal"] = ordinal
            return batch

        try:
            while batch := await asyncio.to_thread(next_batch):
                yield batch
        finally:
            closer = getattr(events, "close", None)
            if closer is not None:
                closer()


def _sqlite_head(path: str) -> Callable[[], Awaitable[int]]:
    """The last position of a SQLite log (its documented ``events`` table), read-only."""

    def query() -> int:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
            return int(row[0])
        finally:
            db.close()

    async def head() -> int:
        return await asyncio.to_thread(query)

    return head


async def open_source(uri: str, **options: Any) -> Source:
    """Open ``sqlite:PATH``, ``file:PATH`` or ``kafka://HOST:PORT/TOPIC``.

    ``options`` go to the source (``group_id=`` for Kafka).

    A source that does not exist raises ``StoreUnavailableError`` (a SQLite
    path is never created by reading it).
    """
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:")
        if path.startswith("//"):
            path = path[2:]
        if not await asyncio.to_thread(os.path.isfile, path):
            raise StoreUnavailableError(f"no SQLite log at {path!r}")
        from statelog.eventstore import SQLiteEventStore

        store = await SQLiteEventStore.open(path)
        return StoreSource(store, owned=True)
    if uri.startswith("file:"):
        return FileSource(uri.removeprefix("file:"))
    if uri.startswith("kafka://"):
        from ._kafka import KafkaSource

        return await KafkaSource.from_uri(uri, **options)
    raise ConfigError(f"a source is sqlite:PATH, file:PATH or kafka://HOST:PORT/TOPIC, got {uri!r}")
