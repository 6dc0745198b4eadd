"""Exports carry the signed checkpoints: verifiable offline with the public key alone,
and an import checks them (and refuses what they do not cover)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from statelog import CheckpointError, ConfigError
from statelog.eventstore import (
    JSON,
    Event,
    SQLiteEventStore,
    audit_export,
    export_streams,
    generate_key_files,
    import_streams,
    iter_checkpoints,
    iter_export,
    load_public_key,
    seal,
)
from statelog.eventstore.sqlite._checkpoints import read_checkpoints

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def events(app_id: str, start: int, stop: int) -> list[Event]:
    return [
        Event(
            partition_key="p",
            app_id=app_id,
            sequence_id=seq,
            kind="action_completed",
            ops=[{"op": "set", "key": "balance", "value": seq}],
        )
        for seq in range(start, stop)
    ]


async def signed_export(tmp_path: Path) -> tuple[Path, Path, str]:
    private, public = generate_key_files(tmp_path / "key")
    db = tmp_path / "log.db"
    async with SQLiteEventStore(db, signing_key=private) as store:
        await store.append(events("a", 0, 20), expected_sequence=-1)
        await store.append(events("b", 0, 5), expected_sequence=-1)
    conn = sqlite3.connect(db)
    checkpoints = read_checkpoints(conn)
    conn.close()
    out = tmp_path / "out.jsonl"
    async with SQLiteEventStore(db, read_only=True) as store:
        assert await export_streams(store, out, checkpoints=checkpoints) == 25
    return db, out, public


def forge_tail(source: Path, target: Path) -> None:
    """Append an event with a recomputed SHA-256 hash to stream a (balance 10**9)."""
    lines = source.read_bytes().splitlines()
    a_last = max(i for i, line in enumerate(lines) if b'"app_id":"a"' in line)
    last = JSON.decode_event(lines[a_last])
    (forged,) = seal(
        [
            msgspec.structs.replace(
                last,
                sequence_id=last.sequence_id + 1,
                ops=[{"op": "set", "key": "balance", "value": 10**9}],
            )
        ],
        last.hash,
    )
    lines.insert(a_last + 1, JSON.encode_event(forged))
    target.write_bytes(b"\n".join(lines) + b"\n")


async def test_an_export_carries_the_checkpoints_and_verifies_offline(tmp_path: Path) -> None:
    _, out, public = await signed_export(tmp_path)
    assert out.read_bytes().startswith(b'{"statelog_export":2,"complete":true}\n')
    assert [seq for seq, _ in iter_checkpoints(out)] == [1]
    assert len(list(iter_export(out))) == 25
    report = await audit_export(out, public_keys=[load_public_key(public)])
    assert report.ok and report.signed and report.checkpoint == 1
    assert (report.streams, report.events, report.unsigned_events) == (2, 25, 0)


async def test_a_truncated_export_is_named_offline(tmp_path: Path) -> None:
    _, out, public = await signed_export(tmp_path)
    lines = out.read_bytes().splitlines()
    kept = [line for line in lines if b'"app_id":"a","sequence_id":19' not in line]
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join(kept) + b"\n")
    report = await audit_export(cut, public_keys=[load_public_key(public)])
    assert [str(f) for f in report.findings] == [
        "stream ('p', 'a') sequence_id 19 is missing: the stream ends at sequence_id 18, "
        "checkpoint #1 recorded it up to 19 (its last events were deleted)"
    ]


async def test_a_forged_tail_is_refused_by_a_signed_import(tmp_path: Path) -> None:
    db, out, public = await signed_export(tmp_path)
    forged = tmp_path / "forged.jsonl"
    forge_tail(out, forged)
    key = load_public_key(public)
    report = await audit_export(forged, public_keys=[key])
    assert report.ok and report.unsigned_events == 1  # chained, but not signed
    async with SQLiteEventStore(db) as store:
        with pytest.raises(CheckpointError, match="1 events of the file are after its latest"):
            await import_streams(store, forged, public_keys=[key])
        with pytest.raises(ConfigError, match="carries signed checkpoints"):
            await import_streams(store, forged)  # and no key to check them
        assert await store.last_sequence("p", "a") == 19  # nothing was imported


async def test_an_unsigned_forged_tail_is_the_documented_limit(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    async with SQLiteEventStore(db) as store:
        await store.append(events("a", 0, 20), expected_sequence=-1)
        out = tmp_path / "out.jsonl"
        await export_streams(store, out)
        forged = tmp_path / "forged.jsonl"
        forge_tail(out, forged)
        assert await import_streams(store, forged) == 1  # accepted: nobody signed anything
        forged_back = (await store.read("p", "a", from_sequence=20))[0]
        assert forged_back.ops == [{"op": "set", "key": "balance", "value": 10**9}]
    text = " ".join(DOCS.read_text().split())
    assert "An unkeyed, unsigned file can still append *valid-looking* forged events" in text
