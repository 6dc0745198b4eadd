"""Export streams to a JSON-lines file and import them back, hashes intact.

The file format (version 1):

* line 1 is a header, ``{"statelog_export":1}``;
* every other line is one whole event in the JSON wire encoding
  (``JSON.encode_event``), with its ``prev_hash`` and ``hash``;
* streams follow one another in creation order, each in sequence order.

Every stream the store lists (``store.streams()``: the SQLite store's
``streams`` table, not the streams' first events) is exported whole from
sequence_id 0, or not at all: a stream whose first events, or all of them,
were deleted from the store raises ``StoreCorruptError`` naming the stream
and the missing sequence id, and nothing is left at the path.

Version 2 adds the signed checkpoints of the log (``signed_heads``): the
header is ``{"statelog_export":2,"complete":true}`` (``complete``: every
stream of the log is in the file), and after the events one line per
checkpoint, oldest first::

    {"statelog_checkpoint":{"sequence":1,"body":"<canonical JSON>","signature":"<hex>"}}

so the file is verifiable offline with the public key alone
(``audit_export``; ``statelog verify --export FILE --public-key K.pub``).
A file without checkpoints is written as version 1, byte for byte as before.

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
from typing import IO, Any

import msgspec

from ._audit import AuditReport, Finding, check_heads
from ._base import EventStore
from ._chain import compute_hash, validate_batch
from ._checkpoints import SignedCheckpoint, replay
from ._codec import JSON, Codec
from ._errors import (
    CheckpointError,
    ConcurrencyError,
    ConfigError,
    EncodingError,
    EventTooLargeError,
    IntegrityError,
    StoreCorruptError,
)
from ._event import Event, StreamId

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "audit_export",
    "export_streams",
    "import_streams",
    "iter_checkpoints",
    "iter_export",
]

#: The export file format this statelog writes (2 with checkpoints) and reads (1, 2).
EXPORT_FORMAT_VERSION = 2
_READS = (1, 2)
_HEADER_KEY = "statelog_export"
_CHECKPOINT_KEY = "statelog_checkpoint"
_CHECKPOINT_PREFIX = b'{"' + _CHECKPOINT_KEY.encode()
_HEADER = msgspec.json.encode({_HEADER_KEY: 1}) + b"\n"


class _CheckpointLine(msgspec.Struct, frozen=True):
    sequence: int
    body: str
    signature: str


_READ_CHUNK = 10_000
_IMPORT_BATCH = 1_000


async def export_streams(
    store: EventStore,
    path: str | os.PathLike[str],
    *,
    streams: Iterable[tuple[str, str]] | None = None,
    checkpoints: Iterable[tuple[int, SignedCheckpoint]] | None = None,
) -> int:
    """Write streams of ``store`` to ``path`` as JSON lines; return the number of events.

    ``checkpoints``: the log's signed checkpoints, written after the events
    (format version 2, see the module doc).

    ``streams`` limits the export to those ``(partition_key, app_id)`` pairs
    (still in the store's creation order; a pair the store does not hold adds
    nothing). The file is written beside ``path`` and renamed into place, so a
    crash never leaves half an export under the final name.
    """
    targets = await store.streams()
    everything = len(targets)
    if streams is not None:
        wanted = {StreamId(pk, app) for pk, app in streams}
        targets = [s for s in targets if s in wanted]
    signed = list(checkpoints or ())
    header = _HEADER
    if signed:
        complete = len(targets) == everything
        header = msgspec.json.encode({_HEADER_KEY: 2, "complete": complete}) + b"\n"
    final = os.fspath(path)
    partial = f"{final}.partial"
    count = 0
    out: IO[bytes] = await asyncio.to_thread(open, partial, "wb")
    try:
        await asyncio.to_thread(out.write, header)
        for stream in targets:
            start = 0
            while True:
                try:
                    events = await store.read(
                        stream.partition_key,
                        stream.app_id,
                        from_sequence=start,
                        to_sequence=start + _READ_CHUNK - 1,
                    )
                except StoreCorruptError as exc:  # a reader that checks density says where
                    raise StoreCorruptError(
                        f"cannot export stream {tuple(stream)!r}: {exc} (nothing exported)"
                    ) from exc
                if not events:
                    break
                _check_dense(stream, events, start)
                data = b"".join(JSON.encode_event(event) + b"\n" for event in events)
                await asyncio.to_thread(out.write, data)
                count += len(events)
                start = events[-1].sequence_id + 1
            if start == 0:
                raise StoreCorruptError(
                    f"cannot export stream {tuple(stream)!r}: the store lists it but holds "
                    "none of its events (every event was deleted; nothing exported)"
                )
        if signed:
            lines = b"".join(
                msgspec.json.encode(
                    {
                        _CHECKPOINT_KEY: _CheckpointLine(
                            sequence, item.body.decode(), item.signature.hex()
                        )
                    }
                )
                + b"\n"
                for sequence, item in signed
            )
            await asyncio.to_thread(out.write, lines)
        await asyncio.to_thread(_sync_close, out)
        await asyncio.to_thread(os.replace, partial, final)
    except BaseException:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return count


def _check_dense(stream: StreamId, events: list[Event], start: int) -> None:
    """A chunk read from ``start`` must hold ``start, start + 1, ...``: an export never
    skips a stream's missing events (its first ones, say) without a word."""
    first, last = events[0].sequence_id, events[-1].sequence_id
    if first == start and last == start + len(events) - 1:
        return
    want = start
    for event in events:
        if event.sequence_id != want:
            break
        want += 1
    raise StoreCorruptError(
        f"cannot export stream {tuple(stream)!r}: it has no event at sequence_id {want} "
        f"(the store goes on at {event.sequence_id}: events were deleted; nothing exported)"
    )


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
            if line.startswith(_CHECKPOINT_PREFIX):
                continue
            yield _decode_line(name, number, line)


def iter_checkpoints(path: str | os.PathLike[str]) -> Iterator[tuple[int, SignedCheckpoint]]:
    """Yield the signed checkpoints of an export file ``(sequence, signed)``, oldest first."""
    name = os.fspath(path)
    decoder = msgspec.json.Decoder(dict[str, _CheckpointLine])
    with open(name, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.startswith(_CHECKPOINT_PREFIX):
                continue
            try:
                item = decoder.decode(line)[_CHECKPOINT_KEY]
                signed = SignedCheckpoint(
                    body=item.body.encode(), signature=bytes.fromhex(item.signature)
                )
            except (msgspec.DecodeError, KeyError, ValueError) as exc:
                raise EncodingError(f"{name}:{number}: malformed checkpoint line: {exc}") from exc
            yield item.sequence, signed


def _is_complete(path: str) -> bool:
    with open(path, "rb") as lines:
        first = lines.readline()
    try:
        header = msgspec.json.decode(first)
    except msgspec.DecodeError:
        return False
    return isinstance(header, dict) and header.get("complete") is True


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
    if version not in _READS:
        raise EncodingError(
            f"{name}:1: export format version {version!r}, "
            f"this statelog reads versions {', '.join(map(str, _READS))}",
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


async def import_streams(
    store: EventStore, path: str | os.PathLike[str], *, public_keys: Iterable[Any] = ()
) -> int:
    """Append the streams in an export file to ``store``; return the number of events.

    The whole file is checked first: each stream must be dense and re-seal under
    the store's HMAC key to exactly the hashes in the file, else
    ``IntegrityError`` names the stream and sequence id and nothing of the file
    is written. Events the store already holds (same hashes: an import that ran
    before, or was interrupted) are skipped, so importing is idempotent and
    resumable; a store whose stream holds *other* events raises
    ``ConcurrencyError``. Then each stream is appended in batches with the right
    ``expected_sequence``.

    Signed checkpoints: with ``public_keys`` (or, when the file carries
    checkpoints, the public half of the store's ``signing_key``) the file's
    checkpoints must verify under them and every stream must end exactly at
    the head the latest one signed, else ``CheckpointError``; a file with
    checkpoints and no key to check them raises ``ConfigError``. A file with
    neither checkpoints nor keys is checked by its chain only: an unkeyed
    chain can be recomputed by anyone (docs/operations.md).
    """
    await _check_signed(store, os.fspath(path), list(public_keys))
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


def _audit_export(path: str, key: bytes | None, public_keys: list[Any]) -> AuditReport:
    """Runs on a worker thread: see ``audit_export``."""
    report = AuditReport(signed=bool(public_keys))
    replayed = replay(iter_checkpoints(path), public_keys)
    report.findings += [Finding(stream=None, sequence_id=None, reason=p) for p in replayed.problems]
    if replayed.latest is not None:
        report.checkpoint = replayed.latest.sequence
        report.checkpoint_digest = replayed.latest_digest
        report.checkpoint_digests = replayed.digests
        report.checkpoint_position = replayed.latest.position
    elif public_keys:
        report.findings.append(
            Finding(
                stream=None,
                sequence_id=None,
                reason="the file carries no signed checkpoint, but a public key was given",
            )
        )
    last: dict[tuple[str, str], int] = {}
    prev: dict[tuple[str, str], str] = {}
    wanted = {stream: seq for stream, (seq, _) in replayed.heads.items()}
    hash_at: dict[tuple[str, str], str] = {}
    seen: dict[tuple[tuple[str, str], int], str] = {}  # at every head a checkpoint signed
    for event in iter_export(path):
        stream = (event.partition_key, event.app_id)
        want = last.get(stream, -1) + 1
        report.events += 1
        if stream not in last:
            report.streams += 1
        if event.sequence_id != want:
            report.findings.append(
                Finding(
                    stream=stream,
                    sequence_id=want,
                    reason=f"is missing: the file goes on at sequence_id {event.sequence_id}",
                )
            )
        elif event.prev_hash != prev.get(stream, ""):
            report.findings.append(
                Finding(stream=stream, sequence_id=want, reason="its prev_hash does not link")
            )
        elif not hmac.compare_digest(compute_hash(event, key), event.hash):
            report.findings.append(
                Finding(
                    stream=stream,
                    sequence_id=want,
                    reason="its hash does not match its content and its predecessor's hash",
                )
            )
        last[stream] = event.sequence_id
        prev[stream] = event.hash
        if wanted.get(stream) == event.sequence_id:
            hash_at[stream] = event.hash
        if event.sequence_id in replayed.signed.get(stream, ()):
            seen[stream, event.sequence_id] = event.hash
    if replayed.latest is not None:
        expected = replayed.heads
        if not _is_complete(path):  # a partial export: only its own streams are held to it
            expected = {s: h for s, h in expected.items() if s in last}
        report.findings += check_heads(expected, last, hash_at, replayed.latest.sequence)
        for stream in sorted(set(expected) & set(replayed.signed)):
            for seq, (signed_hash, number) in sorted(replayed.signed[stream].items()):
                if seq != expected[stream][0] and seen.get((stream, seq)) != signed_hash:
                    report.findings.append(
                        Finding(
                            stream=stream,
                            sequence_id=seq,
                            reason=f"is not the event checkpoint #{number} signed (the "
                            "stream was cut back or rewritten since)",
                        )
                    )
        report.unsigned_events = sum(
            max(0, seq - expected[s][0]) if s in expected else seq + 1 for s, seq in last.items()
        )
    return report


async def audit_export(
    path: str | os.PathLike[str],
    *,
    hmac_key: bytes | None = None,
    public_keys: Iterable[Any] = (),
) -> AuditReport:
    """Verify an export file offline: every stream's chain, and with the checkpoints it
    carries (signatures checked under ``public_keys``) every stream's head."""
    return await asyncio.to_thread(_audit_export, os.fspath(path), hmac_key, list(public_keys))


async def _check_signed(store: EventStore, path: str, public_keys: list[Any]) -> None:
    """The import's signature policy (see ``import_streams``)."""
    has_checkpoints = await asyncio.to_thread(lambda: any(True for _ in iter_checkpoints(path)))
    keys = list(public_keys)
    signing_key = getattr(store, "signing_key", None)
    if not keys and signing_key is not None and has_checkpoints:
        keys = [signing_key.public_key()]
    if not keys:
        if has_checkpoints:
            raise ConfigError(
                f"{path!r} carries signed checkpoints: give the public key that signed them "
                "(--public-key) so they are checked (nothing was imported)"
            )
        return
    report = await audit_export(path, hmac_key=store.hmac_key, public_keys=keys)
    problems = list(report.findings)
    if report.unsigned_events:
        problems.append(
            Finding(
                stream=None,
                sequence_id=None,
                reason=f"{report.unsigned_events} events of the file are after its latest "
                "signed checkpoint",
            )
        )
    if problems:
        raise CheckpointError(
            report.checkpoint or 0,
            f"{problems[0]} ({len(problems)} problems; nothing was imported)",
        )
