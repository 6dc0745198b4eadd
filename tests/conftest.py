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


#: SLOW_STOPS lines the pytest-xdist worker processes sent back (see below).
_SLOW_STOPS_OF_WORKERS: list[str] = []


def _slow_stops() -> list[str]:
    harness = sys.modules.get("tests.worker.harness")
    return list(getattr(harness, "SLOW_STOPS", ()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand this process's SLOW_STOPS to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["statelog_slow_stops"] = _slow_stops()


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: run by the controller
def pytest_testnodedown(node: object, error: object) -> None:
    _SLOW_STOPS_OF_WORKERS.extend(getattr(node, "workeroutput", {}).get("statelog_slow_stops", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name every worker that did not stop on SIGTERM (tests/worker/harness.py)."""
    for line in _slow_stops() + _SLOW_STOPS_OF_WORKERS:
        terminalreporter.write_line(f"SLOW STOP: {line}")
