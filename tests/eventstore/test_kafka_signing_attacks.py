"""Attacks on the Kafka writers' signed checkpoints: cancellation and kill -9.

* Every call that runs or waits for a checkpoint (``store.checkpoint()``,
  ``store.aclose()``) is cancelled at its 1st, 2nd, ... suspension until one
  runs to its end, while the same writer keeps appending; the writer (and a new
  one) go on writing and checkpointing, and the verifier must find every chain
  dense, unforked and covering only heads the events topic has. The outbox
  relay's ``publish_batch()`` of a signed SQLite log is swept the same way.
* A signing writer process (``kafka_signing_writer.py``) is SIGKILLed at random
  moments, a checkpoint in flight most of the time; a fresh process continues
  each time, and ``statelog verify --bootstrap --public-key`` must pass.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

import pytest

from statelog.eventstore import Event, generate_key_files, load_public_key
from statelog.eventstore._checkpoints import Checkpoint
from statelog.eventstore.kafka import (
    KafkaEventStore,
    audit_kafka,
    decode_record,
    read_anchor_records,
)
from tests.kafka_broker import create_topic
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("kafka_signing_writer.py")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, str]:
    return generate_key_files(tmp_path / "signing.key")


async def topics(bootstrap: str, partitions: int = 2) -> tuple[str, str]:
    events = await create_topic(bootstrap, partitions=partitions)
    checkpoints = await create_topic(bootstrap, f"{events}.checkpoints")
    return events, checkpoints


class _CancelAt:
    """Awaits ``coro`` in the current task and cancels that task right after its
    ``k``-th suspension (0 = the first): ``task.cancel()`` then hits whatever the
    call is waiting on at that await (a thread's future, a send, a shield)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], k: int) -> None:
        self.coro, self.k, self.suspensions = coro, k, 0
        self.cancelled_in = ""  # where the call was suspended when it was cancelled

    def __await__(self) -> Generator[Any, Any, Any]:
        task = asyncio.current_task()
        assert task is not None
        inner = self.coro.__await__()
        message: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = inner.throw(error) if error is not None else inner.send(message)
            except StopIteration as stop:
                return stop.value
            message, error = None, None
            if self.suspensions == self.k:
                asyncio.get_running_loop().call_soon(task.cancel)
                self.cancelled_in = _where(self.coro)
            self.suspensions += 1
            try:
                message = yield yielded
            except BaseException as exc:  # thrown in by the task: pass it on
                error = exc


def _where(coro: Any) -> str:
    """The innermost frames of a suspended coroutine chain."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames[-5:])


async def cancelled_at(call: Coroutine[Any, Any, Any], k: int) -> bool:
    """Run ``call`` in its own task, cancelled at its ``k``-th suspension: True if the
    cancellation landed (the caller saw CancelledError), False if the call ended first.
    Any other exception is the attack's finding and propagates."""
    gate = _CancelAt(call, k)

    async def run() -> None:
        await gate

    task = asyncio.get_running_loop().create_task(run())
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # this test's own task was cancelled
        return True
    assert gate.suspensions <= k, f"cancelled at suspension {k} and swallowed: {gate.cancelled_in}"
    return False


def ev(app: str, seq: int) -> Event:
    return Event(
        partition_key=f"pk/{hash(app) % 3}", app_id=app, sequence_id=seq,
        kind="action_completed" if seq else "app_initialized", action="step",
    )  # fmt: skip


class Appender:
    """Appends one event at a time to a few streams (and a new one now and then)."""

    def __init__(self, store: KafkaEventStore, prefix: str) -> None:
        self.store, self.prefix, self.heads, self.n = store, prefix, {}, 0

    async def step(self) -> None:
        self.n += 1
        app = f"{self.prefix}-{self.n % 4 if self.n % 7 else self.n}"
        seq = self.heads.get(app, -1) + 1
        await self.store.append([ev(app, seq)], expected_sequence=seq - 1)
        self.heads[app] = seq

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()


async def check_chains(bootstrap: str, events: str, checkpoints: str, public: str) -> Any:
    """The verifier over the whole log, and the same properties spelled out."""
    records, problems = await read_anchor_records(bootstrap, checkpoints)
    assert problems == []
    bodies: dict[str, dict[int, bytes]] = {}
    for record in records:
        chain = bodies.setdefault(record.writer, {})
        # at least once: a number may come twice, but only with the same bytes
        assert chain.setdefault(record.sequence, record.signed.body) == record.signed.body, (
            f"checkpoint #{record.sequence} of {record.writer} forked"
        )
    for writer, chain in bodies.items():
        assert sorted(chain) == list(range(1, len(chain) + 1)), f"{writer}: {sorted(chain)}"
    topic: dict[tuple[str, str, int], set[str]] = {}
    for e in (
        decode_record(r.key, r.value, r.headers)
        for r in await read_topic(bootstrap, events)
        if "statelog-wire" in dict(r.headers)  # not a fence record
    ):
        topic.setdefault((e.partition_key, e.app_id, e.sequence_id), set()).add(e.hash)
    for writer, chain in bodies.items():
        for sequence, body in chain.items():
            for pk, app, seq, head in Checkpoint.from_bytes(body).changed:
                assert head in topic.get((pk, app, seq), ()), (writer, sequence, pk, app, seq)
    async with KafkaEventStore(bootstrap, events) as reader:
        report = await audit_kafka(reader, public_keys=[load_public_key(public)])
    assert report.ok, report.findings
    return report


async def test_checkpoint_while_appends_check_out_checkpoints_does_not_fork(kafka_bootstrap, keys):
    """``checkpoint()`` runs while appends keep starting checkpoints of their own
    (``checkpoint_every=1``): one checkpoint at a time, so no number is signed twice
    and none is dropped."""
    private, public = keys
    events, checkpoints = await topics(kafka_bootstrap)
    store = KafkaEventStore(
        kafka_bootstrap, events, signing_key=private, checkpoint_every=1, client_id="busy"
    )
    async with store:
        appender, mine = Appender(store, "busy"), Appender(store, "mine")
        stop = asyncio.Event()
        writing = asyncio.create_task(appender.run(stop))
        try:
            for _ in range(15):
                await mine.step()
                await store.checkpoint()
        finally:
            stop.set()
            await writing
    await check_chains(kafka_bootstrap, events, checkpoints, public)


async def _sweep(call: Any, before: Any, *, label: str, limit: int = 200) -> int:
    """``call()`` cancelled at suspension 0, 1, 2, ... until one ends uncancelled
    (``await before()`` ahead of each)."""
    for k in range(limit):
        await before()
        if not await cancelled_at(call(), k):
            return k
    raise AssertionError(f"{label}: still cancelled after {limit} suspensions")


async def test_checkpoint_and_close_cancelled_at_every_await(kafka_bootstrap, keys):
    """``checkpoint()`` cancelled at its 1st, 2nd, ... suspension while another task
    appends, then the same writer goes on; then writers whose ``aclose()`` is cancelled
    at each suspension, and one more: every chain verifies, and the cancelled callers
    saw CancelledError and nothing else (a swallowed cancellation fails too)."""
    private, public = keys
    events, checkpoints = await topics(kafka_bootstrap)
    store = KafkaEventStore(
        kafka_bootstrap, events, signing_key=private, checkpoint_every=2,
        checkpoint_interval=0.05, client_id="sweep",
    )  # fmt: skip
    async with store:
        appender, mine = Appender(store, "sweep"), Appender(store, "mine")
        stop = asyncio.Event()
        writing = asyncio.create_task(appender.run(stop))  # notes heads all along
        try:
            swept = await _sweep(store.checkpoint, mine.step, label="checkpoint()")
            assert swept >= 1  # its wait for the signing and the send was cancelled
            for _ in range(5):  # the same writer goes on
                await mine.step()
                await store.checkpoint()
        finally:
            stop.set()
            await writing
    # new writers, each closed with a cancellation at its k-th suspension
    k = 0
    while True:
        store = KafkaEventStore(
            kafka_bootstrap, events, signing_key=private, checkpoint_every=2,
            checkpoint_interval=0.05, client_id=f"close{k}",
        )  # fmt: skip
        await store.connect()
        appender = Appender(store, f"close{k}")
        for _ in range(5):
            await appender.step()
        await store.checkpoint()  # its chain has one at least
        for _ in range(3):
            await appender.step()  # and the one at close has heads to sign
        if not await cancelled_at(store.aclose(), k):
            break
        k += 1
        assert k < 200
    # and one that closes normally
    async with KafkaEventStore(
        kafka_bootstrap, events, signing_key=private, client_id="last"
    ) as store:
        appender = Appender(store, "last")
        for _ in range(5):
            await appender.step()
    report = await check_chains(kafka_bootstrap, events, checkpoints, public)
    prefixes = sorted(writer.rsplit("-", 1)[0] for writer in report.writers)
    assert prefixes == sorted(["sweep", "last", *(f"close{n}" for n in range(k + 1))])


async def test_relay_cancelled_at_every_await_anchors_only_what_it_published(
    kafka_bootstrap, keys, tmp_path
):
    """The outbox relay of a signed SQLite log: every ``publish_batch()`` cancelled at
    its 1st, 2nd, ... suspension until it runs to its end, batch after batch, while the
    log grows and is checkpointed; nothing is skipped, and every anchored checkpoint
    covers only events on the topic."""
    from statelog.eventstore import SQLiteEventStore
    from statelog.eventstore.kafka import OutboxRelay

    private, public = keys
    events, _checkpoints = await topics(kafka_bootstrap)
    async with SQLiteEventStore(tmp_path / "log.db", signing_key=private) as store:
        appender = Appender(store, "log")  # type: ignore[arg-type]
        relay = OutboxRelay(store, bootstrap_servers=kafka_bootstrap, topic=events, batch_size=4)
        async with relay:
            cancels = 0
            for _ in range(6):
                for _ in range(9):
                    await appender.step()
                await store.checkpoint()
                k = 0
                while True:
                    if await cancelled_at(relay.publish_batch(), k):
                        k, cancels = k + 1, cancels + 1
                        assert k < 200, relay.status()
                        continue
                    status = relay.status()
                    if status.lag == 0:
                        break
                    assert status.state != "idle", f"idle with events to publish: {status}"
                    k = 0  # the next batch, from its first suspension
            assert cancels > 20
        total = len(await store.read_all())
    async with KafkaEventStore(kafka_bootstrap, events) as reader:
        report = await audit_kafka(reader, public_keys=[load_public_key(public)])
    assert report.ok, report.findings
    assert (report.events, report.unsigned_events) == (total, 0)


# --------------------------------------------------------------------------- kill -9


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


async def test_signing_writer_killed_at_random_moments_verifies(kafka_bootstrap, keys, tmp_path):
    seed = int(os.environ.get("STATELOG_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    private, public = keys
    events, checkpoints = await topics(kafka_bootstrap)
    kills = 0
    for round_ in range(7):
        log_path = tmp_path / f"writer-{round_}.log"
        every = rng.choice(["1", "2", "5"])
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(WRITER), kafka_bootstrap, events, private, every],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                env=_env(),
            )
            try:
                assert process.stdout is not None
                ready = await asyncio.to_thread(process.stdout.readline)
                assert ready.startswith(b"writing"), log_path.read_text()
                await asyncio.sleep(rng.uniform(0.05, 1.0))
                assert process.poll() is None, log_path.read_text()
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                process.stdout.close()  # type: ignore[union-attr]
        assert process.returncode == -signal.SIGKILL
        kills += 1
    # a last writer that closes: its chain ends with a checkpoint of everything it wrote
    done = subprocess.run(
        [sys.executable, str(WRITER), kafka_bootstrap, events, private, "3", "--steps", "20"],
        capture_output=True,
        cwd=ROOT,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = await check_chains(kafka_bootstrap, events, checkpoints, public)
    assert len(report.writers) == kills + 1, f"seed {seed}: {report.writers}"
    verify = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--bootstrap", kafka_bootstrap,
         "--topic", events, "--public-key", public],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, f"seed {seed}: {verify.stdout}{verify.stderr}"
    assert f"of {kills + 1} writers (signatures verified)" in verify.stdout, verify.stdout
    print(f"seed {seed}: {kills} kills; {verify.stdout.strip()}")
