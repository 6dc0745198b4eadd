"""The driver's edge: the key layout, the client, and the one error boundary.

Every Redis call of this package goes through ``call`` (or catches with
``DRIVER_ERRORS`` and raises ``translate_error``), so a driver error reaches the
user as a ``StoreError`` with the original in ``__cause__``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import redis.asyncio as aioredis
from redis import exceptions as rx

from .._errors import (
    ConfigError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from .._event import StreamId

__all__ = ["DRIVER_ERRORS", "RedisKeys", "call", "open_client", "translate_error"]

_T = TypeVar("_T")

#: What a Redis call can raise: the driver's tree, and socket errors it lets through.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (rx.RedisError, OSError)

#: Error codes of replies that mean "the server cannot take this now". Inside a
#: script the code follows a prefix ("Error running script ...: @user_script:5: -OOM").
_UNAVAILABLE_CODES = ("OOM", "READONLY", "MISCONF", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN")
_CODE = re.compile(
    r"(?<![A-Za-z])(" + "|".join((*_UNAVAILABLE_CODES, "WRONGTYPE")) + r")(?![A-Za-z])"
)


def translate_error(exc: BaseException, what: str) -> StoreError:
    """Map a redis-py (or socket) error to the statelog tree: the one driver boundary.

    * cannot connect, timed out, connection lost, authentication refused,
      server loading or out of memory, a read-only replica, a failing
      persistence (``MISCONF``), a busy script -> ``StoreUnavailableError``
      (also a ``ConnectionError``): nothing was done, or (for a write whose
      reply was lost) it may have been - read the stream to know;
    * ``WRONGTYPE`` (a key of the layout holds something else) ->
      ``StoreCorruptError``: these keys are not a statelog log;
    * anything else -> ``StoreError``.
    """
    message = f"redis: {what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError):
        return StoreUnavailableError(message)
    if isinstance(exc, rx.ResponseError):
        found = _CODE.search(str(exc))
        code = found.group(1) if found else ""
        if isinstance(exc, rx.OutOfMemoryError | rx.ReadOnlyError) or code in _UNAVAILABLE_CODES:
            return StoreUnavailableError(message)
        if code == "WRONGTYPE":
            return StoreCorruptError(
                f"{message} (a key of this store's prefix holds another kind of value: "
                "it is not a statelog log)"
            )
    return StoreError(message)


async def call(what: str, awaitable: Awaitable[_T]) -> _T:
    """Await one Redis call, translating its errors (``what`` names the operation)."""
    try:
        return await awaitable
    except DRIVER_ERRORS as exc:
        raise translate_error(exc, what) from exc


def _raw(response: Any, **options: Any) -> Any:
    return response


def open_client(
    url: str, *, socket_timeout: float | None, socket_connect_timeout: float | None
) -> aioredis.Redis:
    """A client on ``url`` that returns bytes, and stream entries as Redis sends them.

    XRANGE/XREVRANGE replies stay ``[[id, [field, value, ...]], ...]``: the store
    reads fields by place, and skipping redis-py's dict per entry is cheaper.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"url must be a redis:// (or rediss://, unix://) URL, got {url!r}")
    try:
        client = aioredis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
        )
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {url!r}: {exc}") from exc
    for command in ("XRANGE", "XREVRANGE", "XREAD"):
        client.set_response_callback(command, _raw)
    return client


def _escape(text: str) -> str:
    """Percent-encode everything but ``A-Z a-z 0-9 _ . - ~`` (so no ``:``, ``{``, ``}``)."""
    return quote(text, safe="")


class RedisKeys:
    """The key layout of one store, under ``prefix``.

    Every key is ``{<prefix>}:<tag>`` followed by escaped parts::

        {P}:position                       STRING  the last global position
        {P}:log                            STREAM  one entry per event, id <position>-0,
                                                   fields r=<stream ref>, q=<sequence_id>
        {P}:streams                        ZSET    stream refs, score = first position
        {P}:partition:<pk>                 ZSET    the same, for one partition key
        {P}:events:<pk>:<app>              STREAM  the stream's events, id <sequence_id>-<position>,
                                                   fields h=<raw 32-byte hash>, b=<body>
        {P}:snapshots:<pk>:<app>           ZSET    snapshots, score = sequence_id

    ``<prefix>``, ``<pk>`` and ``<app>`` are percent-encoded (``quote(s, safe="")``):
    an escaped part holds no ``:``, ``{`` or ``}``, and each tag has a fixed
    number of parts, so two different (prefix, partition_key, app_id) never
    share a key, whatever characters they hold. ``<pk>:<app>`` (escaped) is
    the stream's *ref*. The braces make ``<prefix>`` the hash tag: all keys of
    a store sit in one hash slot, as one global order needs.
    """

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"prefix must be a non-empty str, got {prefix!r}")
        self.prefix = prefix
        self.root = "{" + _escape(prefix) + "}"
        self.position = f"{self.root}:position"
        self.log = f"{self.root}:log"
        self.streams = f"{self.root}:streams"
        #: What an events key starts with; the Lua scripts append a stream ref.
        self.events_prefix = f"{self.root}:events:"

    def __repr__(self) -> str:
        return f"RedisKeys({self.prefix!r})"

    @staticmethod
    def ref(partition_key: str, app_id: str) -> str:
        return f"{_escape(partition_key)}:{_escape(app_id)}"

    @staticmethod
    def stream_of(ref: str | bytes) -> StreamId:
        text = ref.decode("ascii") if isinstance(ref, bytes) else ref
        pk, sep, app = text.partition(":")
        if not sep:
            raise StoreCorruptError(f"redis: {text!r} is not a statelog stream ref")
        return StreamId(unquote(pk, errors="strict"), unquote(app, errors="strict"))

    def partition(self, partition_key: str) -> str:
        return f"{self.root}:partition:{_escape(partition_key)}"

    def events(self, ref: str) -> str:
        return self.events_prefix + ref

    def snapshots(self, ref: str) -> str:
        return f"{self.root}:snapshots:{ref}"
