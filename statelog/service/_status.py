"""The one place a run's or an app's status is decided.

``derive_status`` takes what the log says (the stream's last event) and what the
service knows of the operation driving it (its phase), and nothing else. When
the engine writes lifecycle events (``run_started``, ``halted``,
``waiting_for_input``, ``completed``, ``cancelled``), they are read here and
the service's own bookkeeping shrinks to the queue.
"""

from __future__ import annotations

from typing import Literal

from statelog.eventstore import Event, EventKind

__all__ = ["ACTIVE", "FINAL", "Phase", "Status", "derive_status"]

#: What the service reports for an operation or an app.
Status = Literal[
    "queued",
    "running",
    "halted",
    "waiting_for_input",
    "completed",
    "failed",
    "cancelled",
    "timed_out",
    "interrupted",
    "unknown",
]

#: What the service itself records of an operation (the rest comes from the log).
#: ``finished``: the run loop returned (a halt, max_steps, the end, a failure).
#: ``failed``: the run loop raised before or without writing an event (a store error,
#: an action breaking its contract) - an ``action_failed`` event is read from the log.
Phase = Literal["queued", "running", "finished", "failed", "cancelled", "timed_out", "interrupted"]

#: Statuses in which an operation still owns its app.
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
#: Statuses an operation ends in (each operation ends exactly once).
FINAL: frozenset[str] = frozenset(
    {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}
)


def derive_status(last_event: Event | None, phase: Phase | None) -> Status:
    """The status of a run (or of an app: its latest operation's phase, if any).

    * an operation that is queued, running, cancelled, timed out or interrupted
      says so (the log has no event for these yet);
    * otherwise the stream's last event decides: ``action_failed`` -> failed,
      ``waiting_for_input`` -> waiting_for_input, ``cancelled`` -> cancelled, no
      next action -> completed, else halted (it can be resumed);
    * a stream with no event and no operation -> unknown.
    """
    if phase is not None and phase != "finished":
        return phase
    if last_event is None:
        return "unknown"
    if last_event.kind == EventKind.ACTION_FAILED:
        return "failed"
    if last_event.kind == EventKind.WAITING_FOR_INPUT:
        return "waiting_for_input"
    if last_event.kind == EventKind.CANCELLED:
        return "cancelled"
    if last_event.next_action is None:
        return "completed"
    return "halted"
