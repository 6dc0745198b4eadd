"""Bearer tokens scoped to partitions, read from ``--token-file``.

One token per line: ``TOKEN SCOPE GLOB`` where SCOPE is ``read`` or ``write``
(write includes read) and GLOB is an ``fnmatch`` pattern over partition keys
(``*`` for all, ``tenant-a-*``, ...). Blank lines and lines starting with ``#``
are ignored. Without a token file every request is allowed (loopback only:
``statelog serve`` refuses to bind anything else without one).
"""

from __future__ import annotations

import fnmatch
import hmac
import os
from collections.abc import Iterable
from typing import Literal

import msgspec

from statelog.eventstore import ConfigError

from ._problems import ProblemError

__all__ = ["ANONYMOUS", "Principal", "TokenTable", "load_token_file"]

Scope = Literal["read", "write"]


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: a token's name (its line number), scope and partition glob."""

    name: str
    scope: Scope
    partitions: str

    def can_write(self) -> bool:
        return self.scope == "write"

    def sees(self, partition_key: str) -> bool:
        return fnmatch.fnmatchcase(partition_key, self.partitions)

    def require(self, partition_key: str, *, write: bool) -> None:
        """Raise 403 unless this principal may read (or write) ``partition_key``."""
        if write and not self.can_write():
            raise ProblemError("forbidden", f"token {self.name} is read-only")
        if not self.sees(partition_key):
            raise ProblemError(
                "forbidden",
                f"token {self.name} is not allowed partition_key {partition_key!r}",
            )


#: Everything is allowed (no token file).
ANONYMOUS = Principal("anonymous", "write", "*")


class TokenTable:
    """The tokens the service accepts; ``None`` table means auth is off."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._entries = [(token.encode(), principal) for token, principal in entries]
        if not self._entries:
            raise ConfigError("the token file holds no token")

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, header: str | None) -> Principal:
        """The principal for an ``Authorization`` header, or a 401 problem."""
        challenge = {"WWW-Authenticate": 'Bearer realm="statelog"'}
        if not header:
            raise ProblemError("unauthorized", "no bearer token", headers=challenge)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(
                "unauthorized", "expected 'Authorization: Bearer TOKEN'", headers=challenge
            )
        given = token.strip().encode()
        found: Principal | None = None
        for known, principal in self._entries:  # compare with every entry: constant time
            if hmac.compare_digest(known, given) and found is None:
                found = principal
        if found is None:
            raise ProblemError("unauthorized", "unknown bearer token", headers=challenge)
        return found


def parse_tokens(text: str, *, source: str = "token file") -> TokenTable:
    entries: list[tuple[str, Principal]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("read", "write"):
            raise ConfigError(
                f"{source} line {number}: expected 'TOKEN read|write PARTITION_GLOB', "
                f"got {len(parts)} fields"
            )
        token, scope, glob = parts
        if len(token) < 16:
            raise ConfigError(f"{source} line {number}: a token needs at least 16 characters")
        entries.append(
            (token, Principal(f"#{number}", "read" if scope == "read" else "write", glob))
        )
    return TokenTable(entries)


def load_token_file(path: str | os.PathLike[str]) -> TokenTable:
    """Read and check a token file (before the server starts, so blocking is fine)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {os.fspath(path)!r}: {exc.strerror}") from exc
    return parse_tokens(text, source=os.fspath(path))
