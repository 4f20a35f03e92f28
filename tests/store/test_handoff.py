"""Fresh deliveries handed to this process's delivery worker: leased in the transaction that
records their event, handed over only once it commits, and only where a claim would have
taken them at once. On both engines; clocks are passed in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service import config, ledger, outbox, owners
from service.delivery import Deliverer
from service.store import Store, Tx

NOW = 1_800_000_000.0
LEASE = 25.0
OWNER = "relay-host:101:aaaaaa"
OTHER = "relay-host:202:bbbbbb"
HOOK = "https://hooks.example/relay"


class Taker:
    """A stand-in for the delivery worker's side of the hand-off: it keeps what it is given."""

    def __init__(self, free: int = 512) -> None:
        self.free = free
        self.taken: list[outbox.Fresh] = []
        self.handoff = outbox.Handoff(OWNER, LEASE, lambda: self.free, self.taken.extend)

    @property
    def ids(self) -> set[str]:
        return {d.id for d, _, _ in self.taken}


async def offered(store: Store, taker: Taker) -> None:
    """Register the taker as this process's worker, alive (as its heartbeat would keep it)."""

    async def unit(tx: Tx) -> None:
        tx.memo[outbox.HANDOFF] = taker.handoff
        await owners.register(tx, OWNER, "relay-host", 101, NOW)

    await store.write(unit)


async def subscription(store: Store, **fields: Any) -> str:
    body = {"url": HOOK, "kind": "webhook", "events": ["job.succeeded"], **fields}
    return (await store.write(lambda tx: outbox.create_subscription(tx, body, NOW - 60))).id


async def job(store: Store, job_id: str, webhook: str | None = None) -> None:
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {}, {}, webhook, ["completed"])
    await store.write(lambda tx: ledger.create_job(tx, new, NOW - 60, None, NOW + 3600))


async def succeeded(store: Store, job_id: str, at: float = NOW) -> None:
    """A job.succeeded event for the job, as a poll records it."""

    async def unit(tx: Tx) -> None:
        await outbox.append_event(tx, job_id, "job.succeeded", "poll", at, {"id": job_id})

    await store.write(unit)


async def claimable(store: Store, now: float) -> dict[str, str | None]:
    """What another live process's claim takes now: delivery id -> subscription id."""

    async def unit(tx: Tx) -> outbox.Claimed:
        await owners.register(tx, OTHER, "relay-host", 202, now)
        return await outbox.claim(tx, now, 100, OTHER, LEASE)

    claimed = await store.write(unit)
    return {d.id: d.subscription_id for d in claimed.deliveries}


async def test_fresh_webhooks_are_leased_with_their_event_and_handed_over_after_commit(
    store: Store,
) -> None:
    sub_id = await subscription(store)
    await job(store, "job_a", webhook="https://hooks.example/job")
    taker = Taker()
    await offered(store, taker)
    seen_inside: list[int] = []

    async def unit(tx: Tx) -> None:
        await outbox.append_event(tx, "job_a", "job.succeeded", "poll", NOW, {"id": "job_a"})
        seen_inside.append(len(taker.taken))

    await store.write(unit)
    assert seen_inside == [0]  # nothing is handed over before the commit
    assert len(taker.taken) == 2
    by_sub = {d.subscription_id: (d, sub, event) for d, sub, event in taker.taken}
    mine, sub, event = by_sub[sub_id]
    assert mine.subscription_id == sub_id and mine.url is None
    assert sub is not None and sub.id == sub_id and sub.secret
    assert event.type == "job.succeeded" and event.job_id == "job_a"
    per_job, none_sub, _ = by_sub[None]
    assert none_sub is None and per_job.url == "https://hooks.example/job"
    for delivery, _, _ in taker.taken:
        stored = await store.get_delivery(delivery.id)
        assert stored is not None
        assert stored.delivery.status == "pending"
        # leased in the event's own transaction: its lease runs from the event's time
        assert stored.delivery.next_attempt_at == NOW + LEASE == delivery.next_attempt_at
    # leased to a live owner: no other process's claim takes them, even well past due
    assert await claimable(store, NOW + 1) == {}
    # the owner crashes (its row gone): the usual takeover sends them
    await store.write(lambda tx: owners.unregister(tx, OWNER))
    assert set(await claimable(store, NOW + 2)) == taker.ids


async def test_a_rolled_back_event_hands_nothing_over(store: Store) -> None:
    await subscription(store)
    taker = Taker()
    await offered(store, taker)

    async def unit(tx: Tx) -> None:
        await outbox.append_event(tx, "job_b", "job.succeeded", "poll", NOW, {"id": "job_b"})
        raise RuntimeError("the unit fails after the fan-out")

    async def fine(tx: Tx) -> None:
        await outbox.append_event(tx, "job_c", "job.succeeded", "poll", NOW, {"id": "job_c"})

    # side by side: on SQLite both units share one batch, whose commit keeps only `fine`
    results = await asyncio.gather(store.write(unit), store.write(fine), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert [event.job_id for _, _, event in taker.taken] == ["job_c"]
    assert await store.list_deliveries(job_id="job_b") == []


async def test_only_what_a_claim_would_take_at_once_skips_it(store: Store) -> None:
    plain = await subscription(store)
    capped = await subscription(store, max_in_flight=1)
    paced = await subscription(store, rate_per_second=5.0)
    paused = await subscription(store, paused=True)
    slack = await subscription(store, kind="slack", url="https://hooks.slack.com/services/T/B/x")
    # before any worker offers: one delivery each, due, not leased
    await succeeded(store, "job_0", NOW - 10)
    taker = Taker()
    await offered(store, taker)
    await succeeded(store, "job_1")
    handed = {d.subscription_id for d, _, _ in taker.taken}
    # the plain webhook has 1 pending of its 4; the capped one 1 of 1; paced, paused and
    # chat destinations keep the claim (pace, order and resumption are the claim's to keep)
    assert handed == {plain}
    due = await claimable(store, NOW + 1)
    assert sorted(due.values()) == sorted([plain, capped, paced, slack])  # job_0's
    assert paused not in due.values()
    # the claim took the capped subscription's only slot: its job_1 delivery still waits
    taker.taken.clear()
    await succeeded(store, "job_2", NOW + 2)
    assert {d.subscription_id for d, _, _ in taker.taken} == {plain}


@pytest.mark.parametrize("free", [0, 2])
async def test_the_worker_takes_no_more_than_its_free_slots(store: Store, free: int) -> None:
    subs = {await subscription(store) for _ in range(5)}
    taker = Taker(free)
    await offered(store, taker)
    await succeeded(store, "job_d")
    assert len(taker.taken) == free
    # the others are due now, for the claim (which a wake-up starts)
    assert (
        set((await claimable(store, NOW)).values()) | {d.subscription_id for d, _, _ in taker.taken}
        == subs
    )


async def test_without_a_worker_offering_nothing_is_leased(store: Store) -> None:
    sub_id = await subscription(store)
    await succeeded(store, "job_e")
    assert list((await claimable(store, NOW)).values()) == [sub_id]


async def test_after_commit_calls_follow_the_commit_only(store: Store) -> None:
    calls: list[str] = []

    async def kept(tx: Tx) -> None:
        tx.after_commit(lambda: calls.append("kept"))

    async def dropped(tx: Tx) -> None:
        tx.after_commit(lambda: calls.append("dropped"))
        raise ValueError("rolled back")

    async def broken(tx: Tx) -> None:
        tx.after_commit(lambda: 1 / 0 and None)  # logged; the write stays committed
        tx.after_commit(lambda: calls.append("after a failing one"))

    results = await asyncio.gather(
        store.write(dropped), store.write(kept), store.write(broken), return_exceptions=True
    )
    assert isinstance(results[0], ValueError) and results[1:] == [None, None]
    assert calls == ["kept", "after a failing one"]


class CountingStore:
    """A store that counts the units of work written through it (the worker's only writes)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.units = 0

    async def write(self, fn: Any) -> Any:
        self.units += 1
        return await self.inner.write(fn)

    def waiter(self, channel: str) -> Any:
        return self.inner.waiter(channel)


async def test_attempts_ending_together_are_recorded_in_one_unit(store: Store) -> None:
    ids = [await subscription(store) for _ in range(6)]
    subs = [await store.get_subscription(i) for i in ids]
    tests = [
        await store.write(lambda tx, s=s: outbox.send_test(tx, s, NOW))
        for s in subs
        if s is not None
    ]
    counting = CountingStore(store)
    settings = config.load({}, env_file=None)
    secret = await store.write(outbox.service_secret)
    worker = Deliverer(counting, settings, lambda: NOW + 1, OWNER, secret)  # type: ignore[arg-type]
    try:
        ok = outbox.Attempt(200, 3.0, "ok", None, True, None)
        failed = outbox.Attempt(503, 3.0, "busy", "HTTP 503", False, NOW + 60)
        await asyncio.gather(
            *(worker._record(d, ok if n % 2 else failed, NOW + 1) for n, d in enumerate(tests))
        )
    finally:
        await worker.aclose()
    assert counting.units == 1
    logs = [await store.get_delivery(d.id) for d in tests]
    assert [log.delivery.status for log in logs if log] == ["pending", "succeeded"] * 3
    assert [len(log.attempts) for log in logs if log] == [1] * 6
