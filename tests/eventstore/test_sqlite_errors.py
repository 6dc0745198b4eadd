"""``statelog.eventstore.sqlite.translate_error``: the one sqlite3 boundary, and who uses it.

The errors are real ones, raised by sqlite3 against real files: a text file,
a lock held by another connection, a directory, a missing table, a closed
connection. The event store, the snapshot store, the Kafka relay's checkpoint
and the Kafka index all report a text file the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from statelog.eventstore import (
    SnapshotStore,
    SQLiteEventStore,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from statelog.eventstore.kafka._index import KafkaIndex
from statelog.eventstore.kafka._relay import SQLiteRelayCheckpoint
from statelog.eventstore.sqlite import translate_error


def _raised(run: Callable[[], object]) -> BaseException:
    try:
        run()
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 400)
    return path


def test_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = _text_file(tmp_path)
    db = sqlite3.connect(path)
    exc = _raised(lambda: db.execute("SELECT 1 FROM sqlite_master").fetchall())
    db.close()
    error = translate_error(exc, str(path))
    assert type(error) is StoreCorruptError
    assert "SQLITE_NOTADB" in str(error) and str(path) in str(error)


def test_a_lock_held_elsewhere_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        exc = _raised(lambda: other.execute("BEGIN IMMEDIATE"))
    finally:
        other.close()
        holder.execute("ROLLBACK")
        holder.close()
    assert type(translate_error(exc, str(path))) is StoreUnavailableError


def test_a_directory_is_unavailable(tmp_path: Path) -> None:
    exc = _raised(lambda: sqlite3.connect(tmp_path).execute("SELECT 1").fetchall())
    assert type(translate_error(exc, str(tmp_path))) is StoreUnavailableError


def test_other_errors_are_store_errors_and_say_what_failed(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "t.db")
    exc = _raised(lambda: db.execute("SELECT * FROM nowhere"))
    db.close()
    error = translate_error(exc, "p", doing="cannot read the thing")
    assert type(error) is StoreError
    assert str(error).startswith("cannot read the thing: ") and "no such table" in str(error)


def test_a_closed_connection_is_closed(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "t.db")
    db.close()
    assert type(translate_error(_raised(lambda: db.execute("SELECT 1")), "p")) is StoreClosedError
    # aiosqlite says it with a ValueError
    assert type(translate_error(ValueError("Connection closed"), "p")) is StoreClosedError


def test_a_store_error_passes_through() -> None:
    same = StoreUnavailableError("x")
    assert translate_error(same, "p") is same


async def test_every_user_reports_a_text_file_as_corrupt(tmp_path: Path) -> None:
    path = _text_file(tmp_path)
    with pytest.raises(StoreCorruptError) as info:
        await SQLiteEventStore.open(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    with pytest.raises(StoreCorruptError, match="snapshot store: cannot open") as info:
        await SnapshotStore.open(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    checkpoint = SQLiteRelayCheckpoint(path, "topic")
    with pytest.raises(StoreCorruptError, match="cannot open relay checkpoint") as info:
        await checkpoint.load()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    await checkpoint.aclose()
    index = KafkaIndex("topic", path)
    try:
        with pytest.raises(StoreCorruptError, match="cannot open the Kafka index") as info:
            await index.open()
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    finally:
        await index.close()
