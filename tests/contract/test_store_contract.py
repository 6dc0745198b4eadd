"""The EventStore contract (tests/contract.py) against every local backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from statelog.eventstore import EventStore, MemoryEventStore, SQLiteEventStore
from tests.contract.store_contract import StoreContract


class TestMemoryEventStore(StoreContract):
    durable = False
    supports_cross_process = False

    async def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        return MemoryEventStore(**options)


class TestSQLiteEventStoreMsgpack(StoreContract):
    async def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        return await SQLiteEventStore.open(tmp_path / "log.db", codec="msgpack", **options)


class TestSQLiteEventStoreJson(StoreContract):
    async def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        return await SQLiteEventStore.open(tmp_path / "log.db", codec="json", **options)
