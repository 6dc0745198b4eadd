"""The client's errors, translated from httpx at one boundary (``translate``)::

StatelogError
└── ClientError
    ├── ApiStatusError          (status_code, problem, method, url)
    ├── ClientConnectionError   (also a ConnectionError: nothing usable came back)
    └── ClientTimeoutError      (also a TimeoutError)
        ├── ConnectTimeoutError (no connection within the connect timeout)
        ├── ReadTimeoutError    (the server stalled past the read timeout)
        └── TotalTimeoutError   (the call, retries included, ran out of time)
"""

from __future__ import annotations

from typing import Any

import httpx

from statelog.eventstore import StatelogError

__all__ = [
    "ApiStatusError",
    "ClientConnectionError",
    "ClientError",
    "ClientTimeoutError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "TotalTimeoutError",
    "translate",
]


class ClientError(StatelogError):
    """Any failure of a ``statelog.client`` call."""


class ApiStatusError(ClientError):
    """The service answered with an error status; ``problem`` is its problem document."""

    def __init__(self, method: str, url: str, status_code: int, problem: dict[str, Any]) -> None:
        self.method = method
        self.url = url
        self.status_code = status_code
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "no detail"
        super().__init__(f"{method} {url} -> {status_code} {self.problem_type}: {detail}")

    @property
    def problem_type(self) -> str:
        """The problem's slug (``unknown-app``, ``app-busy``, ...) or ``""``."""
        kind = str(self.problem.get("type", ""))
        return kind.rsplit(":", 1)[-1] if kind.startswith("urn:statelog:problem:") else kind


class ClientConnectionError(ClientError, ConnectionError):
    """The connection failed or was dropped before a whole answer came back."""


class ClientTimeoutError(ClientError, TimeoutError):
    """A timeout fired."""


class ConnectTimeoutError(ClientTimeoutError):
    """No connection within the connect timeout."""


class ReadTimeoutError(ClientTimeoutError):
    """The server sent nothing for longer than the read timeout."""


class TotalTimeoutError(ClientTimeoutError):
    """The whole call (all its attempts and waits) took longer than its total timeout."""


def translate(exc: httpx.HTTPError, method: str, url: str) -> ClientError:
    """The one place httpx's errors become the client's."""
    where = f"{method} {url}"
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectTimeoutError(f"{where}: no connection within the connect timeout")
    if isinstance(exc, httpx.TimeoutException):  # read, write, pool
        return ReadTimeoutError(f"{where}: {type(exc).__name__} ({exc or 'timed out'})")
    if isinstance(exc, httpx.TransportError):
        return ClientConnectionError(f"{where}: {type(exc).__name__}: {exc}")
    return ClientError(f"{where}: {type(exc).__name__}: {exc}")
