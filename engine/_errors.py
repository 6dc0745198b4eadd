"""The engine's errors; all are ``StatelogError``s (see ``statelog.eventstore``'s tree)."""

from __future__ import annotations

from statelog.eventstore import StatelogError

__all__ = ["ActionError", "HookError", "StateError", "TransitionError"]


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
