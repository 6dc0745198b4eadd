"""The SQLite backend: the embedded default log (WAL; one writer thread, one reader thread).

This package owns the driver and its one error boundary, ``translate_error``,
which the store, the snapshot store, the relay checkpoint and the Kafka index
all use.
"""

from ._audit import audit_file
from ._schema import FORMAT, FORMAT_VERSION, Synchronous, translate_error
from ._store import SQLiteEventStore

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SQLiteEventStore",
    "Synchronous",
    "audit_file",
    "translate_error",
]
