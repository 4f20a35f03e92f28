"""The job ledger against a real SQLite store: transitions, callbacks, leases, the event log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from service import ledger, outbox, owners
from service import store as store_module
from service.jobs import Report, Status
from service.providers import pixazo
from service.store import Event, Job, Tx
from service.store.sqlite import reads
from service.store.sqlite import store as sqlite_store
from service.store.sqlite.store import SqliteStore as Store
from service.store.sqlite.store import on_connection

NOW = 1_800_000_000.0
REQUEST_ID = "seedvr-upscale_0001"
OWNER = "poller-1"
OUTPUTS = ({"url": "https://cdn.example.com/out.png", "media_type": "image"},)


# -- fixtures ----------------------------------------------------------------------------------


class Stores:
    """Opens stores on tmp_path and closes, at teardown, every one a test left open."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "t.db"
        self._open: list[Store] = []

    async def open(self) -> Store:
        opened = await Store.open(str(self.path))
        self._open.append(opened)
        return opened

    async def close(self, opened: Store) -> None:
        self._open.remove(opened)
        await opened.close()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    opened = Stores(tmp_path)
    try:
        yield opened
    finally:
        await opened.close_all()


@pytest.fixture
async def store(stores: Stores) -> Store:
    return await stores.open()


MakeJob = Callable[..., Awaitable[Job]]


@pytest.fixture
def make_job(store: Store) -> MakeJob:
    """Factory: create a job (`submitting`); keyword arguments override NewJob fields."""
    count = 0

    async def make(*, now: float = NOW, lease_until: float | None = None, **fields: Any) -> Job:
        nonlocal count
        count += 1
        values: dict[str, Any] = {
            "id": f"job_{count:04d}",
            "model": "pixazo/seedvr-image",
            "provider": "pixazo",
            "input": {"image_url": "https://example.com/in.png"},
            "metadata": {"tenant": "acme"},
            "webhook": None,
            "webhook_events": None,
        }
        values.update(fields)
        new = ledger.NewJob(**values)
        until = now + 60 if lease_until is None else lease_until
        created = await store.write(lambda tx: ledger.create_job(tx, new, now, None, until))
        assert created.job is not None
        return created.job

    return make


def report(status: Status, raw: str | None = None, **kw: Any) -> Report:
    return Report(status, raw or str(status).upper(), **kw)


async def submitted(store: Store, job_id: str, request_id: str = REQUEST_ID) -> Job:
    """The provider's answer to the submission: queued, with its request id; polls at NOW+5."""
    answer = report(Status.QUEUED, "QUEUED", provider_job_id=request_id)
    return await store.write(
        lambda tx: ledger.record_submitted(tx, job_id, answer, NOW, NOW + 5, None)
    )


MakeQueued = Callable[..., Awaitable[Job]]


@pytest.fixture
def make_queued(store: Store, make_job: MakeJob) -> MakeQueued:
    """Factory: a job the provider has accepted (status queued, provider id REQUEST_ID)."""

    async def make(request_id: str = REQUEST_ID, **fields: Any) -> Job:
        job = await make_job(**fields)
        return await submitted(store, job.id, request_id)

    return make


async def callback(
    store: Store, job_id: str, body: dict[str, Any], now: float = NOW + 1
) -> tuple[str, Job | None]:
    raw = json.dumps(body)
    digest = store_module.body_hash(raw.encode())
    heard = pixazo.parse_callback(body)
    return await store.write(lambda tx: ledger.record_callback(tx, job_id, raw, heard, digest, now))


async def poll(
    store: Store, job_id: str, answer: Report | None, error: str | None = None, now: float = NOW + 2
) -> tuple[Job | None, list[Event]]:
    return await store.write(
        lambda tx: ledger.record_poll(tx, job_id, OWNER, answer, error, now, now + 10)
    )


async def events_of(store: Store, job_id: str) -> list[Event]:
    return await store.events(job_id=job_id)


async def types_of(store: Store, job_id: str) -> list[str]:
    return [e.type for e in await events_of(store, job_id)]


async def lease_of(store: Store, job_id: str) -> tuple[str | None, float | None]:
    def q(conn: sqlite3.Connection) -> tuple[str | None, float | None]:
        row = conn.execute(
            "SELECT lease_owner, lease_expires_at FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return row[0], row[1]

    return await store.read(q)


async def count(store: Store, sql: str) -> int:
    return int((await store.read(lambda conn: conn.execute(sql).fetchone()))[0])


# -- create_job --------------------------------------------------------------------------------


async def test_create_job_writes_submitting_and_job_created(
    store: Store, make_job: MakeJob
) -> None:
    job = await make_job(
        metadata={"k": "v"},
        webhook="https://hooks.example.com/x",
        webhook_events=["completed"],
        lease_until=NOW + 30,
    )
    assert job.status is Status.SUBMITTING
    assert job.progress == 0
    assert job.outputs == [] and job.error is None and job.provider_job_id is None
    assert job.next_poll_at == NOW + 30  # the submission lease
    assert (job.created_at, job.updated_at) == (NOW, NOW)
    assert await store.get_job(job.id) == job
    events = await events_of(store, job.id)
    assert [(e.type, e.source, e.created_at) for e in events] == [("job.created", "api", NOW)]
    assert events[0].data["id"] == job.id
    assert events[0].data["status"] == "submitting"
    assert events[0].data["metadata"] == {"k": "v"}
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.webhook == "https://hooks.example.com/x"
    assert stored.webhook_events == ["completed"]


async def test_same_idempotency_key_returns_existing(store: Store, make_job: MakeJob) -> None:
    first_new = ledger.NewJob("job_first", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    again_new = ledger.NewJob("job_again", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    idem = ("key-1", "hash-1")
    first = await store.write(lambda tx: ledger.create_job(tx, first_new, NOW, idem, NOW + 60))
    assert first.job is not None and first.existing is None
    again = await store.write(lambda tx: ledger.create_job(tx, again_new, NOW, idem, NOW + 60))
    assert again.job is None
    assert again.existing is not None
    assert (again.existing.key, again.existing.request_hash) == idem
    assert again.existing.job_id == "job_first"
    assert await store.get_job("job_again") is None
    assert await count(store, "SELECT count(*) FROM jobs") == 1
    assert await count(store, "SELECT count(*) FROM events") == 1


async def test_submission_answer_is_kept_under_the_idempotency_key(store: Store) -> None:
    new = ledger.NewJob("job_idem", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, ("k", "h"), NOW + 60))
    answer = report(Status.QUEUED, "QUEUED", provider_job_id=REQUEST_ID)
    final = await store.write(
        lambda tx: ledger.record_submitted(tx, "job_idem", answer, NOW, NOW + 5, "k")
    )
    kept = await store.idempotent("k")
    assert kept is not None
    assert kept.status_code == 202
    assert kept.response == final.public()


# -- record_submitted and transitions ----------------------------------------------------------


async def test_record_submitted_moves_to_queued_and_schedules_a_poll(
    store: Store, make_job: MakeJob
) -> None:
    job = await make_job()
    woken = store.waiter("poll")
    woken.clear()
    queued = await submitted(store, job.id)
    assert queued.status is Status.QUEUED
    assert queued.provider_job_id == REQUEST_ID
    assert queued.next_poll_at == NOW + 5
    assert queued.poll_attempt == 0
    assert woken.is_set()
    events = await events_of(store, job.id)
    assert [(e.type, e.source) for e in events] == [("job.created", "api"), ("job.queued", "api")]
    assert events[1].data["provider_job_id"] == REQUEST_ID


async def test_record_submitted_twice_writes_one_queued_event(
    store: Store, make_job: MakeJob
) -> None:
    job = await make_job()
    await submitted(store, job.id)
    await submitted(store, job.id)
    assert (await types_of(store, job.id)).count("job.queued") == 1


async def test_duplicate_processing_writes_one_event(store: Store, make_queued: MakeQueued) -> None:
    job = await make_queued()
    first, events = await poll(store, job.id, report(Status.PROCESSING, progress=0.2))
    assert first is not None and first.status is Status.PROCESSING
    assert [e.type for e in events] == ["job.processing"]
    again, events = await poll(store, job.id, report(Status.PROCESSING, progress=0.25))
    assert again is not None and again.status is Status.PROCESSING
    assert events == []
    assert await types_of(store, job.id) == ["job.created", "job.queued", "job.processing"]


async def test_progress_writes_an_event_per_ten_points(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    for value in (0.1, 0.15, 0.35, 0.3, 0.38):
        await poll(store, job.id, report(Status.PROCESSING, progress=value))
    stored = await store.get_job(job.id)
    # 0.15 and 0.38 stay within the ten points already shown; 0.3 goes backwards
    assert stored is not None and stored.progress == 0.35
    assert await types_of(store, job.id) == [
        "job.created",
        "job.queued",
        "job.processing",
        "job.progress",
    ]


async def test_late_report_never_moves_a_finished_job_back(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    done, events = await poll(store, job.id, report(Status.SUCCEEDED, "COMPLETED", outputs=OUTPUTS))
    assert done is not None and done.status is Status.SUCCEEDED
    assert done.progress == 1.0
    assert done.outputs == list(OUTPUTS)
    assert done.finished_at == NOW + 2
    assert done.next_poll_at is None
    assert [e.type for e in events] == ["job.succeeded"]
    before = await types_of(store, job.id)
    late, events = await poll(store, job.id, report(Status.PROCESSING, progress=0.5), now=NOW + 3)
    assert late is not None and late.status is Status.SUCCEEDED
    assert late.next_poll_at is None
    assert late.updated_at == done.updated_at
    assert events == []
    assert await types_of(store, job.id) == before


async def test_failed_report_keeps_the_provider_error(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    failed, _ = await poll(store, job.id, report(Status.FAILED, "ERROR", error="GPU on fire"))
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error == {"code": "provider_error", "message": "GPU on fire"}


# -- callbacks ---------------------------------------------------------------------------------

COMPLETED = {
    "request_id": REQUEST_ID,
    "status": "COMPLETED",
    "output": {"media_url": ["https://cdn.example.com/out.png"], "media_type": "image"},
    "error": None,
}


async def test_terminal_callback_is_confirmed_first(store: Store, make_queued: MakeQueued) -> None:
    job = await make_queued()
    woken = store.waiter("poll")
    woken.clear()
    outcome, seen = await callback(store, job.id, COMPLETED, now=NOW + 1)
    assert outcome == "confirm"
    assert seen is not None
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is Status.QUEUED  # not terminal until the provider confirms
    assert stored.callback_status == "succeeded"
    assert stored.next_poll_at == NOW + 1
    assert woken.is_set()
    events = await events_of(store, job.id)
    assert [(e.type, e.source) for e in events][-1] == ("callback.received", "callback")
    assert events[-1].data["status"] == "COMPLETED"
    assert events[-1].data["request_id"] == REQUEST_ID
    assert json.loads(events[-1].data["body"]) == COMPLETED


async def test_same_callback_again_is_duplicate(store: Store, make_queued: MakeQueued) -> None:
    job = await make_queued()
    assert (await callback(store, job.id, COMPLETED))[0] == "confirm"
    before = await types_of(store, job.id)
    outcome, _ = await callback(store, job.id, COMPLETED, now=NOW + 50)
    assert outcome == "duplicate"
    assert await types_of(store, job.id) == before


async def test_callback_for_another_request_is_a_mismatch(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    outcome, _ = await callback(store, job.id, COMPLETED | {"request_id": "seedvr-upscale_evil"})
    assert outcome == "mismatch"
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is Status.QUEUED
    assert stored.callback_status is None
    assert stored.next_poll_at == NOW + 5
    events = await events_of(store, job.id)
    # the refused body is kept in the rejection itself
    assert [e.type for e in events][-1] == "callback.rejected"
    assert "body" in events[-1].data
    assert events[-1].data["reason"] == "request_id_mismatch"
    assert events[-1].data["expected"] == REQUEST_ID


async def test_poll_confirming_the_callback_writes_terminal_event_from_callback(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    await callback(store, job.id, COMPLETED)
    done, events = await poll(store, job.id, report(Status.SUCCEEDED, "COMPLETED", outputs=OUTPUTS))
    assert done is not None
    assert done.status is Status.SUCCEEDED
    assert done.callback_status is None
    assert done.next_poll_at is None
    assert [(e.type, e.source) for e in events] == [("job.succeeded", "callback")]
    assert "callback.rejected" not in await types_of(store, job.id)


async def test_poll_disagreeing_with_the_callback_rejects_it(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    await callback(store, job.id, COMPLETED)
    still, events = await poll(store, job.id, report(Status.PROCESSING, "PROCESSING"))
    assert still is not None
    assert still.status is Status.PROCESSING
    assert still.callback_status is None
    assert still.next_poll_at == NOW + 2 + 10
    assert [(e.type, e.source) for e in events] == [("job.processing", "poll")]
    rejected = [e for e in await events_of(store, job.id) if e.type == "callback.rejected"]
    assert len(rejected) == 1
    assert rejected[0].source == "poll"
    assert rejected[0].data == {
        "reason": "unconfirmed",
        "claimed": "succeeded",
        "provider_status": "PROCESSING",
    }


async def test_non_terminal_callback_applies_at_once(store: Store, make_queued: MakeQueued) -> None:
    job = await make_queued()
    body = {"request_id": REQUEST_ID, "status": "PROCESSING"}
    outcome, updated = await callback(store, job.id, body)
    assert outcome == "applied"
    assert updated is not None and updated.status is Status.PROCESSING
    outcome, _ = await callback(store, job.id, body | {"note": "same state, other body"})
    assert outcome == "duplicate"
    events = await events_of(store, job.id)
    processing = [e for e in events if e.type == "job.processing"]
    assert [e.source for e in processing] == ["callback"]


async def test_callback_before_the_submission_answer_is_kept(
    store: Store, make_job: MakeJob
) -> None:
    job = await make_job(lease_until=NOW + 60)
    outcome, _ = await callback(store, job.id, COMPLETED, now=NOW + 0.01)
    assert outcome == "confirm"
    early = await store.get_job(job.id)
    assert early is not None
    assert early.status is Status.SUBMITTING
    assert early.callback_status == "succeeded"
    assert early.next_poll_at == NOW + 60  # still the submission lease: no id to poll yet
    queued = await submitted(store, job.id)
    assert queued.status is Status.QUEUED
    assert queued.callback_status == "succeeded"
    assert queued.next_poll_at == NOW  # confirm at once, not at NOW + 5


async def test_early_processing_callback_is_not_rejected_when_the_job_finished(
    store: Store, make_job: MakeJob
) -> None:
    job = await make_job()
    body = {"request_id": REQUEST_ID, "status": "PROCESSING"}
    assert (await callback(store, job.id, body, now=NOW + 0.01))[0] == "recorded"
    await submitted(store, job.id)
    done, _ = await poll(store, job.id, report(Status.SUCCEEDED, "COMPLETED", outputs=OUTPUTS))
    assert done is not None and done.status is Status.SUCCEEDED
    assert "callback.rejected" not in await types_of(store, job.id)


async def test_callback_for_unknown_job_is_ignored(store: Store) -> None:
    assert await callback(store, "job_nope", COMPLETED) == ("ignored", None)
    assert await count(store, "SELECT count(*) FROM events") == 0


async def test_callback_on_finished_job_is_only_recorded(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    await poll(store, job.id, report(Status.FAILED, "FAILED"))
    outcome, _ = await callback(store, job.id, COMPLETED)
    assert outcome == "recorded"
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.status is Status.FAILED
    assert stored.callback_status is None
    assert stored.next_poll_at is None


# -- callbacks cannot grow a job's log without bound --------------------------------------------


def _callback_types(events: list[Event]) -> list[str]:
    return [e.type for e in events if e.type.startswith("callback.")]


async def _dropped(store: Store, job_id: str) -> int:
    sql = "SELECT callbacks_dropped FROM jobs WHERE id = ?"
    row = await store.read(lambda conn: conn.execute(sql, (job_id,)).fetchone())
    return int(row[0])


async def test_distinct_callbacks_past_the_cap_are_counted_not_stored(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    extra = 10
    outcomes = [
        (await callback(store, job.id, {"status": "WHATEVER", "n": n}))[0]
        for n in range(ledger.CALLBACK_EVENTS + extra)
    ]
    assert outcomes.count("recorded") == ledger.CALLBACK_EVENTS
    assert outcomes.count("dropped") == extra
    types = _callback_types(await events_of(store, job.id))
    assert types.count("callback.received") == ledger.CALLBACK_EVENTS
    assert types.count("callback.dropped") == 1  # announced once
    assert await _dropped(store, job.id) == extra
    # a replay of a stored body is still a duplicate, not a drop
    assert (await callback(store, job.id, {"status": "WHATEVER", "n": 0}))[0] == "duplicate"
    assert await _dropped(store, job.id) == extra


async def test_a_terminal_callback_past_the_cap_is_still_confirmed(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    for n in range(ledger.CALLBACK_EVENTS):
        await callback(store, job.id, {"junk": n})
    assert (await callback(store, job.id, COMPLETED))[0] == "confirm"
    stored = await store.get_job(job.id)
    assert stored is not None and stored.callback_status == "succeeded"
    # variants of a claim already made change nothing more
    variant = COMPLETED | {"note": "again"}
    assert (await callback(store, job.id, variant, now=NOW + 3))[0] == "dropped"
    again = await store.get_job(job.id)
    assert again is not None and again.next_poll_at == NOW + 1


async def test_after_the_end_only_a_few_callbacks_are_stored(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    await poll(store, job.id, report(Status.FAILED, "FAILED"))
    outcomes = [(await callback(store, job.id, {"late": n}))[0] for n in range(20)]
    assert outcomes.count("recorded") == ledger.CALLBACK_EVENTS_LATE
    assert outcomes.count("dropped") == 20 - ledger.CALLBACK_EVENTS_LATE
    types = _callback_types(await events_of(store, job.id))
    assert types.count("callback.received") == ledger.CALLBACK_EVENTS_LATE


async def reject(store: Store, job_id: str, reason: str, body: bytes, now: float = NOW) -> None:
    digest = store_module.body_hash(body)
    await store.write(lambda tx: ledger.reject_callback(tx, job_id, reason, now, {}, digest))


@pytest.mark.parametrize("reason", ["invalid_json", "token_expired"])
async def test_rejected_callbacks_are_deduplicated_and_capped(
    store: Store, make_queued: MakeQueued, reason: str
) -> None:
    job = await make_queued()
    for _ in range(5):
        await reject(store, job.id, reason, b"{same")
    assert _callback_types(await events_of(store, job.id)) == ["callback.rejected"]
    for n in range(ledger.CALLBACK_EVENTS + 5):
        await reject(store, job.id, reason, b"{other %d" % n)
    types = _callback_types(await events_of(store, job.id))
    assert types.count("callback.rejected") == ledger.CALLBACK_EVENTS
    assert types.count("callback.dropped") == 1
    assert await _dropped(store, job.id) == 6


# -- fail_job ----------------------------------------------------------------------------------


async def test_fail_job(store: Store, make_job: MakeJob) -> None:
    job = await make_job()
    failed = await store.write(
        lambda tx: ledger.fail_job(
            tx, job.id, "submit_failed", "Pixazo said 500", "system", NOW + 1, {"attempts": 3}
        )
    )
    assert failed is not None
    assert failed.status is Status.FAILED
    assert failed.error == {"code": "submit_failed", "message": "Pixazo said 500"}
    assert failed.finished_at == NOW + 1
    assert failed.next_poll_at is None
    events = await events_of(store, job.id)
    assert [(e.type, e.source) for e in events][-1] == ("job.failed", "system")
    assert events[-1].data["details"] == {"attempts": 3}
    assert events[-1].data["error"] == failed.error


async def test_fail_job_leaves_finished_and_unknown_jobs_alone(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    done, _ = await poll(store, job.id, report(Status.SUCCEEDED, outputs=OUTPUTS))
    before = await types_of(store, job.id)
    again = await store.write(
        lambda tx: ledger.fail_job(tx, job.id, "timeout", "too late", "system", NOW + 9)
    )
    assert again == done
    assert await types_of(store, job.id) == before
    missing = await store.write(
        lambda tx: ledger.fail_job(tx, "job_nope", "timeout", "x", "system", NOW)
    )
    assert missing is None


# -- claim_due and polling ---------------------------------------------------------------------


async def claim(store: Store, now: float, provider: str = "pixazo", limit: int = 10) -> list[Job]:
    return await store.write(lambda tx: ledger.claim_due(tx, provider, now, limit, OWNER, 30))


async def test_claim_due_leases_due_jobs_only(
    store: Store, make_job: MakeJob, make_queued: MakeQueued
) -> None:
    due_late = await make_job(lease_until=NOW - 1)
    due_early = await make_job(lease_until=NOW - 10)
    due_now = await make_job(lease_until=NOW)
    later = await make_job(lease_until=NOW + 100)
    other_provider = await make_job(provider="scenario", lease_until=NOW - 10)
    finished = await make_queued()
    await poll(store, finished.id, report(Status.SUCCEEDED))

    claimed = await claim(store, NOW)
    # RETURNING gives rows in no particular order
    assert {j.id for j in claimed} == {due_early.id, due_late.id, due_now.id}
    for job in claimed:
        assert job.next_poll_at == NOW + 30
        assert await lease_of(store, job.id) == (OWNER, NOW + 30)
    for job in (later, other_provider, finished):
        assert await lease_of(store, job.id) == (None, None)

    assert await claim(store, NOW + 29) == []  # still leased
    assert await store.next_due("pixazo") == NOW + 30
    again = await claim(store, NOW + 30)  # the lease ran out: the poller died
    assert {j.id for j in again} == {due_early.id, due_late.id, due_now.id}


async def test_claim_due_respects_limit(store: Store, make_job: MakeJob) -> None:
    made = [await make_job(lease_until=NOW - offset) for offset in range(5)]
    first = await claim(store, NOW, limit=2)
    assert {j.id for j in first} == {made[4].id, made[3].id}  # the longest overdue first
    assert [j.next_poll_at for j in first] == [NOW + 30] * 2
    assert len(await claim(store, NOW, limit=10)) == 3
    assert await claim(store, NOW, limit=10) == []


async def test_record_poll_reschedules_and_releases_the_lease(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    [leased] = await claim(store, NOW + 5)
    assert leased.id == job.id
    polled, _ = await poll(store, job.id, report(Status.QUEUED), now=NOW + 6)
    assert polled is not None
    assert polled.next_poll_at == NOW + 16
    assert polled.poll_attempt == 1
    assert await lease_of(store, job.id) == (None, None)


async def test_poll_errors_write_one_event_until_a_poll_succeeds(
    store: Store, make_queued: MakeQueued
) -> None:
    job = await make_queued()
    await poll(store, job.id, None, "connect timeout")
    await poll(store, job.id, None, "connect timeout")
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.poll_errors == 2
    assert stored.next_poll_at == NOW + 12
    assert (await types_of(store, job.id)).count("poll.error") == 1
    ok, _ = await poll(store, job.id, report(Status.QUEUED))
    assert ok is not None and ok.poll_errors == 0


# -- owners and takeover -----------------------------------------------------------------------

DEAD = owners.DEAD_AFTER


async def register(store: Store, owner: str, now: float = NOW) -> None:
    await store.write(lambda tx: owners.register(tx, owner, "host", 1, now))


async def beat(store: Store, owner: str, now: float) -> float | None:
    return await store.write(lambda tx: owners.beat(tx, owner, "host", 1, now))


async def claim_as(
    store: Store, owner: str, now: float, limit: int = 100, lateness: list[float] | None = None
) -> list[Job]:
    return await store.write(
        lambda tx: ledger.claim_due(tx, "pixazo", now, limit, owner, 30, lateness)
    )


async def owner_rows(store: Store) -> list[str]:
    return [r[0] for r in await store.read(lambda c: c.execute("SELECT id FROM owners").fetchall())]


async def test_a_live_owners_leases_are_never_taken_and_a_dead_ones_are(
    store: Store, make_job: MakeJob
) -> None:
    made = {(await make_job(lease_until=NOW - 1)).id for _ in range(3)}
    await register(store, "a")
    await register(store, "b")
    assert {j.id for j in await claim_as(store, "a", NOW)} == made
    # a beats on: b gets nothing, however long before the leases run out
    for t in range(1, 21):
        await beat(store, "a", NOW + t)
        await beat(store, "b", NOW + t)
        assert await claim_as(store, "b", NOW + t + 0.1) == []
    # a falls silent at NOW+20: still alive until its heartbeat is DEAD_AFTER old
    assert await claim_as(store, "b", NOW + 20 + DEAD - 0.1) == []
    late: list[float] = []
    taken = await claim_as(store, "b", NOW + 20 + DEAD + 0.1, lateness=late)
    assert {j.id for j in taken} == made  # well before a's leases ran out (NOW+30)
    for job in taken:
        assert await lease_of(store, job.id) == ("b", NOW + 20 + DEAD + 0.1 + 30)
    assert late == []  # a takeover is no poll of the schedule's: no lateness recorded
    await beat(store, "b", NOW + 20 + DEAD + 0.2)
    assert await claim_as(store, "a", NOW + 20 + DEAD + 0.2) == []  # nor taken back: b is alive


async def test_a_lease_whose_owner_has_no_row_is_free_at_once(
    store: Store, make_job: MakeJob
) -> None:
    job = await make_job(lease_until=NOW - 1)
    await register(store, "a")
    assert [j.id for j in await claim_as(store, "a", NOW)] == [job.id]
    assert await claim_as(store, "a", NOW + 1) == []  # its own lease: never taken over
    await store.write(lambda tx: owners.unregister(tx, "a"))  # a clean stop
    assert [j.id for j in await claim_as(store, "b", NOW + 1)] == [job.id]


async def test_an_interrupted_submission_is_claimed_once_its_owner_is_dead(
    store: Store,
) -> None:
    new = ledger.NewJob("job_sub", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    await register(store, "a")
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 3600, None, "a"))
    assert await lease_of(store, "job_sub") == ("a", NOW + 3600)
    assert await claim_as(store, "b", NOW + 1) == []  # a is alive: its submission is under way
    [taken] = await claim_as(store, "b", NOW + DEAD + 0.1)  # a died at once
    assert (taken.id, taken.status) == ("job_sub", Status.SUBMITTING)


async def test_the_submission_lease_ends_with_the_providers_answer(store: Store) -> None:
    new = ledger.NewJob("job_sub", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 3600, None, "a"))
    await submitted(store, "job_sub")
    assert await lease_of(store, "job_sub") == (None, None)  # a's death later takes nothing
    assert await claim_as(store, "b", NOW + 1) == []
    assert [j.id for j in await claim_as(store, "b", NOW + 5)] == ["job_sub"]  # polled when due


async def test_a_submission_answered_with_an_end_state_holds_no_lease(store: Store) -> None:
    new = ledger.NewJob("job_sub", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 3600, None, "a"))
    answer = report(Status.FAILED, "FAILED", provider_job_id=REQUEST_ID)
    done = await store.write(
        lambda tx: ledger.record_submitted(tx, "job_sub", answer, NOW, NOW + 5, None)
    )
    assert done.status is Status.FAILED
    assert await lease_of(store, "job_sub") == (None, None)


async def test_a_deferred_submission_holds_no_lease(store: Store) -> None:
    new = ledger.NewJob("job_def", "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    created = await store.write(
        lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 3600, (0, 2.0), "a")
    )
    assert created.job is not None and created.job.deferred
    assert await lease_of(store, "job_def") == (None, None)
    assert await claim_as(store, "b", NOW + 1) == []  # resumed when due, not before
    assert [j.id for j in await claim_as(store, "b", NOW + 2)] == ["job_def"]


async def test_release_makes_an_owners_leases_due_for_anyone_now(
    store: Store, make_job: MakeJob
) -> None:
    jobs = [await make_job(lease_until=NOW - 1) for _ in range(2)]
    other = await make_job(lease_until=NOW - 1)
    await register(store, "a")
    await register(store, "b")
    await claim_as(store, "a", NOW, limit=2)
    assert [j.id for j in await claim_as(store, "b", NOW)] == [other.id]
    released = await store.write(lambda tx: ledger.release(tx, "a", NOW + 1))
    assert released == 2
    for job in jobs:
        assert await lease_of(store, job.id) == (None, None)
    # due at the release: a live third process takes them at once (b's own lease stays b's)
    assert {j.id for j in await claim_as(store, "c", NOW + 1)} == {j.id for j in jobs}


async def test_beat_drops_dead_owners_once_and_wakes_the_workers(store: Store) -> None:
    await register(store, "a")
    await register(store, "b", NOW + 1)
    assert await beat(store, "a", NOW + 2) == NOW + 1  # the oldest heartbeat of another owner
    wakes = [store.waiter(c) for c in owners.CHANNELS]
    for waiter in wakes:
        waiter.clear()
    assert await beat(store, "a", NOW + 1 + DEAD - 0.1) == NOW + 1
    assert not any(w.is_set() for w in wakes)
    assert await beat(store, "a", NOW + 1 + DEAD) is None  # b is dead: dropped
    assert await owner_rows(store) == ["a"]
    assert all(w.is_set() for w in wakes)


async def test_an_owner_taken_for_dead_registers_again_on_its_next_beat(store: Store) -> None:
    await register(store, "a")
    await register(store, "b")
    await beat(store, "b", NOW + DEAD + 1)  # a was silent: dropped
    assert await owner_rows(store) == ["b"]
    assert await beat(store, "a", NOW + DEAD + 2) == NOW + DEAD + 1
    assert sorted(await owner_rows(store)) == ["a", "b"]


async def test_two_stores_on_one_file_never_hold_one_job_at_once(
    stores: Stores, store: Store, make_job: MakeJob
) -> None:
    """Two relays on one database: each claim is exclusive, and takeover needs a dead owner."""
    made = {(await make_job(lease_until=NOW - 100 + i * 0.1)).id for i in range(300)}
    other = await stores.open()
    relays = {"a": store, "b": other}
    for name, opened in relays.items():
        await register(opened, name)
    held: dict[str, str] = {}
    # each claims a share first, alone: which store wins the lock while both run is up to the
    # scheduler (one may take every job), and exclusivity is what is under test
    for name, opened in relays.items():
        for job in await claim_as(opened, name, NOW, limit=7):
            held[job.id] = name
    assert len(held) == 14

    async def work(name: str) -> None:
        for step in range(60):
            now = NOW + step * 0.05
            await beat(relays[name], name, now)
            for job in await claim_as(relays[name], name, now, limit=7):
                assert job.id not in held, f"{job.id} held by {held.get(job.id)} and {name}"
                held[job.id] = name
            await asyncio.sleep(0)

    await asyncio.gather(work("a"), work("b"))
    assert set(held) == made
    assert set(held.values()) == {"a", "b"}
    # a dies: b takes over exactly a's jobs, once a's heartbeat is DEAD_AFTER old
    last = NOW + 59 * 0.05
    await beat(other, "b", last + DEAD + 0.5)
    taken = await claim_as(other, "b", last + DEAD + 0.5, limit=1000)
    assert {j.id for j in taken} == {j for j, name in held.items() if name == "a"}


async def test_the_claim_walks_its_indexes_on_ten_thousand_jobs(store: Store) -> None:
    async def seed(tx: Tx) -> None:
        tx.conn.executemany(
            "INSERT INTO jobs (id, model, provider, status, input, created_at, updated_at,"
            " next_poll_at) VALUES (?, 'scenario/upscale-v3', 'scenario', 'processing', '{}',"
            " ?, ?, ?)",
            [(f"job_{i:05d}", NOW, NOW, NOW + i * 0.01) for i in range(10_000)],
        )

    await store.write(seed)
    statements: list[str] = []

    async def traced(tx: Tx) -> list[Job]:
        tx.conn.set_trace_callback(statements.append)
        try:
            return await ledger.claim_due(tx, "scenario", NOW + 50, 32, "a", 30)
        finally:
            tx.conn.set_trace_callback(None)

    assert len(await store.write(traced)) == 32
    [claim_sql] = [s for s in statements if s.lstrip().startswith("UPDATE jobs")]
    plan = await store.read(
        lambda c: [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + claim_sql).fetchall()]
    )
    text = "\n".join(plan)
    assert "USING COVERING INDEX jobs_due (provider=? AND next_poll_at>? AND next_poll_at<?)" in (
        text
    ), text
    assert "USING INDEX jobs_leased" in text, text
    assert not any(line.startswith("SCAN jobs") for line in plan), text


async def test_the_delivery_claim_reads_the_due_range_not_every_pending_delivery(
    store: Store,
) -> None:
    async def seed(tx: Tx) -> None:
        tx.conn.executemany(
            "INSERT INTO deliveries (id, event_id, event_type, kind, url, next_attempt_at,"
            " created_at, updated_at) VALUES (?, 1, 'job.succeeded', 'webhook',"
            " 'https://example.com/hook', ?, ?, ?)",
            [(f"msg_{i:05d}", NOW + i, NOW, NOW) for i in range(10_000)],  # a retry backlog
        )

    await store.write(seed)
    statements: list[str] = []

    async def traced(tx: Tx) -> outbox.Claimed:
        tx.conn.set_trace_callback(statements.append)
        try:
            return await outbox.claim(tx, NOW + 9.5, 512, "a", 25)
        finally:
            tx.conn.set_trace_callback(None)

    assert len((await store.write(traced)).deliveries) == 10
    [claim_sql] = [s for s in statements if "UPDATE deliveries" in s and "RETURNING" in s]
    plan = await store.read(
        lambda c: [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + claim_sql).fetchall()]
    )
    text = "\n".join(plan)
    assert "SEARCH d USING INDEX deliveries_due (next_attempt_at<?)" in text, text
    assert "deliveries_leased" in text, text
    assert "deliveries_status" not in text, text


async def test_a_dead_owners_deliveries_are_taken_over_and_released_ones_are_due(
    store: Store,
) -> None:
    async def make(tx: Tx) -> list[str]:
        fields = {"url": "https://example.com/hook", "kind": "webhook", "events": ["*"]}
        sub = await outbox.create_subscription(tx, {**fields, "max_in_flight": 10}, NOW)
        return [(await outbox.send_test(tx, sub, NOW)).id for _ in range(3)]

    made = set(await store.write(make))

    async def claim_deliveries(owner: str, now: float) -> set[str]:
        claimed = await store.write(lambda tx: outbox.claim(tx, now, 100, owner, 25))
        return {d.id for d in claimed.deliveries}

    await register(store, "a")
    await register(store, "b")
    assert await claim_deliveries("a", NOW) == made
    assert await claim_deliveries("b", NOW + DEAD - 0.1) == set()  # a is alive
    assert await claim_deliveries("a", NOW + 1) == set()  # its own: never taken over
    assert await claim_deliveries("b", NOW + DEAD + 0.1) == made  # a is dead
    assert await store.write(lambda tx: outbox.release(tx, "b", NOW + 5)) == 3
    assert await claim_deliveries("c", NOW + 5) == made  # due at once for anyone


async def make_deliveries(store: Store, count: int, **fields: Any) -> tuple[str, list[str]]:
    async def make(tx: Tx) -> tuple[str, list[str]]:
        base = {"url": "https://example.com/hook", "kind": "webhook", "events": ["*"]}
        sub = await outbox.create_subscription(tx, {**base, **fields}, NOW)
        return sub.id, [(await outbox.send_test(tx, sub, NOW)).id for _ in range(count)]

    return await store.write(make)


async def claimed_by(store: Store, owner: str, now: float) -> list[str]:
    claimed = await store.write(lambda tx: outbox.claim(tx, now, 100, owner, 25))
    return [d.id for d in claimed.deliveries]


async def test_a_paced_subscription_goes_one_at_a_time_at_its_rate_whoever_claims(
    store: Store,
) -> None:
    sub_id, made = await make_deliveries(store, 3, rate_per_second=2, max_in_flight=10)
    await register(store, "a")
    await register(store, "b")
    assert await claimed_by(store, "a", NOW) == made[:1]
    found = await store.read(lambda c: reads.subscription(c, sub_id))
    assert found is not None and found.next_send_at == NOW + 0.5
    assert await claimed_by(store, "b", NOW + 0.4) == []  # another owner waits as well
    assert await store.next_attempt_due() == NOW + 0.5  # not NOW: no loop spins meanwhile
    assert await claimed_by(store, "b", NOW + 0.5) == made[1:2]
    assert await claimed_by(store, "a", NOW + 1.0) == made[2:]


async def test_the_in_flight_cap_counts_every_live_owners_leases_and_no_dead_ones(
    store: Store,
) -> None:
    _, made = await make_deliveries(store, 5, max_in_flight=2)
    await register(store, "a")
    await register(store, "b")
    assert await claimed_by(store, "a", NOW) == made[:2]
    assert await claimed_by(store, "b", NOW + 1) == []  # a's two are in flight
    await beat(store, "b", NOW + DEAD)
    # a is dead: its two leases count no more, and are taken over first
    assert await claimed_by(store, "b", NOW + DEAD + 0.1) == made[:2]
    assert await claimed_by(store, "b", NOW + DEAD + 0.2) == []
    attempt = outbox.Attempt(200, 1.0, "ok", None, True, None)
    for delivery_id in made[:2]:
        delivery = await store.read(lambda c, i=delivery_id: reads.delivery(c, i))
        assert delivery is not None
        await store.write(
            lambda tx, d=delivery: outbox.record_attempt(tx, d, "b", attempt, NOW + 5, 1e9)
        )
    assert await claimed_by(store, "b", NOW + 5) == made[2:4]  # recorded: two free slots


async def test_an_answer_that_asks_to_wait_holds_the_subscription_never_earlier(
    store: Store,
) -> None:
    sub_id, made = await make_deliveries(store, 2, max_in_flight=10)
    await register(store, "a")
    assert await claimed_by(store, "a", NOW) == made
    for delivery_id, until in zip(made, (NOW + 30, NOW + 10), strict=True):
        delivery = await store.read(lambda c, i=delivery_id: reads.delivery(c, i))
        assert delivery is not None
        throttled = outbox.Attempt(429, 1.0, None, "HTTP 429", False, until, throttled=True)
        throttled = dataclasses.replace(throttled, not_before=until)
        await store.write(
            lambda tx, d=delivery, a=throttled: outbox.record_attempt(tx, d, "a", a, NOW, 1e9)
        )
    found = await store.read(lambda c: reads.subscription(c, sub_id))
    assert found is not None and found.next_send_at == NOW + 30
    assert await claimed_by(store, "a", NOW + 20) == []  # the second one's own retry is due
    assert await store.next_attempt_due() == NOW + 30
    assert sorted(await claimed_by(store, "a", NOW + 30)) == sorted(made)


# -- the store itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET type = 'job.succeeded'",
        "UPDATE events SET data = '{}' WHERE id = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE id = 1",
    ],
)
async def test_events_are_append_only(store: Store, make_job: MakeJob, sql: str) -> None:
    job = await make_job()
    before = await events_of(store, job.id)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        await store.write(on_connection(lambda conn: conn.execute(sql)))
    assert await events_of(store, job.id) == before


async def test_a_failing_unit_spoils_no_other_unit_of_its_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[Any]] = []
    run_batch = sqlite_store._run_units

    def spy(conn: sqlite3.Connection, batch: list[tuple[Any, Tx]]) -> list[tuple[bool, Any]]:
        batches.append([fn for fn, _ in batch])
        return run_batch(conn, batch)

    monkeypatch.setattr(sqlite_store, "_run_units", spy)

    def put(key: str) -> Callable[[Tx], str]:
        async def unit(tx: Tx) -> str:
            tx.conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (key,))
            return key

        return unit

    async def broken(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO meta (key, value) VALUES ('broken', 'v')")
        tx.notify("never")
        raise RuntimeError("boom")

    async def conflicting(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO meta (key, value) VALUES ('conflict', 'v')")
        tx.conn.execute("INSERT INTO meta (key, value) VALUES ('k03', 'again')")

    units: list[Callable[[Tx], Any]] = [put(f"k{i:02d}") for i in range(20)]
    units.insert(10, broken)
    units.insert(15, conflicting)
    never = store.waiter("never")
    never.clear()
    results = await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)

    assert isinstance(results[10], RuntimeError)
    assert isinstance(results[15], sqlite3.IntegrityError)
    assert [r for i, r in enumerate(results) if i not in (10, 15)] == [
        f"k{i:02d}" for i in range(20)
    ]
    rows = await store.read(
        lambda conn: dict(conn.execute("SELECT key, value FROM meta").fetchall())
    )
    assert rows == {f"k{i:02d}": "v" for i in range(20)}
    assert not never.is_set()  # a rolled-back unit wakes nobody
    # the failing units really shared a batch with good ones
    shared = [b for b in batches if broken in b or conflicting in b]
    assert shared and all(len(b) > 1 for b in shared)
    # and the writer goes on
    assert await store.write(put("after")) == "after"


async def test_migrations_set_user_version_and_reopening_is_a_no_op(
    stores: Stores, make_job: MakeJob, store: Store
) -> None:
    latest = max(number for number, _ in sqlite_store._migrations())
    assert latest >= 1
    version = await store.read(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
    assert version == latest
    job = await make_job()
    events = await count(store, "SELECT count(*) FROM events")
    await stores.close(store)

    with contextlib.closing(sqlite3.connect(stores.path)) as conn:
        assert sqlite_store._migrate(conn) == latest  # nothing left to run
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest

    reopened = await stores.open()
    version = await reopened.read(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
    assert version == latest
    assert await reopened.get_job(job.id) == job
    assert await count(reopened, "SELECT count(*) FROM events") == events
