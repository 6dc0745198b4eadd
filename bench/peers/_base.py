"""The surface every system adapter implements. Figures a system cannot give raise
``NotApplicableError`` with the reason."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bench.workloads import NotApplicableError


@dataclass(frozen=True)
class DurableConfig:
    """One SQLite configuration a durable run uses, stated as measured."""

    api: str  # e.g. "SQLitePersister (sync)"
    journal_mode: str | None  # None: the system's default (reported as measured)
    synchronous: str | None


class System:
    """A system under comparison. All figures are async so the runner can interleave."""

    name = "?"
    #: Keys of durable rows this system can fill, mapped to the config it uses there,
    #: or to a string saying why it cannot.
    durable_rows: dict[str, DurableConfig | str] = {}

    def available(self) -> str | None:
        """``None`` if installed, else the reason it is not."""
        return None

    def version(self) -> str:
        return "?"

    async def mem(self, steps: int) -> float:
        raise NotApplicableError("not implemented")

    async def durable(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        """Seconds for ``steps`` durable steps, and the pragmas really in effect."""
        raise NotApplicableError("not implemented")

    async def concurrent(self, apps: int, steps: int, path: Path) -> tuple[float, str]:
        raise NotApplicableError("not implemented")

    async def build_history(self, path: Path, steps: int) -> None:
        raise NotApplicableError("not implemented")

    async def resume(self, path: Path, steps: int) -> float:
        """Seconds from an open store to the first new durable step after resuming."""
        raise NotApplicableError("not implemented")

    async def replay(self, path: Path, steps: int) -> float:
        raise NotApplicableError("not implemented")

    async def rebuild(self, path: Path, steps: int, out: Path, limit: int) -> tuple[float, int]:
        """Seconds to rebuild a read model from the log, and how many events it applied."""
        raise NotApplicableError("not implemented")

    def bytes_on_disk(self, path: Path) -> int:
        return sqlite_bytes(path)


def sqlite_bytes(path: Path) -> int:
    """Bytes a SQLite database holds after a checkpoint: used pages (free pages excluded)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        con.close()
    return int(page_size * (pages - free))


def pragmas(con: sqlite3.Connection) -> str:
    """``journal_mode`` and ``synchronous`` of an open sqlite3 connection, as text."""
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    sync = con.execute("PRAGMA synchronous").fetchone()[0]
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"{str(mode).upper()}+{names.get(sync, sync)}"


def file_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += os.path.getsize(p)
    return total
