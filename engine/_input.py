"""Human input that waits: an action asks, the app pauses, someone answers.

An action asks with ``wait_for_input(name, schema=...)`` when its input is
not there yet (LangGraph's ``interrupt()`` works the same way: the node runs
again from the top once the answer is in)::

    @action(reads=["draft"], writes=["approved"])
    def review(state, approval=None):
        if approval is None:
            wait_for_input("approval", schema={"type": "boolean"})
        return state.update(approved=approval)

``wait_for_input`` raises ``InputRequired``; the engine records
``waiting_for_input`` (the name and the schema) and the run returns.
``await app.aprovide_input("approval", True)`` - in this process or in
another one that resumed the app with ``initialize_from`` - validates the
value against the schema, records ``input_received``, and the next run gives
it to the action as the input ``approval``.

``validate(schema, value)`` checks a JSON Schema subset: ``type`` (one name or
a list), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties: false``, ``items``, ``minimum``, ``maximum``,
``minLength``, ``maxLength``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from ._errors import InputError

__all__ = ["InputRequired", "validate", "wait_for_input"]


class InputRequired(Exception):  # noqa: N818 - a signal, not an error
    """Raised by ``wait_for_input``: the action needs input ``name`` to go on."""

    def __init__(self, name: str, schema: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"action waits for input {name!r}")
        self.name = name
        self.schema = dict(schema) if schema is not None else None


def wait_for_input(name: str, *, schema: Mapping[str, Any] | None = None) -> NoReturn:
    """Pause the app until input ``name`` is provided (``Application.aprovide_input``)."""
    if type(name) is not str or not name:
        raise InputError(f"wait_for_input: name must be a non-empty str, got {name!r}")
    if schema is not None and not isinstance(schema, Mapping):
        raise InputError(f"wait_for_input: schema must be a JSON Schema dict, got {schema!r}")
    raise InputRequired(name, schema)


_TYPES: dict[str, Any] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
}


def validate(schema: Mapping[str, Any] | None, value: Any, path: str = "$") -> None:
    """Raise ``InputError`` naming the path if ``value`` does not fit ``schema``."""
    if not schema:
        return
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not any(_TYPES.get(k, lambda v: False)(value) for k in kinds):
            raise InputError(
                f"input at `{path}` must be of type {' or '.join(kinds)}, "
                f"got {type(value).__name__} {value!r}"
            )
    if "enum" in schema and value not in schema["enum"]:
        raise InputError(f"input at `{path}` must be one of {schema['enum']!r}, got {value!r}")
    if "const" in schema and value != schema["const"]:
        raise InputError(f"input at `{path}` must be {schema['const']!r}, got {value!r}")
    if type(value) in (int, float):
        if "minimum" in schema and value < schema["minimum"]:
            raise InputError(f"input at `{path}` must be >= {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InputError(f"input at `{path}` must be <= {schema['maximum']}, got {value}")
    if type(value) is str:
        if len(value) < schema.get("minLength", 0):
            raise InputError(f"input at `{path}` is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InputError(f"input at `{path}` is longer than {schema['maxLength']}")
    if type(value) is dict:
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                raise InputError(f"input at `{path}` lacks the required member {key!r}")
        for key, item in value.items():
            if key in props:
                validate(props[key], item, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                raise InputError(f"input at `{path}` has an unexpected member {key!r}")
    if type(value) is list and "items" in schema:
        for i, item in enumerate(value):
            validate(schema["items"], item, f"{path}[{i}]")
