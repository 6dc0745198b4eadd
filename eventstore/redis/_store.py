"""``RedisEventStore``: the log in Redis, appended to by Lua script.

Layout (``RedisKeys``): each stream is a Redis stream of its events (entry id
``<sequence_id>-<position>``, fields ``h`` = raw hash, ``b`` = stored body, the
same body the SQLite store keeps); the global log is one more Redis stream
whose entry ``<position>-0`` names the stream and sequence of the event at that
position; a counter gives positions; two sorted sets list the streams in order
of creation (all of them, and per partition key).

An append is one script (``_scripts.APPEND``): it reads the stream's head,
refuses unless it is ``(expected_sequence, prev hash of the first event)``,
then takes positions from the counter and adds the events to the stream and to
the log. Redis runs a script alone, so no two appends interleave; the hash
check means a writer whose idea of the head is stale cannot fork the chain even
if its sequence number is right. The store caches each stream's head after it
writes or reads it, so an append by the only writer of a stream is one round
trip; a stale cache costs a retry, never a wrong write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple, Self

from .._base import (
    DEFAULT_MAX_EVENT_SIZE,
    EventStore,
    apply_event,
    check_count,
    check_page,
    check_partition,
    check_read,
    check_stream_args,
    prepare_batch,
    warn_unclosed,
)
from .._chain import BrokenLink, validate_batch, verify_events
from .._codec import Codec, CodecName, get_codec
from .._errors import (
    ConcurrencyError,
    ConfigError,
    EncodingError,
    StoreClosedError,
    StoreCorruptError,
    StoreUnavailableError,
)
from .._event import Event, Recorded, StreamId
from ._client import DRIVER_ERRORS, RedisKeys, call, open_client, translate_error
from ._scripts import APPEND, READ_ALL
from ._writer import ScriptWriter

__all__ = ["RedisEventStore"]

#: Events fetched per round trip by reads (bounds the time Redis spends on one reply).
PAGE = 5_000
#: Events per ``read_all`` script call (each costs Redis one lookup per event).
LOG_PAGE = 1_000
#: Retries of an append whose cached head hash was stale but sequence right.
_RESEALS = 5


class _Head(NamedTuple):
    sequence_id: int
    hash: str  # hex, "" for none


def _id_parts(entry_id: bytes) -> tuple[int, int]:
    left, _, right = entry_id.partition(b"-")
    return int(left), int(right)


class RedisEventStore(EventStore):
    """An event store in Redis (redis.asyncio), shared by every process that opens it.

    ``url`` is a redis-py URL (``redis://[[user]:password@]host:port/db``,
    ``rediss://`` for TLS, ``unix://path``); ``prefix`` namespaces the keys, so
    several logs can share one database. ``codec`` is the stored body format
    (``"json"`` or ``"msgpack"``); every process on one prefix must use the
    same. Open with ``await RedisEventStore.open(url)``, ``async with
    RedisEventStore(url)`` or ``await store.connect()``; close with
    ``aclose()``.

    **Durability is the server's.** An append returns when Redis has applied
    it; it survives a crash of the Redis host only if Redis persisted it:
    ``appendonly yes`` with ``appendfsync always`` keeps every acknowledged
    append, ``appendfsync everysec`` (Redis' default when AOF is on) can lose
    about the last second of them, and RDB snapshots alone or no persistence
    lose everything since the last save. A store cannot promise more than the
    server is configured for; ``durability()`` reports that configuration.
    Failover to a replica can lose acknowledged appends the replica had not
    received. See docs/redis.md.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "statelog",
        codec: Codec | CodecName = "json",
        hmac_key: bytes | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        socket_timeout: float | None = 10.0,
        socket_connect_timeout: float | None = 5.0,
    ) -> None:
        if hmac_key is not None and not isinstance(hmac_key, bytes):
            raise ConfigError(f"hmac_key must be bytes or None, got {type(hmac_key).__name__}")
        if not isinstance(max_event_size, int) or max_event_size <= 0:
            raise ConfigError(f"max_event_size must be a positive int, got {max_event_size!r}")
        if socket_timeout is not None and not socket_timeout > 0:
            raise ConfigError(f"socket_timeout must be > 0 or None, got {socket_timeout!r}")
        try:
            self.codec = get_codec(codec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.keys = RedisKeys(prefix)
        self.url = url
        self.hmac_key = hmac_key
        self.max_event_size = max_event_size
        self.socket_timeout = socket_timeout
        self._client = open_client(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
        )
        self._writer = ScriptWriter(self._client, self._client.register_script(APPEND))
        self._read_all_script = self._client.register_script(READ_ALL)
        self._heads: dict[StreamId, _Head] = {}
        self._used = False  # the client has (or may have) open connections
        self._waiting = 0  # subscribers blocked in XREAD
        self._idle: asyncio.Event | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RedisEventStore({_safe_url(self.url)!r}, prefix={self.keys.prefix!r}, {state})"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> Self:
        """Create a store and connect it."""
        return await cls(url, **options).connect()

    async def connect(self) -> Self:
        """Check that the server answers and load the scripts. Idempotent.

        Not required: every call connects on demand. Raises
        ``StoreUnavailableError`` when the server cannot be reached.
        """
        self._check_open()
        self._used = True
        await call("connect", self._client.ping())
        for script in (APPEND, READ_ALL):
            await call("load scripts", self._client.script_load(script))
        return self

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def aclose(self) -> None:
        """Close the connections. Subscribers end with ``StoreClosedError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._writer.wait_idle()  # appends already sent or queued get their replies
        if self._waiting and self._idle is not None:
            # blocked subscribers return within their block time (<= 1 s)
            await self._idle.wait()
        await self._client.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_used", False):
            warn_unclosed(self)

    async def durability(self) -> dict[str, str]:
        """The server's persistence settings: ``appendonly``, ``appendfsync``, ``save``.

        An empty dict when the server refuses ``CONFIG GET`` (managed services
        often do): then ask its operator. ``appendonly=yes`` with
        ``appendfsync=always`` is what keeps every acknowledged append.
        """
        self._check_open()
        self._used = True
        found: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "save"):
            try:
                reply: Any = await self._client.config_get(name)
            except DRIVER_ERRORS as exc:
                error = translate_error(exc, "config get")
                if isinstance(error, StoreUnavailableError):
                    raise error from exc
                return {}  # CONFIG refused (renamed or not permitted)
            for key, value in reply.items():
                found[_text(key)] = _text(value)
        return found

    # ------------------------------------------------------------------ writing

    async def append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        self._check_open()
        first = events[0] if events else None
        if isinstance(first, Event):
            cached = self._heads.get(StreamId(first.partition_key, first.app_id))
        else:
            cached = None
        if cached is not None and cached.sequence_id == expected_sequence:
            head_hash = cached.hash
        elif expected_sequence == -1:
            head_hash = ""  # a new stream: the script says if it is not
        else:
            stream = validate_batch(events, expected_sequence)  # refuse before any I/O
            head = await self._load_head(stream)
            if head.sequence_id != expected_sequence:
                raise ConcurrencyError(stream, expected_sequence, head.sequence_id)
            head_hash = head.hash
        for _ in range(_RESEALS):
            stream, sealed, bodies = prepare_batch(
                events,
                expected_sequence,
                head_hash,
                self.codec.encode_body,
                self.hmac_key,
                self.max_event_size,
            )
            ref = self.keys.ref(*stream)
            args: list[bytes | str | int] = [
                expected_sequence,
                bytes.fromhex(head_hash),
                ref,
            ]
            for event, body in zip(sealed, bodies, strict=True):
                args.append(bytes.fromhex(event.hash))
                args.append(body)
            reply = await self._write(stream, ref, args)
            if reply[0] == 1:
                first_position = int(reply[1])
                self._set_head(stream, _Head(sealed[-1].sequence_id, sealed[-1].hash))
                return [Recorded(first_position + i, e) for i, e in enumerate(sealed)]
            actual = _Head(int(reply[1]), bytes(reply[2]).hex())
            self._set_head(stream, actual, force=True)
            if actual.sequence_id != expected_sequence:
                raise ConcurrencyError(stream, expected_sequence, actual.sequence_id)
            head_hash = actual.hash  # our head was stale, the sequence right: seal again
        raise StoreCorruptError(
            f"redis: stream {stream}: its head hash kept changing at sequence_id "
            f"{expected_sequence} without the sequence moving (is something rewriting it?)"
        )

    async def _write(self, stream: StreamId, ref: str, args: list[bytes | str | int]) -> Any:
        keys = self.keys
        self._used = True
        try:
            return await self._writer.run(
                [
                    keys.position,
                    keys.log,
                    keys.streams,
                    keys.partition(stream.partition_key),
                    keys.events(ref),
                ],
                args,
            )
        except BaseException as exc:
            # The outcome is unknown (sent, maybe applied): forget the cached head.
            self._heads.pop(stream, None)
            if isinstance(exc, DRIVER_ERRORS):
                raise translate_error(exc, f"append to {stream}") from exc
            raise

    def _set_head(self, stream: StreamId, head: _Head, *, force: bool = False) -> None:
        known = self._heads.get(stream)
        if force or known is None or known.sequence_id < head.sequence_id:
            self._heads[stream] = head

    async def _load_head(self, stream: StreamId) -> _Head:
        self._used = True
        key = self.keys.events(self.keys.ref(*stream))
        rows: Any = await call(f"read head of {stream}", self._client.xrevrange(key, "+", "-", 1))
        if not rows:
            head = _Head(-1, "")
        else:
            entry_id, fields = rows[0]
            head = _Head(_id_parts(entry_id)[0], bytes(fields[1]).hex())
        self._set_head(stream, head, force=True)
        return head

    # ------------------------------------------------------------------ reading

    async def _xrange(self, key: str, start: int, stop: int | None, what: str) -> list[Any]:
        """Entries ``start..stop`` (ids' first parts, inclusive) in pages of ``PAGE``."""
        self._check_open()
        self._used = True
        rows: list[Any] = []
        low: str = str(start)
        high = "+" if stop is None else str(stop)
        while True:
            page: Any = await call(what, self._client.xrange(key, low, high, PAGE))
            rows.extend(page)
            if len(page) < PAGE:
                return rows
            seq, pos = _id_parts(page[-1][0])
            low = f"{seq}-{pos + 1}"  # just after the last entry

    async def read(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        after_position: int | None = None,  # a stream is its own key: nothing to seek
    ) -> list[Event]:
        check_read(partition_key, app_id, from_sequence, to_sequence, after_position)
        self._check_open()
        start = max(from_sequence, 0)
        if to_sequence is not None and to_sequence < start:
            return []
        stream = StreamId(partition_key, app_id)
        ref = self.keys.ref(partition_key, app_id)
        # one event before the range too, for its hash (the first event's prev_hash)
        rows = await self._xrange(
            self.keys.events(ref), max(start - 1, 0), to_sequence, f"read {stream}"
        )
        return self._decode(stream, rows, start, to_end=to_sequence is None)

    def _decode(
        self, stream: StreamId, rows: list[Any], start: int, *, to_end: bool
    ) -> list[Event]:
        decoded: list[tuple[bytes, str, str, int, bytes]] = []
        prevs: list[bytes] = []
        prev = b""
        for entry_id, fields in rows:
            seq = _id_parts(entry_id)[0]
            digest = fields[1]
            if seq >= start:
                decoded.append((fields[3], stream.partition_key, stream.app_id, seq, digest))
                prevs.append(prev)
            prev = digest
        if to_end and decoded:  # the stream's head, as of this read
            self._set_head(stream, _Head(decoded[-1][3], decoded[-1][4].hex()))
        return self.codec.decode_rows(decoded, prevs)

    async def last_sequence(self, partition_key: str, app_id: str) -> int:
        check_stream_args(partition_key, app_id)
        self._check_open()
        return (await self._load_head(StreamId(partition_key, app_id))).sequence_id

    async def position_of(self, partition_key: str, app_id: str, sequence_id: int) -> int | None:
        """The global position of one event (the second part of its entry id)."""
        check_stream_args(partition_key, app_id)
        check_count("sequence_id", sequence_id)
        self._check_open()
        if sequence_id < 0:
            return None  # (an entry id has no sign: XRANGE would refuse it)
        self._used = True
        key = self.keys.events(self.keys.ref(partition_key, app_id))
        rows: Any = await call(
            "position_of", self._client.xrange(key, str(sequence_id), str(sequence_id), 1)
        )
        return _id_parts(rows[0][0])[1] if rows else None

    async def streams(self, partition_key: str | None = None) -> list[StreamId]:
        check_partition(partition_key, optional=True)
        self._check_open()
        self._used = True
        key = self.keys.streams if partition_key is None else self.keys.partition(partition_key)
        refs: Any = await call("list streams", self._client.zrange(key, 0, -1))
        return [self.keys.stream_of(ref) for ref in refs]

    async def read_all(self, *, from_position: int = 0, limit: int | None = None) -> list[Recorded]:
        check_page(from_position, limit)
        self._check_open()
        if limit is not None and limit <= 0:
            return []
        self._used = True
        position = max(from_position, 1)
        out: list[Recorded] = []
        while limit is None or len(out) < limit:
            count = LOG_PAGE if limit is None else min(LOG_PAGE, limit - len(out))
            flat: Any = await call(
                "read the log",
                self._read_all_script(
                    keys=[self.keys.log], args=[position, count, self.keys.events_prefix]
                ),
            )
            out.extend(self._decode_log(flat))
            if len(flat) < count * 6:
                break
            position = out[-1].position + 1
        return out

    def _decode_log(self, flat: list[Any]) -> list[Recorded]:
        positions: list[int] = []
        rows: list[tuple[bytes, str, str, int, bytes]] = []
        prevs: list[bytes] = []
        streams: dict[bytes, StreamId] = {}
        for i in range(0, len(flat), 6):
            entry_id, ref, seq, digest, prev, body = flat[i : i + 6]
            stream = streams.get(ref)
            if stream is None:
                stream = streams[ref] = self.keys.stream_of(ref)
            position = _id_parts(entry_id)[0]
            if body is None or digest is None:
                raise StoreCorruptError(
                    f"redis: the log names {stream}#{seq} at position {position}, "
                    "but that stream has no such event"
                )
            positions.append(position)
            rows.append((body, stream.partition_key, stream.app_id, int(seq), digest))
            prevs.append(prev or b"")
        events = self.codec.decode_rows(rows, prevs)
        return [Recorded(p, e) for p, e in zip(positions, events, strict=True)]

    async def subscribe(
        self, *, from_position: int = 0, poll_interval: float = 0.05
    ) -> AsyncIterator[Recorded]:
        """Catch up from ``from_position``, then wait for appends with ``XREAD BLOCK``.

        New events arrive as soon as they commit; ``poll_interval`` (at most
        1 s) is how long one blocking wait lasts, so how soon a subscriber
        notices ``aclose()``.
        """
        check_page(from_position, None)
        position = max(from_position, 1)
        block = max(1, int(min(poll_interval, 1.0) * 1000))
        if self.socket_timeout is not None:
            block = max(1, min(block, int(self.socket_timeout * 500)))
        while True:
            self._check_open()
            try:
                batch = await self.read_all(from_position=position, limit=LOG_PAGE)
                if not batch:
                    await self._wait_for(position, block)
                    continue
            except StoreUnavailableError as exc:
                if self._closed:  # aclose() cut the connection of a read in flight
                    raise StoreClosedError(f"{self!r} closed while subscribed") from exc
                raise
            for rec in batch:
                yield rec
            position = batch[-1].position + 1

    async def _wait_for(self, position: int, block_ms: int) -> None:
        """Block until the log has an entry at ``position`` or later (or ``block_ms`` passed)."""
        self._check_open()
        if self._idle is None:
            self._idle = asyncio.Event()
        self._waiting += 1
        self._idle.clear()
        try:
            await call(
                "wait for the log",
                self._client.xread({self.keys.log: f"{position - 1}-0"}, count=1, block=block_ms),
            )
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                self._idle.set()

    # ------------------------------------------------------------------ folding, verifying

    async def fold_stream(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        state: Mapping[str, Any] | None = None,
        after_position: int | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Fold a stream, decoding only each body's delta (fully for an older version)."""
        check_read(partition_key, app_id, from_sequence, None, after_position)
        self._check_open()
        start = max(from_sequence, 0)
        result = dict(state) if state is not None else {}
        stream = StreamId(partition_key, app_id)
        rows = await self._xrange(
            self.keys.events(self.keys.ref(partition_key, app_id)), start, None, f"fold {stream}"
        )
        bodies = [(fields[3],) for _, fields in rows]
        codec = self.codec
        index = codec.fold_deltas(bodies, result)
        while index < len(bodies):  # an older body: upcast it, then go on fast
            event = codec.decode_body(
                bodies[index][0],
                partition_key=partition_key,
                app_id=app_id,
                sequence_id=start + index,
                prev_hash="",
                hash="",
            )
            apply_event(result, event)
            index = codec.fold_deltas(bodies, result, index + 1)
        if not rows:
            return result, from_sequence - 1
        return result, _id_parts(rows[-1][0])[0]

    async def verify(
        self, partition_key: str | None = None, app_id: str | None = None
    ) -> BrokenLink | None:
        """Walk the chain of one stream (or every stream); name the first broken link.

        The events are checked as they were written (never upcast); a stored
        body that does not decode is a broken link too.
        """
        self._check_open()
        targets = await self._verify_targets(partition_key, app_id)
        decode = self.codec.decode_body
        for stream in targets:
            rows = await self._xrange(
                self.keys.events(self.keys.ref(*stream)), 0, None, f"verify {stream}"
            )
            events: list[Event] = []
            prev = ""
            for entry_id, fields in rows:
                seq = _id_parts(entry_id)[0]
                digest = bytes(fields[1]).hex()
                try:
                    event = decode(
                        fields[3],
                        partition_key=stream.partition_key,
                        app_id=stream.app_id,
                        sequence_id=seq,
                        prev_hash=prev,
                        hash=digest,
                        upcast_old=False,
                    )
                except EncodingError as exc:
                    broken = verify_events(events, key=self.hmac_key)
                    return broken or BrokenLink(
                        partition_key=stream.partition_key,
                        app_id=stream.app_id,
                        sequence_id=seq,
                        reason=f"stored body does not decode: {exc}",
                    )
                events.append(event)
                prev = digest
            broken = verify_events(events, key=self.hmac_key)
            if broken is not None:
                return broken
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"
