"""RedisEventStore and RedisSnapshotStore against a real Redis (tests/redis_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis import exceptions as rx

from statelog.eventstore import (
    ConcurrencyError,
    EventStore,
    Snapshot,
    SnapshotBackend,
    SnapshotSkippedWarning,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    StreamId,
    fold,
    load_state,
    verify_events,
)
from statelog.eventstore.redis import (
    RedisEventStore,
    RedisKeys,
    RedisSnapshotStore,
    translate_error,
)
from tests.contract.store_contract import PK, StoreContract, ev, evs
from tests.ops_support import writes_of
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


class TestRedisEventStoreContract(StoreContract):
    """The shared suite on the session's Redis, one key prefix per ``tmp_path``.

    Both switches are on. ``durable``: a store opened again on the same prefix
    sees the same log - as long as the server keeps it. Across a crash of the
    Redis host that holds only for what the server had persisted:
    ``appendonly yes`` + ``appendfsync always`` keeps every acknowledged append
    (``test_a_killed_server_with_aof_always_keeps_every_acknowledged_append``);
    ``everysec`` can lose about the last second of acknowledged appends, and
    no AOF loses everything since the last RDB save. A store cannot guarantee
    more than the server's configuration (docs/redis.md).
    ``supports_cross_process``: two stores on one prefix are two clients of one
    server, as two processes are; appends are atomic scripts.
    """

    codec = "json"

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url = redis_url
        self.prefix = redis_prefix
        self.prefixes: dict[Path, str] = {}

    async def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        prefix = self.prefixes.setdefault(tmp_path, f"{self.prefix}{len(self.prefixes)}")
        return await RedisEventStore.open(self.url, prefix=prefix, codec=self.codec, **options)


class TestRedisEventStoreContractMsgpack(TestRedisEventStoreContract):
    """The same suite with msgpack bodies."""

    codec = "msgpack"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisEventStore]:
    async with RedisEventStore(redis_url, prefix=redis_prefix) as store:
        yield store


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def keys_of(raw: aioredis.Redis, prefix: str) -> list[str]:
    root = "{" + RedisKeys(prefix).root[1:-1] + "}"
    found = [key.decode() async for key in raw.scan_iter(match="*", count=1000)]
    return sorted(key for key in found if key.startswith(root))


# --------------------------------------------------------------------------- keys


def test_import_statelog_loads_no_redis() -> None:
    code = (
        "import sys, statelog, statelog.eventstore, statelog.engine; "
        "assert 'redis' not in sys.modules, 'redis loaded'; "
        "import statelog.eventstore.redis; assert 'redis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


async def test_key_layout(raw: aioredis.Redis, redis_url: str) -> None:
    prefix = f"layout {id(raw)}"
    async with RedisEventStore(redis_url, prefix=prefix) as store:
        await store.append(evs("a/1", 0, 2), expected_sequence=-1)
        await store.append(evs("b", 0, 1, pk="p:2"), expected_sequence=-1)
        root = "{layout%20" + str(id(raw)) + "}"
        assert await keys_of(raw, prefix) == sorted(
            [
                f"{root}:events:p%3A2:b",
                f"{root}:events:tenant:a%2F1",
                f"{root}:log",
                f"{root}:partition:p%3A2",
                f"{root}:partition:tenant",
                f"{root}:position",
                f"{root}:streams",
            ]
        )
        assert await raw.get(f"{root}:position") == b"3"
        # the stream's entry ids are <sequence_id>-<position>; the log's <position>-0
        entries = await raw.xrange(f"{root}:events:tenant:a%2F1")
        assert [entry_id for entry_id, _ in entries] == [b"0-1", b"1-2"]
        log = await raw.xrange(f"{root}:log")
        assert [(i, f[b"r"], f[b"q"]) for i, f in log] == [
            (b"1-0", b"tenant:a%2F1", b"0"),
            (b"2-0", b"tenant:a%2F1", b"1"),
            (b"3-0", b"p%3A2:b", b"0"),
        ]
        assert await store.position_of(PK, "a/1", 1) == 2
        assert await store.position_of(PK, "a/1", 2) is None
        await store.aclose()
        async with aioredis.Redis.from_url(redis_url) as cleanup:
            await cleanup.delete(*await keys_of(raw, prefix))


@pytest.mark.parametrize(
    "streams",
    [
        [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("a", "b%3Ac")],
        [("{x}", "y"), ("x", "{y}"), ("{x", "}y"), ("", "{x}:y")],
        [("a/b", "c"), ("a", "b/c"), ("", "a/b/c"), ("a b", "ü"), ("", "a:")],
    ],
    ids=["colon-and-percent", "braces", "slash-space-unicode"],
)
async def test_stream_identities_never_share_keys(
    store: RedisEventStore, streams: list[tuple[str, str]]
) -> None:
    for i, (pk, app) in enumerate(streams):
        await store.append(evs(app, 0, i + 1, pk=pk), expected_sequence=-1)
    assert await store.streams() == [StreamId(pk, app) for pk, app in streams]
    for i, (pk, app) in enumerate(streams):
        events = await store.read(pk, app)
        assert [(e.partition_key, e.app_id) for e in events] == [(pk, app)] * (i + 1)
        assert await store.last_sequence(pk, app) == i
        assert await store.streams(pk) == [StreamId(p, a) for p, a in streams if p == pk]
    assert await store.verify() is None


async def test_prefixes_never_share_keys(redis_url: str, redis_prefix: str) -> None:
    # the first store's stream ("x", "log") and the second's prefix spell alike unescaped
    one = await RedisEventStore.open(redis_url, prefix=redis_prefix)
    two = await RedisEventStore.open(redis_url, prefix=redis_prefix + "}:events:x:log")
    try:
        await one.append(evs("log", 0, 2, pk="x"), expected_sequence=-1)
        await two.append(evs("a", 0, 1), expected_sequence=-1)
        assert [r.position for r in await one.read_all()] == [1, 2]
        assert [r.position for r in await two.read_all()] == [1]
        assert await two.streams() == [StreamId(PK, "a")]
        assert await one.verify() is None and await two.verify() is None
    finally:
        await one.aclose()
        await two.aclose()


# --------------------------------------------------------------------------- the chain under races


async def test_a_stale_head_is_resealed_not_forked(
    store: RedisEventStore, redis_url: str, redis_prefix: str, raw: aioredis.Redis
) -> None:
    """Right sequence, wrong head hash (the stream was rebuilt behind this store's
    back): the script refuses, the store seals again on the real head."""
    await store.append(evs("a", 0, 2), expected_sequence=-1)  # caches head (1, h1)
    await raw.delete(RedisKeys(redis_prefix).events(RedisKeys.ref(PK, "a")))
    async with RedisEventStore(redis_url, prefix=redis_prefix) as other:
        rebuilt = [ev("a", 0, writes={"other": 0}), ev("a", 1, writes={"other": 1})]
        await other.append(rebuilt, expected_sequence=-1)
    [rec] = await store.append([ev("a", 2)], expected_sequence=1)
    events = await store.read(PK, "a")
    assert rec.event.prev_hash == events[1].hash
    assert writes_of(events[1]) == {"other": 1}
    assert verify_events(events) is None


_RACER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from statelog.eventstore import ConcurrencyError, Event
    from statelog.eventstore.redis import RedisEventStore

    async def main(url, prefix, name, rounds, go):
        async with RedisEventStore(url, prefix=prefix) as store:
            open(go + "." + name, "w").close()  # connected: ready
            while not os.path.exists(go):
                time.sleep(0.001)
            for i in range(int(rounds)):
                last = await store.last_sequence("pk", "race")
                event = Event(partition_key="pk", app_id="race", sequence_id=last + 1,
                              kind="action_completed",
                              ops=[{"op": "set", "key": "by", "value": name},
                                   {"op": "set", "key": "i", "value": i}])
                try:
                    await store.append([event], expected_sequence=last)
                except ConcurrencyError:
                    continue
                print(last + 1, i, flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_two_processes_racing_one_stream(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _RACER, redis_url, redis_prefix, name, "300", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for name in ("one", "two")
    }
    for name, proc in procs.items():
        for _ in range(3000):  # both connected, then both start at once
            if Path(f"{go}.{name}").exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.01)
    go.touch()
    acked: dict[int, tuple[str, int]] = {}
    for name, proc in procs.items():
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
        assert proc.returncode == 0, err.decode()
        for line in out.decode().splitlines():
            seq, i = map(int, line.split())
            assert seq not in acked, f"sequence {seq} acknowledged twice"
            acked[seq] = (name, i)
    async with RedisEventStore(redis_url, prefix=redis_prefix) as store:
        events = await store.read("pk", "race")
        assert [e.sequence_id for e in events] == list(range(len(events)))  # no gap, no fork
        assert await store.verify() is None
        assert sorted(acked) == list(range(len(events)))  # every acknowledged append is there
        for seq, (name, i) in acked.items():
            assert writes_of(events[seq]) == {"by": name, "i": i}
        assert [r.position for r in await store.read_all()] == list(range(1, len(events) + 1))
    winners = {name for name, _ in acked.values()}
    assert len(events) >= 300 and winners == {"one", "two"}


# --------------------------------------------------------------------------- durability


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from statelog.eventstore import Event, StoreError
    from statelog.eventstore.redis import RedisEventStore

    async def main(url):
        async with RedisEventStore(url, socket_timeout=2) as store:
            seq = -1
            while True:
                batch = [Event(partition_key="pk", app_id="w", sequence_id=seq + 1 + i,
                               kind="action_completed",
                               ops=[{"op": "set", "key": "n", "value": seq + 1 + i}])
                         for i in range(3)]
                try:
                    await store.append(batch, expected_sequence=seq)
                except StoreError as exc:
                    print("error", type(exc).__name__, flush=True)
                    return
                seq += 3
                print(seq, flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_killed_server_with_aof_always_keeps_every_acknowledged_append(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis(["--appendonly", "yes", "--appendfsync", "always"])
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert writer.stdout is not None
    acked = -1
    while acked < 300:  # appends are acknowledged, and more are in flight
        line = await asyncio.to_thread(writer.stdout.readline)
        assert line, writer.stderr.read().decode() if writer.stderr else ""
        acked = int(line)
    server.kill()
    out, err = await asyncio.to_thread(writer.communicate, timeout=60)
    lines = out.decode().split()
    assert lines[-2:] == ["error", "StoreUnavailableError"], err.decode()
    acked = max([acked, *(int(x) for x in lines[:-2])])
    server.start()  # same port, same directory: the AOF is replayed
    async with RedisEventStore(server.url) as store:
        assert await store.durability() == {
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
        }
        last = await store.last_sequence("pk", "w")
        # every acknowledged append; at most the one in flight beyond (all or nothing)
        assert last in (acked, acked + 3)
        assert await store.verify() is None
        assert [r.position for r in await store.read_all()] == list(range(1, last + 2))
        await store.append([ev("w", last + 1, pk="pk")], expected_sequence=last)


async def test_durability_reports_the_servers_settings(store: RedisEventStore) -> None:
    settings = await store.durability()
    if os.environ.get("REDIS_URL"):  # someone else's server: CONFIG may be refused
        assert settings == {} or set(settings) == {"appendonly", "appendfsync", "save"}
    else:  # the private server: persistence off
        assert (settings["appendonly"], settings["save"]) == ("no", "")


async def test_a_server_killed_and_restarted_under_an_open_store(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis(["--appendonly", "yes", "--appendfsync", "always"])
    async with RedisEventStore(server.url, socket_timeout=2) as store:
        await store.append(evs("a", 0, 2), expected_sequence=-1)
        server.kill()
        with pytest.raises(StoreUnavailableError) as info:
            await store.append(evs("a", 2, 1), expected_sequence=1)
        assert isinstance(info.value, ConnectionError)
        assert isinstance(info.value.__cause__, rx.ConnectionError)
        with pytest.raises(StoreUnavailableError):
            await store.read(PK, "a")
        server.start()
        # the same store goes on: it reconnects, and the scripts are loaded again
        await store.append(evs("a", 2, 1), expected_sequence=1)
        assert [e.sequence_id for e in await store.read(PK, "a")] == [0, 1, 2]
        assert await store.verify() is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (rx.ConnectionError("Error 111 connecting"), StoreUnavailableError),
        (rx.TimeoutError("Timeout reading from socket"), StoreUnavailableError),
        (rx.AuthenticationError("invalid password"), StoreUnavailableError),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), StoreUnavailableError),
        (ConnectionRefusedError(111, "refused"), StoreUnavailableError),
        (rx.OutOfMemoryError("OOM command not allowed"), StoreUnavailableError),
        (rx.ReadOnlyError("You can't write against a read only replica."), StoreUnavailableError),
        (rx.ResponseError("MISCONF Redis is configured to save RDB"), StoreUnavailableError),
        (rx.ResponseError("BUSY Redis is busy running a script."), StoreUnavailableError),
        (rx.ResponseError("WRONGTYPE Operation against a key"), StoreCorruptError),
        (
            rx.ResponseError("Error running script (call to f_c7): @user_script:5: WRONGTYPE Op"),
            StoreCorruptError,
        ),
        (
            rx.ResponseError("Error running script (call to f_c7): @user_script: 17: -OOM comm"),
            StoreUnavailableError,
        ),
        (rx.ResponseError("BUSYKEY Target key name already exists."), StoreError),
        (rx.ResponseError("ERR unknown command"), StoreError),
        (rx.DataError("Invalid input"), StoreError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_translate_error_maps_the_driver_tree(
    error: BaseException, expected: type[StoreError]
) -> None:
    translated = translate_error(error, "append to tenant/a")
    assert type(translated) is expected
    assert "append to tenant/a" in str(translated) and str(error) in str(translated)


async def test_nothing_listening_is_store_unavailable() -> None:
    from tests.redis_server import free_port

    store = RedisEventStore(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=2)
    try:
        with pytest.raises(StoreUnavailableError) as info:
            await store.connect()
        assert isinstance(info.value, ConnectionError)
        assert info.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            await store.append(evs("a", 0, 1), expected_sequence=-1)
        with pytest.raises(StoreUnavailableError):
            await store.read_all()
    finally:
        await store.aclose()


async def test_a_key_of_another_type_is_store_corrupt(
    store: RedisEventStore, raw: aioredis.Redis
) -> None:
    await raw.set(store.keys.events(RedisKeys.ref(PK, "a")), b"not a stream")
    with pytest.raises(StoreCorruptError) as info:
        await store.append(evs("a", 0, 1), expected_sequence=-1)
    assert isinstance(info.value.__cause__, rx.ResponseError)
    with pytest.raises(StoreCorruptError):
        await store.read(PK, "a")
    assert await store.read_all() == []  # the refused append wrote nothing


async def test_a_server_out_of_memory_refuses_and_writes_nothing(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis(["--maxmemory-policy", "noeviction"])
    async with RedisEventStore(server.url) as store:
        await store.append(evs("a", 0, 1), expected_sequence=-1)
        async with aioredis.Redis.from_url(server.url) as admin:
            await admin.config_set("maxmemory", 1)
            try:
                with pytest.raises(StoreUnavailableError, match="OOM"):
                    await store.append(evs("a", 1, 3), expected_sequence=0)
            finally:
                await admin.config_set("maxmemory", 0)
        assert await store.last_sequence(PK, "a") == 0
        assert len(await store.read_all()) == 1
        await store.append(evs("a", 1, 3), expected_sequence=0)
        assert await store.verify() is None


async def test_a_missing_event_named_by_the_log_is_store_corrupt(
    store: RedisEventStore, raw: aioredis.Redis
) -> None:
    await store.append(evs("a", 0, 3), expected_sequence=-1)
    await raw.xdel(store.keys.events(RedisKeys.ref(PK, "a")), "1-2")
    with pytest.raises(StoreCorruptError, match="#1 at position 2"):
        await store.read_all()
    broken = await store.verify()
    assert broken is not None and broken.sequence_id == 1


async def test_an_edited_body_breaks_the_chain(store: RedisEventStore, raw: aioredis.Redis) -> None:
    recorded = await store.append(evs("a", 0, 3), expected_sequence=-1)
    key = store.keys.events(RedisKeys.ref(PK, "a"))
    entries = await raw.xrange(key)
    assert entries[1][1][b"h"] == bytes.fromhex(recorded[1].event.hash)
    entries[1][1][b"b"] = store.codec.encode_body(ev("a", 1, writes={"n": 99}))
    await raw.delete(key)  # a stream takes no entry before its last: write it anew
    for entry_id, fields in entries:
        await raw.xadd(key, fields, id=entry_id)
    broken = await store.verify()
    assert broken is not None and (broken.sequence_id, broken.stream) == (1, (PK, "a"))


# --------------------------------------------------------------------------- snapshots


@pytest.fixture
async def snapshots(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisSnapshotStore]:
    async with RedisSnapshotStore(redis_url, prefix=redis_prefix) as snapshots:
        yield snapshots


def snap(store_events: list[Any], seq: int, state: dict[str, Any] | None = None) -> Snapshot:
    event = store_events[seq]
    return Snapshot(
        partition_key=event.partition_key,
        app_id=event.app_id,
        sequence_id=seq,
        state=fold(store_events[: seq + 1]) if state is None else state,
        position=seq + 1,
        event_hash=event.hash,
    )


async def test_snapshot_round_trip_and_load_state(
    store: RedisEventStore, snapshots: RedisSnapshotStore
) -> None:
    assert isinstance(snapshots, SnapshotBackend)
    await store.append(evs("a", 0, 10), expected_sequence=-1)
    events = await store.read(PK, "a")
    three, seven = snap(events, 3), snap(events, 7)
    sizes = [await snapshots.save(three), await snapshots.save(seven)]
    # the size of each stored state, as the SQLite store gives it (the policy spaces by it)
    plain = msgspec.msgpack.Encoder()
    assert sizes == [len(plain.encode(dict(s.state))) for s in (three, seven)]
    assert await snapshots.load(PK, "a", store=store) == seven
    assert await snapshots.load(PK, "a", max_sequence=6) == three
    assert await snapshots.load(PK, "a", max_sequence=2) is None
    assert await snapshots.load(PK, "other") is None
    assert await snapshots.sequences(PK, "a") == [(3, 4), (7, 8)]
    whole = fold(events)
    assert await load_state(store, snapshots, PK, "a") == (whole, 9)  # type: ignore[arg-type]
    for at in range(10):
        state = await load_state(store, snapshots, PK, "a", at_sequence=at)  # type: ignore[arg-type]
        assert state == (fold(events[: at + 1]), at)


async def test_snapshot_replace_and_keep_last(
    store: RedisEventStore, redis_url: str, redis_prefix: str
) -> None:
    await store.append(evs("a", 0, 6), expected_sequence=-1)
    events = await store.read(PK, "a")
    async with RedisSnapshotStore(redis_url, prefix=redis_prefix, keep_last=2) as snapshots:
        for seq in range(5):
            await snapshots.save(snap(events, seq))
        await snapshots.save(snap(events, 4, {"replaced": True}))
        assert [s for s, _ in await snapshots.sequences(PK, "a")] == [3, 4]
        loaded = await snapshots.load(PK, "a")
        assert loaded is not None and loaded.state == {"replaced": True}
        assert await snapshots.prune(PK, "a", keep_last=1) == 1
        assert [s for s, _ in await snapshots.sequences(PK, "a")] == [4]


async def test_unusable_snapshots_are_skipped_with_a_warning(
    store: RedisEventStore, redis_url: str, redis_prefix: str, raw: aioredis.Redis
) -> None:
    await store.append(evs("a", 0, 6), expected_sequence=-1)
    events = await store.read(PK, "a")
    key = RedisKeys(redis_prefix).snapshots(RedisKeys.ref(PK, "a"))
    async with RedisSnapshotStore(redis_url, prefix=redis_prefix, hmac_key=b"k") as snapshots:
        two = snap(events, 2)
        await snapshots.save(snap(events, 1))
        await snapshots.save(two)
        forged = snap(events, 3)
        await snapshots.save(
            Snapshot(
                **{
                    **{f: getattr(forged, f) for f in forged.__struct_fields__},
                    "event_hash": "0" * 64,
                }
            )
        )
        await raw.zadd(key, {b"\xc1 not msgpack": 4})
        async with RedisSnapshotStore(redis_url, prefix=redis_prefix) as unkeyed:
            await unkeyed.save(snap(events, 5))  # a checksum without the key
        with pytest.warns(SnapshotSkippedWarning) as warned:
            loaded = await snapshots.load(PK, "a", store=store)
        assert loaded == two
        reasons = [str(w.message) for w in warned]
        assert any("sequence_id 5: checksum" in r for r in reasons)
        assert any("sequence_id 4: cannot decode" in r for r in reasons)
        assert any("sequence_id 3: event_hash" in r for r in reasons)


async def test_snapshot_store_refuses_bad_input_and_closed_use(redis_url: str) -> None:
    from statelog.eventstore import ConfigError, InvalidEventError, StoreClosedError

    with pytest.raises(ConfigError):
        RedisSnapshotStore(redis_url, keep_last=0)
    with pytest.raises(ConfigError):
        RedisSnapshotStore(redis_url, prefix="")
    snapshots = await RedisSnapshotStore.open(redis_url, prefix="refuse")
    with pytest.raises(InvalidEventError):
        await snapshots.save("not a snapshot")  # type: ignore[arg-type]
    await snapshots.aclose()
    await snapshots.aclose()
    with pytest.raises(StoreClosedError):
        await snapshots.load(PK, "a")


# --------------------------------------------------------------------------- docs/redis.md


def test_every_code_block_of_the_redis_page_runs(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import re

    text = (ROOT / "docs" / "redis.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 2
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)

    async def clean() -> None:
        async with aioredis.Redis.from_url(redis_url) as client:
            found = [key async for key in client.scan_iter(match="{docs-example}:*")]
            if found:
                await client.delete(*found)

    asyncio.run(clean())
    try:
        for code in blocks:
            exec(compile(code, "docs/redis.md", "exec"), {"__name__": "__doc_block__"})
    finally:
        asyncio.run(clean())


# --------------------------------------------------------------------------- lifecycle, engine


async def test_a_cancelled_append_commits_whole_or_not_at_all(store: RedisEventStore) -> None:
    last = -1
    for round_ in range(20):
        task = asyncio.create_task(store.append(evs("a", last + 1, 50), expected_sequence=last))
        for _ in range(round_ % 4):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        now = await store.last_sequence(PK, "a")
        assert now in (last, last + 50)
        last = now
    assert await store.verify() is None
    assert [r.position for r in await store.read_all()] == list(range(1, last + 2))
    await store.append(evs("a", last + 1, 1), expected_sequence=last)


async def test_an_unclosed_store_warns(redis_url: str, redis_prefix: str) -> None:
    store = await RedisEventStore.open(redis_url, prefix=redis_prefix)
    await store.append(evs("a", 0, 1), expected_sequence=-1)
    client = store._client
    with pytest.warns(ResourceWarning, match="unclosed RedisEventStore"):
        del store
        gc.collect()
    await client.aclose()


async def test_an_engine_app_runs_on_redis(redis_url: str, redis_prefix: str) -> None:
    from statelog.engine import ApplicationBuilder, State, action, default, expr

    @action(reads=["count"], writes=["count"])
    def tick(state: State) -> State:
        return state.increment(count=1)

    async with RedisEventStore(redis_url, prefix=redis_prefix) as store:
        app = await (
            ApplicationBuilder()
            .with_actions(tick=tick)
            .with_transitions(("tick", "tick", expr("count < 5")), ("tick", "tick", default))
            .with_state(count=0)
            .with_entrypoint("tick")
            .with_identifiers(app_id="counter", partition_key="tour")
            .with_store(store)
            .abuild()
        )
        async with app:
            for _ in range(5):
                await app.astep()
        assert await store.fold_stream("tour", "counter") == (
            {"count": 5},
            await store.last_sequence("tour", "counter"),
        )
        assert await store.verify() is None


async def test_concurrent_appends_go_out_in_groups_and_answer_each(
    store: RedisEventStore,
) -> None:
    await store.append(evs("hot", 0, 1), expected_sequence=-1)
    results = await asyncio.gather(
        *(store.append(evs(f"s{i}", 0, 2), expected_sequence=-1) for i in range(40)),
        *(store.append([ev("hot", 1, writes={"w": i})], expected_sequence=0) for i in range(5)),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(conflicts) == 4 and all(c.actual == 1 for c in conflicts)
    assert all(not isinstance(r, BaseException) for r in results[:40])
    assert await store.verify() is None
    positions = sorted(rec.position for r in results if isinstance(r, list) for rec in r)
    assert positions == list(range(2, 83))


async def test_a_group_sent_after_the_server_lost_its_scripts(
    store: RedisEventStore, raw: aioredis.Redis
) -> None:
    from statelog.eventstore.redis._writer import ScriptWriter, _Call

    writer = ScriptWriter(raw, raw.register_script("return ARGV[1] .. KEYS[1]"))
    await raw.script_flush()
    loop = asyncio.get_running_loop()
    group = [_Call([f"k{i}"], [f"v{i}"], loop.create_future()) for i in range(3)]
    await writer._send(group)  # NOSCRIPT for all: loaded, sent again
    assert [call.future.result() for call in group] == [b"v0k0", b"v1k1", b"v2k2"]


async def test_an_engine_app_snapshots_to_redis_and_resumes_from_the_snapshot(
    redis_url: str, redis_prefix: str
) -> None:
    """Event log and snapshots both in Redis: the engine takes snapshots and resumes from one."""
    from statelog.engine import ApplicationBuilder, State, action, default, expr

    @action(reads=["count"], writes=["count"])
    def tick(state: State) -> State:
        return state.increment(count=1)

    def builder() -> ApplicationBuilder:
        return (
            ApplicationBuilder()
            .with_actions(tick=tick)
            .with_transitions(("tick", "tick", expr("count < 50")), ("tick", "tick", default))
            .with_identifiers(app_id="snap", partition_key="tour")
            .with_snapshots(every=10)
        )

    async with (
        RedisEventStore(redis_url, prefix=redis_prefix) as store,
        RedisSnapshotStore(redis_url, prefix=redis_prefix) as snapshots,
    ):
        app = await (
            builder()
            .with_store(store, snapshots=snapshots)
            .with_state(count=0)
            .with_entrypoint("tick")
            .abuild()
        )
        async with app:
            for _ in range(25):
                await app.astep()
        taken = await snapshots.sequences("tour", "snap")
        assert taken and taken[-1][0] >= 20  # every 10 steps, by the engine
        resumed = await (
            builder()
            .with_store(store, snapshots=snapshots)
            .initialize_from(store, default_state={"count": 0}, default_entrypoint="tick")
            .abuild()
        )
        async with resumed:
            assert resumed.state["count"] == 25
            await resumed.astep()
            assert resumed.state["count"] == 26
        assert await load_state(store, snapshots, "tour", "snap") == (
            {"count": 26},
            await store.last_sequence("tour", "snap"),
        )
