"""``AsyncResource``: one definition of ``async with`` for everything that closes."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """Something that must be closed: ``await x.aclose()`` or ``async with x:``.

    ``__aenter__`` returns the object itself; a subclass that must connect first
    (a store opened lazily) overrides it. ``__aexit__`` always closes.
    """

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
