"""Shared fixtures. Area fixtures live in their own modules, loaded as plugins."""

import sys

import pytest

pytest_plugins: list[str] = ["tests.kafka_broker", "tests.redis_server"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect contract tests that need a capability their backend switches off."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("requires")
        cls = getattr(item, "cls", None)
        if marker is not None and cls is not None:
            missing = [name for name in marker.args if not getattr(cls, name)]
            if missing:
                drop.append(item)
                continue
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name every worker that did not stop on SIGTERM (tests/worker/harness.py)."""
    harness = sys.modules.get("tests.worker.harness")
    for line in getattr(harness, "SLOW_STOPS", ()):
        terminalreporter.write_line(f"SLOW STOP: {line}")
