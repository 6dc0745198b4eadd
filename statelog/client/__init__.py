"""``statelog.client``: call ``statelog serve`` from other programs (the ``service`` extra).

``AsyncClient`` (asyncio, one pooled ``httpx.AsyncClient``) and ``Client``,
its blocking face generated from it. Timeouts per call and by default, retries
with backoff and jitter only where repeating is safe, idempotency keys on
starts, a cap on calls in flight. See docs/client.md.
"""

from ._client import FINAL_STATUSES, AsyncClient
from ._config import RETRY_STATUSES, Limits, Retries, Timeout
from ._errors import (
    ApiStatusError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    ConnectTimeoutError,
    ReadTimeoutError,
    TotalTimeoutError,
)
from ._sync import Client

__all__ = [
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
