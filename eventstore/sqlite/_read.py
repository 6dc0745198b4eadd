"""The reading half of ``SQLiteEventStore``: streams, ranges, the global order, fold, verify.

Every method is one query (one aiosqlite hop) through ``_q``, which the store
provides; ``prev_hash`` is rebuilt from the previous row's ``hash``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._chain import BrokenLink, verify_events
from .._codec import Codec
from .._errors import EncodingError
from .._event import Event, Recorded, StreamId

__all__ = ["SQLiteReads"]


class SQLiteReads:
    """Read methods of the SQLite event store (a mixin; the store gives ``_q``)."""

    codec: Codec
    hmac_key: bytes | None

    async def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    async def read(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        after_position: int | None = None,  # the stream index seeks already
    ) -> list[Event]:
        start = max(from_sequence, 0)
        stop = -1 if to_sequence is None else to_sequence
        if to_sequence is not None and to_sequence < start:
            self._check_open()
            return []
        rows = await self._q(
            "SELECT e.body, s.partition_key, s.app_id, e.sequence_id, e.hash FROM events e "
            "JOIN streams s ON s.id = e.stream_id "
            "WHERE s.partition_key = ? AND s.app_id = ? AND e.sequence_id >= ? "
            "AND (? < 0 OR e.sequence_id <= ?) ORDER BY e.sequence_id",
            (partition_key, app_id, start - 1, stop, stop),
        )
        prevs: list[bytes] = []
        prev = b""
        for row in rows:
            prevs.append(prev)
            prev = row[4]
        if rows and rows[0][3] < start:  # the row before the range: only its hash
            del rows[0], prevs[0]
        return self.codec.decode_rows(rows, prevs)

    async def last_sequence(self, partition_key: str, app_id: str) -> int:
        rows = await self._q(
            "SELECT MAX(e.sequence_id) FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE s.partition_key = ? AND s.app_id = ?",
            (partition_key, app_id),
        )
        value = rows[0][0] if rows else None
        return -1 if value is None else int(value)

    async def last_position(self) -> int:
        """The position of the last committed event, ``0`` for an empty log."""
        rows = await self._q("SELECT MAX(position) FROM events")
        value = rows[0][0] if rows else None
        return 0 if value is None else int(value)

    async def streams(self, partition_key: str | None = None) -> list[StreamId]:
        where = "" if partition_key is None else "WHERE s.partition_key = ? "
        rows = await self._q(
            "SELECT s.partition_key, s.app_id FROM streams s "
            "JOIN events e ON e.stream_id = s.id AND e.sequence_id = 0 "
            f"{where}ORDER BY e.position",
            () if partition_key is None else (partition_key,),
        )
        return [StreamId(pk, app) for pk, app in rows]

    async def read_all(self, *, from_position: int = 0, limit: int | None = None) -> list[Recorded]:
        if limit is not None and limit <= 0:
            self._check_open()
            return []
        rows = await self._q(
            "SELECT e.body, s.partition_key, s.app_id, e.sequence_id, e.hash, e.position, "
            "e.stream_id FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE e.position >= ? ORDER BY e.position LIMIT ?",
            (max(from_position, 1), -1 if limit is None else limit),
        )
        # prev_hash: the hash of the stream's previous event, which in a page in
        # position order is mostly an earlier row of the page; the first event
        # of each stream in the page fetches its predecessor's in one query.
        # (A self-join per row for it halved the query's speed.)
        last: dict[int, Any] = {}
        missing: list[int] = []
        prevs: list[bytes] = []
        for row in rows:
            seq = row[3]
            before = last.get(row[6])
            if before is not None and before[3] == seq - 1:
                prevs.append(before[4])
            else:
                if seq:
                    missing.append(len(prevs))
                prevs.append(b"")
            last[row[6]] = row
        if missing:
            wanted = [(rows[i][6], rows[i][3] - 1) for i in missing]
            found = {
                (stream_id, seq): digest
                for stream_id, seq, digest in await self._q(
                    "SELECT e.stream_id, e.sequence_id, e.hash FROM json_each(?) j "
                    "CROSS JOIN events e ON e.stream_id = json_extract(j.value, '$[0]') "
                    "AND e.sequence_id = json_extract(j.value, '$[1]')",
                    (json.dumps(wanted),),
                )
            }
            for i, key in zip(missing, wanted, strict=True):
                prevs[i] = found.get(key, b"")
        events = self.codec.decode_rows(rows, prevs)
        return list(map(Recorded, [row[5] for row in rows], events))

    async def fold_stream(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        state: Mapping[str, Any] | None = None,
        after_position: int | None = None,  # the stream index seeks already
    ) -> tuple[dict[str, Any], int]:
        """Fold a stream, decoding only each body's delta (fully for older versions).

        One query, one hop; the time goes to fetching rows (about half) and
        to decoding the deltas. (Concatenating the bodies in SQLite to decode
        them as one array was tried: no faster.)
        """
        start = max(from_sequence, 0)
        result = dict(state) if state is not None else {}
        count = await self._fold_rows(partition_key, app_id, start, result)
        return result, (start + count - 1) if count else from_sequence - 1

    async def _fold_rows(
        self, partition_key: str, app_id: str, start: int, result: dict[str, Any]
    ) -> int:
        """Fold row by row from ``start`` onto ``result``; return how many rows."""
        rows = await self._q(
            "SELECT e.body FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE s.partition_key = ? AND s.app_id = ? AND e.sequence_id >= ? "
            "ORDER BY e.sequence_id",
            (partition_key, app_id, start),
        )
        codec = self.codec
        index = codec.fold_deltas(rows, result)
        while index < len(rows):  # an older body: upcast it, then go on fast
            event = codec.decode_body(
                rows[index][0],
                partition_key=partition_key,
                app_id=app_id,
                sequence_id=start + index,
                prev_hash="",
                hash="",
            )
            if event.writes:
                result.update(event.writes)
            for key in event.deletes:
                result.pop(key, None)
            index = codec.fold_deltas(rows, result, index + 1)
        return len(rows)

    async def verify(
        self, partition_key: str | None = None, app_id: str | None = None
    ) -> BrokenLink | None:
        """Walk the chain of one stream (or every stream); name the first broken link.

        A stored body that no longer decodes is a broken link too.
        """
        if app_id is not None:
            targets = [StreamId(partition_key or "", app_id)]
        else:
            targets = await self.streams(partition_key)
        decode = self.codec.decode_body
        for stream in targets:
            prev = ""
            want = 0
            rows = await self._q(
                "SELECT e.sequence_id, e.hash, e.body FROM events e "
                "JOIN streams s ON s.id = e.stream_id "
                "WHERE s.partition_key = ? AND s.app_id = ? ORDER BY e.sequence_id",
                stream,
            )
            for chunk_start in range(0, len(rows), 1000):
                events: list[Event] = []
                first = want
                first_prev = prev
                for seq, digest, body in rows[chunk_start : chunk_start + 1000]:
                    hash_hex = bytes(digest).hex() if isinstance(digest, bytes) else str(digest)
                    try:
                        event = decode(
                            body,
                            partition_key=stream.partition_key,
                            app_id=stream.app_id,
                            sequence_id=seq,
                            prev_hash=prev,
                            hash=hash_hex,
                            # the chain covers the event as it was written: never upcast here
                            upcast_old=False,
                        )
                    except EncodingError as exc:
                        broken = verify_events(
                            events, prev_hash=first_prev, first_sequence=first, key=self.hmac_key
                        )
                        return broken or BrokenLink(
                            partition_key=stream.partition_key,
                            app_id=stream.app_id,
                            sequence_id=seq,
                            reason=f"stored body does not decode: {exc}",
                        )
                    events.append(event)
                    prev = hash_hex
                    want += 1
                broken = verify_events(
                    events, prev_hash=first_prev, first_sequence=first, key=self.hmac_key
                )
                if broken is not None:
                    return broken
        return None
