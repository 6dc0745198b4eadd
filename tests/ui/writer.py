"""Another process that appends to a log: ``python -m tests.ui.writer DB APP START COUNT``.

It appends COUNT events to APP from sequence START, prints ``wrote``, and keeps the
log open until its stdin closes (a writer that is still running).
"""

from __future__ import annotations

import asyncio
import sys

from statelog.eventstore import Event, SQLiteEventStore


def events(app_id: str, start: int, count: int) -> list[Event]:
    return [
        Event(
            partition_key="",
            app_id=app_id,
            sequence_id=i,
            kind="action_completed",
            action="step",
            next_action="step",
            ops=[{"op": "set", "key": "n", "value": i}],
        )
        for i in range(start, start + count)
    ]


async def main(db: str, app_id: str, start: int, count: int) -> None:
    async with await SQLiteEventStore.open(db) as store:
        await store.append(events(app_id, start, count), expected_sequence=start - 1)
        print("wrote", flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
