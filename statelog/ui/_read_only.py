"""``create_read_only_app``: the app of ``statelog ui --db FILE``.

It is the service's own GET routes for apps and their history
(``/v1/apps``, ``.../events``, ``.../state``, ``.../verify``, ``.../export``,
``.../events/stream``) taken from ``create_app`` and served by a
``ReadOnlyService``: the log and its snapshots opened read-only (a ``mode=ro``
URI: nothing is created or written), no scheduler and no operations file. No
route that writes exists on it, so nothing can write whatever is sent.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from statelog import __version__
from statelog.eventstore import SnapshotStore, SQLiteEventStore
from statelog.service import Operation, OperationStore, Service, ServiceConfig, create_app

from ._mount import mount_ui

__all__ = ["ReadOnlyService", "create_read_only_app"]

#: Routes of the service that only read; everything else is left out.
_READ_PREFIXES = ("/v1/apps", "/healthz")


class _NoOperations(OperationStore):
    """No operations file: the log alone says what an app is (graph unknown)."""

    def __init__(self) -> None:
        self.path = ""

    async def latest_for_app(self, partition_key: str, app_id: str) -> Operation | None:
        return None

    async def graph_of(self, partition_key: str, app_id: str) -> str | None:
        return None

    async def graphs(self, streams: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {}

    async def aclose(self) -> None:
        return None


class ReadOnlyService(Service):
    """A ``Service`` over a log opened read-only, with no scheduler: it only reads."""

    read_only = True

    async def start(self) -> None:
        self._store = await SQLiteEventStore.open(self.config.db, read_only=True)
        try:
            self._snapshots = await SnapshotStore.open(self.config.db, read_only=True)
        except BaseException:
            await self._store.aclose()
            raise
        self._ops = _NoOperations()
        self.ready = True

    async def stop(self) -> None:
        self.begin_shutdown()
        for resource in (self._snapshots, self._store):
            if resource is not None:
                await resource.aclose()


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every ``APIRoute`` of an app, also inside included routers (newer FastAPI
    keeps an included router as one route that holds the original router)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def create_read_only_app(db: str | os.PathLike[str], **config: Any) -> FastAPI:
    """A FastAPI app that serves the UI and the service's read routes over ``db``.

    ``config`` goes to ``ServiceConfig`` (``sse_poll_interval`` ...). The log is
    opened when the app starts (its lifespan); a missing or foreign file fails then.
    """
    service_config = ServiceConfig(db=os.fspath(db), **config)
    template = create_app(service_config)  # builds routes and handlers only; opens nothing
    service = ReadOnlyService(service_config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="statelog ui (read-only)",
        version=__version__,
        description="The history browser over one log, read-only.",
        lifespan=lifespan,
        exception_handlers=dict(template.exception_handlers),
    )
    app.state.service = service
    reads = APIRouter()
    for route in _api_routes(template.router.routes):
        if (route.methods or set()) <= {"GET", "HEAD"} and route.path.startswith(_READ_PREFIXES):
            reads.routes.append(route)
    app.include_router(reads)
    mount_ui(app)
    return app
