"""The Redis backend: ``RedisEventStore`` and ``RedisSnapshotStore`` (redis.asyncio).

Importing this package loads redis-py (``pip install "statelog[redis]"``);
``import statelog`` and ``import statelog.eventstore`` do not. Every driver
error is translated at one boundary, ``translate_error``. docs/redis.md has
the key layout, the durability the server's settings give, and what differs
from SQLite.
"""

from ._client import RedisKeys, translate_error
from ._snapshots import RedisSnapshotStore
from ._store import RedisEventStore

__all__ = [
    "RedisEventStore",
    "RedisKeys",
    "RedisSnapshotStore",
    "translate_error",
]
