"""Plain starts (no Idempotency-Key) in one group go in as one multi-row INSERT
(``OperationStore._create_plain``): each gets its own operation as stored, its
cursor its rowid, in the order of the group, and a group with a refused start
among them writes none of the refused one and all of the rest."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from statelog.service._operations import _PLAIN_ROWS, Operation, OperationStore, RunRequest
from statelog.service._problems import ProblemError


def _create(
    store: OperationStore, app_id: str, graph: str = "g", key: str | None = None
) -> asyncio.Future[tuple[Operation, bool]]:
    return store.queue_create(
        graph=graph,
        partition_key="pk",
        app_id=app_id,
        principal="anonymous",
        idempotency_key=key,
        request=RunRequest(inputs={"n": app_id}),
        fingerprint="" if key is None else f"fp-{app_id}",
    )


def _stored(path: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT id, rowid, app_id, graph, idempotency_key, request, phase, created_at "
            "FROM operations"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


async def test_a_group_of_plain_starts_is_stored_as_answered(tmp_path: Path) -> None:
    path = tmp_path / "ops"
    store = await OperationStore(path).open()
    try:
        first, _ = await _create(store, "before")  # the table's rowids do not start at 1
        # more plain starts than one INSERT takes, a keyed start in the middle
        count = 2 * _PLAIN_ROWS + 7
        group = [  # queued in this order (queue_create queues at once)
            _create(store, "keyed", key="k1") if i == 50 else _create(store, f"a{i}")
            for i in range(count + 1)
        ]
        answers = await asyncio.gather(*group)
        again, replayed = await _create(store, "keyed", key="k1")
    finally:
        await store.aclose()
    stored = _stored(path)
    ops = [op for op, _ in answers]
    assert not any(replayed for _, replayed in answers)
    assert replayed and again.id == ops[50].id
    assert len(stored) == count + 2
    assert [op.cursor for op in ops] == list(range(first.cursor + 1, first.cursor + count + 2))
    for op in ops:
        rowid, app_id, graph, key, request, phase, created_at = stored[op.id]
        assert (op.cursor, op.app_id, op.graph, op.idempotency_key) == (rowid, app_id, graph, key)
        assert (op.phase, op.created_at) == (phase, created_at)
        assert msgspec.json.decode(request, type=RunRequest) == op.request
        assert op.request.inputs == {"n": op.app_id}


async def test_a_refused_plain_start_leaves_the_rest_of_its_group(tmp_path: Path) -> None:
    path = tmp_path / "ops"
    store = await OperationStore(path).open()
    try:
        await _create(store, "busy")  # stays queued
        done, _ = await _create(store, "done", graph="other")
        await store.finish(done.id, "finished", "completed", sequence_id=1, position=None)
        # a known app with another graph; a busy app, and one app twice (the second busy)
        groups = {
            ("c0", "done", "c1"): {1: "invalid-request"},
            ("b0", "b1", "busy", "b2", "b0", "b3", "b4"): {2: "app-busy", 4: "app-busy"},
        }
        for names, refusals in groups.items():
            answers = await asyncio.gather(
                *(_create(store, name) for name in names), return_exceptions=True
            )
            for i, answer in enumerate(answers):
                if i in refusals:
                    assert isinstance(answer, ProblemError) and answer.slug == refusals[i]
                else:
                    assert not isinstance(answer, BaseException), answer
                    op, _ = answer
                    assert _stored(path)[op.id][:2] == (op.cursor, names[i])
    finally:
        await store.aclose()
    stored = _stored(path)
    apps = sorted(row[1] for row in stored.values())
    assert apps == ["b0", "b1", "b2", "b3", "b4", "busy", "c0", "c1", "done"]
