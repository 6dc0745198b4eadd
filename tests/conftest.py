"""Shared fixtures. Area fixtures live in their own modules, loaded as plugins."""

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
