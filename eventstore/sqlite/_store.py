"""``SQLiteEventStore``: the embedded default log, one SQLite file in WAL mode.

File layout (format version 1)::

    eventstore_meta(key TEXT PRIMARY KEY, value TEXT)   -- format, format_version, codec
    streams(id INTEGER PRIMARY KEY, partition_key, app_id, UNIQUE(partition_key, app_id))
    events(position INTEGER PRIMARY KEY,                 -- global commit order, from 1
           stream_id, sequence_id, hash BLOB,            -- raw 32-byte digest
           body BLOB,                                    -- Codec.encode_body(event)
           UNIQUE(stream_id, sequence_id))               -- no fork, ever

``prev_hash`` is not stored: it is the hash of the stream's previous row
(``""`` for sequence 0).

The store owns two daemon threads, each with its own connection: a
``Writer`` (``_write.py``: the group commit, a queue of pending appends) and
a ``Reader`` that runs the plain read functions of ``_read.py``. On the event
loop an append is only validated, sealed and encoded; commits, fsyncs and
queries all run on the threads. sqlite3 errors become statelog's errors in
one function, ``translate_error`` (``_schema.py``).

``read_only=True`` opens the file through a ``mode=ro`` URI with no writer:
nothing is created, switched or written, and ``append`` raises ``UsageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from os import PathLike, fspath
from typing import Any, Self, TypeVar

from .._base import (
    DEFAULT_MAX_EVENT_SIZE,
    SYNC_CALLER,
    EventStore,
    check_page,
    check_partition,
    check_read,
    check_stream_args,
    prepare_batch,
    prepare_one,
    warn_unclosed,
)
from .._chain import BrokenLink
from .._checkpoints import load_private_key
from .._codec import Codec, CodecName, get_codec
from .._errors import ConfigError, StoreClosedError, StoreCorruptError, UsageError
from .._event import Event, Recorded, StreamId
from . import _read
from ._checkpoints import DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL, Checkpointer
from ._schema import Synchronous, connect, connect_read_only, read_format, translate_error
from ._threads import Reader
from ._write import Head, Request, Writer

__all__ = ["SQLiteEventStore"]

T = TypeVar("T")


class _Signal:
    """Wakes the store's subscribers after a commit (held by the writer, not the store)."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def fire(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


def _open_reader(
    path: str, read_only: bool, synchronous: str, busy_timeout: float
) -> tuple[sqlite3.Connection, bool]:
    """The reader thread's connection (runs on that thread)."""
    if read_only:
        return connect_read_only(path, busy_timeout=busy_timeout)
    return connect(path, synchronous=synchronous, busy_timeout=busy_timeout), False


class SQLiteEventStore(EventStore):
    """An event store in one SQLite file (WAL), safe across tasks and processes.

    ``synchronous="NORMAL"`` (the default) survives a process crash and loses
    no committed event; ``"FULL"`` also survives power loss at the cost of an
    fsync per commit. ``codec`` picks the stored body format for a new file
    (``"msgpack"`` by default); an existing file keeps the codec it was created
    with. ``busy_timeout`` is how long (seconds) to wait for another process
    holding the write lock before ``StoreUnavailableError``. ``read_only=True``
    opens an existing log without ever writing to it (see the module doc).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        hmac_key: bytes | None = None,
        codec: Codec | CodecName | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        busy_timeout: float = 5.0,
        read_only: bool = False,
        signing_key: Any = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if hmac_key is not None and not isinstance(hmac_key, bytes):
            raise ConfigError(f"hmac_key must be bytes or None, got {type(hmac_key).__name__}")
        if type(max_event_size) is not int or max_event_size <= 0:
            raise ConfigError(f"max_event_size must be a positive int, got {max_event_size!r}")
        if (
            not isinstance(busy_timeout, int | float)
            or isinstance(busy_timeout, bool)
            or not busy_timeout >= 0
        ):
            raise ConfigError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        self.path = fspath(path)
        self.synchronous: Synchronous = "FULL" if sync == "FULL" else "NORMAL"
        self.hmac_key = hmac_key
        try:
            self._codec_asked = None if codec is None else get_codec(codec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.codec: Codec = self._codec_asked or get_codec("msgpack")
        self.max_event_size = max_event_size
        self.busy_timeout = busy_timeout
        self.read_only = read_only
        self._writer: Writer | None = None
        self._reader: Reader | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._closing = False
        self._signal: _Signal | None = None
        self._subscribers = 0
        # signed stream heads (``_checkpoints``): a key object or a PEM file's path
        if isinstance(signing_key, str | PathLike):
            signing_key = load_private_key(signing_key)
        self.signing_key = signing_key
        self._checkpoint_options = (checkpoint_every, checkpoint_interval)
        self._checkpointer: Checkpointer | None = None
        # heads a read found for streams the writer has not written yet (``_note_head``)
        self._hints: dict[StreamId, Head] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._reader is not None else "new"
        mode = ", read_only" if self.read_only else ""
        return f"SQLiteEventStore({self.path!r}, codec={self.codec.name!r}{mode}, {state})"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, path: str | PathLike[str], **options: Any) -> Self:
        """Create a store and connect it (``async with await SQLiteEventStore.open(p)``)."""
        store = cls(path, **options)
        await store.connect()
        return store

    async def connect(self) -> Self:
        """Open the file, create or check the schema. Idempotent."""
        self._check_open()
        if self._reader is not None:
            return self
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._reader is None:
                await self._open()
        return self

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def _open(self) -> None:
        signal = _Signal()
        writer = None
        if not self.read_only:
            writer = Writer(
                self.path,
                synchronous=self.synchronous,
                busy_timeout=self.busy_timeout,
                codec=self._codec_asked,
                hmac_key=self.hmac_key,
                on_commit=signal.fire,
            )
            try:
                self.codec = await writer.start()
            except sqlite3.Error as exc:
                await writer.aclose()
                raise translate_error(exc, self.path) from exc
            except BaseException:
                await writer.aclose()
                raise
        # (a function of the options, not a method: the thread must not hold the store)
        open_db = functools.partial(
            _open_reader, self.path, self.read_only, self.synchronous, self.busy_timeout
        )
        reader = Reader(self.path, open_db, name=f"statelog-reader:{self.path}")
        try:
            codec = await reader.call(read_format, self.path, self._codec_asked)
        except BaseException as exc:
            await reader.aclose()
            if writer is not None:
                await writer.aclose()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._not_a_log(exc) from exc
            raise
        self.codec = codec
        self._writer, self._reader, self._signal = writer, reader, signal

    def _not_a_log(self, exc: sqlite3.DatabaseError) -> Exception:
        error = translate_error(exc, self.path)
        if not isinstance(error, StoreCorruptError):
            return error
        try:
            with open(self.path, "rb") as file:
                start = file.read(16)
        except OSError:
            start = b""
        return StoreCorruptError(
            f"{self.path!r} is not a SQLite database (it starts with {start!r}; "
            f"{exc}): expected a statelog event log"
        )

    async def aclose(self) -> None:
        """Finish queued appends, stop the threads, close the file. Idempotent."""
        if self._closed:
            return
        self._closing = True
        writer, reader = self._writer, self._reader
        if writer is not None:
            await writer.aclose()
        try:
            if self._checkpointer is not None:
                await self._checkpointer.aclose()  # the last checkpoint covers every append
        finally:
            if reader is not None:
                await reader.aclose()
            self._closed = True
        if self._signal is not None:
            self._signal.fire()  # subscribers wake and raise StoreClosedError

    def __del__(self) -> None:
        if getattr(self, "_reader", None) is not None and not getattr(self, "_closed", True):
            warn_unclosed(self)
            self._closed = True
            if self._writer is not None:
                self._writer.stop()
            if self._reader is not None:
                self._reader.stop()
            checkpointer = getattr(self, "_checkpointer", None)
            if checkpointer is not None:
                checkpointer.stop()

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise StoreClosedError(f"SQLiteEventStore({self.path!r}) is closed")

    async def _read(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(db, *args)`` on the reader thread; translate driver errors."""
        self._check_open()
        reader = self._reader
        if reader is None:
            await self.connect()
            reader = self._reader
            assert reader is not None
        try:
            return await reader.call(fn, *args)
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from exc

    # ------------------------------------------------------------------ writing

    async def append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        if self.read_only:
            raise UsageError(f"{self!r} is read-only: it cannot append")
        self._check_open()
        writer = self._writer
        if writer is None:
            await self.connect()
            self._check_open()
            writer = self._writer
            assert writer is not None
        # Validated, encoded and sealed before anything else runs, so a list the
        # caller changes afterwards changes nothing: no copy of it is kept.
        batch = events if isinstance(events, list | tuple) else list(events)
        head = hint = None
        if (
            batch
            and isinstance(first := batch[0], Event)
            and type(first.app_id) is str  # (an unhashable id: the validation refuses it)
            and type(first.partition_key) is str
        ):
            stream = StreamId(first.partition_key, first.app_id)
            head = writer.heads.get(stream)
            if head is None and self._hints:
                head = hint = self._hints.pop(stream, None)
        if (
            head is not None
            and head.last == expected_sequence
            and len(batch) == 1
            and type(expected_sequence) is int  # prepare_one checks no more than that
        ):
            # the common case: one event for a stream the writer knows, sealed from its head
            event, body, digest = prepare_one(
                first,
                stream,
                expected_sequence,
                head.hash,
                self.codec.encode_body_buffer,
                self.hmac_key,
                self.max_event_size,
            )
            sealed, bodies, digests, sealed_from = [event], [body], [digest], head.hash
        else:
            # sealed from the head's hash if it is known; the writer reseals if it moved
            sealed_from = head.hash if head is not None and head.last == expected_sequence else ""
            stream, sealed, bodies = prepare_batch(
                batch,
                expected_sequence,
                sealed_from,
                self.codec.encode_body_buffer,
                self.hmac_key,
                self.max_event_size,
            )
            digests = [bytearray.fromhex(event.hash) for event in sealed]
        future: asyncio.Future[list[Recorded]] = asyncio.get_running_loop().create_future()
        request = Request(
            stream, expected_sequence, sealed, bodies, digests, sealed_from, future, hint
        )
        # a sync caller waits for this call anyway: its lone append is written on its
        # own thread, without the hand-off (same-run A/B: docs/benchmarks.md)
        if SYNC_CALLER.get() and (here := writer.commit_here(request)) is not None:
            recorded = here
        else:
            writer.submit(request)
            recorded = await future
        if self.signing_key is not None:
            self._checkpoints().note(len(recorded))
        return recorded

    def _note_head(self, stream: StreamId, db_id: int, last: int, hash: str) -> None:
        """Remember a stream's head that a read just found (``load_stream``, a resume).

        The next append to that stream, if the writer does not know the stream
        yet, is sealed from it and handed to the writer with it, so a resumed
        app's first step can be a single INSERT (``Writer._insert_alone``).
        Only a hint: the writer's own heads win, and UNIQUE refuses a stale one.
        """
        if self.read_only or (self._writer is not None and stream in self._writer.heads):
            return  # nothing to write, or the writer knows better
        if len(self._hints) >= 64:  # a bound: hints of streams nobody appends to
            del self._hints[next(iter(self._hints))]
        self._hints[stream] = Head(db_id, last, hash)

    def _checkpoints(self) -> Checkpointer:
        if self._checkpointer is None:
            every, interval = self._checkpoint_options
            self._checkpointer = Checkpointer(
                self.path,
                self.signing_key,
                synchronous=self.synchronous,
                busy_timeout=self.busy_timeout,
                every=every,
                interval=interval,
            )
        return self._checkpointer

    async def checkpoint(self) -> None:
        """Write a signed checkpoint of every stream's head now (needs ``signing_key``)."""
        if self.signing_key is None:
            raise UsageError(f"{self!r} has no signing_key: it cannot sign checkpoints")
        self._check_open()
        await self._checkpoints().flush()

    # ------------------------------------------------------------------ reading

    async def read(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        after_position: int | None = None,  # the stream index seeks already
    ) -> list[Event]:
        check_read(partition_key, app_id, from_sequence, to_sequence, after_position)
        start = max(from_sequence, 0)
        if to_sequence is not None and to_sequence < start:
            self._check_open()
            return []
        events: list[Event] = await self._read(
            _read.read_stream, self.codec, self.path, partition_key, app_id, start, to_sequence
        )
        return events

    async def last_sequence(self, partition_key: str, app_id: str) -> int:
        check_stream_args(partition_key, app_id)
        last: int = await self._read(_read.last_sequence, partition_key, app_id)
        return last

    async def last_position(self) -> int:
        """The position of the last committed event, ``0`` for an empty log."""
        last: int = await self._read(_read.last_position)
        return last

    async def streams(self, partition_key: str | None = None) -> list[StreamId]:
        check_partition(partition_key, optional=True)
        found: list[StreamId] = await self._read(_read.streams, partition_key)
        return found

    async def read_all(self, *, from_position: int = 0, limit: int | None = None) -> list[Recorded]:
        check_page(from_position, limit)
        if limit is not None and limit <= 0:
            self._check_open()
            return []
        page: list[Recorded] = await self._read(
            _read.read_all, self.codec, self.path, from_position, limit
        )
        return page

    async def fold_stream(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        state: Mapping[str, Any] | None = None,
        after_position: int | None = None,  # the stream index seeks already
    ) -> tuple[dict[str, Any], int]:
        """Fold a stream on the reader thread, decoding only each body's delta."""
        check_read(partition_key, app_id, from_sequence, None, after_position)
        start = max(from_sequence, 0)
        result = dict(state) if state is not None else {}
        count: int = await self._read(
            _read.fold_stream, self.codec, self.path, partition_key, app_id, start, result
        )
        return result, (start + count - 1) if count else from_sequence - 1

    async def verify(
        self, partition_key: str | None = None, app_id: str | None = None
    ) -> BrokenLink | None:
        """Walk the chain of one stream (or every stream); name the first broken link.

        A missing sequence id and a stored body that no longer decodes are
        broken links too.
        """
        targets = await self._verify_targets(partition_key, app_id)
        broken: BrokenLink | None = await self._read(
            _read.verify, self.codec, self.hmac_key, targets
        )
        return broken

    async def subscribe(
        self, *, from_position: int = 0, poll_interval: float = 0.05
    ) -> AsyncIterator[Recorded]:
        """Catch up from ``from_position``, then yield new events as they commit.

        Appends through this store wake subscribers at once; appends by other
        processes are seen within ``poll_interval`` seconds.
        """
        check_page(from_position, None)
        position = max(from_position, 1)
        page = 1000
        self._subscribers += 1
        try:
            while True:
                await self.connect()
                signal = self._signal
                changed = signal.changed if signal is not None else None
                batch = await self.read_all(from_position=position, limit=page)
                for record in batch:
                    yield record
                if batch:
                    position = batch[-1].position + 1
                    if len(batch) == page:
                        continue
                self._check_open()
                if changed is not None and not changed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), poll_interval)
        finally:
            self._subscribers -= 1
