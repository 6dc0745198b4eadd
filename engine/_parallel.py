"""Parallel map: one action that runs a sub-application per item, concurrently.

Each child is its own stream, linked to the parent by ``Lineage(relation=
"child")`` in its first event, and its app id is deterministic:
``{parent app_id}.{action}.{origin}.{index}`` where ``origin`` is the sequence
id of the parent's first attempt at this step. So when the parent resumes after
a crash (or retries after a recorded failure) it finds the same children:
completed ones are not re-run (their final state is taken as is), partial ones
resume where they stopped, failed ones re-run their failed action. A later
round of the same action has a new origin and so fresh children - an old
round's child is never replayed into a new one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from statelog.eventstore import ConfigError, EventKind, Lineage, StatelogError, to_plain

from ._actions import Action, _Signature
from ._errors import ActionError, StateError
from ._state import State

if TYPE_CHECKING:
    from ._application import Application

__all__ = ["ParallelMap", "parallel_map"]

Reducer = Callable[[State, list[Any]], State]


class _Outcome(NamedTuple):
    result: Any
    state: State
    label: str | None
    attempt: int
    duration: float


class ParallelMap(Action):
    """Run the sub-graph once per item of ``state[items]``, at most ``max_concurrency`` at once.

    Each child starts with ``{item_key: item}`` (plus ``child_state(state, item)``
    if given) and runs until it halts; ``result_key`` of its final state (or its
    whole state) is its result. Results, in input order, go to ``writes[0]`` or
    through ``reduce(state, results) -> State``. The step's result is the list
    of child app ids.
    """

    is_parallel_map = True

    def __init__(
        self,
        *,
        actions: Mapping[str, Action],
        transitions: Sequence[tuple[Any, ...]],
        entrypoint: str,
        items: str,
        writes: Sequence[str],
        item_key: str = "item",
        result_key: str | None = None,
        reduce: Reducer | None = None,
        child_state: Callable[[State, Any], Mapping[str, Any]] | None = None,
        max_concurrency: int = 8,
        reads: Sequence[str] | None = None,
        name: str = "",
    ) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(
                f"parallel_map: max_concurrency must be an int >= 1, got {max_concurrency!r}"
            )
        if not writes:
            raise ConfigError("parallel_map: writes must name the key for its results, got []")
        self.name = name
        self.reads = list(reads) if reads is not None else [items]
        self.writes = list(writes)
        self.is_async = True
        self.child_actions = dict(actions)
        self.child_transitions = list(transitions)
        self.child_entrypoint = entrypoint
        self.items = items
        self.item_key = item_key
        self.result_key = result_key
        self.reduce = reduce
        self.child_state = child_state
        self.max_concurrency = max_concurrency
        self._sig = _Signature(_no_inputs, 1, f"parallel map {name!r}")

    async def _arun(self, state: State, inputs: Mapping[str, Any]) -> tuple[Any, Any, Any, int]:
        raise StateError(f"parallel map {self.name!r} runs only as a step of an Application")

    def __repr__(self) -> str:
        return (
            f"ParallelMap({self.name!r}, items={self.items!r}, children={self.child_entrypoint!r})"
        )

    def child_app_id(self, parent_app_id: str, origin: int, index: int) -> str:
        return f"{parent_app_id}.{self.name}.{origin}.{index}"

    async def run_children(
        self, app: Application, state: State, inputs: Mapping[str, Any], origin: int
    ) -> _Outcome:
        from ._builder import ApplicationBuilder

        started = time.perf_counter()
        items = state.get(self.items)
        if not isinstance(items, list):
            raise StateError(
                f"parallel map {self.name!r} reads a list from state[{self.items!r}], "
                f"got {type(items).__name__}"
            )
        limit = asyncio.Semaphore(self.max_concurrency)
        lineage = Lineage(
            partition_key=app.partition_key,
            app_id=app.app_id,
            sequence_id=origin,
            relation="child",
        )

        async def run_one(index: int, item: Any) -> Any:
            async with limit:
                initial = {self.item_key: item}
                if self.child_state is not None:
                    initial.update(self.child_state(state, item))
                child = await (
                    ApplicationBuilder()
                    .with_actions(**self.child_actions)
                    .with_transitions(*self.child_transitions)
                    .with_identifiers(
                        app_id=self.child_app_id(app.app_id, origin, index),
                        partition_key=app.partition_key,
                    )
                    .with_store(app.store, snapshots=None)
                    .with_parent(lineage)
                    .initialize_from(
                        default_state=initial, default_entrypoint=self.child_entrypoint
                    )
                    .abuild()
                )
                async with child:
                    was_open = child.position is not None
                    await child.arun(inputs=inputs)
                    final = child.state
                    if was_open and child.position is None:  # completed by this run
                        await app._record(
                            EventKind.CHILD_COMPLETED,
                            action=self.name,
                            data={"child": child.app_id, "index": index},
                        )
                if self.result_key is None:
                    return final.get_all()
                return final.get(self.result_key)

        outcomes = await asyncio.gather(
            *(run_one(i, item) for i, item in enumerate(items)), return_exceptions=True
        )
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                if isinstance(outcome, StatelogError) and not isinstance(outcome, ActionError):
                    raise outcome  # a store or contract error is not the action failing
                raise ActionError(
                    self.name,
                    -1,
                    f"parallel map {self.name!r}: child {index} "
                    f"({self.child_app_id(app.app_id, origin, index)}) failed: {outcome}",
                ) from outcome
        results = list(outcomes)
        if self.reduce is not None:
            new_state = self.reduce(state, results)
            if not isinstance(new_state, State):
                raise StateError(
                    f"parallel map {self.name!r}: reduce must return a State, "
                    f"got {type(new_state).__name__}"
                )
        else:
            new_state = state.update(**{self.writes[0]: results})
        for key in new_state.delta.keys:
            if key not in self.writes:
                raise StateError(
                    f"parallel map {self.name!r} wrote {key!r}, "
                    f"which is not in writes={self.writes}"
                )
        child_ids = [self.child_app_id(app.app_id, origin, i) for i in range(len(items))]
        return _Outcome(
            to_plain(child_ids, path="$.result"), new_state, None, 1, time.perf_counter() - started
        )


def _no_inputs(state: State) -> None:
    return None


def parallel_map(
    *,
    actions: Mapping[str, Action],
    transitions: Sequence[tuple[Any, ...]],
    entrypoint: str,
    items: str,
    writes: Sequence[str],
    item_key: str = "item",
    result_key: str | None = None,
    reduce: Reducer | None = None,
    child_state: Callable[[State, Any], Mapping[str, Any]] | None = None,
    max_concurrency: int = 8,
) -> ParallelMap:
    """Make a ``ParallelMap`` action (see its docstring)."""
    return ParallelMap(
        actions=actions,
        transitions=transitions,
        entrypoint=entrypoint,
        items=items,
        writes=writes,
        item_key=item_key,
        result_key=result_key,
        reduce=reduce,
        child_state=child_state,
        max_concurrency=max_concurrency,
    )
