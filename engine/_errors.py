"""The engine's errors; all are ``StatelogError``s (see ``statelog.eventstore``'s tree)."""

from __future__ import annotations

from statelog.eventstore import ConcurrencyError, StatelogError, stream_name

__all__ = [
    "ActionError",
    "AppExistsError",
    "GraphChangedError",
    "GraphChangedWarning",
    "HookError",
    "InputError",
    "StateError",
    "TransitionError",
]


class ActionError(StatelogError):
    """A user action raised; the original exception is ``__cause__``."""

    def __init__(
        self, action: str, sequence_id: int, message: str | None = None, *, attempt: int = 1
    ) -> None:
        self.action = action
        self.sequence_id = sequence_id
        self.attempt = attempt  # the attempt (1-based) that failed last
        super().__init__(message or f"action {action!r} failed at sequence_id {sequence_id}")


class StateError(StatelogError, TypeError):
    """An action broke its contract (wrong return type, undeclared write)."""


class TransitionError(StatelogError):
    """The graph is invalid, or no transition applies."""


class HookError(StatelogError):
    """A lifecycle hook is misused (for example an async hook under a sync run)."""


class AppExistsError(ConcurrencyError):
    """A new app (``with_state`` / ``with_entrypoint``, ``fork_from``) names a
    stream that already exists; nothing was written.

    A ``ConcurrencyError`` whose ``expected`` is -1 (no stream yet) and whose
    ``actual`` is the existing stream's last sequence_id.
    """

    def __init__(self, stream: tuple[str, str], actual: int) -> None:
        super().__init__(stream, -1, actual)
        partition_key, app_id = self.stream
        pk = f", partition_key={partition_key!r}" if partition_key else ""
        self.args = (
            f"app {stream_name(self.stream)!r} already exists: its stream is at sequence_id "
            f"{actual}, so it cannot start anew (nothing was written). To continue it, build "
            f"with initialize_from(default_state=..., default_entrypoint=...) and "
            f"with_identifiers(app_id={app_id!r}{pk}); to start over, give a new app_id",
        )


class InputError(StatelogError, ValueError):
    """Human input is misused: nothing waits for it, or the value does not fit its schema."""


class GraphChangedError(StatelogError):
    """``initialize_from(..., on_graph_change="refuse")`` found a stream recorded
    under another graph fingerprint; nothing was written."""

    def __init__(self, app_id: str, recorded: str, current: str) -> None:
        self.app_id = app_id
        self.recorded = recorded
        self.current = current
        super().__init__(
            f"app {app_id!r} was recorded with graph {recorded}, this app's graph is "
            f"{current}; refusing to resume (on_graph_change='refuse')"
        )


class GraphChangedWarning(UserWarning):
    """An app resumed with a graph other than the one its log recorded."""
