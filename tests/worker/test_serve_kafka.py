"""``statelog serve --kafka``: runs go to the workers; status and history come from the topic."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from statelog.worker import ensure_topics
from tests.service.conftest import ServeProcess
from tests.worker.harness import WorkerProcess, covers, wait_for

pytestmark = pytest.mark.kafka


async def test_a_run_started_through_the_service_runs_on_a_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"s{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, prefix, 2)
    worker = WorkerProcess(kafka_bootstrap, prefix, f"{prefix}-g", "w0", "--demo")
    serve = ServeProcess(
        tmp_path / "ops.db", "--kafka", kafka_bootstrap, "--topic-prefix", prefix, apps=[]
    )
    try:
        await wait_for(lambda: covers([worker], 2), "the worker to own the partitions", 60)
        await asyncio.to_thread(serve.start)
        async with httpx.AsyncClient(base_url=serve.url, timeout=10) as client:
            answer = await client.post(
                "/v1/runs", json={"graph": "demo", "app_id": "via-serve", "max_steps": 8}
            )
            assert answer.status_code == 202, answer.text
            op_id = answer.json()["id"]

            async def ended() -> dict[str, object] | None:
                body: dict[str, object] = (await client.get(f"/v1/operations/{op_id}")).json()
                return body if body["status"] not in ("queued", "running") else None

            body = await wait_for(ended, "the run to end", 60)
            assert body["status"] == "halted", body
            events = (await client.get("/v1/apps/via-serve/events")).json()
        items = events["events"] if isinstance(events, dict) else events
        assert 8 <= len(items) <= 10
        assert [e["sequence_id"] for e in items] == list(range(len(items)))
    finally:
        if serve.proc is not None:
            serve.stop()
        worker.stop()
