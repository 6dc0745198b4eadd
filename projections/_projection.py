"""The ``Projection`` contract: a named, versioned fold of events into SQLite tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import ClassVar, Generic, TypeVar

import aiosqlite

from statelog.eventstore import Recorded

__all__ = ["Projection", "ProjectionContext", "SyncProjectionContext", "sync_handler"]

C = TypeVar("C", aiosqlite.Connection, sqlite3.Connection)


class _Context(Generic[C]):
    """A read-model connection of type ``C`` and this generation's table names."""

    __slots__ = ("db", "generation", "projection")
    db: C

    def __init__(self, db: C, projection: str, generation: int) -> None:
        self.db = db
        self.projection = projection
        self.generation = generation

    def table(self, name: str) -> str:
        return f"{name}_g{self.generation}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.projection!r}, generation={self.generation})"


class ProjectionContext(_Context[aiosqlite.Connection]):
    """What a handler gets: the open read-model connection and its table names.

    A handler runs inside the runner's transaction: it must not ``COMMIT``,
    ``ROLLBACK`` or ``BEGIN``. Tables are per generation, so always name them
    through ``table()``: ``ctx.table("audit_trail")`` is ``audit_trail_g3``.
    """

    __slots__ = ()


class SyncProjectionContext(_Context[sqlite3.Connection]):
    """What ``handle_batch_sync`` gets: a stdlib ``sqlite3`` connection and table names.

    The same rules as ``ProjectionContext``: the handler runs inside the
    runner's transaction and must not ``BEGIN``, ``COMMIT`` or ``ROLLBACK``.
    """

    __slots__ = ()


class Projection:
    """A read model folded from events.

    Subclasses set ``name``, ``version`` (bump it when the read model's shape or
    meaning changes: the runner then rebuilds it blue/green), ``kinds`` (the
    event kinds wanted; ``None`` means all) and ``tables`` (the logical names of
    the tables it owns; readers query a view of that name). They implement
    ``setup`` (create the tables) and ``handle`` (one event) or ``handle_batch``
    (a batch, faster: one ``executemany`` instead of one statement per event).

    A projection whose handler only runs SQL may also implement
    ``handle_batch_sync`` on a stdlib ``sqlite3`` connection. The runner then
    runs the whole batch's transaction (handler and checkpoint) on a worker
    thread instead of calling ``handle_batch``: one thread hand-off per batch
    instead of one per statement, which makes bulk rebuilds about twice as
    fast, and the event loop never waits on it. A subclass
    that overrides ``handle_batch`` (or ``handle``) below the class that defines
    ``handle_batch_sync`` gets its own handler called, as expected.

    The runner calls the handler inside a transaction that also advances the
    checkpoint, so an event is applied exactly once. Handlers should be
    deterministic: a rebuild must give the same read model as the live run.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    kinds: ClassVar[frozenset[str] | None] = None
    tables: ClassVar[tuple[str, ...]] = ()

    async def setup(self, ctx: ProjectionContext) -> None:
        """Create this generation's tables (``ctx.table(name)``), without indexes."""

    async def create_indexes(self, ctx: ProjectionContext) -> None:
        """Create secondary indexes; called once a generation has caught up, before it serves.

        Building indexes after a bulk load is much faster than keeping them up
        to date during it.
        """

    async def handle(self, ctx: ProjectionContext, record: Recorded) -> None:
        """Apply one event. Override this or ``handle_batch``."""
        raise NotImplementedError(
            f"projection {self.name!r} implements neither handle nor handle_batch"
        )

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        """Apply a batch of events in order; by default one ``handle`` call each."""
        for record in records:
            await self.handle(ctx, record)

    def handle_batch_sync(self, ctx: SyncProjectionContext, records: Sequence[Recorded]) -> None:
        """Optional: apply a batch on a stdlib ``sqlite3`` connection (see the class doc)."""
        raise NotImplementedError(f"projection {self.name!r} has no synchronous handler")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} v{self.version}>"


def sync_handler(
    projection: Projection,
) -> Callable[[SyncProjectionContext, Sequence[Recorded]], None] | None:
    """``projection.handle_batch_sync`` if it is the most derived handler, else None."""
    for klass in type(projection).__mro__:
        if klass is Projection:
            return None
        names = vars(klass)
        if "handle_batch_sync" in names:
            return projection.handle_batch_sync
        if "handle_batch" in names or "handle" in names:
            return None
    return None
