"""A callback's confirmation poll handed to this process's poller in memory, leased to it in
the transaction that records the callback: polled without a claim transaction."""

from __future__ import annotations

from collections.abc import Callable

from service.jobs import Status
from service.store import Job, Tx

HANDOFF = "poller.handoff"  # the key of this process's PollHandoff in the store's memo


class PollHandoff:
    """A poller of this process that takes confirmation polls in memory: leased to `owner` in
    the transaction that schedules them and handed to `take` once it commits. A crash leaves
    them leased, for the usual takeover; a lease that runs out makes them due again."""

    __slots__ = ("lease", "open", "owner", "take")

    def __init__(
        self,
        owner: str,
        lease: float,
        open_: Callable[[], list[str]],
        take: Callable[[Job, float], None],
    ) -> None:
        self.owner = owner
        self.lease = lease
        self.open = open_  # the providers with a free poll slot now (none while draining)
        self.take = take  # the leased job and the time it fell due


async def confirm_now(tx: Tx, job_id: str, status: Status, now: float) -> bool:
    """Schedule the poll that confirms a callback's `status`, due at `now`, leased to this
    process's poller if it has registered a hand-off and has room; False if it has not (the
    caller schedules it for the claim)."""
    handoff = tx.memo.get(HANDOFF)
    if not isinstance(handoff, PollHandoff):
        return False
    providers = handoff.open()
    if not providers:
        return False
    job = await tx.jobs.claim_leased(
        job_id, status, now, handoff.owner, now + handoff.lease, providers
    )
    if job is None:
        return False
    tx.after_commit(lambda: handoff.take(job, now))
    return True
