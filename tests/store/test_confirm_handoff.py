"""A callback's confirmation poll handed to this process's poller: leased in the transaction
that records the callback, handed over only once it commits, and only while the poller has
room. On both engines; clocks are passed in."""

from __future__ import annotations

import asyncio
import dataclasses

from service import config, confirm, ledger, owners
from service.jobs import CallbackReport, Report, Status
from service.poller import Poller
from service.store import Job, Store, Tx

NOW = 1_800_000_000.0
LEASE = 40.0
OWNER = "relay-host:101:aaaaaa"
OTHER = "relay-host:202:bbbbbb"


class Taker:
    """A stand-in for the poller's side of the hand-off: it keeps what it is given."""

    def __init__(self, providers: list[str] | None = None) -> None:
        self.providers = ["pixazo"] if providers is None else providers
        self.taken: list[tuple[Job, float]] = []
        self.handoff = confirm.PollHandoff(
            OWNER, LEASE, lambda: self.providers, lambda job, due: self.taken.append((job, due))
        )


async def offered(store: Store, taker: Taker) -> None:
    """Register the taker as this process's poller, alive (as its heartbeat would keep it)."""

    async def unit(tx: Tx) -> None:
        tx.memo[confirm.HANDOFF] = taker.handoff
        await owners.register(tx, OWNER, "relay-host", 101, NOW)

    await store.write(unit)


async def running_job(store: Store, job_id: str) -> None:
    """A Pixazo job the provider accepted, its next poll a minute away."""
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW - 60, None, NOW + 3600))
    report = Report(Status.QUEUED, "QUEUED", provider_job_id=f"px_{job_id}")
    await store.write(
        lambda tx: ledger.record_submitted(tx, job_id, report, NOW - 59, NOW + 60, None)
    )


def completed(job_id: str) -> CallbackReport:
    return CallbackReport(Status.SUCCEEDED, "COMPLETED", f"px_{job_id}")


async def callback(store: Store, job_id: str, at: float = NOW) -> str:
    """Record a COMPLETED callback for the job; its outcome."""
    heard = completed(job_id)
    outcome, _ = await store.write(
        lambda tx: ledger.record_callback(tx, job_id, "{}", heard, f"d-{job_id}-{at}", at)
    )
    return outcome


async def claimable(store: Store, now: float) -> dict[str, float | None]:
    """What another live process's claim takes now: job id -> the due time it had."""

    async def unit(tx: Tx) -> list[tuple[Job, float | None]]:
        await owners.register(tx, OTHER, "relay-host", 202, now)
        return await tx.jobs.claim_due("pixazo", now, 100, OTHER, now + 30, owners.alive_after(now))

    return {job.id: due for job, due in await store.write(unit)}


async def test_the_confirmation_poll_is_leased_with_the_callback_and_handed_over(
    store: Store,
) -> None:
    await running_job(store, "job_a")
    taker = Taker()
    await offered(store, taker)
    seen_inside: list[int] = []

    async def unit(tx: Tx) -> str:
        outcome, _ = await ledger.record_callback(tx, "job_a", "{}", completed("job_a"), "d", NOW)
        seen_inside.append(len(taker.taken))
        return outcome

    assert await store.write(unit) == "confirm"
    assert seen_inside == [0]  # nothing is handed over before the commit
    [(job, due)] = taker.taken
    assert due == NOW  # due at the callback's time: the lateness metric counts from it
    assert job.id == "job_a" and job.status is Status.QUEUED  # confirmed by the poll, not here
    assert job.callback_status == "succeeded" and job.poll_attempt == 0
    # leased from the callback's own time, as a claim at that moment would lease it
    assert job.next_poll_at == NOW + LEASE
    # leased to a live owner: no other process's claim takes it, even well past due
    assert await claimable(store, NOW + 1) == {}
    await store.write(lambda tx: owners.beat(tx, OWNER, "relay-host", 101, NOW + LEASE - 2))
    assert await claimable(store, NOW + LEASE - 1) == {}
    # the owner crashes (its row gone): the usual takeover polls it
    await store.write(lambda tx: owners.unregister(tx, OWNER))
    assert await claimable(store, NOW + 2) == {"job_a": NOW + LEASE}


async def test_a_rolled_back_callback_hands_nothing_over(store: Store) -> None:
    await running_job(store, "job_b")
    await running_job(store, "job_c")
    taker = Taker()
    await offered(store, taker)

    async def unit(tx: Tx) -> None:
        await ledger.record_callback(tx, "job_b", "{}", completed("job_b"), "d", NOW)
        raise RuntimeError("the unit fails after the callback")

    async def fine(tx: Tx) -> None:
        await ledger.record_callback(tx, "job_c", "{}", completed("job_c"), "d", NOW)

    # side by side: on SQLite both units share one batch, whose commit keeps only `fine`
    results = await asyncio.gather(store.write(unit), store.write(fine), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert [job.id for job, _ in taker.taken] == ["job_c"]
    # job_b is as it was (due in a minute, not now); job_c is leased to the live owner
    assert await claimable(store, NOW + 1) == {}


async def test_without_room_the_poll_is_left_to_the_claim(store: Store) -> None:
    await running_job(store, "job_d")
    await running_job(store, "job_e")
    full = Taker([])  # every slot busy, or draining
    await offered(store, full)
    assert await callback(store, "job_d") == "confirm"
    other = Taker(["scenario"])  # room only for another provider's polls
    await offered(store, other)
    assert await callback(store, "job_e") == "confirm"
    assert full.taken == [] and other.taken == []
    # both due at the callback's time, unleased: the first claim takes them
    assert await claimable(store, NOW) == {"job_d": NOW, "job_e": NOW}


async def test_without_a_poller_offering_nothing_is_leased(store: Store) -> None:
    await running_job(store, "job_f")
    assert await callback(store, "job_f") == "confirm"
    assert await claimable(store, NOW) == {"job_f": NOW}


class Gate:
    """A provider whose status answers wait for the test to open the gate (its polls counted)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.polled: list[str] = []
        self.now = 0
        self.most = 0

    async def fetch_status(self, job: Job) -> Report:
        self.polled.append(job.id)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.open.wait()
        finally:
            self.now -= 1
        return Report(Status.PROCESSING, "PROCESSING", provider_job_id=job.provider_job_id)


async def offering(tx: Tx) -> bool:
    """Whether a poller of this process has offered its hand-off."""
    return confirm.HANDOFF in tx.memo


async def test_the_poller_takes_no_more_than_its_free_slots(store: Store) -> None:
    for n in range(4):
        await running_job(store, f"job_{n}")
    await store.write(lambda tx: owners.register(tx, OWNER, "relay-host", 101, NOW))
    gate = Gate()
    settings = dataclasses.replace(config.load({}, env_file=None), poll_concurrency=1)
    poller = Poller(store, {"pixazo": gate}, settings, lambda: NOW, OWNER)  # type: ignore[dict-item]
    loop = asyncio.create_task(poller.run_forever())  # its first claim offers the hand-off
    try:
        async with asyncio.timeout(5):
            while not await store.write(offering):
                await asyncio.sleep(0.01)
            assert await callback(store, "job_0") == "confirm"
            while not gate.polled:
                await asyncio.sleep(0.01)
            # its one slot is busy: the next confirmation is left to the claim, unleased
            assert await callback(store, "job_1") == "confirm"
            assert await claimable(store, NOW) == {"job_1": NOW}
            # units side by side may each see the slot free (one SQLite batch): the poller
            # still polls one at a time, the others waiting for the slot (or for the claim)
            gate.open.set()
            while gate.now or any(poller._running.values()):
                await asyncio.sleep(0.01)
            gate.open.clear()
            outcomes = await asyncio.gather(callback(store, "job_2"), callback(store, "job_3"))
            assert outcomes == ["confirm", "confirm"]
            left = set(await claimable(store, NOW))
            gate.open.set()
            while len(set(gate.polled) | left | {"job_1"}) < 4:
                await asyncio.sleep(0.01)
    finally:
        poller.stop_claiming()
        await poller.drain(asyncio.get_running_loop().time() + 1)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert gate.most == 1
    # every confirmation polled once, by this poller or by the claim; never two at once
    assert sorted(gate.polled + sorted(left)) == ["job_0", "job_2", "job_3"]
