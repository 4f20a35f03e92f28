"""What any store must meet for archiving: a succeeded job's outputs become copies to make,
its announcement held (before_notify) until every copy is settled, then made once with the
copies' facts; settling needs the lease; retention finds copies of old jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from service import ledger, outbox, owners
from service.archive import units
from service.jobs import Report, Status
from service.store import Store, Tx
from service.store.archives import Copied

NOW = 1_800_000_000.0
OUTPUTS = (
    {"url": "https://media.example/a.png", "media_type": "image/png"},
    {"url": "https://media.example/b.png", "media_type": "image/png"},
)


async def succeeded_job(store: Store, mode: str | None, job_id: str = "job_a") -> list[str]:
    """A job that succeeded with two outputs, archiving installed in `mode`; its event types."""
    plan = units.Plan(mode, "http://relay.example", True) if mode else None
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {}, {}, None, None)

    async def unit(tx: Tx) -> list[str]:
        units.install(tx, plan)
        await ledger.create_job(tx, new, NOW - 60, None, NOW - 50)
        report = Report(Status.SUCCEEDED, "COMPLETED", outputs=OUTPUTS)
        _, events = await ledger.record_poll(tx, job_id, "poller", report, None, NOW, NOW + 5)
        return [e.type for e in events]

    await store.write(
        lambda tx: outbox.create_subscription(
            tx, {"url": "https://hooks.example/x", "kind": "webhook", "events": ["job.*"]}, NOW
        )
    )
    return await store.write(unit)


async def types(store: Store, job_id: str = "job_a") -> list[str]:
    return [e.type for e in await store.events(job_id=job_id)]


async def delivered_types(store: Store) -> list[str]:
    return [d.delivery.event_type for d in await store.list_deliveries(limit=100)]


async def claim(store: Store, owner: str, now: float) -> list[Any]:
    await store.write(lambda tx: owners.register(tx, owner, "host", 1, now))
    return await store.write(lambda tx: units.claim(tx, now, 10, owner, 3600))


async def settle(store: Store, row: Any, owner: str, outcome: units.Outcome, now: float) -> None:
    await store.write(lambda tx: units.settle(tx, row, owner, outcome, now))


COPIED = Copied("2027/01/15/job_a/0.png", "ab" * 32, 1234, "image/png", 64, 48)


async def test_without_an_archive_a_job_is_announced_at_once(store: Store) -> None:
    assert await succeeded_job(store, None) == ["job.succeeded"]
    assert await store.archives("job_a") == []


async def test_before_notify_holds_the_announcement_until_every_copy_is_settled(
    store: Store,
) -> None:
    assert await succeeded_job(store, "before_notify") == ["job.archiving"]
    job = await store.get_job("job_a")
    assert job is not None and job.status is Status.SUCCEEDED  # honest at once
    assert "job.succeeded" not in await delivered_types(store)
    first, second = await claim(store, "a", NOW + 1)
    assert (first.n, second.n, first.url) == (0, 1, OUTPUTS[0]["url"])
    # a process that does not hold the lease settles nothing
    await settle(store, first, "b", COPIED, NOW + 2)
    assert [r.state for r in await store.archives("job_a")] == ["pending", "pending"]
    await settle(store, first, "a", COPIED, NOW + 2)
    assert "job.succeeded" not in await types(store)
    await settle(store, second, "a", units.Failed("HTTP 404"), NOW + 3)
    assert await types(store) == [
        "job.created",
        "job.archiving",
        "job.archive_failed",
        "job.succeeded",
    ]
    events = await store.events(job_id="job_a")
    failed, announced = events[2], events[3]
    assert failed.data["archive"] == {"output": 1, "reason": "HTTP 404", "attempts": 1}
    assert failed.data["error"]["code"] == "archive_failed"
    out0, out1 = announced.data["outputs"]
    assert out0["url"] == OUTPUTS[0]["url"]
    assert out0["archive_url"] == "http://relay.example/v1/outputs/job_a/0"
    assert (out0["sha256"], out0["bytes"], out0["width"], out0["height"]) == (
        "ab" * 32,
        1234,
        64,
        48,
    )
    assert out1 == OUTPUTS[1]  # the provider's URL only
    assert sorted(await delivered_types(store)) == ["job.archive_failed", "job.succeeded"]
    rows = await store.archives("job_a")
    assert [(r.state, r.key, r.error) for r in rows] == [
        ("done", COPIED.key, None),
        ("failed", None, "HTTP 404"),
    ]


async def test_after_notify_announces_at_once_then_reports_the_archive(store: Store) -> None:
    assert await succeeded_job(store, "after_notify") == ["job.succeeded"]
    rows = await claim(store, "a", NOW + 1)
    for row in rows:
        await settle(store, row, "a", COPIED, NOW + 2)
    assert (await types(store))[-2:] == ["job.succeeded", "job.archived"]
    archived = (await store.events(job_id="job_a"))[-1]
    assert [o["sha256"] for o in archived.data["outputs"]] == ["ab" * 32] * 2


async def test_a_retried_copy_is_due_again_then_settles(store: Store) -> None:
    await succeeded_job(store, "before_notify")
    first, second = await claim(store, "a", NOW + 1)
    await settle(store, first, "a", units.Retry(NOW + 30, "HTTP 503"), NOW + 2)
    (row,) = [r for r in await store.archives("job_a") if r.n == 0]
    assert (row.state, row.attempts, row.next_attempt_at, row.error) == (
        "pending",
        1,
        NOW + 30,
        "HTTP 503",
    )
    assert row.lease_owner is None
    assert await claim(store, "a", NOW + 29) == []  # the second is leased, the first not due
    (again,) = await claim(store, "a", NOW + 30)
    assert (again.n, again.attempts) == (0, 1)
    await settle(store, second, "a", COPIED, NOW + 31)
    await settle(store, again, "a", COPIED, NOW + 31)
    assert (await types(store)).count("job.succeeded") == 1


async def test_retention_finds_copies_of_jobs_ended_before_a_cutoff(store: Store) -> None:
    await succeeded_job(store, "after_notify")
    for row in await claim(store, "a", NOW + 1):
        await settle(store, row, "a", COPIED, NOW + 2)

    async def expired(tx: Tx, before: float) -> list[tuple[str, int]]:
        return [(r.job_id, r.n) for r in await tx.archives.expired(before, 10)]

    assert await store.write(lambda tx: expired(tx, NOW)) == []
    assert await store.write(lambda tx: expired(tx, NOW + 1)) == [("job_a", 0), ("job_a", 1)]

    async def delete(tx: Tx) -> None:
        await tx.archives.deleted("job_a", 0, NOW + 5)

    await store.write(delete)
    assert await store.write(lambda tx: expired(tx, NOW + 1)) == [("job_a", 1)]
    assert [r.state for r in await store.archives("job_a")] == ["deleted", "done"]


async def test_copies_pending_when_archiving_is_turned_off_are_given_up(store: Store) -> None:
    await succeeded_job(store, "before_notify")
    assert await store.write(lambda tx: units.abandon(tx, "off", NOW + 1)) == 2
    assert await store.write(lambda tx: units.abandon(tx, "off", NOW + 1)) == 0
    found = await types(store)
    assert found.count("job.archive_failed") == 2
    assert found[-1] == "job.succeeded"
    announced = (await store.events(job_id="job_a"))[-1]
    assert announced.data["outputs"] == list(OUTPUTS)


async def test_copies_of_one_job_settled_at_once_announce_it_once(store: Store) -> None:
    await succeeded_job(store, "before_notify")
    rows = await claim(store, "a", NOW + 1)
    await asyncio.gather(*(settle(store, row, "a", COPIED, NOW + 2) for row in rows))
    assert (await types(store)).count("job.succeeded") == 1
