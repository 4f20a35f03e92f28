"""What callers rely on from any store: reads, cursors, filters and first-value-wins keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from service import ledger, outbox
from service.jobs import Report, Status
from service.store import Idempotent, Job, Store
from service.store.records import Counts, DeliveryLog

NOW = 1_800_000_000.0
IMAGE, VIDEO = "pixazo/seedvr-image", "scenario/upscale-v3"


# -- making rows through the domain's own units of work ------------------------------------


async def make_job(
    store: Store,
    n: int,
    *,
    model: str = IMAGE,
    idem: tuple[str, str] | None = None,
) -> ledger.Created:
    new = ledger.NewJob(
        id=f"job_{n:04d}",
        model=model,
        provider=model.split("/")[0],
        input={"image_url": "https://example.com/in.png"},
        metadata={"n": str(n)},
        webhook=None,
        webhook_events=None,
    )
    return await store.write(lambda tx: ledger.create_job(tx, new, NOW + n, idem, NOW + 60))


async def queue(store: Store, job_id: str, idem_key: str | None = None) -> Job:
    report = Report(Status.QUEUED, "QUEUED", provider_job_id="req_" + job_id)
    return await store.write(
        lambda tx: ledger.record_submitted(tx, job_id, report, NOW + 100, NOW + 105, idem_key)
    )


async def subscribe(store: Store, events: list[str]) -> outbox.Subscription:
    fields = {"url": "https://hooks.example/relay", "kind": "webhook", "events": events}
    return await store.write(lambda tx: outbox.create_subscription(tx, fields, NOW))


async def attempt(
    store: Store, delivery_id: str, status_code: int, at: float, retry_at: float | None = None
) -> None:
    found = await store.get_delivery(delivery_id)
    assert found is not None
    sent = outbox.Attempt(
        status_code=status_code,
        latency_ms=12.345,
        response=f"answer {status_code}",
        error=None if status_code < 300 else f"HTTP {status_code}",
        delivered=status_code < 300,
        retry_at=retry_at,
    )
    await store.write(
        lambda tx: outbox.record_attempt(tx, found.delivery, "owner-1", sent, at, 86400.0)
    )


async def pages(
    fetch: Callable[[int | None], Awaitable[list[Any]]], seq: Callable[[Any], int]
) -> list[list[Any]]:
    """Every page of a newest-first listing, following the cursor (the last item's seq)."""
    out: list[list[Any]] = []
    before: int | None = None
    for _ in range(100):  # a cursor that does not move on must fail the test, not hang it
        page = await fetch(before)
        out.append(page)
        if not page:
            return out
        before = seq(page[-1])
    raise AssertionError(f"the cursor never reached the end: {before}")


def flat(found: list[list[Any]]) -> list[Any]:
    return [item for page in found for item in page]


# -- subscriptions ---------------------------------------------------------------------------


async def test_a_subscription_reads_back_as_created_and_an_unknown_one_is_none(
    store: Store,
) -> None:
    sub = await subscribe(store, ["job.succeeded"])
    assert await store.get_subscription(sub.id) == sub
    assert await store.get_subscription("sub_missing") is None


async def test_subscriptions_come_newest_first_in_pages_without_gaps_or_repeats(
    store: Store,
) -> None:
    made = [await subscribe(store, ["job.*"]) for _ in range(5)]
    found = await pages(lambda before: store.list_subscriptions(before=before, limit=2), _seq)
    assert [len(p) for p in found] == [2, 2, 1, 0]
    assert [s.id for s in flat(found)] == [s.id for s in reversed(made)]
    assert await store.list_subscriptions(before=None, limit=10) == list(reversed(made))


def _seq(item: Any) -> int:
    seq: int = item.seq
    return seq


# -- deliveries ------------------------------------------------------------------------------


class Outbox:
    """Two subscriptions, three queued jobs (six deliveries) and one test delivery."""

    def __init__(self, every: outbox.Subscription, queued: outbox.Subscription) -> None:
        self.every, self.queued = every, queued
        self.test_id = ""


async def fill(store: Store) -> Outbox:
    made = Outbox(await subscribe(store, ["job.*"]), await subscribe(store, ["job.queued"]))
    for n in (1, 2, 3):
        await make_job(store, n)  # job.created fans out to nobody
        await queue(store, f"job_{n:04d}")  # job.queued: one delivery to each subscription
    test = await store.write(lambda tx: outbox.send_test(tx, made.queued, NOW + 200))
    made.test_id = test.id
    return made


async def test_deliveries_come_newest_first_with_their_attempt_logs(store: Store) -> None:
    made = await fill(store)
    everything = await store.list_deliveries(limit=100)
    assert len(everything) == 7
    seqs = [d.delivery.seq for d in everything]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 7
    assert everything[0].delivery.id == made.test_id
    assert everything[0].delivery.job_id is None
    assert all(d.attempts == () for d in everything)
    assert {d.delivery.job_id for d in everything[1:]} == {"job_0001", "job_0002", "job_0003"}


async def test_delivery_filters_combine_and_each_matches_only_its_own(store: Store) -> None:
    made = await fill(store)
    target = (await store.list_deliveries(subscription_id=made.every.id, job_id="job_0002"))[0]
    await attempt(store, target.delivery.id, 200, NOW + 300)

    async def ids(**filters: Any) -> set[str]:
        return {d.delivery.id for d in await store.list_deliveries(limit=100, **filters)}

    every, queued = made.every.id, made.queued.id
    assert len(await ids(subscription_id=every)) == 3
    assert len(await ids(subscription_id=queued)) == 4  # three jobs and the test
    assert all(
        d.delivery.subscription_id == every
        for d in await store.list_deliveries(subscription_id=every)
    )
    assert len(await ids(job_id="job_0002")) == 2
    assert await ids(status="succeeded") == {target.delivery.id}
    assert len(await ids(status="pending")) == 6
    assert await ids(status="failed") == set()
    assert await ids(subscription_id=every, status="succeeded") == {target.delivery.id}
    assert await ids(subscription_id=queued, status="succeeded") == set()
    assert await ids(subscription_id=queued, job_id="job_0002", status="pending") != set()
    assert await ids(subscription_id="sub_missing") == set()


async def test_delivery_pages_have_no_gaps_or_repeats_with_and_without_a_filter(
    store: Store,
) -> None:
    made = await fill(store)
    everything = await store.list_deliveries(limit=100)

    def delivery_seq(item: DeliveryLog) -> int:
        return item.delivery.seq

    found = await pages(lambda before: store.list_deliveries(before=before, limit=3), delivery_seq)
    assert [len(p) for p in found] == [3, 3, 1, 0]
    assert flat(found) == everything
    mine = await pages(
        lambda before: store.list_deliveries(
            subscription_id=made.queued.id, before=before, limit=3
        ),
        delivery_seq,
    )
    assert [d.delivery.id for d in flat(mine)] == [
        d.delivery.id for d in everything if d.delivery.subscription_id == made.queued.id
    ]


async def test_a_deliverys_attempts_are_attached_oldest_first(store: Store) -> None:
    made = await fill(store)
    [one, *others] = await store.list_deliveries(subscription_id=made.every.id)
    await attempt(store, one.delivery.id, 503, NOW + 300, retry_at=NOW + 330)
    await attempt(store, one.delivery.id, 429, NOW + 330, retry_at=NOW + 360)
    await attempt(store, one.delivery.id, 200, NOW + 360)
    found = await store.get_delivery(one.delivery.id)
    assert found is not None
    assert [a.status_code for a in found.attempts] == [503, 429, 200]
    assert [a.attempted_at for a in found.attempts] == [NOW + 300, NOW + 330, NOW + 360]
    assert found.attempts[0].error == "HTTP 503" and found.attempts[2].error is None
    assert found.attempts[0].response == "answer 503"
    assert found.attempts[0].latency_ms == 12.345
    assert found.delivery.status == "succeeded" and found.delivery.attempts == 3
    listed = {d.delivery.id: d for d in await store.list_deliveries(limit=100)}
    assert listed[one.delivery.id] == found
    assert all(listed[d.delivery.id].attempts == () for d in others)


async def test_an_unknown_delivery_is_none(store: Store) -> None:
    await fill(store)
    assert await store.get_delivery("msg_missing") is None


async def test_the_next_attempt_due_is_the_earliest_pending_one(store: Store) -> None:
    assert await store.next_attempt_due() is None
    sub = await subscribe(store, ["job.*"])
    test = await store.write(lambda tx: outbox.send_test(tx, sub, NOW))
    assert await store.next_attempt_due() == NOW
    await attempt(store, test.id, 503, NOW + 1, retry_at=NOW + 30)
    assert await store.next_attempt_due() == NOW + 30
    await attempt(store, test.id, 200, NOW + 30)
    assert await store.next_attempt_due() is None
    await store.write(lambda tx: outbox.send_test(tx, sub, NOW + 40))
    assert await store.next_attempt_due() == NOW + 40
    await store.write(lambda tx: outbox.delete_subscription(tx, sub.id, NOW + 50))  # canceled
    assert await store.next_attempt_due() is None


# -- counts and ping -------------------------------------------------------------------------


async def test_an_empty_store_counts_nothing(store: Store) -> None:
    await store.ping()
    assert await store.counts() == Counts({}, {}, {}, 0, 0)


async def test_counts_group_rows_by_status(store: Store) -> None:
    made = await fill(store)
    await make_job(store, 4, model=VIDEO)
    await store.write(lambda tx: outbox.pause(tx, made.queued.id, "by hand", NOW + 400))
    first = (await store.list_deliveries(limit=1))[0]
    await attempt(store, first.delivery.id, 400, NOW + 300)  # no retry: failed
    counts = await store.counts()
    assert counts.jobs == {("pixazo", "queued"): 3, ("scenario", "submitting"): 1}
    assert counts.deliveries == {"pending": 6, "failed": 1}
    assert counts.subscriptions == {"active": 1, "paused": 1}
    assert counts.callbacks_dropped == 0
    assert counts.last_event_id == (await store.events(limit=1000))[-1].id


async def test_counts_show_jobs_in_flight_held_back_and_the_oldest_pending_delivery(
    store: Store,
) -> None:
    await fill(store)  # three Pixazo jobs queued; their deliveries pending since NOW + 100
    held = ledger.NewJob("job_0009", VIDEO, "scenario", {}, {}, None, None)
    made = await store.write(
        lambda tx: ledger.create_job(tx, held, NOW + 9, None, NOW + 60, cap=(0, 30.0))
    )
    assert made.job is not None and made.job.deferred
    counts = await store.counts()
    assert counts.in_flight.get("pixazo") == 3
    assert counts.in_flight.get("scenario", 0) == 0
    assert counts.deferred == {"scenario": 1}
    assert counts.oldest_pending == NOW + 100
    for d in await store.list_deliveries(limit=100):
        await attempt(store, d.delivery.id, 200, NOW + 300)
    assert (await store.counts()).oldest_pending is None


# -- jobs, events and keys (read by the routes and the submitter) ---------------------------


async def test_a_job_reads_back_as_created_and_an_unknown_one_is_none(store: Store) -> None:
    created = await make_job(store, 1)
    assert created.job is not None
    assert await store.get_job("job_0001") == created.job
    assert await store.get_job("job_missing") is None


async def test_jobs_filter_by_status_and_model_and_page_newest_first(store: Store) -> None:
    for n in range(1, 7):
        await make_job(store, n, model=VIDEO if n % 2 else IMAGE)
    for n in (2, 3, 4):
        await queue(store, f"job_{n:04d}")

    async def listed(**kw: Any) -> list[str]:
        return [j.id for j in await store.list_jobs(**{"status": None, "model": None, **kw})]

    assert await listed(before=None, limit=100) == [f"job_{n:04d}" for n in range(6, 0, -1)]
    assert await listed(status="queued", before=None, limit=100) == [
        "job_0004",
        "job_0003",
        "job_0002",
    ]
    assert await listed(model=IMAGE, before=None, limit=100) == ["job_0006", "job_0004", "job_0002"]
    assert await listed(status="queued", model=VIDEO, before=None, limit=100) == ["job_0003"]
    found = await pages(
        lambda before: store.list_jobs(status=None, model=IMAGE, before=before, limit=2), _seq
    )
    assert [[j.id for j in p] for p in found] == [["job_0006", "job_0004"], ["job_0002"], []]


async def test_events_follow_a_cursor_in_order_without_gaps(store: Store) -> None:
    for n in range(1, 5):
        await make_job(store, n)
    await queue(store, "job_0002")
    everything = await store.events(limit=1000)
    ids = [e.id for e in everything]
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    followed, cursor = [], 0
    while page := await store.events(after=cursor, limit=2):
        followed += page
        cursor = page[-1].id
    assert followed == everything
    assert await store.events(after=ids[-1]) == []
    mine = await store.events(job_id="job_0002")
    assert [e.type for e in mine] == ["job.created", "job.queued"]
    assert await store.events(job_id="job_0002", after=mine[0].id) == mine[1:]


async def test_a_follower_misses_no_event_written_while_it_reads(store: Store) -> None:
    done = asyncio.Event()
    seen: list[int] = []

    async def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read before the page: the last pass sees every write
            page = await store.events(after=cursor, limit=7)
            seen.extend(e.id for e in page)
            if page:
                cursor = page[-1].id
            elif finished:
                return
            else:
                await asyncio.sleep(0)

    follower = asyncio.create_task(follow())
    await asyncio.gather(*(make_job(store, n) for n in range(1, 61)))
    done.set()
    await asyncio.wait_for(follower, 10)
    assert seen == [e.id for e in await store.events(limit=1000)]
    assert len(seen) == 60


async def test_an_idempotency_key_keeps_its_request_and_later_its_answer(store: Store) -> None:
    assert await store.idempotent("key-1") is None
    created = await make_job(store, 1, idem=("key-1", "hash-1"))
    assert await store.idempotent("key-1") == Idempotent("key-1", "hash-1", "job_0001", None, None)
    again = await make_job(store, 2, idem=("key-1", "hash-2"))
    assert again.job is None and again.existing == await store.idempotent("key-1")
    assert await store.get_job("job_0002") is None
    queued = await queue(store, "job_0001", idem_key="key-1")
    assert created.job is not None
    kept = await store.idempotent("key-1")
    assert kept is not None
    assert (kept.job_id, kept.status_code, kept.response) == ("job_0001", 202, queued.public())


async def test_meta_keeps_the_first_value_stored(store: Store) -> None:
    assert await store.meta_get_or_set("relay_secret", lambda: "first") == "first"
    assert await store.meta_get_or_set("relay_secret", lambda: "second") == "first"
    assert await store.meta_get_or_set("other", lambda: "second") == "second"
