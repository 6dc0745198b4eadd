"""Schemathesis over /openapi.json of a live service: no request it makes gets a 5xx.

Bounded (a few examples per operation) so it runs in well under a minute; the
module's service is its own, so the generated runs and forks touch no other test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from .conftest import ServeProcess

EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "log.db"
    proc = ServeProcess(db, "--max-body-bytes", "65536").start()
    yield proc
    assert proc.stop() == 0


def test_no_generated_request_gets_a_5xx(fuzzed: ServeProcess) -> None:
    import httpx

    # an app for the generators to hit, and the schema the service publishes
    httpx.post(fuzzed.url + "/v1/runs", json={"graph": "counter", "app_id": "fz"}, timeout=10)
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for operation in operations:
        if operation.path.endswith("/events/stream"):
            continue  # an endless stream; its errors are tested in test_sse

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=fuzzed.url, timeout=10)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )
            elif response.status_code >= 400:
                kind = response.headers.get("content-type")
                kind = kind[0] if isinstance(kind, list) else kind
                if kind != "application/problem+json":
                    failures.append(f"{case.method} {case.formatted_path}: {kind}")

        check()
    assert failures == []
    # and the stream's endpoint refuses bad input without a 5xx
    bad = httpx.get(fuzzed.url + "/v1/apps/fz/events/stream", params={"from": -1}, timeout=10)
    assert bad.status_code == 422
