"""A submission's answer is recorded with one narrow read of the job, on every engine, and
answers with exactly the job as stored."""

from __future__ import annotations

from typing import Any

from service import ledger
from service.jobs import CallbackReport, Report, Status
from service.store import Job, Store, Tx

NOW = 1_800_000_000.0


class CountingJobs:
    """The unit's jobs repository, counting the whole-row reads (`get`) made through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.full_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, job_id: str) -> Job | None:
        self.full_reads += 1
        job: Job | None = await self._inner.get(job_id)
        return job


class CountingTx:
    """A unit of work whose jobs repository counts whole-row reads."""

    def __init__(self, tx: Tx, jobs: CountingJobs) -> None:
        self._tx = tx
        self.jobs = jobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


async def _create(store: Store, job_id: str, idem: tuple[str, str] | None = None) -> None:
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {"a": 1}, {"m": "x"}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, idem, NOW + 60))


async def _record(store: Store, job_id: str, report: Report, key: str | None) -> tuple[Job, int]:
    async def unit(tx: Tx) -> tuple[Job, int]:
        jobs = CountingJobs(tx.jobs)
        counting: Any = CountingTx(tx, jobs)
        job = await ledger.record_submitted(counting, job_id, report, NOW + 1, NOW + 6, key)
        return job, jobs.full_reads

    return await store.write(unit)


async def test_the_answer_reads_no_whole_job_and_is_the_job_as_stored(store: Store) -> None:
    await _create(store, "job_s", ("k1", "h" * 32))
    queued = Report(Status.QUEUED, "QUEUED", provider_job_id="req_s")
    job, full_reads = await _record(store, "job_s", queued, "k1")
    assert full_reads == 0
    stored = await store.get_job("job_s")
    assert job == stored
    assert (job.status, job.next_poll_at, job.poll_attempt) == (Status.QUEUED, NOW + 6, 0)
    answer = await store.idempotent("k1")
    assert answer is not None and answer.response == stored.public()


async def test_a_callback_heard_first_is_polled_at_once_and_shown_as_stored(store: Store) -> None:
    await _create(store, "job_c")
    heard = CallbackReport(Status.PROCESSING, "PROCESSING", "req_c")
    await store.write(lambda tx: ledger.record_callback(tx, "job_c", "{}", heard, "d1", NOW))
    queued = Report(Status.QUEUED, "QUEUED", provider_job_id="req_c")
    job, _ = await _record(store, "job_c", queued, None)
    assert job == await store.get_job("job_c")
    assert job.next_poll_at == NOW + 1  # confirmed by a poll at once


async def test_a_submission_answered_as_failed_is_unleased_and_shown_as_stored(
    store: Store,
) -> None:
    await _create(store, "job_f")
    failed = Report(Status.FAILED, "failed", error="no credits", provider_job_id="req_f")
    job, full_reads = await _record(store, "job_f", failed, None)
    assert full_reads == 0
    assert job == await store.get_job("job_f")
    assert job.status is Status.FAILED and job.next_poll_at is None


async def test_a_new_job_is_answered_as_stored_without_reading_it_back(store: Store) -> None:
    cases = [
        ("job_plain", {"image_url": "https://x.example/a.png"}, {}, None, None, 10),
        ("job_hook", {"n": [1, 2.5, None]}, {"t": "é"}, "https://h.example/x", ["job.failed"], 10),
        ("job_empty_filter", {}, {}, "https://h.example/y", [], 10),
        ("job_held", {"a": {"b": True}}, {"m": "1"}, None, None, 0),  # over the cap
    ]
    for job_id, input_, metadata, webhook, events, cap in cases:
        new = ledger.NewJob(
            job_id, "pixazo/seedvr-image", "pixazo", input_, metadata, webhook, events
        )

        async def unit(tx: Tx, new: ledger.NewJob = new, cap: int = cap) -> ledger.Created:
            jobs = CountingJobs(tx.jobs)
            counting: Any = CountingTx(tx, jobs)
            created = await ledger.create_job(
                counting, new, NOW, None, NOW + 60, (cap, 5.0), "owner-1"
            )
            assert jobs.full_reads == 0
            return created

        created = await store.write(unit)
        assert created.job is not None
        assert created.job == await store.get_job(job_id), job_id
    held = await store.get_job("job_held")
    assert held is not None and held.deferred and held.next_poll_at == NOW + 5
