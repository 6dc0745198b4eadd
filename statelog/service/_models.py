"""Request bodies (pydantic, so they are checked and described in /openapi.json)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ForkRequest", "InputRequest", "StartRunRequest"]

_ID = r"^[^/\s]{1,200}$"


def _check_text(value: Any, path: str) -> None:
    """Refuse a string with a lone surrogate anywhere in ``value`` (``ValueError``).

    JSON's ``\\ud800`` escapes read as such strings, which have no UTF-8 form:
    nothing could record them (the log, the operations file), so the request is
    refused (422) before anything is written. Iterative: any depth is fine.
    """
    todo = [(value, path)]
    while todo:
        item, where = todo.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{where} holds a lone surrogate, which has no UTF-8 form"
                ) from None
        elif isinstance(item, dict):
            for key, member in item.items():
                todo.append((key, f"{where} (a key)"))
                todo.append((member, f"{where}.{key!a}"))
        elif isinstance(item, list | tuple):
            todo.extend((member, f"{where}[{i}]") for i, member in enumerate(item))


class _Body(BaseModel):
    """A request body: every string in it has a UTF-8 form."""

    @model_validator(mode="after")
    def _utf8(self) -> Self:
        for name in type(self).model_fields:
            _check_text(getattr(self, name), name)
        return self


class StartRunRequest(_Body):
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


class InputRequest(_Body):
    """Human input for an app that waits for it."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any]
    actor: str | None = Field(default=None, max_length=200)


class ForkRequest(_Body):
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
