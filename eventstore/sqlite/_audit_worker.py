"""A worker process of ``verify``: a ``Job`` (JSON) on stdin, its ``Part`` (JSON) on stdout.

``audit_file`` splits a large log's streams between its own thread and a few
of these (``python -m statelog.eventstore.sqlite._audit_worker``), since the
walk is CPU-bound Python and streams are independent. A worker is started
before its job is known (it imports meanwhile); empty stdin: nothing to do.
Only msgspec JSON crosses the pipe: nothing is unpickled. Each worker opens the file read-only.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys

import msgspec

from ._audit import Job, _lenient, audit_streams
from ._schema import connect_read_only, read_format

#: A worker runs below the caller's CPU priority: on a busy machine the process
#: that started verify (its event loop) then keeps getting the CPU it needs.
#: (Same run, 2 cores, load ~7: loop oversleeps over 15 ms per 1M-event verify
#: 27 and 15 at the same priority, 4 and 2 at +10; the walk took no longer.)
NICE = 10


def main() -> int:
    with contextlib.suppress(OSError):
        os.nice(NICE)
    # The walk builds no reference cycles and this process exits after it: the
    # cyclic GC only rescans the decoded values (same-run A/B, 200,000 events:
    # 3.35 -> 3.11 and 3.29 -> 3.06 us of CPU per event with it off).
    gc.disable()
    data = sys.stdin.buffer.read()
    if not data:  # started ahead, then not needed (fewer streams than workers)
        return 0
    job = msgspec.json.decode(data, type=Job)
    db, _ = connect_read_only(job.path, busy_timeout=5.0)
    try:
        _lenient(db)
        codec = read_format(db, job.path)
        db.execute("BEGIN")
        part = audit_streams(db, codec, job)
        db.execute("ROLLBACK")
    finally:
        db.close()
    sys.stdout.buffer.write(msgspec.json.encode(part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
