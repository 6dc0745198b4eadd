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
from statelog.eventstore.kafka._wire import decode_record, fence_of
from tests.kafka_helpers import read_topic

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
    """Every event record of the events topic, decoded, with its fence."""

    def __init__(self, records: list[Any]) -> None:
        self.hashes: dict[tuple[StreamId, int], set[str]] = defaultdict(set)
        self.events: list[tuple[Any, Event]] = []
        self.fences = 0
        for record in records:
            if not record.key:
                self.fences += 1
                continue
            event = decode_record(record.key, record.value, record.headers)
            self.events.append((record, event))
            self.hashes[(event.stream, event.sequence_id)].add(event.hash)

    @classmethod
    async def read(cls, bootstrap: str, topic: str) -> TopicAudit:
        return cls(await read_topic(bootstrap, topic))

    def forks(self) -> dict[tuple[StreamId, int], set[str]]:
        """``(stream, sequence_id)`` with more than one hash anywhere in the topic."""
        return {k: v for k, v in self.hashes.items() if len(v) > 1}

    def fenced_owners(self) -> set[str]:
        return {f.owner for r, _ in self.events if (f := fence_of(r.headers)) is not None}
