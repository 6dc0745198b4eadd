"""What ``verify`` finds: a report of named findings, and the checks that need no I/O.

A ``Finding`` names the stream (a ``(partition_key, app_id)`` pair, printed as
a quoted tuple so ``('a', 'b/c')`` and ``('a/b', 'c')`` never look alike), the
sequence id when there is one, and what is wrong. ``check_heads`` compares
the heads the latest signed checkpoint recorded with the heads found in a log
(a SQLite file or an export): a tail deleted, a whole stream deleted, or a
stream rewritten with recomputed hashes shows there and nowhere else.

What each mode can know is spelled out in docs/operations.md ("What verify can
and cannot detect"); ``UNKEYED_LIMITS`` is the same list, printed by
``statelog verify`` when no key is given.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

__all__ = ["UNKEYED_LIMITS", "AuditReport", "Finding", "check_heads"]

#: What a log without signed checkpoints cannot show (docs/operations.md says the same).
UNKEYED_LIMITS = (
    "without signed checkpoints, verify cannot detect: deleted last events of a stream "
    "(truncation), a deleted whole stream (its events and its streams row), or a stream "
    "rewritten consistently with recomputed hashes; a forged snapshot whose digest was "
    "recomputed is found only with --deep or an HMAC key"
)


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One thing ``verify`` found wrong."""

    stream: tuple[str, str] | None
    sequence_id: int | None
    reason: str

    def __str__(self) -> str:
        where = "" if self.stream is None else f"stream {tuple(self.stream)!r} "
        if self.sequence_id is not None:
            where += f"sequence_id {self.sequence_id} "
        return f"{where}{self.reason}".strip() if where else self.reason


class AuditReport(msgspec.Struct, kw_only=True):
    """The outcome of one ``verify``: counts, the checkpoint it checked, findings."""

    streams: int = 0
    events: int = 0
    snapshots: int = 0
    checkpoint: int | None = None  # the latest checkpoint's sequence (None: none)
    checkpoint_digest: str = ""
    #: the digest of every checkpoint the replay accepted, by sequence (--expect-checkpoint)
    checkpoint_digests: dict[int, str] = msgspec.field(default_factory=dict)
    checkpoint_position: int = 0
    signed: bool = False  # the checkpoints' signatures were checked with a public key
    unsigned_events: int = 0  # events after the latest checkpoint's head of their stream
    findings: list[Finding] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def check_heads(
    expected: Mapping[tuple[str, str], tuple[int, str]],
    found_last: Mapping[tuple[str, str], int],
    found_hash_at: Mapping[tuple[str, str], str],
    checkpoint: int,
) -> list[Finding]:
    """Compare the heads checkpoint ``checkpoint`` recorded with a log's.

    ``found_last`` is each stream's last sequence id in the log, and
    ``found_hash_at`` its event hash at the sequence the checkpoint recorded
    (absent when the log has no event there).
    """
    findings = []
    for stream in sorted(expected):
        seq, head_hash = expected[stream]
        last = found_last.get(stream)
        if last is None:
            findings.append(
                Finding(
                    stream=stream,
                    sequence_id=None,
                    reason=f"is missing: checkpoint #{checkpoint} recorded it up to "
                    f"sequence_id {seq} (a whole stream was deleted)",
                )
            )
        elif last < seq:
            findings.append(
                Finding(
                    stream=stream,
                    sequence_id=last + 1,
                    reason=f"is missing: the stream ends at sequence_id {last}, checkpoint "
                    f"#{checkpoint} recorded it up to {seq} (its last events were deleted)",
                )
            )
        elif found_hash_at.get(stream) != head_hash:
            findings.append(
                Finding(
                    stream=stream,
                    sequence_id=seq,
                    reason=f"has hash {str(found_hash_at.get(stream))[:16]}..., checkpoint "
                    f"#{checkpoint} recorded {head_hash[:16]}... (the stream was rewritten)",
                )
            )
    return findings
