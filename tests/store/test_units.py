"""What any store must meet for units of work: a unit that reads a row to decide what to
write to it never loses to another unit doing the same at once (no lost update), and a
unit that fails leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest

from service import ledger, outbox
from service.store import Store, Tx

NOW = 1_800_000_000.0
FIELDS = {"url": "https://hooks.example/relay", "kind": "webhook", "events": ["job.*"]}


async def test_units_reading_then_writing_one_job_take_turns(store: Store) -> None:
    new = ledger.NewJob("job_turns", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 60))

    async def bump(tx: Tx) -> None:
        job = await tx.jobs.get("job_turns")
        assert job is not None
        await tx.jobs.update("job_turns", {"progress": job.progress + 0.01})

    await asyncio.gather(*(store.write(bump) for _ in range(25)))
    job = await store.get_job("job_turns")
    assert job is not None and job.progress == pytest.approx(0.25)


async def test_units_reading_then_writing_one_subscription_take_turns(store: Store) -> None:
    sub = await store.write(lambda tx: outbox.create_subscription(tx, FIELDS, NOW))

    async def bump(tx: Tx) -> None:
        found = await tx.subscriptions.get(sub.id)
        assert found is not None
        await tx.subscriptions.update(sub.id, {"max_in_flight": found.max_in_flight + 1})

    await asyncio.gather(*(store.write(bump) for _ in range(25)))
    found = await store.get_subscription(sub.id)
    assert found is not None and found.max_in_flight == sub.max_in_flight + 25


async def test_a_failed_unit_leaves_nothing(store: Store) -> None:
    new = ledger.NewJob("job_gone", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)

    async def broken(tx: Tx) -> None:
        await ledger.create_job(tx, new, NOW, ("key-1", "h" * 32), NOW + 60)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.write(broken)
    assert await store.get_job("job_gone") is None
    assert await store.idempotent("key-1") is None
    assert await store.events(job_id="job_gone") == []
