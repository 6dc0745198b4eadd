"""The public faces of statelog.service and statelog.client, pinned; and ``import statelog``
loads none of the service's dependencies."""

from __future__ import annotations

import subprocess
import sys

import statelog.client
import statelog.service

from .conftest import ROOT

SERVICE = [
    "ACTIVE",
    "ANONYMOUS",
    "FINAL",
    "PROBLEMS",
    "Operation",
    "OperationStore",
    "Phase",
    "Principal",
    "ProblemError",
    "RunRequest",
    "Service",
    "ServiceConfig",
    "Status",
    "TokenTable",
    "Workflow",
    "create_app",
    "demo_workflow",
    "derive_status",
    "load_token_file",
    "load_workflow",
    "parse_app_spec",
    "parse_tokens",
    "problem_type",
    "service_db_path",
    "service_of",
]

CLIENT = [
    "FINAL_STATUSES",
    "RETRY_STATUSES",
    "ApiStatusError",
    "AsyncClient",
    "Client",
    "ClientConnectionError",
    "ClientError",
    "ClientTimeoutError",
    "ConnectTimeoutError",
    "Limits",
    "ReadTimeoutError",
    "Retries",
    "Timeout",
    "TotalTimeoutError",
]


def test_public_names_are_pinned() -> None:
    assert statelog.service.__all__ == SERVICE
    assert statelog.client.__all__ == CLIENT
    for module in (statelog.service, statelog.client):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_every_client_error_is_a_statelog_error() -> None:
    from statelog.eventstore import StatelogError

    for name in CLIENT:
        obj = getattr(statelog.client, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, StatelogError) and name.endswith("Error")


def test_import_statelog_loads_no_service_dependency() -> None:
    code = (
        "import sys, statelog, statelog.engine, statelog.eventstore, statelog._cli;"
        "statelog._cli.build_parser();"
        "print(sorted(m for m in ('fastapi', 'httpx', 'uvicorn', 'starlette', 'pydantic')"
        " if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
