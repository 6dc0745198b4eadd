"""Worker processes for the tests and the bench: start, watch their JSON lines, signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from statelog.eventstore import Event, StreamId
from statelog.eventstore.kafka._wire import Fence, decode_record, fence_claim_of, fence_of
from tests.kafka_helpers import read_topic

#: Workers that had to be killed after SIGTERM (printed in the run's summary).
SLOW_STOPS: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
#: Worker options that keep group joins short on Tansu.
FAST = ["--session-timeout", "3000", "--heartbeat", "500"]


class WorkerProcess:
    """``statelog worker`` in a subprocess; its stdout JSON lines collected in ``lines``."""

    def __init__(self, bootstrap: str, prefix: str, group: str, name: str, *extra: str) -> None:
        self.name = name
        cmd = [
            sys.executable, "-m", "statelog", "worker",
            "--bootstrap", bootstrap, "--group", group, "--topic-prefix", prefix,
            "--id", name, *FAST, *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.errors.append(raw)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.errors.append(raw)

    def owned(self) -> set[int]:
        """The partitions this worker says it owns now."""
        held: set[int] = set()
        for line in list(self.lines):
            if line["event"] == "assigned":
                held.add(line["partition"])
            elif line["event"] == "released":
                held.discard(line["partition"])
        return held

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line["event"] == kind]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                # a worker must stop on SIGTERM: the run's summary lists each that did
                # not (tests/conftest.py), with what it reported last
                last = [
                    " ".join(str(line.get(k)) for k in ("event", "reason") if k in line)
                    for line in list(self.lines)[-8:]
                ]
                SLOW_STOPS.append(
                    f"worker {self.name} did not stop within {timeout:.0f} s of SIGTERM "
                    f"(killed); its last reports: {last}; stderr: {self.tail()[-800:]!r}"
                )
        for thread in self._threads:
            thread.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def tail(self) -> str:
        return "".join(self.errors[-30:])


async def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.1
) -> Any:
    """Poll ``condition`` (sync or async) until truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def covers(workers: Iterable[WorkerProcess], partitions: int) -> bool:
    """True when the live workers together own every partition, each exactly once."""
    held = [p for w in workers for p in w.owned()]
    return sorted(held) == list(range(partitions))


class TopicAudit:
    """Every record of the events topic, judged again here by the fence rule.

    Independently of ``KafkaEventStore``: per partition in offset order, a fence
    record opens a newer epoch; an event record whose ``statelog-fence`` header
    is not the epoch open at its offset is *stale* (a late write of an owner that
    lost the partition); of the rest, per stream, the first record of each
    sequence id that chains onto the one before is *accepted*.
    """

    def __init__(self, records: list[Any]) -> None:
        self.hashes: dict[tuple[StreamId, int], set[str]] = defaultdict(set)
        self.events: list[tuple[Any, Event]] = []
        self.fences = 0
        self.stale: list[tuple[Any, Event]] = []
        self.unfenced: list[tuple[Any, Event]] = []
        self.accepted: dict[StreamId, list[Event]] = {}
        self.home: dict[StreamId, int] = {}
        current: dict[int, Fence] = {}
        self._open: dict[int, Fence | None] = {}  # id(record) -> the epoch open at it
        for record in records:
            partition = record.partition
            if not record.key:
                claim = fence_claim_of(record.headers)
                held = current.get(partition)
                if claim is not None and (held is None or claim.epoch > held.epoch):
                    current[partition] = claim
                self.fences += 1
                continue
            event = decode_record(record.key, record.value, record.headers)
            self._open[id(record)] = current.get(partition)
            self.events.append((record, event))
            self.hashes[(event.stream, event.sequence_id)].add(event.hash)
            fence = fence_of(record.headers)
            if fence is None:
                self.unfenced.append((record, event))
            elif fence != current.get(partition):
                self.stale.append((record, event))
                continue
            home = self.home.setdefault(event.stream, partition)
            chain = self.accepted.setdefault(event.stream, [])
            if home != partition:
                continue
            if chain:
                if event.sequence_id == chain[-1].sequence_id + 1 and (
                    event.prev_hash == chain[-1].hash
                ):
                    chain.append(event)
            elif event.sequence_id == 0 and not event.prev_hash:
                chain.append(event)

    @classmethod
    async def read(cls, bootstrap: str, topic: str) -> TopicAudit:
        return cls(await read_topic(bootstrap, topic))

    def forks(self) -> dict[tuple[StreamId, int], set[str]]:
        """``(stream, sequence_id)`` with more than one hash anywhere in the topic."""
        return {k: v for k, v in self.hashes.items() if len(v) > 1}

    def extra_hashes(self) -> int:
        """Hashes on the topic beyond one per ``(stream, sequence_id)``."""
        return sum(len(h) - 1 for h in self.forks().values())

    def unexplained(self) -> list[tuple[StreamId, int, str]]:
        """Hashes on the topic that are neither accepted nor only on stale records.

        Empty when every second hash at a ``(stream, sequence_id)`` is a late write
        the fence rule skips (nothing else - a duplicate of another epoch, a record
        without a fence - put one there).
        """
        kept = {(s, e.sequence_id): e.hash for s, chain in self.accepted.items() for e in chain}
        stale = {id(r) for r, _ in self.stale}
        live = {(e.stream, e.sequence_id, e.hash) for r, e in self.events if id(r) not in stale}
        return [
            (stream, seq, digest)
            for (stream, seq), hashes in self.forks().items()
            for digest in hashes
            if digest != kept.get((stream, seq)) and (stream, seq, digest) in live
        ]

    def describe(self, keys: list[tuple[StreamId, int, str]]) -> str:
        """Every record at the ``(stream, sequence_id)`` of ``keys``, for a failure message."""
        wanted = {(stream, seq) for stream, seq, _ in keys}
        kept = {(s, e.sequence_id): e.hash for s, chain in self.accepted.items() for e in chain}
        lines = []
        for record, event in self.events:
            if (event.stream, event.sequence_id) in wanted:
                lines.append(
                    f"{event.stream}#{event.sequence_id} @{record.partition}:{record.offset} "
                    f"{event.kind}/{event.action} hash {event.hash[:10]} prev "
                    f"{event.prev_hash[:10]} fence {fence_of(record.headers)} open "
                    f"{self._open[id(record)]} t {event.timestamp:%H:%M:%S.%f}"
                    + (
                        " ACCEPTED"
                        if kept.get((event.stream, event.sequence_id)) == event.hash
                        else ""
                    )
                )
        return "\n".join(lines)

    def fenced_owners(self) -> set[str]:
        return {f.owner for r, _ in self.events if (f := fence_of(r.headers)) is not None}
