"""Reading the SQLite event log: plain functions of a ``sqlite3`` connection.

Each function runs whole on the store's reader thread (one hop from the event
loop per call): the query, the density check and the decoding. ``prev_hash``
is not stored; it is rebuilt from the previous row's ``hash``.

A stream's sequence ids are dense from 0: a read that finds one missing (a row
deleted from the file) raises ``StoreCorruptError`` naming the stream and the
missing sequence id, instead of folding past the hole; ``verify`` reports it
as a broken link. (A deleted last row looks like a shorter stream; only signed
checkpoints can tell.)
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .._base import apply_event
from .._chain import BrokenLink, verify_events
from .._codec import Codec
from .._errors import EncodingError, StoreCorruptError, stream_name
from .._event import Event, Recorded, StreamId

__all__ = [
    "fold_stream",
    "fold_tail",
    "last_position",
    "last_sequence",
    "read_all",
    "read_stream",
    "streams",
    "verify",
]


def missing_error(path: str, stream: tuple[str, str], sequence_id: int) -> StoreCorruptError:
    return StoreCorruptError(
        f"stream {stream_name(stream)!r} in {path!r} is missing sequence_id {sequence_id}: "
        "a stream's sequence ids are dense from 0, so an event was deleted from the file"
    )


def sequence_error(path: str, stream: tuple[str, str], want: int, found: int) -> StoreCorruptError:
    """The error for a row with sequence id ``found`` where ``want`` comes next.

    A lower one is a second row of an earlier sequence id (the schema's UNIQUE
    index refuses it, so the table was rebuilt without it); a higher one, a hole.
    """
    if found >= want:
        return missing_error(path, stream, want)
    return StoreCorruptError(
        f"stream {stream_name(stream)!r} in {path!r} has more than one row with "
        f"sequence_id {found}: a stream has one event per sequence id, so a row was "
        "copied or inserted into the file"
    )


def _check_dense(path: str, stream: tuple[str, str], seqs: Sequence[int], first: int) -> None:
    """``seqs`` (sorted) must be ``first, first + 1, ...``; else name the hole or the copy."""
    if not seqs or (seqs[0] == first and seqs[-1] == first + len(seqs) - 1):
        return
    want = first
    for seq in seqs:
        if seq != want:
            raise sequence_error(path, stream, want, seq)
        want += 1


def read_stream(
    db: sqlite3.Connection,
    codec: Codec,
    path: str,
    partition_key: str,
    app_id: str,
    start: int,
    stop: int | None,
) -> list[Event]:
    """Events ``start..stop`` (inclusive; ``None``: to the end) of one stream."""
    rows = db.execute(
        "SELECT e.body, s.partition_key, s.app_id, e.sequence_id, e.hash FROM events e "
        "JOIN streams s ON s.id = e.stream_id "
        "WHERE s.partition_key = ? AND s.app_id = ? AND e.sequence_id >= ? "
        # a bound the index can use: with an OR it would scan to the stream's end
        "AND e.sequence_id <= ? ORDER BY e.sequence_id",
        (partition_key, app_id, start - 1, 2**63 - 1 if stop is None else stop),
    ).fetchall()
    if not rows:
        return []
    # from the row before the range (its hash is the first event's prev_hash), dense
    _check_dense(path, (partition_key, app_id), [row[3] for row in rows], max(start - 1, 0))
    prevs: list[bytes] = []
    prev = b""
    for row in rows:
        prevs.append(prev)
        prev = row[4]
    if rows[0][3] < start:  # the row before the range: only its hash
        del rows[0], prevs[0]
    return codec.decode_rows(rows, prevs)


def last_sequence(db: sqlite3.Connection, partition_key: str, app_id: str) -> int:
    row = db.execute(
        "SELECT MAX(e.sequence_id) FROM events e JOIN streams s ON s.id = e.stream_id "
        "WHERE s.partition_key = ? AND s.app_id = ?",
        (partition_key, app_id),
    ).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


def last_position(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT MAX(position) FROM events").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def streams(db: sqlite3.Connection, partition_key: str | None) -> list[StreamId]:
    """Every stream of the ``streams`` table, in order of creation (its ``id``).

    Not found through a stream's first event: a stream whose first events (or
    all of them) were deleted from the file is still listed, so ``export``
    and ``verify`` name it instead of leaving it out.
    """
    where = "" if partition_key is None else "WHERE partition_key = ? "
    rows = db.execute(
        f"SELECT partition_key, app_id FROM streams {where}ORDER BY id",
        () if partition_key is None else (partition_key,),
    ).fetchall()
    return [StreamId(pk, app) for pk, app in rows]


def read_all(
    db: sqlite3.Connection, codec: Codec, path: str, from_position: int, limit: int | None
) -> list[Recorded]:
    rows = db.execute(
        "SELECT e.body, s.partition_key, s.app_id, e.sequence_id, e.hash, e.position, "
        "e.stream_id FROM events e JOIN streams s ON s.id = e.stream_id "
        "WHERE e.position >= ? ORDER BY e.position LIMIT ?",
        (max(from_position, 1), -1 if limit is None else limit),
    ).fetchall()
    # prev_hash: the hash of the stream's previous event, which in a page in
    # position order is mostly an earlier row of the page; the first event
    # of each stream in the page fetches its predecessor's in one query.
    last: dict[int, Any] = {}
    missing: list[int] = []
    prevs: list[bytes] = []
    for row in rows:
        seq = row[3]
        before = last.get(row[6])
        if before is not None and before[3] == seq - 1:
            prevs.append(before[4])
        else:
            if before is not None:  # the page holds the stream's rows around a hole
                raise sequence_error(path, (row[1], row[2]), before[3] + 1, seq)
            if seq:
                missing.append(len(prevs))
            prevs.append(b"")
        last[row[6]] = row
    if missing:
        wanted = [(rows[i][6], rows[i][3] - 1) for i in missing]
        found = {
            (stream_id, seq): digest
            for stream_id, seq, digest in db.execute(
                "SELECT e.stream_id, e.sequence_id, e.hash FROM json_each(?) j "
                "CROSS JOIN events e ON e.stream_id = json_extract(j.value, '$[0]') "
                "AND e.sequence_id = json_extract(j.value, '$[1]')",
                (json.dumps(wanted),),
            )
        }
        for i, key in zip(missing, wanted, strict=True):
            digest = found.get(key)
            if digest is None:
                raise missing_error(path, (rows[i][1], rows[i][2]), key[1])
            prevs[i] = digest
    events = codec.decode_rows(rows, prevs)
    return [Recorded(row[5], event) for row, event in zip(rows, events, strict=True)]


def fold_stream(
    db: sqlite3.Connection,
    codec: Codec,
    path: str,
    partition_key: str,
    app_id: str,
    start: int,
    result: dict[str, Any],
) -> int:
    """Fold the stream from ``start`` onto ``result``; return how many events.

    Only each body's delta is decoded (fully for an older version, to upcast).
    """
    rows = db.execute(
        "SELECT e.body FROM events e JOIN streams s ON s.id = e.stream_id "
        "WHERE s.partition_key = ? AND s.app_id = ? AND e.sequence_id >= ? "
        "ORDER BY e.sequence_id",
        (partition_key, app_id, start),
    ).fetchall()
    if rows:
        # dense iff the lowest is ``start`` and the highest ``start + len - 1`` (the
        # ids are unique); two index seeks, not a second pass over the rows
        low, high = db.execute(
            "SELECT (SELECT MIN(sequence_id) FROM events WHERE stream_id = s.id "
            "AND sequence_id >= ?), (SELECT MAX(sequence_id) FROM events WHERE stream_id = s.id) "
            "FROM streams s WHERE s.partition_key = ? AND s.app_id = ?",
            (start, partition_key, app_id),
        ).fetchone()
        if low != start or high != start + len(rows) - 1:
            seqs = [
                row[0]
                for row in db.execute(
                    "SELECT e.sequence_id FROM events e JOIN streams s ON s.id = e.stream_id "
                    "WHERE s.partition_key = ? AND s.app_id = ? AND e.sequence_id >= ? "
                    "ORDER BY e.sequence_id",
                    (partition_key, app_id, start),
                )
            ]
            _check_dense(path, (partition_key, app_id), seqs, start)
    _fold_bodies(codec, (partition_key, app_id), rows, start, result)
    return len(rows)


def fold_tail(
    db: sqlite3.Connection,
    codec: Codec,
    path: str,
    stream: tuple[str, str],
    stream_id: int,
    start: int,
    result: dict[str, Any],
    tail: int,
) -> tuple[int, list[Event], Event | None, bytes | None]:
    """A resume's read after its snapshot: the fold from ``start`` and the last events.

    Folds the stream (``stream_id`` in the ``streams`` table) from ``start``
    onto ``result``, as ``fold_stream``, in one statement that also brings
    the rows a resume needs next: returns the last sequence id (``start - 1``
    when nothing follows), the events ``last - tail + 1 .. last`` (decoded
    whole), the stream's first event (found in the same rows or with one
    more seek; ``None`` if it has none) and the last event's hash (``None``
    if ``last`` is -1). Dense where ``fold_stream`` and ``read_stream`` would
    be: a hole raises ``StoreCorruptError``.
    """
    tail = max(tail, 0)
    low = max(0, start - tail - 1)  # enough rows before ``start`` for a short tail's window
    rows = db.execute(
        "SELECT body, sequence_id, hash FROM events WHERE stream_id = ? AND sequence_id >= ? "
        "ORDER BY sequence_id",
        (stream_id, low),
    ).fetchall()
    after = bisect.bisect_left(rows, start, key=_sequence_of)
    count = len(rows) - after
    if count and (rows[after][1] != start or rows[-1][1] != start + count - 1):
        _check_dense(path, stream, [row[1] for row in rows[after:]], start)
    _fold_bodies(codec, stream, list(zip(map(_body_of, rows[after:]))), start, result)
    last = start + count - 1
    if last < 0:
        return last, [], None, None
    if tail <= 0:
        return last, [], None, rows[-1][2]
    # the window and the row before it (its hash is the window's first prev_hash)
    before = max(0, last - tail)
    at = bisect.bisect_left(rows, before, key=_sequence_of)
    _check_dense(path, stream, [row[1] for row in rows[at:]], before)
    prev = b""
    if rows[at][1] < last - tail + 1:
        prev = rows[at][2]
        at += 1
    prevs = [prev] + [row[2] for row in rows[at:-1]]
    window = codec.decode_rows([(b, *stream, seq, h) for b, seq, h in rows[at:]], prevs)
    first: Event | None = None
    if window[0].sequence_id == 0:
        first = window[0]
    else:
        found = db.execute(
            "SELECT body, sequence_id, hash FROM events WHERE stream_id = ? AND sequence_id = 0",
            (stream_id,),
        ).fetchone()
        if found is not None:
            first = codec.decode_rows([(found[0], *stream, 0, found[2])], [b""])[0]
    return last, window, first, rows[-1][2]


def _sequence_of(row: Sequence[Any]) -> int:
    return int(row[1])


def _body_of(row: Sequence[Any]) -> Any:
    return row[0]


def _fold_bodies(
    codec: Codec,
    stream: tuple[str, str],
    rows: Sequence[Sequence[Any]],
    start: int,
    result: dict[str, Any],
) -> None:
    """Fold stored bodies ``rows`` (``(body,)``, sequence ids from ``start``) onto ``result``."""
    index = codec.fold_deltas(rows, result)
    while index < len(rows):  # an older body: upcast it, then go on fast
        event = codec.decode_body(
            rows[index][0],
            partition_key=stream[0],
            app_id=stream[1],
            sequence_id=start + index,
            prev_hash="",
            hash="",
        )
        apply_event(result, event)
        index = codec.fold_deltas(rows, result, index + 1)


def verify(
    db: sqlite3.Connection,
    codec: Codec,
    key: bytes | None,
    targets: Sequence[StreamId],
) -> BrokenLink | None:
    """Walk the chain of each stream in ``targets``; name the first broken link.

    A missing sequence id and a stored body that no longer decodes are broken
    links too.
    """
    for stream in targets:
        prev = ""
        want = 0
        rows = db.execute(
            "SELECT e.sequence_id, e.hash, e.body FROM events e "
            "JOIN streams s ON s.id = e.stream_id "
            "WHERE s.partition_key = ? AND s.app_id = ? ORDER BY e.sequence_id",
            stream,
        ).fetchall()
        for chunk_start in range(0, len(rows), 1000):
            events: list[Event] = []
            first = want
            first_prev = prev
            for seq, digest, body in rows[chunk_start : chunk_start + 1000]:
                if seq != want:
                    broken = verify_events(
                        events, prev_hash=first_prev, first_sequence=first, key=key
                    )
                    return broken or BrokenLink(
                        partition_key=stream.partition_key,
                        app_id=stream.app_id,
                        sequence_id=min(want, seq),
                        reason=(
                            f"sequence_id {want} is missing: the stream goes from "
                            f"{want - 1} to {seq} (an event was deleted)"
                            if seq > want
                            else f"sequence_id {seq} has more than one row "
                            "(a row was copied or inserted)"
                        ),
                    )
                hash_hex = bytes(digest).hex() if isinstance(digest, bytes) else str(digest)
                try:
                    event = codec.decode_body(
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
                        events, prev_hash=first_prev, first_sequence=first, key=key
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
            broken = verify_events(events, prev_hash=first_prev, first_sequence=first, key=key)
            if broken is not None:
                return broken
    return None
