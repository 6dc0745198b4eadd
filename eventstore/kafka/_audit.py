"""``verify`` for a log on Kafka: every stream's chain, and its heads against signed checkpoints.

The events are read as every reader reads them (``KafkaEventStore``: first
chained record per ``(stream, sequence_id)``, the fence rule); each kept
event's hash is recomputed (``compute_hash``, under the HMAC key if given).

The checkpoints topic (``<topic>.checkpoints``) holds one chain per writer
(``_signing``; the outbox relay's chain has writer ``""``). For each chain
``audit_kafka`` keeps one record per checkpoint sequence (a byte-identical
copy is a redelivery and is ignored; two different bodies under one sequence
are a finding: a forged or replayed checkpoint), and replays it with
``replay``: dense sequences from 1, each linked to the digest of the one
before, each signed by the key its ``key_id`` names (``KeyMismatchError``
when none of ``public_keys`` is that key), and the latest root equal to the
heads the chain recorded. A record that claims the next sequence but carries
an older checkpoint's body is named as an old checkpoint replayed.

Then every head any checkpoint of any chain signed is held against the
topic: the stream exists, reaches at least that ``sequence_id``, and its
event there has the signed hash. So a deleted whole stream, a cut tail and a
rewritten stream (hashes recomputed without the key) are each named with the
writer and checkpoint that prove it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from .._audit import AuditReport, Finding
from .._chain import compute_hash
from .._checkpoints import Replayed, replay
from .._errors import StoreUnavailableError
from ._relay import ANCHOR_KEY
from ._signing import AnchorRecord, decode_anchor

__all__ = ["KafkaAuditReport", "audit_kafka", "check_chains", "read_anchor_records"]


class KafkaAuditReport(AuditReport, kw_only=True):
    """An ``AuditReport`` of a Kafka log: ``writers`` maps each checkpoint chain to its
    latest sequence; ``checkpoints`` counts the distinct checkpoints read."""

    writers: dict[str, int] = {}
    checkpoints: int = 0
    skipped_records: int = 0


async def read_anchor_records(
    bootstrap_servers: str | list[str], topic: str, *, read_timeout: float = 30.0
) -> tuple[list[AnchorRecord], list[Finding]]:
    """Every checkpoint record of ``topic`` (all partitions, in offset order).

    Records under another key are not checkpoints and are left alone; one
    under the checkpoint key whose value is not a checkpoint is a finding.
    Raises ``StoreUnavailableError`` if the topic does not exist or cannot be
    read within ``read_timeout`` seconds.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        client_id="statelog-verify",
    )
    records: list[AnchorRecord] = []
    findings: list[Finding] = []
    try:
        async with asyncio.timeout(read_timeout):
            await consumer.start()
            if topic not in await consumer.topics():
                raise StoreUnavailableError(f"the checkpoints topic {topic!r} does not exist")
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            # Some brokers (Tansu) list the base offset of the last batch plus one as
            # the end: the high watermark each fetch reports moves the end up.
            ends = {tp: int(end) for tp, end in (await consumer.end_offsets(tps)).items()}
            positions = dict.fromkeys(tps, 0)
            while any(positions[tp] < ends[tp] for tp in tps):
                wanted = [tp for tp in tps if positions[tp] < ends[tp]]
                batch = await consumer.getmany(*wanted, timeout_ms=200)
                for tp, items in batch.items():
                    for item in items:
                        positions[tp] = item.offset + 1
                        if item.key != ANCHOR_KEY:
                            continue
                        try:
                            where = {"partition": tp.partition, "offset": item.offset}
                            records.append(decode_anchor(item.value, **where))
                        except ValueError as exc:
                            findings.append(
                                Finding(
                                    stream=None,
                                    sequence_id=None,
                                    reason=f"record {topic}[{tp.partition}]@{item.offset} "
                                    f"is not a checkpoint: {exc}",
                                )
                            )
                    ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)
    except (KafkaError, OSError, TimeoutError) as exc:
        if isinstance(exc, StoreUnavailableError):
            raise
        raise StoreUnavailableError(
            f"cannot read the checkpoints topic {topic!r} within {read_timeout} s: {exc!r}"
        ) from exc
    finally:
        await consumer.stop()
    return records, findings


def _label(writer: str) -> str:
    return f"writer {writer!r}" if writer else "the relay's chain"


def check_chains(
    records: Iterable[AnchorRecord], public_keys: Sequence[Any] = ()
) -> tuple[dict[str, Replayed], list[Finding]]:
    """Replay each writer's chain (see the module doc); findings name the writer."""
    by_writer: dict[str, dict[int, AnchorRecord]] = {}
    findings: list[Finding] = []
    for record in records:
        chain = by_writer.setdefault(record.writer, {})
        known = chain.get(record.sequence)
        if known is None:
            chain[record.sequence] = record
        elif known.signed != record.signed:
            findings.append(
                Finding(
                    stream=None,
                    sequence_id=None,
                    reason=f"{_label(record.writer)}: checkpoint #{record.sequence} at offset "
                    f"{record.offset} differs from the one at offset {known.offset} (a forged "
                    "checkpoint, or an old one replayed under this number)",
                )
            )
    chains: dict[str, Replayed] = {}
    for writer in sorted(by_writer):
        chain = by_writer[writer]
        replayed = replay(((seq, chain[seq].signed) for seq in sorted(chain)), public_keys)
        findings += [
            Finding(stream=None, sequence_id=None, reason=f"{_label(writer)}: {problem}")
            for problem in replayed.problems
        ]
        chains[writer] = replayed
    return chains, findings


def _audit_events(
    events: Iterable[Any],
    key: bytes | None,
    chains: dict[str, Replayed],
    report: KafkaAuditReport,
    only: Any,
) -> None:
    """Runs on a worker thread: each stream's chain, then the signed heads."""
    last: dict[tuple[str, str], int] = {}
    prev: dict[tuple[str, str], str] = {}
    broken: set[tuple[str, str]] = set()
    # every head any checkpoint signed: stream -> {sequence_id: [(hash, writer, number)]}
    claims: dict[tuple[str, str], dict[int, list[tuple[str, str, int]]]] = {}
    for writer, replayed in chains.items():
        for stream, signed in replayed.signed.items():
            if only(stream):
                for seq, (head_hash, number) in signed.items():
                    claims.setdefault(stream, {}).setdefault(seq, []).append(
                        (head_hash, writer, number)
                    )
    hash_at: dict[tuple[tuple[str, str], int], str] = {}
    for event in events:
        stream = (event.partition_key, event.app_id)
        if not only(stream):
            continue
        report.events += 1
        want = last.get(stream, -1) + 1
        if stream not in last:
            report.streams += 1
        last[stream] = event.sequence_id
        reason = None
        if stream in broken:
            pass  # one finding per stream: after the first break, the rest is unproven
        elif event.sequence_id != want:
            reason = f"is missing: the topic goes on at sequence_id {event.sequence_id}"
        elif event.prev_hash != prev.get(stream, ""):
            reason = "its prev_hash does not link"
        elif not hmac.compare_digest(compute_hash(event, key), event.hash):
            reason = "its hash does not match its content and its predecessor's hash"
        if reason is not None:
            broken.add(stream)
            report.findings.append(Finding(stream=stream, sequence_id=want, reason=reason))
        prev[stream] = event.hash
        if event.sequence_id in claims.get(stream, ()):
            hash_at[stream, event.sequence_id] = event.hash
    for stream in sorted(claims):
        held = claims[stream]
        top = max(held)
        head_hash, writer, number = held[top][0]
        proof = f"checkpoint #{number} of {_label(writer)}"
        found = last.get(stream)
        if found is None:
            report.findings.append(
                Finding(
                    stream=stream,
                    sequence_id=None,
                    reason=f"is missing: {proof} recorded it up to sequence_id {top} (a whole "
                    "stream was deleted)",
                )
            )
            continue
        if found < top:
            report.findings.append(
                Finding(
                    stream=stream,
                    sequence_id=found + 1,
                    reason=f"is missing: the stream ends at sequence_id {found}, {proof} "
                    f"recorded it up to {top} (its last events were deleted)",
                )
            )
        for seq in sorted(held):
            if seq > found:
                break
            mismatch = [c for c in held[seq] if c[0] != hash_at.get((stream, seq))]
            if mismatch:
                head_hash, writer, number = mismatch[0]
                report.findings.append(
                    Finding(
                        stream=stream,
                        sequence_id=seq,
                        reason=f"has hash {str(hash_at.get((stream, seq)))[:16]}..., checkpoint "
                        f"#{number} of {_label(writer)} recorded {head_hash[:16]}... (the "
                        "stream was rewritten)",
                    )
                )
                break  # the first rewritten event names it; what follows is unproven
    report.unsigned_events = sum(
        max(0, seq - (max(claims[s]) if s in claims else -1)) for s, seq in last.items()
    )


async def audit_kafka(
    store: Any,
    *,
    checkpoints_topic: str | None = None,
    hmac_key: bytes | None = None,
    public_keys: Iterable[Any] = (),
    partition_key: str | None = None,
    app_id: str | None = None,
    read_timeout: float = 30.0,
) -> KafkaAuditReport:
    """Verify the log of a connected ``KafkaEventStore`` (see the module doc).

    ``checkpoints_topic`` defaults to ``<topic>.checkpoints``. With
    ``public_keys`` the topic must exist and hold at least one checkpoint;
    without, a missing topic means the chains alone are checked.
    """
    from ._signing import checkpoints_topic_for

    keys = list(public_keys)
    topic = checkpoints_topic or checkpoints_topic_for(store.topic)
    report = KafkaAuditReport(signed=bool(keys))
    try:
        records, findings = await read_anchor_records(
            store.bootstrap_servers, topic, read_timeout=read_timeout
        )
    except StoreUnavailableError:
        if keys:
            raise
        records, findings = [], []
    report.findings += findings
    chains, findings = await asyncio.to_thread(check_chains, records, keys)
    report.findings += findings
    report.writers = {
        writer: replayed.latest.sequence
        for writer, replayed in chains.items()
        if replayed.latest is not None
    }
    report.checkpoints = sum(report.writers.values())
    if report.writers:
        report.checkpoint = max(report.writers.values())
    elif keys:
        report.findings.append(
            Finding(
                stream=None,
                sequence_id=None,
                reason=f"{topic!r} holds no signed checkpoint, but a public key was given",
            )
        )

    def only(stream: tuple[str, str]) -> bool:
        return (partition_key is None or stream[0] == partition_key) and (
            app_id is None or stream[1] == app_id
        )

    kept = await store.read_all()
    await asyncio.to_thread(
        _audit_events, (rec.event for rec in kept), hmac_key, chains, report, only
    )
    report.skipped_records = len(store._index.skipped)
    return report
