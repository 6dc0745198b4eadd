"""Writing v2 events in tests the short way: ``writes=``/``deletes=``/``duration=`` become ops."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from statelog.eventstore import Event, ops_of_delta


def v2(
    *,
    writes: Mapping[str, Any] | None = None,
    deletes: Iterable[str] = (),
    duration: float | None = None,
    **fields: Any,
) -> Event:
    """An ``Event``; ``writes`` -> ``set`` ops, ``deletes`` -> ``delete`` ops (after ``ops``)."""
    given = fields.get("ops", [])
    if (writes is not None or deletes) and type(given) is list:  # a wrong ops stays wrong
        fields["ops"] = [*given, *ops_of_delta(writes or {}, list(deletes))]
    if duration is not None:
        fields["duration_us"] = round(duration * 1_000_000)
    return Event(**fields)


def writes_of(event: Event) -> dict[str, Any]:
    """The values an event's ``set`` ops write (what v1 called ``writes``)."""
    return {op["key"]: op["value"] for op in event.ops if op["op"] == "set"}


def deletes_of(event: Event) -> list[str]:
    """The keys an event's ``delete`` ops remove."""
    return [op["key"] for op in event.ops if op["op"] == "delete"]
