"""Timeouts, retries and limits: plain values, checked when made."""

from __future__ import annotations

import random

import msgspec

from statelog.eventstore import ConfigError

__all__ = ["RETRY_STATUSES", "Limits", "Retries", "Timeout"]

#: Statuses worth another try (for a call that is safe to repeat).
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class Timeout(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds: ``connect`` and ``read`` per attempt, ``total`` for a whole call
    (attempts, backoff and ``Retry-After`` waits included; ``None``: no limit)."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    total: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"Timeout.{name} must be > 0, got {getattr(self, name)!r}")
        if self.total is not None and not self.total > 0:
            raise ConfigError(f"Timeout.total must be > 0 or None, got {self.total!r}")


class Retries(msgspec.Struct, frozen=True, kw_only=True):
    """How a safe call is tried again: ``attempts`` in all, exponential backoff with
    full jitter (``backoff`` * 2**n, at most ``max_backoff``), ``Retry-After`` honoured
    up to ``max_retry_after`` seconds."""

    attempts: int = 4
    backoff: float = 0.1
    max_backoff: float = 5.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"Retries.attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ConfigError("Retries: backoff, max_backoff and max_retry_after must be >= 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Pool sizes (``max_connections``, ``max_keepalive``) and ``max_concurrency``: calls
    in flight at once from this client (event streams are not counted)."""

    max_connections: int = 100
    max_keepalive: int = 20
    keepalive_expiry: float = 5.0
    max_concurrency: int = 64

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_concurrency < 1 or self.max_keepalive < 0:
            raise ConfigError(
                "Limits: max_connections and max_concurrency must be >= 1, max_keepalive >= 0"
            )
