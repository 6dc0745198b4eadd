"""Snapshots cannot lie: a writer with a signing key seals its snapshots with a MAC
derived from it, so a snapshot forged without the key (state edited, the unkeyed
digest recomputed) is skipped on resume and the state rebuilt from the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from statelog import ApplicationBuilder, State, action, default
from statelog.eventstore import SnapshotSkippedWarning, generate_key_files
from statelog.eventstore._snapshots import _digest


@action(reads=["n"], writes=["n"])
def count(state: State) -> State:
    return state.increment(n=1)


def builder(db: Path, key: str | None) -> ApplicationBuilder:
    b = (
        ApplicationBuilder()
        .with_actions(count=count)
        .with_transitions(("count", "count", default))
        .with_identifiers(app_id="counter")
        .with_store(db)
        .with_snapshots(every=10)
        .initialize_from(default_state={"n": 0}, default_entrypoint="count")
    )
    return b if key is None else b.with_signing_key(key)


def forge_latest_snapshot(db: Path) -> None:
    conn = sqlite3.connect(db)
    pk, app, seq, position, event_hash = conn.execute(
        "SELECT partition_key, app_id, sequence_id, position, event_hash FROM snapshots "
        "ORDER BY sequence_id DESC LIMIT 1"
    ).fetchone()
    state = msgspec.msgpack.encode({"n": 9999})
    digest = _digest(None, (pk, app, seq, position, event_hash, state))
    conn.execute(
        "UPDATE snapshots SET state = ?, digest = ? WHERE sequence_id = ?", (state, digest, seq)
    )
    conn.commit()
    conn.close()


async def run(db: Path, key: str | None, steps: int) -> int:
    app = await builder(db, key).abuild()
    async with app:
        for _ in range(steps):
            await app.astep()
        n: int = app.state["n"]
    return n


async def test_a_forged_snapshot_is_skipped_on_resume_with_a_signing_key(tmp_path: Path) -> None:
    key, _ = generate_key_files(tmp_path / "key")
    db = tmp_path / "log.db"
    assert await run(db, key, 25) == 25
    forge_latest_snapshot(db)
    with pytest.warns(SnapshotSkippedWarning, match="checksum does not match"):
        app = await builder(db, key).abuild()
    async with app:
        assert app.state["n"] == 25  # from an older snapshot and the log, not 9999


async def test_without_a_key_a_forged_snapshot_is_the_documented_limit(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    assert await run(db, None, 25) == 25
    forge_latest_snapshot(db)
    app = await builder(db, None).abuild()
    async with app:
        assert app.state["n"] == 9999
    text = " ".join((Path(__file__).parents[2] / "docs" / "operations.md").read_text().split())
    assert (
        "a forged snapshot that kept the right `event_hash` and recomputed its digest is "
        "used on resume" in text
    )
