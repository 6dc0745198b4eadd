"""Shared fixtures. Area fixtures live in their own modules, loaded as plugins."""

pytest_plugins: list[str] = ["tests.kafka_broker"]
