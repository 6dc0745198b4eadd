"""SIGKILL a process while it saves snapshots: no half snapshot, pruning stays whole."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from statelog.eventstore import SnapshotStore

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import asyncio, sys
from statelog.eventstore import Snapshot, SnapshotStore

def state_at(seq):
    return {f"k{i}": [seq, "x" * 40, {"i": i}] for i in range(300)} | {"seq": seq}

async def main(path, start):
    async with SnapshotStore(path, keep_last=3) as snaps:
        seq = start
        while True:
            await snaps.save(Snapshot(partition_key="p", app_id="a", sequence_id=seq,
                                      state=state_at(seq), position=seq + 1,
                                      event_hash=f"h{seq}"))
            if seq == start:
                print("ready", flush=True)
            seq += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def state_at(seq: int) -> dict[str, object]:
    return {f"k{i}": [seq, "x" * 40, {"i": i}] for i in range(300)} | {"seq": seq}


async def inspect(path: Path) -> int:
    """Open after a kill: every snapshot present decodes and is whole; return the newest."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped (half-written) snapshot would raise here
        async with SnapshotStore(path, keep_last=3) as snaps:
            stored = await snaps.sequences("p", "a")
            assert 1 <= len(stored) <= 3, stored
            seqs = [s for s, _ in stored]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            for seq in seqs:
                snap = await snaps.load("p", "a", max_sequence=seq)
                assert snap is not None and snap.sequence_id == seq
                assert snap.state == state_at(seq)
                assert (snap.position, snap.event_hash) == (seq + 1, f"h{seq}")
            return seqs[-1]


def test_sigkill_while_saving_leaves_whole_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    rng = random.Random(1234)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    start = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(start)],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        newest = asyncio.run(inspect(path))
        assert newest >= start
        start = newest + 1
