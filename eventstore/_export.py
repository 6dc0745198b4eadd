"""Export streams to a JSON-lines file and import them back, hashes intact.

The file format (version 1):

* line 1 is a header, ``{"statelog_export":1}``;
* every other line is one whole event in the JSON wire encoding
  (``JSON.encode_event``), with its ``prev_hash`` and ``hash``;
* streams follow one another in creation order, each in sequence order.

``iter_export`` also reads files without the header (plain event lines).
Importing re-seals every event with the target store's key and checks that the
result equals the file's hashes, so a tampered file, or a file signed with a
different HMAC key, is refused before anything of it is written. An export of
the imported store is byte-for-byte the original file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import Iterable, Iterator
from typing import IO

import msgspec

from ._base import EventStore
from ._chain import compute_hash, validate_batch
from ._codec import JSON, Codec
from ._errors import ConcurrencyError, EncodingError, EventTooLargeError, IntegrityError
from ._event import Event, StreamId

__all__ = ["EXPORT_FORMAT_VERSION", "export_streams", "import_streams", "iter_export"]

#: The export file format this statelog writes and reads.
EXPORT_FORMAT_VERSION = 1
_HEADER_KEY = "statelog_export"
_HEADER = msgspec.json.encode({_HEADER_KEY: EXPORT_FORMAT_VERSION}) + b"\n"
_READ_CHUNK = 10_000
_IMPORT_BATCH = 1_000


async def export_streams(
    store: EventStore,
    path: str | os.PathLike[str],
    *,
    streams: Iterable[tuple[str, str]] | None = None,
) -> int:
    """Write streams of ``store`` to ``path`` as JSON lines; return the number of events.

    ``streams`` limits the export to those ``(partition_key, app_id)`` pairs
    (still in the store's creation order; a pair the store does not hold adds
    nothing). The file is written beside ``path`` and renamed into place, so a
    crash never leaves half an export under the final name.
    """
    targets = await store.streams()
    if streams is not None:
        wanted = {StreamId(pk, app) for pk, app in streams}
        targets = [s for s in targets if s in wanted]
    final = os.fspath(path)
    partial = f"{final}.partial"
    count = 0
    out: IO[bytes] = await asyncio.to_thread(open, partial, "wb")
    try:
        await asyncio.to_thread(out.write, _HEADER)
        for stream in targets:
            start = 0
            while True:
                events = await store.read(
                    stream.partition_key,
                    stream.app_id,
                    from_sequence=start,
                    to_sequence=start + _READ_CHUNK - 1,
                )
                if not events:
                    break
                data = b"".join(JSON.encode_event(event) + b"\n" for event in events)
                await asyncio.to_thread(out.write, data)
                count += len(events)
                start = events[-1].sequence_id + 1
        await asyncio.to_thread(_sync_close, out)
        await asyncio.to_thread(os.replace, partial, final)
    except BaseException:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return count


def _sync_close(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


def iter_export(path: str | os.PathLike[str]) -> Iterator[Event]:
    """Yield the events of an export file in file order, upcasting older versions.

    A line that is not an event raises ``EncodingError`` (``SchemaVersionError``
    for an event from a newer statelog) whose message starts with
    ``<path>:<line>:``.
    """
    name = os.fspath(path)
    with open(name, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if number == 1 and _is_header(name, line):
                continue
            yield _decode_line(name, number, line)


def _is_header(name: str, line: bytes) -> bool:
    """Whether the first line is the export header (and a version this statelog reads)."""
    if not line.startswith(b'{"' + _HEADER_KEY.encode()):
        return False
    try:
        header = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        raise EncodingError(f"{name}:1: malformed export header: {exc}") from exc
    if not isinstance(header, dict) or _HEADER_KEY not in header:
        return False
    version = header[_HEADER_KEY]
    if version != EXPORT_FORMAT_VERSION:
        raise EncodingError(
            f"{name}:1: export format version {version!r}, "
            f"this statelog reads version {EXPORT_FORMAT_VERSION}",
            path=f"$.{_HEADER_KEY}",
        )
    return True


def _decode_line(name: str, number: int, line: bytes) -> Event:
    if not line.strip():
        raise EncodingError(f"{name}:{number}: empty line, expected an event")
    try:
        return JSON.decode_event(line)
    except EncodingError as exc:
        # Keep the class (SchemaVersionError stays one) and add where it happened.
        exc.args = (f"{name}:{number}: {exc}",)
        raise


class _Plan:
    """Import bookkeeping for one stream of the file."""

    __slots__ = ("first", "next_sequence", "overlap_hash", "prev_hash", "store_last")

    def __init__(self, first: int, prev_hash: str, store_last: int) -> None:
        self.first = first  # the file's first sequence id of this stream
        self.next_sequence = first
        self.prev_hash = prev_hash
        self.store_last = store_last  # the store's last sequence id when checked
        self.overlap_hash = ""  # the file's hash at store_last, if the file reaches it


async def import_streams(store: EventStore, path: str | os.PathLike[str]) -> int:
    """Append the streams in an export file to ``store``; return the number of events.

    The whole file is checked first: each stream must be dense and re-seal under
    the store's HMAC key to exactly the hashes in the file, else
    ``IntegrityError`` names the stream and sequence id and nothing of the file
    is written. Events the store already holds (same hashes: an import that ran
    before, or was interrupted) are skipped, so importing is idempotent and
    resumable; a store whose stream holds *other* events raises
    ``ConcurrencyError``. Then each stream is appended in batches with the right
    ``expected_sequence``.
    """
    plans = await _check_file(store, path)
    count = 0
    batch: list[Event] = []
    for event in iter_export(path):
        if event.sequence_id <= plans[event.stream].store_last:
            continue  # already in the store, identical (checked above)
        if batch and (event.stream != batch[0].stream or len(batch) >= _IMPORT_BATCH):
            count += await _append_checked(store, batch)
            batch = []
        batch.append(event)
    if batch:
        count += await _append_checked(store, batch)
    return count


async def _check_file(store: EventStore, path: str | os.PathLike[str]) -> dict[StreamId, _Plan]:
    key = store.hmac_key
    codec: Codec = getattr(store, "codec", JSON)
    plans: dict[StreamId, _Plan] = {}
    for event in iter_export(path):
        stream = event.stream
        plan = plans.get(stream)
        if plan is None:
            plan = plans[stream] = await _plan(store, stream, event.sequence_id)
        validate_batch([event], event.sequence_id - 1)  # kind, app_id, schema_version
        if event.sequence_id != plan.next_sequence:
            raise IntegrityError(
                stream,
                event.sequence_id,
                f"expected sequence_id {plan.next_sequence} in the file, "
                f"found {event.sequence_id} (nothing was imported)",
            )
        if event.prev_hash != plan.prev_hash:
            raise IntegrityError(
                stream,
                event.sequence_id,
                "prev_hash in the file does not match the previous event's hash "
                "(tampered file; nothing was imported)",
            )
        if not hmac.compare_digest(compute_hash(event, key), event.hash):
            raise IntegrityError(
                stream,
                event.sequence_id,
                "hash in the file does not match the event's content under this store's "
                "key (tampered file or a different HMAC key; nothing was imported)",
            )
        size = len(codec.encode_body(event))
        if size > store.max_event_size:
            raise EventTooLargeError(stream, event.sequence_id, size, store.max_event_size)
        if event.sequence_id == plan.store_last:
            plan.overlap_hash = event.hash
        plan.next_sequence += 1
        plan.prev_hash = event.hash
    for stream, plan in plans.items():
        # Where file and store overlap, the chain makes one comparison enough:
        # equal hashes at the end of the overlap mean equal events all along it.
        if plan.first > plan.store_last:
            continue
        end = min(plan.store_last, plan.next_sequence - 1)
        file_hash = plan.overlap_hash if end == plan.store_last else plan.prev_hash
        if file_hash != await _hash_at(store, stream, end):
            raise ConcurrencyError(stream, plan.first - 1, plan.store_last)
    return plans


async def _plan(store: EventStore, stream: StreamId, first: int) -> _Plan:
    store_last = await store.last_sequence(stream.partition_key, stream.app_id)
    if first < 0 or first > store_last + 1:
        where = f"the store's stream ends at {store_last}" if store_last >= 0 else "it is new"
        raise IntegrityError(
            stream,
            first,
            f"the file starts this stream at sequence_id {first} but {where} "
            "(nothing was imported)",
        )
    prev_hash = "" if first == 0 else await _hash_at(store, stream, first - 1)
    return _Plan(first, prev_hash, store_last)


async def _hash_at(store: EventStore, stream: StreamId, sequence_id: int) -> str:
    events = await store.read(
        stream.partition_key, stream.app_id, from_sequence=sequence_id, to_sequence=sequence_id
    )
    return events[0].hash if events else ""


async def _append_checked(store: EventStore, batch: list[Event]) -> int:
    recorded = await store.append(batch, expected_sequence=batch[0].sequence_id - 1)
    for rec, original in zip(recorded, batch, strict=True):
        if rec.event.hash != original.hash:
            raise IntegrityError(
                original.stream,
                original.sequence_id,
                "the store sealed a different hash than the file holds "
                "(the file changed during import?)",
            )
    return len(recorded)
