"""``projections rebuild --from kafka://...`` gives up after ``--timeout`` and says on what.

No broker listening, a port that accepts connections but never answers, and
(marked ``kafka``) a real broker: a rebuild that finishes, and a missing topic.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from statelog._cli import main
from statelog.eventstore import MemoryEventStore
from tests.kafka_broker import create_topic
from tests.projection_support import append_simple
from tests.projections.test_projection_laws import publish


def rebuild(source: str, into: Path, *options: str) -> list[str]:
    return [
        "projections",
        "rebuild",
        "audit_trail",
        "--from",
        source,
        "--into",
        str(into),
        *options,
    ]


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener completes TCP handshakes and then never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_no_broker_listening_is_one_line_and_exit_2(
    tmp_path: Path, free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    into = tmp_path / "rm.db"
    code = main(rebuild(f"kafka://127.0.0.1:{free_port}/t", into, "--timeout", "30"))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("statelog: error: "), err
    assert f"127.0.0.1:{free_port}" in err
    assert "Traceback" not in err


def test_a_silent_broker_is_given_up_on_after_the_timeout(
    tmp_path: Path, silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # --timeout 3 with the wait announced after 2 s: one notice, then the error.
    code = main(rebuild(f"kafka://127.0.0.1:{silent_port}/t", tmp_path / "rm.db", "--timeout", "3"))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(
        f"statelog: waiting for a connection from the Kafka broker at 127.0.0.1:{silent_port}"
    )
    assert "giving up after 3 s" in lines[0]
    assert lines[1] == (
        "statelog: error: gave up waiting 3 s for a connection from the Kafka broker at "
        f"127.0.0.1:{silent_port}"
    )
    assert not (tmp_path / "rm.db").exists()


@pytest.mark.kafka
def test_rebuild_from_a_real_broker(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def prepare() -> str:
        store = MemoryEventStore()
        await append_simple(store, streams=3, per_stream=5, batch=5)
        topic = await create_topic(kafka_bootstrap, partitions=2)
        await publish(kafka_bootstrap, topic, store, duplicates=[])
        return topic

    topic = asyncio.run(prepare())
    into = tmp_path / "rm.db"
    code = main(rebuild(f"kafka://{kafka_bootstrap}/{topic}", into, "--timeout", "60", "--quiet"))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "is live with 15 events" in out
    code = main(rebuild(f"kafka://{kafka_bootstrap}/no-such-topic-x9", tmp_path / "other.db"))
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "no Kafka topic 'no-such-topic-x9'" in err, err
