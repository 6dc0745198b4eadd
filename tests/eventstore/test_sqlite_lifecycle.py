"""A store never closed neither hangs the interpreter nor leaks threads or files.

Each case runs a script in a fresh interpreter: what happens at exit and at
garbage collection is the interpreter's, not pytest's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PRELUDE = """
import asyncio, gc, json, os, sys, threading
from statelog.eventstore import Event, SQLiteEventStore

def ev(app_id, seq):
    return Event(partition_key="p", app_id=app_id, sequence_id=seq, kind="action_completed",
                 ops=[{"op": "set", "key": "n", "value": seq}])

def fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
"""

NEVER_CLOSED = {
    # the store is a global: still alive (and open) when the interpreter exits
    "global": """
STORE = None
async def main(path):
    global STORE
    STORE = await SQLiteEventStore.open(path)
    await STORE.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
    await STORE.append([ev("a", 2)], expected_sequence=1)
asyncio.run(main(sys.argv[1]))
""",
    # dropped when main() returns, while asyncio.run closes its loop
    "local": """
async def main(path):
    store = await SQLiteEventStore.open(path)
    await store.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
    await store.append([ev("a", 2)], expected_sequence=1)
asyncio.run(main(sys.argv[1]))
""",
    # an append still queued when the loop stops
    "in-flight": """
STORE = None
async def main(path):
    global STORE
    STORE = await SQLiteEventStore.open(path)
    await STORE.append([ev("a", 0), ev("a", 1), ev("a", 2)], expected_sequence=-1)
    asyncio.get_running_loop().create_task(STORE.append([ev("a", 3)], expected_sequence=2))
asyncio.run(main(sys.argv[1]))
""",
}

DROPPED = """
async def main(directory):
    base_threads, base_fds = threading.active_count(), fds()
    for i in range(20):
        store = await SQLiteEventStore.open(os.path.join(directory, f"s{i}.db"))
        await store.append([ev("a", 0)], expected_sequence=-1)
        await store.read("p", "a")
        del store
    gc.collect()
    for _ in range(500):  # the threads close their connections and end on their own
        if threading.active_count() == base_threads:
            break
        await asyncio.sleep(0.01)
    print(json.dumps({"base": base_threads, "threads": threading.active_count(),
                      "base_fds": base_fds, "fds": fds()}))
asyncio.run(main(sys.argv[1]))
"""


def _run(script: str, arg: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ResourceWarnings shown; ``TimeoutExpired`` if it hangs."""
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", PRELUDE + script, str(arg)],
        capture_output=True,
        text=True,
        timeout=10,
    )


@pytest.mark.parametrize("case", list(NEVER_CLOSED))
def test_a_store_never_closed_lets_the_interpreter_exit(tmp_path: Path, case: str) -> None:
    path = tmp_path / "log.db"
    done = _run(NEVER_CLOSED[case], path)  # TimeoutExpired: it hung
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    check = subprocess.run(
        [sys.executable, "-c", PRELUDE + _COUNT, str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert check.returncode == 0, check.stderr
    # every acknowledged append is in the file (the one in flight: whole or not at all)
    assert json.loads(check.stdout) in ([0, 1, 2], [0, 1, 2, 3])


_COUNT = """
async def main(path):
    async with SQLiteEventStore(path) as store:
        print(json.dumps([e.sequence_id for e in await store.read("p", "a")]))
asyncio.run(main(sys.argv[1]))
"""


def test_stores_dropped_open_warn_and_leak_no_thread_or_file(tmp_path: Path) -> None:
    done = _run(DROPPED, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert done.stderr.count("ResourceWarning: unclosed SQLiteEventStore") == 20, done.stderr
    figures = json.loads(done.stdout)
    assert figures["base"] == 1 and figures["threads"] == 1, figures
    assert figures["fds"] == figures["base_fds"], figures
