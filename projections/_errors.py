"""The projections' error; a ``StatelogError`` (see ``statelog.eventstore``'s tree)."""

from __future__ import annotations

from statelog.eventstore import StatelogError, stream_name

__all__ = ["ProjectionError"]


class ProjectionError(StatelogError):
    """A projection could not run.

    Its handler failed (``stream``/``sequence_id`` name the event; the
    checkpoint did not advance), its name is unknown, or its read model cannot
    be opened or written (``position`` is then ``None``).
    """

    def __init__(
        self,
        projection: str,
        position: int | None,
        message: str,
        *,
        stream: tuple[str, str] | None = None,
        sequence_id: int | None = None,
    ) -> None:
        self.projection = projection
        self.position = position
        self.stream = stream
        self.sequence_id = sequence_id
        where = f" at position {position}" if position is not None else ""
        if stream is not None:
            where += f" (stream {stream_name(stream)!r}#{sequence_id})"
        super().__init__(f"projection {projection!r}{where}: {message}")
