"""``statelog serve``: FastAPI on uvicorn over a statelog log (needs the ``service`` extra).

``create_app(ServiceConfig(...))`` makes the ASGI app; runs are queued and run
in the background by a bounded scheduler; operations survive a restart.
See docs/service.md.
"""

from ._app import create_app, service_of
from ._auth import ANONYMOUS, Principal, TokenTable, load_token_file, parse_tokens
from ._operations import Operation, OperationStore, RunRequest, service_db_path
from ._problems import PROBLEMS, ProblemError, problem_type
from ._service import Service, ServiceConfig
from ._status import ACTIVE, FINAL, Phase, Status, derive_status
from ._workflows import Workflow, demo_workflow, load_workflow, parse_app_spec

__all__ = [
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
