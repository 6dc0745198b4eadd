"""Registered workflows: a graph name -> a fresh ``ApplicationBuilder`` per run.

``--app NAME=MODULE:ATTR`` names an ``ApplicationBuilder`` (without identifiers
or store; with ``with_state`` / ``with_entrypoint`` for new apps) or a callable
returning one. The service adds identifiers and its store and starts every run
with ``initialize_from``: a new app starts from the builder's state at its
entrypoint, an existing one resumes where its log ends.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from statelog.engine import ApplicationBuilder, Graph
from statelog.eventstore import ConfigError

__all__ = ["Workflow", "demo_workflow", "load_workflow", "parse_app_spec"]


class Workflow:
    """One registered graph: how to make its builder, its start and its actions."""

    def __init__(self, name: str, source: ApplicationBuilder | Callable[[], ApplicationBuilder]):
        if not name or any(c.isspace() or c == "/" for c in name):
            raise ConfigError(f"graph name {name!r} must be non-empty, without spaces or '/'")
        self.name = name
        self._source = source
        probe = self._fresh()
        state, entrypoint = _start_of(probe)
        if entrypoint is None:
            raise ConfigError(
                f"workflow {name!r} has no entrypoint: call with_entrypoint(...) on its builder"
            )
        self.initial_state: Mapping[str, Any] = dict(state or {})
        self.entrypoint: str = entrypoint
        self.actions: frozenset[str] = frozenset(probe._actions)
        graph = Graph(probe._actions, probe._transitions, entrypoint)
        #: ``[source, target, condition]`` of every transition, in declaration order.
        self.transitions: list[tuple[str, str, str]] = [
            (t.source, t.target, repr(t.condition)) for t in graph.transitions
        ]

    def describe(self) -> dict[str, Any]:
        """The graph as JSON: name, entrypoint, actions, transitions (for ``/v1/graphs``)."""
        return {
            "name": self.name,
            "entrypoint": self.entrypoint,
            "actions": sorted(self.actions),
            "transitions": [list(t) for t in self.transitions],
        }

    def _fresh(self) -> ApplicationBuilder:
        source = self._source
        builder = source if isinstance(source, ApplicationBuilder) else source()
        if not isinstance(builder, ApplicationBuilder):
            raise ConfigError(
                f"workflow {self.name!r}: expected an ApplicationBuilder, "
                f"got {type(builder).__name__}"
            )
        if builder is source:
            builder = _copy_builder(builder)
        return builder

    def builder(self) -> ApplicationBuilder:
        """A builder for one run, without a start (the caller picks initialize_from / fork)."""
        builder = self._fresh()
        _clear_start(builder)
        return builder


# The builder has no public way to copy it or to read back its start; these two
# helpers are the only places that look inside (see docs/service.md).


def _copy_builder(builder: ApplicationBuilder) -> ApplicationBuilder:
    """A copy whose lists and dicts are its own (a builder's ``with_*`` mutate them)."""
    clone = copy.copy(builder)
    for key, value in vars(clone).items():
        if isinstance(value, list | dict):
            setattr(clone, key, copy.copy(value))
    return clone


def _start_of(builder: ApplicationBuilder) -> tuple[Mapping[str, Any] | None, str | None]:
    return builder._state, builder._entrypoint


def _clear_start(builder: ApplicationBuilder) -> None:
    builder._state = None
    builder._entrypoint = None


def parse_app_spec(spec: str) -> tuple[str, str, str]:
    """``NAME=MODULE:ATTR`` or ``MODULE:ATTR`` -> (name, module, attr)."""
    name, sep, target = spec.partition("=")
    if not sep:
        name, target = "", spec
    module, colon, attr = target.partition(":")
    if not colon or not module or not attr:
        raise ConfigError(f"--app {spec!r}: expected [NAME=]MODULE:ATTR")
    return name or attr.rsplit(".", 1)[-1], module, attr


def load_workflow(spec: str) -> Workflow:
    """Import the builder (or factory) that ``spec`` names and register it."""
    name, module_name, attr = parse_app_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"--app {spec!r}: {module_name!r} has no {attr!r}") from exc
    if not isinstance(target, ApplicationBuilder) and not callable(target):
        raise ConfigError(
            f"--app {spec!r}: {attr!r} is a {type(target).__name__}, "
            "not an ApplicationBuilder or a callable returning one"
        )
    return Workflow(name, target)


def _demo() -> ApplicationBuilder:
    from statelog._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state

    return demo_builder().with_state(demo_initial_state()).with_entrypoint(DEMO_ENTRYPOINT)


def demo_workflow() -> Workflow:
    """The built-in order flow of ``statelog demo``, as graph ``demo`` (it never ends by
    itself: give ``max_steps`` or a halt)."""
    return Workflow("demo", _demo)
