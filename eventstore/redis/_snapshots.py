"""``RedisSnapshotStore``: snapshots of folded state in Redis, beside a ``RedisEventStore``.

The same ``Snapshot`` records and the same rules as the SQLite ``SnapshotStore``:
a snapshot is a cache, never the truth. One that fails to decode, whose
checksum (HMAC with ``hmac_key``) does not hold, or whose ``event_hash`` does
not match the event in the log is skipped with a ``SnapshotSkippedWarning``,
and an older one (or the start of the stream) is used. State is msgpack:
decoding never runs code.

Each stream's snapshots are one sorted set, ``{<prefix>}:snapshots:<pk>:<app>``
(see ``RedisKeys``), scored by ``sequence_id``; a member is one encoded
snapshot. A save replaces the snapshot at the same sequence and prunes to
``keep_last`` in one ``MULTI``.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

import msgspec

from .._base import EventStore, check_count, check_stream_args, warn_unclosed
from .._chain import hash_bytes
from .._codec import to_plain
from .._errors import ConfigError, EncodingError, InvalidEventError, StoreClosedError
from .._event import StreamId
from .._snapshots import (
    SNAPSHOT_SCHEMA_VERSION,
    Snapshot,
    SnapshotBackend,
    SnapshotSkippedWarning,
    _check_chain,
    _Skip,
)
from ._client import RedisKeys, call, open_client

__all__ = ["RedisSnapshotStore"]

_PAGE = 8


class _Stored(msgspec.Struct, array_like=True, frozen=True):
    """One snapshot as a sorted-set member (the stream is the key)."""

    schema_version: int
    sequence_id: int
    position: int
    event_hash: str
    created_at: str
    digest: str
    state: bytes


_stored_encoder = msgspec.msgpack.Encoder()
_stored_decoder = msgspec.msgpack.Decoder(_Stored)
_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def _digest(key: bytes | None, identity: tuple[str, str, int, int, str, bytes]) -> str:
    """A checksum over a snapshot's stream, sequence, position, chain link and state."""
    return hash_bytes(_stored_encoder.encode(identity), key)


class RedisSnapshotStore(SnapshotBackend):
    """Snapshots in Redis under ``prefix`` (may be the event store's: the keys differ).

    ``keep_last`` prunes each stream to its newest N snapshots on every save;
    ``hmac_key`` signs each snapshot's checksum, so one edited without the key
    is skipped on load. Open with ``await RedisSnapshotStore.open(url)`` or
    ``async with RedisSnapshotStore(url)``; close with ``aclose()``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "statelog",
        keep_last: int | None = None,
        hmac_key: bytes | None = None,
        socket_timeout: float | None = 10.0,
        socket_connect_timeout: float | None = 5.0,
    ) -> None:
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise ConfigError(f"keep_last must be an int >= 1 or None, got {keep_last!r}")
        if hmac_key is not None and not isinstance(hmac_key, bytes):
            raise ConfigError(f"hmac_key must be bytes or None, got {type(hmac_key).__name__}")
        self.keys = RedisKeys(prefix)
        self.url = url
        self.keep_last = keep_last
        self.hmac_key = hmac_key
        self._client = open_client(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
        )
        self._closed = False
        self._used = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RedisSnapshotStore(prefix={self.keys.prefix!r}, {state})"

    # --- lifecycle

    @classmethod
    async def open(cls, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> Self:
        """Create a snapshot store and check that the server answers."""
        return await cls(url, **options).connect()

    async def connect(self) -> Self:
        """Check that the server answers (``StoreUnavailableError`` if not). Idempotent."""
        self._check_open()
        self._used = True
        await call("connect", self._client.ping())
        return self

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def aclose(self) -> None:
        """Close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_used", False):
            warn_unclosed(self)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")

    def _key(self, partition_key: str, app_id: str) -> str:
        return self.keys.snapshots(self.keys.ref(partition_key, app_id))

    # --- writing

    async def save(self, snapshot: Snapshot) -> int:
        """Store ``snapshot`` (replacing one at the same sequence); prune to ``keep_last``.

        Return the size in bytes of its encoded state.
        """
        self._check_open()
        if not isinstance(snapshot, Snapshot):
            raise InvalidEventError(f"expected a Snapshot, got {type(snapshot).__name__}")
        if not isinstance(snapshot.app_id, str) or not snapshot.app_id:
            raise InvalidEventError("snapshot app_id must be a non-empty string")
        if not isinstance(snapshot.partition_key, str):
            raise InvalidEventError("snapshot partition_key must be a str")
        if not isinstance(snapshot.sequence_id, int) or snapshot.sequence_id < 0:
            raise InvalidEventError(
                f"snapshot sequence_id must be an int >= 0, got {snapshot.sequence_id!r}"
            )
        if not isinstance(snapshot.state, Mapping):
            raise EncodingError("snapshot state must be a dict", path="$.state")
        blob = _state_encoder.encode(to_plain(dict(snapshot.state), path="$.state"))
        identity = (
            snapshot.partition_key,
            snapshot.app_id,
            snapshot.sequence_id,
            snapshot.position,
            snapshot.event_hash,
            blob,
        )
        member = _stored_encoder.encode(
            _Stored(
                schema_version=snapshot.schema_version,
                sequence_id=snapshot.sequence_id,
                position=snapshot.position,
                event_hash=snapshot.event_hash,
                created_at=snapshot.created_at.isoformat(),
                digest=_digest(self.hmac_key, identity),
                state=blob,
            )
        )
        key = self._key(snapshot.partition_key, snapshot.app_id)
        seq = snapshot.sequence_id
        self._used = True
        pipe = self._client.pipeline(transaction=True)
        pipe.zremrangebyscore(key, seq, seq)
        pipe.zadd(key, {member: seq})
        if self.keep_last is not None:
            pipe.zremrangebyrank(key, 0, -(self.keep_last + 1))
        await call("save snapshot", pipe.execute())
        return len(blob)

    async def prune(self, partition_key: str, app_id: str, *, keep_last: int) -> int:
        """Delete all but the newest ``keep_last`` snapshots of a stream; return how many."""
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ConfigError(f"keep_last must be an int >= 1, got {keep_last!r}")
        self._check_open()
        self._used = True
        key = self._key(partition_key, app_id)
        deleted = await call(
            "prune snapshots", self._client.zremrangebyrank(key, 0, -(keep_last + 1))
        )
        return int(deleted)

    # --- reading

    async def load(
        self,
        partition_key: str,
        app_id: str,
        *,
        max_sequence: int | None = None,
        store: EventStore | None = None,
    ) -> Snapshot | None:
        """The newest usable snapshot at or before ``max_sequence`` (``None`` if none).

        With ``store``, a snapshot is usable only if its ``event_hash`` equals the
        hash of the event at its sequence in ``store``. Unusable snapshots are
        skipped with a ``SnapshotSkippedWarning``.
        """
        check_stream_args(partition_key, app_id)
        check_count("max_sequence", max_sequence, optional=True)
        self._check_open()
        self._used = True
        key = self._key(partition_key, app_id)
        upper: str | int = "+inf" if max_sequence is None else max_sequence
        offset = 0
        while True:
            rows: Any = await call(
                "read snapshots",
                self._client.zrevrangebyscore(
                    key, upper, "-inf", start=offset, num=_PAGE, withscores=True
                ),
            )
            for member, score in rows:
                try:
                    snapshot = self._decode(partition_key, app_id, member, int(score))
                    if store is not None:
                        await _check_chain(snapshot, store)
                except _Skip as why:
                    warnings.warn(
                        f"skipping snapshot of {StreamId(partition_key, app_id)} "
                        f"at sequence_id {int(score)}: {why}",
                        SnapshotSkippedWarning,
                        stacklevel=2,
                    )
                    continue
                return snapshot
            if len(rows) < _PAGE:
                return None
            offset += _PAGE

    async def sequences(self, partition_key: str, app_id: str) -> list[tuple[int, int]]:
        """``(sequence_id, position)`` of every stored snapshot of a stream, oldest first.

        A member that does not decode shows position ``-1``.
        """
        self._check_open()
        self._used = True
        rows: Any = await call(
            "read snapshots",
            self._client.zrange(self._key(partition_key, app_id), 0, -1, withscores=True),
        )
        out = []
        for member, score in rows:
            try:
                position = _stored_decoder.decode(member).position
            except (msgspec.DecodeError, msgspec.ValidationError):
                position = -1
            out.append((int(score), position))
        return out

    def _decode(self, partition_key: str, app_id: str, member: bytes, score: int) -> Snapshot:
        try:
            stored = _stored_decoder.decode(member)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise _Skip(f"cannot decode: {exc}") from exc
        if stored.schema_version != SNAPSHOT_SCHEMA_VERSION:
            raise _Skip(
                f"snapshot schema_version {stored.schema_version!r}, this statelog reads "
                f"{SNAPSHOT_SCHEMA_VERSION}"
            )
        identity = (
            partition_key,
            app_id,
            stored.sequence_id,
            stored.position,
            stored.event_hash,
            stored.state,
        )
        expected = _digest(self.hmac_key, identity)
        if stored.sequence_id != score or not hmac.compare_digest(expected, stored.digest):
            raise _Skip("checksum does not match the stored state (corrupt or edited)")
        try:
            return Snapshot(
                partition_key=partition_key,
                app_id=app_id,
                sequence_id=stored.sequence_id,
                state=_state_decoder.decode(stored.state),
                position=stored.position,
                event_hash=stored.event_hash,
                created_at=datetime.fromisoformat(stored.created_at),
                schema_version=stored.schema_version,
            )
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise _Skip(f"cannot decode: {exc}") from exc
