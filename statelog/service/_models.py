"""Request bodies (pydantic, so they are checked and described in /openapi.json)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ForkRequest", "InputRequest", "StartRunRequest"]

_ID = r"^[^/\s]{1,200}$"


class StartRunRequest(BaseModel):
    """Start a run of ``graph`` (a new app, or resume ``app_id`` where its log ends)."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(min_length=1, max_length=200)
    app_id: str | None = Field(default=None, pattern=_ID)
    partition_key: str = Field(default="", max_length=200)
    inputs: dict[str, Any] = Field(default_factory=dict)
    halt_before: list[str] = Field(default_factory=list, max_length=100)
    halt_after: list[str] = Field(default_factory=list, max_length=100)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    timeout: float | None = Field(default=None, gt=0, le=7 * 86400)
    actor: str | None = Field(default=None, max_length=200)


class InputRequest(BaseModel):
    """Human input for an app that waits for it."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any]
    actor: str | None = Field(default=None, max_length=200)


class ForkRequest(BaseModel):
    """Branch a new app from another one's state at ``sequence_id`` (default: its last)."""

    model_config = ConfigDict(extra="forbid")

    new_app_id: str = Field(pattern=_ID)
    sequence_id: int | None = Field(default=None, ge=0, le=2**63 - 1)
    partition_key: str | None = Field(
        default=None, max_length=200, description="the new app's (default: the source's)"
    )
    graph: str | None = Field(
        default=None, min_length=1, max_length=200, description="if the service does not know it"
    )
