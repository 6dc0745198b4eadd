"""The one workload every system runs, and the figures the comparison reports.

A 3-action loop ``a -> b -> c -> a ...`` over a ~1 KB state. Each step changes
one small field: ``a`` increments ``count``, ``b`` flips ``flag``, ``c`` sets
``label`` to a short string. The rest of the state (a customer record, a few
order items and a note) is carried along untouched, as in a real workflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("a", "b", "c")


def initial_state() -> dict[str, Any]:
    """A fresh ~1 KB state (JSON-encoded size: see ``STATE_BYTES``)."""
    return {
        "count": 0,
        "flag": False,
        "label": "",
        "customer": {
            "id": "cus_7f3a9c21",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "address": {
                "line1": "12 Analytical Engine Way",
                "city": "London",
                "postcode": "NW1 6XE",
                "country": "GB",
            },
            "tier": "gold",
        },
        "items": [
            {"sku": f"SKU-{i:04d}", "qty": i % 3 + 1, "price_cents": 1999 + 250 * i}
            for i in range(8)
        ],
        "notes": (
            "Customer asked for delivery after 18:00 on weekdays; leave with the "
            "concierge if nobody answers. Gift wrap items 2 and 5. Invoice to the "
            "company address. Priority shipping was refunded once already, so "
            "escalate any delay to the account owner before promising a new date."
        ),
        "tags": ["b2b", "repeat", "gift", "fragile", "eu-vat", "net-30"],
        "channel": {"source": "web", "campaign": "spring-sale", "referrer": "newsletter"},
    }


STATE_BYTES = len(json.dumps(initial_state(), separators=(",", ":")))


def step_a(state: dict[str, Any]) -> dict[str, Any]:
    """The delta of action ``a``: one small field."""
    return {"count": state["count"] + 1}


def step_b(state: dict[str, Any]) -> dict[str, Any]:
    return {"flag": not state["flag"]}


def step_c(state: dict[str, Any]) -> dict[str, Any]:
    return {"label": f"c{state['count']}"}


STEPS = {"a": step_a, "b": step_b, "c": step_c}


def expected_after(steps: int) -> dict[str, Any]:
    """The state after ``steps`` steps from the entrypoint ``a`` (for checks)."""
    state = initial_state()
    for i in range(steps):
        state.update(STEPS[ACTIONS[i % 3]](state))
    return state


def expected_count(steps: int) -> int:
    """``count`` after ``steps`` steps (one ``a`` in every three, starting with ``a``)."""
    return (steps + 2) // 3


class NotApplicableError(Exception):
    """A system cannot produce a figure; the message says why."""


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does. ``quick`` keeps the whole run ~2 minutes."""

    mem_steps: int
    durable_steps: int
    durable_steps_slow: int  # for systems measured at < ~1,000 steps/s
    concurrent_apps: int
    concurrent_steps: int  # per app
    resume_history: tuple[int, ...]
    rebuild_limit: int = 10_000  # events per sample for a peer that commits per event
    runs: int = 5
    warmups: int = 1
    resume_samples: int = 5
    label: str = "full"
    notes: list[str] = field(default_factory=list)


FULL = Sizes(
    mem_steps=30_000,
    durable_steps=3_000,
    durable_steps_slow=600,
    concurrent_apps=100,
    concurrent_steps=30,
    resume_history=(1_000, 100_000, 1_000_000),
    rebuild_limit=3_000,
    resume_samples=15,
    label="full",
)

QUICK = Sizes(
    mem_steps=3_000,
    durable_steps=450,
    durable_steps_slow=90,
    concurrent_apps=100,
    concurrent_steps=6,
    resume_history=(1_000, 10_000, 30_000),
    rebuild_limit=1_000,
    resume_samples=7,
    label="quick",
)


TINY = Sizes(
    mem_steps=30,
    durable_steps=6,
    durable_steps_slow=3,
    concurrent_apps=3,
    concurrent_steps=3,
    resume_history=(9, 18, 27),
    rebuild_limit=30,
    runs=1,
    warmups=0,
    resume_samples=1,
    label="tiny",
)
