"""Fresh deliveries handed to this process's delivery worker in memory, leased to it in the
transaction that records their event: sent at once, without a claim transaction."""

from __future__ import annotations

from collections.abc import Callable

from service.store import Event, Tx
from service.store.records import Delivery, NewDelivery, Subscription

HANDOFF = "outbox.handoff"  # the key of this process's Handoff in the store's memo

# A fresh delivery as its worker sends it: the row as added, its subscription, its event.
Fresh = tuple[Delivery, Subscription | None, Event]


class Handoff:
    """A delivery worker of this process that takes fresh deliveries in memory: leased to
    `owner` in the transaction that adds them and handed to `take` once it commits, so they
    are sent without a claim transaction. A crash leaves them leased, for the usual takeover."""

    __slots__ = ("lease", "owner", "room", "take")

    def __init__(
        self,
        owner: str,
        lease: float,
        room: Callable[[], int],
        take: Callable[[list[Fresh]], None],
    ) -> None:
        self.owner = owner
        self.lease = lease
        self.room = room  # how many more it takes now (0 while it is not sending)
        self.take = take


async def hand_off(
    tx: Tx, handoff: Handoff, event: Event, rows: list[NewDelivery], wanted: dict[str, Subscription]
) -> list[NewDelivery]:
    """Lease to `handoff` the rows a claim would take at once; returns the others.

    Only unordered webhooks qualify: a per-job webhook always (nothing caps it), a webhook
    subscription while it is active, unpaced, not held back and under its max_in_flight
    with the deliveries it has pending. Chat channels (ordered, paced) keep the claim."""
    free = handoff.room()
    if free <= 0:
        return rows
    subs = [wanted[d.subscription_id] for d in rows if d.subscription_id and not d.ordered]
    room: dict[str, int] = {}
    if subs:
        most = max(s.max_in_flight for s in subs)
        room = await tx.deliveries.room([s.id for s in subs], event.created_at, most)
    fresh: list[NewDelivery] = []
    rest: list[NewDelivery] = []
    for d in rows:
        if len(fresh) < free and d.kind == "webhook" and not d.ordered:
            if d.subscription_id is None:
                fresh.append(d)
                continue
            if room.get(d.subscription_id, 0) > 0:
                room[d.subscription_id] -= 1
                fresh.append(d)
                continue
        rest.append(d)
    if not fresh:
        return rows
    until = event.created_at + handoff.lease
    await tx.deliveries.add(fresh, (handoff.owner, until))
    handed = [(_leased(d, until), wanted.get(d.subscription_id or ""), event) for d in fresh]
    tx.after_commit(lambda: handoff.take(handed))
    return rest


def _leased(d: NewDelivery, until: float) -> Delivery:
    """The row `add` wrote for a leased fresh delivery (its seq is not read back: unused)."""
    return Delivery(
        0,
        d.id,
        d.subscription_id,
        d.job_id,
        d.event_id,
        d.event_type,
        d.kind,
        d.url,
        d.ordered,
        "pending",
        0,
        0,
        until,
        None,
        None,
        d.created_at,
        d.created_at,
        None,
    )
