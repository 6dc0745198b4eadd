"""``Client``: the blocking face of ``AsyncClient``, generated from it.

Each method of ``Client`` is ``_blocking(AsyncClient.method)``: it runs the
async method to completion on the client's own event loop (an
``asyncio.Runner``), so there is one implementation of every call. Async
iterators (``events``) become plain iterators the same way. Calling a
``Client`` inside a running event loop raises ``UsageError``: use
``AsyncClient`` there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from statelog.eventstore import UsageError

from ._client import AsyncClient

__all__ = ["Client"]

P = ParamSpec("P")
R = TypeVar("R")


class _Blocking(Generic[P, R]):
    """A descriptor: ``Client().name(...)`` runs ``AsyncClient.name(...)`` to the end."""

    def __init__(self, method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]):
        self._method = method
        self.__doc__ = method.__doc__
        self.__name__ = method.__name__

    @overload
    def __get__(self, obj: None, owner: type[Client]) -> Self: ...
    @overload
    def __get__(self, obj: Client, owner: type[Client]) -> Callable[P, R]: ...
    def __get__(self, obj: Client | None, owner: type[Client]) -> Self | Callable[P, R]:
        if obj is None:
            return self
        method = self._method

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return obj._run(method(obj._async_client(), *args, **kwargs))

        call.__doc__ = method.__doc__
        call.__name__ = method.__name__
        return call


class _BlockingIter(Generic[P, R]):
    """A descriptor turning an async-iterator method into a blocking iterator."""

    def __init__(self, method: Callable[Concatenate[AsyncClient, P], AsyncIterator[R]]):
        self._method = method
        self.__doc__ = method.__doc__
        self.__name__ = method.__name__

    @overload
    def __get__(self, obj: None, owner: type[Client]) -> Self: ...
    @overload
    def __get__(self, obj: Client, owner: type[Client]) -> Callable[P, Iterator[R]]: ...
    def __get__(self, obj: Client | None, owner: type[Client]) -> Self | Callable[P, Iterator[R]]:
        if obj is None:
            return self
        method = self._method

        def call(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
            agen = method(obj._async_client(), *args, **kwargs)
            try:
                while True:
                    try:
                        yield obj._run(_anext(agen))
                    except StopAsyncIteration:
                        return
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    obj._run(aclose())

        call.__doc__ = method.__doc__
        call.__name__ = method.__name__
        return call


async def _anext(agen: AsyncIterator[R]) -> R:
    return await agen.__anext__()


class Client:
    """A blocking client for ``statelog serve``: the calls of ``AsyncClient``, same
    arguments, same errors. Use it as ``with Client(url) as client``."""

    def __init__(self, base_url: str, **options: Any) -> None:
        _no_running_loop("Client()")
        self._runner = asyncio.Runner()
        self._closed = False

        async def make() -> AsyncClient:
            return AsyncClient(base_url, **options)

        try:
            self._client = self._runner.run(make())
        except BaseException:
            self._runner.close()
            raise

    def _async_client(self) -> AsyncClient:
        if self._closed:
            raise UsageError("this Client is closed")
        return self._client

    def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        try:
            _no_running_loop("a Client call")
        except UsageError:
            coro.close()
            raise
        return self._runner.run(coro)

    def close(self) -> None:
        """Close the pool and the client's event loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def max_in_flight(self) -> int:
        return self._client.max_in_flight

    start_run = _Blocking(AsyncClient.start_run)
    get_operation = _Blocking(AsyncClient.get_operation)
    list_operations = _Blocking(AsyncClient.list_operations)
    cancel = _Blocking(AsyncClient.cancel)
    wait = _Blocking(AsyncClient.wait)
    list_apps = _Blocking(AsyncClient.list_apps)
    get_app = _Blocking(AsyncClient.get_app)
    get_events = _Blocking(AsyncClient.get_events)
    get_state = _Blocking(AsyncClient.get_state)
    verify = _Blocking(AsyncClient.verify)
    export = _Blocking(AsyncClient.export)
    provide_input = _Blocking(AsyncClient.provide_input)
    fork = _Blocking(AsyncClient.fork)
    health = _Blocking(AsyncClient.health)
    metrics = _Blocking(AsyncClient.metrics)
    events = _BlockingIter(AsyncClient.events)


def _no_running_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError(f"{what} inside a running event loop: use statelog.client.AsyncClient there")
