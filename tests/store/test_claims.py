"""What any store must meet for claims and leases: one owner per item, takeover only from the
dead, release, due order and limit. Clocks are passed in: nothing here sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from service import ledger, outbox, owners
from service.archive import units as archive_units
from service.store import Store, Tx
from service.store.archives import NewArchive

NOW = 1_800_000_000.0
DEAD = owners.DEAD_AFTER
LEASE = 30.0  # longer than DEAD: a takeover that waited for the lease's end would show


# -- making due items and claiming them through the domain's units of work ----------------


async def due_jobs(store: Store, *due: float) -> list[str]:
    """One job per due time (a submission whose lease ran out, or not yet), in that order."""
    made: list[str] = []
    for n, at in enumerate(due):
        new = ledger.NewJob(f"job_{n:04d}", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
        created = await store.write(
            lambda tx, new=new, at=at: ledger.create_job(tx, new, NOW - 60, None, at)
        )
        assert created.job is not None
        made.append(created.job.id)
    return made


async def due_deliveries(store: Store, *due: float) -> list[str]:
    """One test delivery per due time, each to its own webhook subscription (no cap between)."""
    fields = {"url": "https://hooks.example/relay", "kind": "webhook", "events": ["job.*"]}

    async def one(at: float) -> str:
        sub = await store.write(lambda tx: outbox.create_subscription(tx, fields, NOW - 60))
        return (await store.write(lambda tx: outbox.send_test(tx, sub, at))).id

    return [await one(at) for at in due]


async def due_archives(store: Store, *due: float) -> list[str]:
    """One output copy per due time (of jobs made for them), in that order."""
    jobs = await due_jobs(store, *(NOW + 1e6 for _ in due))
    rows = [
        NewArchive(job_id, 0, f"https://media.example/{job_id}.png", "image/png", True, at, NOW)
        for job_id, at in zip(jobs, due, strict=True)
    ]

    async def add(tx: Tx) -> None:
        await tx.archives.add(rows)

    await store.write(add)
    return [f"{job_id}/0" for job_id in jobs]


async def claim_archives(store: Store, owner: str, now: float, limit: int = 100) -> list[str]:
    found = await store.write(lambda tx: archive_units.claim(tx, now, limit, owner, LEASE))
    return [f"{a.job_id}/{a.n}" for a in found]


async def release_archives(store: Store, owner: str, now: float) -> int:
    return await store.write(lambda tx: tx.archives.release(owner, now))


async def claim_jobs(store: Store, owner: str, now: float, limit: int = 100) -> list[str]:
    found = await store.write(lambda tx: ledger.claim_due(tx, "pixazo", now, limit, owner, LEASE))
    return [j.id for j in found]


async def claim_deliveries(store: Store, owner: str, now: float, limit: int = 100) -> list[str]:
    found = await store.write(lambda tx: outbox.claim(tx, now, limit, owner, LEASE))
    return [d.id for d in found.deliveries]


async def release_jobs(store: Store, owner: str, now: float) -> int:
    return await store.write(lambda tx: ledger.release(tx, owner, now))


async def release_deliveries(store: Store, owner: str, now: float) -> int:
    return await store.write(lambda tx: outbox.release(tx, owner, now))


async def register(store: Store, owner: str, now: float) -> None:
    await store.write(lambda tx: owners.register(tx, owner, "host", 1, now))


async def beat(store: Store, owner: str, now: float) -> None:
    await store.write(lambda tx: owners.beat(tx, owner, "host", 1, now))


async def unregister(store: Store, owner: str) -> None:
    await store.write(lambda tx: owners.unregister(tx, owner))


Make = Callable[..., Awaitable[list[str]]]
Claim = Callable[..., Awaitable[list[str]]]
Release = Callable[[Store, str, float], Awaitable[int]]
KINDS = {
    "jobs": (due_jobs, claim_jobs, release_jobs),
    "deliveries": (due_deliveries, claim_deliveries, release_deliveries),
    "archives": (due_archives, claim_archives, release_archives),
}
kinds = pytest.mark.parametrize("kind", sorted(KINDS))


# -- the contracts, for job polls and deliveries alike ---------------------------------------


@kinds
async def test_two_stores_claiming_at_once_never_get_the_same_item(
    store: Store, twin: Store, kind: str
) -> None:
    make, claim, _ = KINDS[kind]
    made = await make(store, *(NOW - 100 + i * 0.1 for i in range(60)))
    relays = {"a": store, "b": twin}
    for name, opened in relays.items():
        await register(opened, name, NOW)
    held: dict[str, str] = {}

    async def work(name: str) -> None:
        for step in range(40):
            now = NOW + step * 0.01  # both alive throughout, every lease far from its end
            for item in await claim(relays[name], name, now, limit=3):
                assert item not in held, f"{item} given to {held[item]} and to {name}"
                held[item] = name
            await asyncio.sleep(0)

    await asyncio.gather(work("a"), work("b"))
    assert set(held) == set(made)  # every due item was claimed, each once


@kinds
async def test_a_live_owners_lease_is_never_taken(store: Store, kind: str) -> None:
    make, claim, _ = KINDS[kind]
    made = await make(store, NOW - 2, NOW - 1)
    await register(store, "a", NOW)
    await register(store, "b", NOW)
    assert sorted(await claim(store, "a", NOW)) == sorted(made)
    assert await claim(store, "b", NOW + DEAD - 0.1) == []  # a's last beat is not old enough
    for t in range(1, int(LEASE) - 1):  # a beats on, up to just before its leases end
        await beat(store, "a", NOW + t)
        await beat(store, "b", NOW + t)
        assert await claim(store, "b", NOW + t + 0.5) == []
    assert await claim(store, "a", NOW + 10) == []  # nor does an owner take its own again


@kinds
async def test_a_dead_owners_lease_is_taken_at_once(store: Store, kind: str) -> None:
    make, claim, _ = KINDS[kind]
    made = await make(store, NOW - 2, NOW - 1)
    await register(store, "a", NOW)
    await register(store, "b", NOW)
    assert sorted(await claim(store, "a", NOW)) == sorted(made)
    await beat(store, "a", NOW + 5)  # a's last beat
    await beat(store, "b", NOW + 5 + DEAD - 0.1)
    assert await claim(store, "b", NOW + 5 + DEAD - 0.1) == []
    # a's heartbeat is DEAD_AFTER old: its leases (to NOW + 30) are b's now, well before their
    # end, and the claim itself sees it (no beat has dropped a's row yet)
    assert sorted(await claim(store, "b", NOW + 5 + DEAD + 0.1)) == sorted(made)
    assert await claim(store, "c", NOW + 5 + DEAD + 0.2) == []  # and b's, alive, stay b's


@kinds
async def test_the_lease_of_an_owner_without_a_row_is_taken_at_once(
    store: Store, kind: str
) -> None:
    make, claim, _ = KINDS[kind]
    first = await make(store, NOW - 2)
    await register(store, "a", NOW)
    await register(store, "b", NOW)
    assert await claim(store, "a", NOW) == first
    assert await claim(store, "b", NOW + 1) == []
    await unregister(store, "a")  # a stopped cleanly
    assert await claim(store, "b", NOW + 1) == first
    # an owner that never registered holds nothing either, however fresh its lease
    assert await claim(store, "ghost", NOW + 40) == first  # b's lease ran out at NOW + 31
    assert await claim(store, "b", NOW + 41) == first


@kinds
async def test_release_makes_an_owners_items_due_at_once(store: Store, kind: str) -> None:
    make, claim, release = KINDS[kind]
    made = await make(store, NOW - 3, NOW - 2, NOW - 1)
    for name in ("a", "b", "c"):
        await register(store, name, NOW)
    mine = await claim(store, "a", NOW, limit=2)
    other = await claim(store, "b", NOW)
    assert sorted(mine + other) == sorted(made) and len(other) == 1
    assert await release(store, "a", NOW + 1) == 2
    # a is alive, its leases had 29 s to run: due now all the same, b's lease stays b's
    assert sorted(await claim(store, "c", NOW + 1)) == sorted(mine)
    assert await release(store, "a", NOW + 2) == 0


@kinds
async def test_a_claim_takes_the_earliest_due_first_up_to_its_limit(
    store: Store, kind: str
) -> None:
    make, claim, _ = KINDS[kind]
    due = [NOW - 5, NOW - 50, NOW - 1, NOW - 30, NOW - 10]
    made = dict(zip(due, await make(store, *due), strict=True))
    await register(store, "a", NOW)
    in_order = [made[at] for at in sorted(due)]
    assert sorted(await claim(store, "a", NOW, limit=2)) == sorted(in_order[:2])
    assert sorted(await claim(store, "a", NOW, limit=2)) == sorted(in_order[2:4])
    assert await claim(store, "a", NOW, limit=2) == in_order[4:]
    assert await claim(store, "a", NOW, limit=2) == []


@kinds
async def test_a_claim_never_returns_an_item_not_yet_due(store: Store, kind: str) -> None:
    make, claim, _ = KINDS[kind]
    now_due, soon, later = await make(store, NOW, NOW + 0.5, NOW + 20)
    await register(store, "a", NOW)
    assert await claim(store, "a", NOW) == [now_due]
    assert await claim(store, "a", NOW + 0.4) == []
    assert await claim(store, "a", NOW + 0.5) == [soon]
    await beat(store, "a", NOW + 19)
    assert await claim(store, "a", NOW + 19.9) == []  # the first two's leases last to NOW + 30
    assert await claim(store, "a", NOW + 20) == [later]
