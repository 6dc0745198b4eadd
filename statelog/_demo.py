"""The built-in demo workflow behind ``statelog demo``: an order flow.

Every order is received, checked, maybe sent for approval (large amounts),
charged through a flaky payment gateway (a Node that retries: every third order
times out on its first attempt), and queued for shipping. When enough orders
are queued, ``ship`` fans them out to carriers as a parallel map of
sub-applications (one stream per carrier wave) and folds the tracking numbers
back. Everything is deterministic, so a run that was killed and resumed ends in
the same state as one that was not.
"""

from __future__ import annotations

from typing import Any

from statelog.engine import (
    ApplicationBuilder,
    Node,
    State,
    action,
    default,
    expr,
    parallel_map,
    when,
)

__all__ = ["DEMO_ENTRYPOINT", "demo_builder", "demo_initial_state"]

DEMO_ENTRYPOINT = "receive"
#: Orders queued before a shipping wave goes out, and carriers per wave.
WAVE_SIZE = 40
CARRIERS = 4


@action(reads=["orders"], writes=["orders", "order"])
def receive(state: State) -> State:
    number = state["orders"] + 1
    amount = (number * 7919) % 50_000 + 100  # cents, spread over 1..500 EUR
    return state.update(
        orders=number,
        order={"id": number, "amount": amount, "customer": f"c{number % 97:02d}"},
    )


@action(reads=["order"], writes=["needs_approval"])
def check(state: State) -> State:
    return state.update(needs_approval=state["order"]["amount"] > 30_000)


@action(reads=["order", "approved", "rejected"], writes=["decision", "approved", "rejected"])
def approve(state: State) -> State:
    if state["order"]["id"] % 5 == 0:
        return state.update(decision="rejected").increment(rejected=1)
    return state.update(decision="approved").increment(approved=1)


class Charge(Node):
    """Charge the card; the gateway times out on the first try for every third order."""

    reads = ["order", "revenue", "queue"]
    writes = ["revenue", "queue", "charged"]
    max_retries = 3
    wait = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._tries: dict[int, int] = {}

    def prep(self, state: State) -> Any:
        return state["order"]

    def exec(self, prep_res: Any) -> Any:
        order_id = prep_res["id"]
        tries = self._tries.get(order_id, 0) + 1
        self._tries = {order_id: tries}
        if order_id % 3 == 0 and tries == 1:
            raise TimeoutError(f"payment gateway timed out for order {order_id}")
        return {"order": order_id, "charged": prep_res["amount"]}

    def post(self, state: State, prep_res: Any, exec_res: Any) -> tuple[str | None, State]:
        new = state.increment(revenue=exec_res["charged"], charged=1).update(
            queue=[*state["queue"], exec_res["order"]]
        )
        return None, new


@action(reads=["item"], writes=["parcels"])
def pack(state: State) -> State:
    return state.update(parcels=len(state["item"]["orders"]))


@action(reads=["item", "parcels"], writes=["tracking"])
def hand_over(state: State) -> State:
    wave = state["item"]
    return state.update(tracking=f"{wave['carrier']}-{wave['orders'][0]}-{state['parcels']}")


def _waves(state: State) -> list[dict[str, Any]]:
    queue = state["queue"]
    return [
        {"carrier": f"carrier{n}", "orders": queue[n::CARRIERS]}
        for n in range(CARRIERS)
        if queue[n::CARRIERS]
    ]


@action(reads=["queue"], writes=["waves"])
def plan_waves(state: State) -> State:
    return state.update(waves=_waves(state))


def _fold_tracking(state: State, results: list[Any]) -> State:
    return state.increment(shipped=len(state["queue"]), waves_sent=1).update(
        queue=[], waves=[], last_tracking=results
    )


ship = parallel_map(
    actions={"pack": pack, "hand_over": hand_over},
    transitions=[("pack", "hand_over")],
    entrypoint="pack",
    items="waves",
    result_key="tracking",
    writes=["shipped", "waves_sent", "queue", "waves", "last_tracking"],
    reduce=_fold_tracking,
    max_concurrency=CARRIERS,
)


def demo_initial_state() -> dict[str, Any]:
    return {
        "orders": 0,
        "approved": 0,
        "rejected": 0,
        "charged": 0,
        "revenue": 0,
        "shipped": 0,
        "waves_sent": 0,
        "queue": [],
        "waves": [],
        "last_tracking": [],
    }


def demo_builder() -> ApplicationBuilder:
    """The demo's actions and transitions (add identifiers, store and a start)."""
    return (
        ApplicationBuilder()
        .with_actions(
            receive=receive,
            check=check,
            approve=approve,
            charge=Charge(),
            plan_waves=plan_waves,
            ship=ship,
        )
        .with_transitions(
            ("receive", "check"),
            ("check", "approve", when(needs_approval=True)),
            ("check", "charge", default),
            ("approve", "charge", when(decision="approved")),
            ("approve", "receive", default),
            ("charge", "plan_waves", expr(f"len(queue) >= {WAVE_SIZE}")),
            ("charge", "receive", default),
            ("plan_waves", "ship"),
            ("ship", "receive"),
        )
    )
