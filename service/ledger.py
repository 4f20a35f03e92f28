"""Write units for jobs: each change of a job and its event commit in one transaction."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service import confirm, jobs, metrics, owners
from service.archive import units as archive_units
from service.archive.units import PLAN
from service.jobs import CallbackReport, Report, Status
from service.outbox import append_event, fanned_out
from service.store import Event, Grouped, Idempotent, Job, Tx, Unit
from service.store.base import NewEvent
from service.store.model import Head

Source = Literal["api", "callback", "poll", "system"]


def new_job_id() -> str:
    """A fresh public job id."""
    return "job_" + secrets.token_hex(10)


@dataclass(frozen=True, slots=True)
class NewJob:
    """What POST /v1/jobs creates."""

    id: str
    model: str
    provider: str
    input: dict[str, Any]
    metadata: dict[str, Any]
    webhook: str | None
    webhook_events: list[str] | None


@dataclass(frozen=True, slots=True)
class Created:
    """The outcome of create_job: the new job, or the answer already stored under the key."""

    job: Job | None
    existing: Idempotent | None


async def in_flight(tx: Tx, provider: str) -> int:
    """Jobs of a provider that it is working on now, or that are being submitted to it."""
    return await tx.jobs.in_flight(provider)


async def create_job(
    tx: Tx,
    new: NewJob,
    now: float,
    idem: tuple[str, str] | None,
    lease_until: float,
    cap: tuple[int, float] | None = None,
    owner: str | None = None,
) -> Created:
    """Insert a job as `submitting` (and its idempotency key) before the provider is called;
    `owner`, the submitting process, holds its lease (taken over at once if it dies)."""
    if idem is not None:
        stored = await tx.idempotency.get(idem[0])
        if stored is not None:
            return Created(None, stored)
        await tx.idempotency.add(idem[0], idem[1], new.id, now)
    over = cap is not None and await in_flight(tx, new.provider) >= cap[0]
    # next_poll_at doubles as the submission lease: if this process dies before the provider
    # answers, the poller finds the job due (or its owner dead) and reconciles it.
    seq = await tx.jobs.insert_submitting(
        new.id,
        new.model,
        new.provider,
        new.input,
        new.metadata,
        new.webhook,
        new.webhook_events,
        now,
        lease_until,
        owner,
    )
    due = lease_until
    if over and cap is not None:
        # over the provider's in-flight cap: held back (no lease) and submitted by the poller
        due = now + cap[1]
        await tx.jobs.defer(new.id, due)
    # The row as just written, without reading it back (the contract tests compare the two).
    job = Job(
        seq=seq,
        id=new.id,
        model=new.model,
        provider=new.provider,
        status=Status.SUBMITTING,
        progress=0.0,
        input=new.input,
        metadata=new.metadata,
        outputs=[],
        error=None,
        provider_job_id=None,
        cost=None,
        webhook=new.webhook,
        webhook_events=new.webhook_events or None,
        created_at=now,
        updated_at=now,
        finished_at=None,
        next_poll_at=due,
        poll_attempt=0,
        poll_errors=0,
        callback_status=None,
        deferred=over,
    )
    data = job.notification_data()
    data["deferred"] = job.deferred
    await append_event(tx, job.id, "job.created", "api", now, data, dedupe="created")
    if job.deferred and idem is not None:
        await store_answer(tx, idem[0], 202, job.public())
    return Created(job, None)


async def resume_deferred(
    tx: Tx, job_id: str, now: float, cap: int, retry_at: float, lease_until: float
) -> Job | None:
    """Take a deferred job for submission if its provider has room; else push it back."""
    job = await tx.jobs.get(job_id)
    if job is None or not job.deferred or job.status is not Status.SUBMITTING:
        return None
    if await in_flight(tx, job.provider) >= cap:
        await tx.jobs.push_back(job_id, retry_at)
        return None
    await tx.jobs.undefer(job_id, now, lease_until)
    return await tx.jobs.get(job_id)


async def store_answer(
    tx: Tx, idem_key: str | None, status_code: int, body: dict[str, Any]
) -> None:
    """Keep the answer given to an Idempotency-Key so a repeat gets the same one."""
    if idem_key is not None:
        await tx.idempotency.answer(idem_key, status_code, body)


async def _transition(
    tx: Tx,
    job: Job | Head,
    report: Report,
    source: Source,
    now: float,
    extra: dict[str, Any] | None = None,
) -> tuple[Job, list[Event]]:
    """Apply a report monotonically: at most one event per state, progress when it moved."""
    events: list[Event] = []
    sets: dict[str, Any] = {}
    if report.cost is not None and report.cost != job.cost:
        sets["cost"] = report.cost
    if report.provider_job_id and not job.provider_job_id:
        sets["provider_job_id"] = report.provider_job_id
    moved = jobs.advance(job.status, report.status)
    if moved:
        sets["status"] = str(report.status)
        if report.status is Status.SUCCEEDED:
            sets["progress"] = 1.0
            sets["outputs"] = list(report.outputs)
        elif report.progress is not None and report.progress > job.progress:
            sets["progress"] = report.progress
        if report.status in (Status.FAILED, Status.CANCELED):
            sets["error"] = {
                "code": "provider_" + report.raw_status.lower(),
                "message": report.error or f"the provider reported {report.raw_status}",
            }
        if report.status.terminal:
            sets["finished_at"] = now
            sets["next_poll_at"] = None
            sets["callback_status"] = None
    elif (
        not job.status.terminal
        and report.progress is not None
        and jobs.meaningful_progress(job.progress, report.progress)
    ):
        sets["progress"] = report.progress
    if not sets:
        return (job if isinstance(job, Job) else await _full(tx, job.id)), events
    sets["updated_at"] = now
    updated = await tx.jobs.update(job.id, sets)
    if moved:
        event = await _moved(tx, updated, report, source, now, extra)
    elif "progress" in sets:
        data = _data(updated, report, extra)
        dedupe = f"progress:{int(updated.progress * 10)}"
        event = await append_event(tx, job.id, "job.progress", source, now, data, dedupe, updated)
    else:
        event = None
    if event is not None:
        events.append(event)
    return updated, events


async def record_submitted(
    tx: Tx, job_id: str, report: Report, now: float, next_poll_at: float, idem_key: str | None
) -> Job:
    """The provider accepted the job: keep its id, move to queued, schedule the first poll."""
    # The job is read and decoded once: its head to decide, the transition's RETURNING row
    # for the answer (what `submitted` changes below is not part of it).
    head = await tx.jobs.head(job_id)
    assert head is not None  # noqa: S101
    job, _ = await _transition(
        tx, head, report, "api", now, {"provider_response": report.raw_status}
    )
    # The submission's lease ends with its answer.
    if not job.status.terminal:
        # A callback that came before this answer is confirmed by polling at once.
        due = now if job.callback_status else next_poll_at
        await tx.jobs.submitted(job_id, due)
        tx.notify("poll")
        job = dataclasses.replace(job, next_poll_at=due, poll_attempt=0)
    else:
        await tx.jobs.unlease(job_id)
    await store_answer(tx, idem_key, 202, job.public())
    return job


async def fail_job(
    tx: Tx,
    job_id: str,
    code: str,
    message: str,
    source: Source,
    now: float,
    details: dict[str, Any] | None = None,
) -> Job | None:
    """Mark a job failed for a reason of the relay's own (submit error, timeout, ...)."""
    job = await tx.jobs.get(job_id)
    if job is None or job.status.terminal:
        return job
    error = {"code": code, "message": message}
    await tx.jobs.fail(job_id, error, now)
    updated = await tx.jobs.get(job_id)
    assert updated is not None  # noqa: S101
    metrics.job_ended(tx, updated, now)
    data = updated.notification_data()
    if details:
        data["details"] = details
    await append_event(tx, job_id, "job.failed", source, now, data, dedupe="failed")
    return updated


CallbackOutcome = Literal[
    "applied", "duplicate", "confirm", "recorded", "mismatch", "ignored", "dropped"
]

# One job's callbacks add at most CALLBACK_EVENTS events to the log, and at most
# CALLBACK_EVENTS_LATE of them once the job has ended: a leaked callback URL cannot grow the
# log without bound. Past that, callbacks are still answered and acted on, but only counted
# (jobs.callbacks_dropped), announced once by a `callback.dropped` event.
CALLBACK_EVENTS = 50
CALLBACK_EVENTS_LATE = 5
Kept = Literal["stored", "duplicate", "dropped"]


async def _full(tx: Tx, job_id: str) -> Job:
    job = await tx.jobs.get(job_id)
    assert job is not None  # noqa: S101 - the caller read it in this transaction
    return job


def _data(job: Job, report: Report, extra: dict[str, Any] | None) -> dict[str, Any]:
    data = job.notification_data()
    data["provider_status"] = report.raw_status
    if extra:
        data.update(extra)
    return data


async def _moved(
    tx: Tx, job: Job, report: Report, source: Source, now: float, extra: dict[str, Any] | None
) -> Event | None:
    """The event of a job moved to the report's state (once per state)."""
    if report.status.terminal:
        metrics.job_ended(tx, job, now)
    data = _data(job, report, extra)
    status = str(report.status)
    if report.status is Status.SUCCEEDED and PLAN in tx.memo:
        # RELAY_ARCHIVE: the outputs are copied; before_notify holds the announcement
        waiting = await archive_units.begin(tx, job, now, data)
        if waiting is not None:
            return waiting
    return await append_event(tx, job.id, "job." + status, source, now, data, status, job)


async def _keep_callback(
    tx: Tx, job_id: str, ended: bool, type_: str, now: float, data: dict[str, Any], dedupe: str
) -> Kept:
    """Store a callback's event once per dedupe key, within the job's callback budget."""
    stored, late = await tx.jobs.callback_budget(job_id)
    if stored < CALLBACK_EVENTS and (not ended or late < CALLBACK_EVENTS_LATE):
        if await append_event(tx, job_id, type_, "callback", now, data, dedupe) is None:
            return "duplicate"
        await tx.jobs.count_callback(job_id, ended)
        return "stored"
    if await tx.events.exists(job_id, dedupe):
        return "duplicate"
    await tx.jobs.count_dropped(job_id)
    await append_event(
        tx,
        job_id,
        "callback.dropped",
        "system",
        now,
        {
            "reason": "callback_limit",
            "message": "this job's callbacks are no longer stored, only counted",
            "limit": CALLBACK_EVENTS,
            "limit_after_end": CALLBACK_EVENTS_LATE,
        },
        dedupe="dropped",
    )
    return "dropped"


Recorded = tuple[CallbackOutcome, Job | Head | None]


def _received(raw: str, heard: CallbackReport) -> dict[str, Any]:
    """The raw callback as its event keeps it."""
    return {"body": raw[:65536], "status": heard.raw_status, "request_id": heard.request_id}


def _fast(heard: CallbackReport) -> bool:
    """Whether a callback may move its job forward in one statement (see record_callback)."""
    status, request_id = heard.status, heard.request_id
    return (
        status is not None
        and not status.terminal
        and (not request_id or isinstance(request_id, str))
    )


@dataclass(frozen=True, slots=True)
class _Heard:
    """A callback as `record_callbacks` takes it."""

    job_id: str
    raw: str
    heard: CallbackReport
    now: float


def callback_unit(
    job_id: str, raw: str, heard: CallbackReport, digest: str, now: float
) -> Unit[Recorded]:
    """The unit that records a callback: one the store may write set-based with the callbacks
    queued beside it when it may move its job forward in one statement."""

    async def whole(tx: Tx) -> Recorded:
        return await record_callback(tx, job_id, raw, heard, digest, now)

    if not _fast(heard) or heard.status is None or heard.status.rank == 0:
        return whole

    async def rest(tx: Tx) -> Recorded:
        return await record_callback(tx, job_id, raw, heard, digest, now, tried=True)

    return Grouped(record_callbacks, _Heard(job_id, raw, heard, now), job_id, whole, rest)


async def record_callbacks(txs: Sequence[Tx], items: Sequence[Any]) -> list[Recorded | None]:
    """The fast path of record_callback for many callbacks, each on its own job: one UPDATE of
    the jobs and one INSERT of their events; None for a callback that did not apply."""
    calls: Sequence[_Heard] = items
    applied = await txs[0].jobs.apply_callbacks(
        [
            (c.job_id, c.heard.status, c.heard.progress, c.heard.request_id or None, c.now)
            for c in calls
            if c.heard.status is not None
        ]
    )
    out: list[Recorded | None] = []
    rows: list[NewEvent] = []
    moved: list[tuple[Tx, Job]] = []
    for tx, c in zip(txs, calls, strict=True):
        job = applied.get(c.job_id)
        if job is None or c.heard.status is None:
            out.append(None)
            continue
        status, raw_status = c.heard.status, c.heard.raw_status
        received = _received(c.raw, c.heard)
        report = Report(status, str(raw_status), progress=c.heard.progress)
        data = _data(job, report, {"callback": received})
        rows.append((job.id, "job." + str(status), "callback", c.now, data, str(status)))
        moved.append((tx, job))
        out.append(("applied", job))
    events = await txs[0].events.append_many(rows)
    await fanned_out(
        [(tx, event, job) for (tx, job), event in zip(moved, events, strict=True) if event]
    )
    return out


async def record_callback(
    tx: Tx,
    job_id: str,
    raw: str,
    heard: CallbackReport,
    digest: str,
    now: float,
    tried: bool = False,
) -> Recorded:
    """Record a callback its adapter parsed; apply what needs no confirmation, schedule the rest.

    `tried`: its one-statement fast path was tried already in this transaction."""
    status, raw_status, request_id = heard.status, heard.raw_status, heard.request_id
    received = _received(raw, heard)
    if status is not None and not tried and _fast(heard):
        # The common case in one statement (the job at an earlier state, its provider id
        # known and the one named): one event, the job's new state, the raw callback inside.
        # Anything else changes nothing here and is decided below.
        applied = await tx.jobs.apply_callback(
            job_id, status, heard.progress, request_id or None, now
        )
        if applied is not None:
            report = Report(status, str(raw_status), progress=heard.progress)
            await _moved(tx, applied, report, "callback", now, {"callback": received})
            return "applied", applied
    job = await tx.jobs.head(job_id)
    if job is None:
        return "ignored", None
    ended = job.status.terminal
    if job.provider_job_id and request_id and request_id != job.provider_job_id:
        detail = {
            "reason": "request_id_mismatch",
            "request_id": request_id,
            "expected": job.provider_job_id,
            "body": raw[:4096],
        }
        kept = await _keep_callback(
            tx, job_id, ended, "callback.rejected", now, detail, f"rej:{digest}"
        )
        return ("duplicate" if kept == "duplicate" else "mismatch"), job
    if (
        status is not None
        and not status.terminal
        and job.provider_job_id
        and jobs.advance(job.status, status)
    ):
        # The common case: one event, the job's new state, with the raw callback inside.
        report = Report(status, str(raw_status), progress=heard.progress)
        updated, _ = await _transition(tx, job, report, "callback", now, {"callback": received})
        return "applied", updated
    # Anything else is kept as received (once per distinct body) and decided by the provider.
    kept = await _keep_callback(
        tx, job_id, ended, "callback.received", now, received, f"cb:{digest}"
    )
    if kept == "duplicate":
        return "duplicate", job
    done: CallbackOutcome = "recorded" if kept == "stored" else "dropped"
    if status is None or ended:
        return done, job
    if not jobs.advance(job.status, status):
        return "duplicate", job  # a state the job has reached or passed: nothing to apply
    if kept == "dropped" and job.callback_status == str(status):
        return done, job  # claimed already: a flood of variants must not force more polls
    if status.terminal:
        # The URL is a bearer secret: a terminal report is confirmed with the provider first.
        # Due now: leased to this process's poller in this transaction if it has room, and
        # polled once this commits, without a claim transaction of its own.
        if job.provider_job_id and await confirm.confirm_now(tx, job_id, status, now):
            return "confirm", job
        await tx.jobs.claim(job_id, status, now if job.provider_job_id else job.next_poll_at)
        if job.provider_job_id:
            tx.notify("poll")
        return "confirm", job
    # Before the submission answer: recorded now, confirmed by a poll once the id is known.
    await tx.jobs.note_claim(job_id, status)
    return done, job


async def reject_callback(
    tx: Tx, job_id: str, reason: str, now: float, detail: dict[str, Any], digest: str
) -> None:
    """Record a refused callback against its job (once per body), so nothing goes unexplained."""
    job = await tx.jobs.head(job_id)
    if job is not None:
        data = {"reason": reason, **detail}
        dedupe = f"{reason}:{digest}"
        await _keep_callback(
            tx, job_id, job.status.terminal, "callback.rejected", now, data, dedupe
        )


async def claim_due(
    tx: Tx,
    provider: str,
    now: float,
    limit: int,
    owner: str,
    lease: float,
    lateness: list[float] | None = None,
) -> list[Job]:
    """Lease up to `limit` jobs whose poll is due, or whose lease (a poll, a submission) is
    held by a dead owner: one whose heartbeat is stale or whose row is gone."""
    claimed = await tx.jobs.claim_due(
        provider, now, limit, owner, now + lease, owners.alive_after(now)
    )
    if lateness is not None:
        # each job comes with the due time it had (a takeover's is the dead owner's lease end:
        # no lateness of the schedule's)
        lateness.extend(now - due for _, due in claimed if due is not None and due <= now)
    return [job for job, _ in claimed]


async def next_due(tx: Tx, provider: str) -> float | None:
    """The earliest poll time scheduled for a provider."""
    return await tx.jobs.next_due(provider)


async def release(tx: Tx, owner: str, now: float) -> int:
    """Give up every job lease `owner` holds (a drain's end): due now, for whoever is next."""
    return await tx.jobs.release(owner, now)


async def record_poll(
    tx: Tx,
    job_id: str,
    owner: str,
    report: Report | None,
    error: str | None,
    now: float,
    next_poll_at: float,
) -> tuple[Job | None, list[Event]]:
    """Apply a poll's answer (or its error), reschedule, and release the lease."""
    job = await tx.jobs.get(job_id)
    if job is None:
        return None, []
    events: list[Event] = []
    if report is not None:
        claimed = Status(job.callback_status) if job.callback_status else None
        source: Source = "callback" if claimed is report.status else "poll"
        # A terminal callback the provider does not confirm is refused; an early
        # non-terminal one is confirmed by any report at or past its state.
        if claimed is not None and claimed.terminal and claimed is not report.status:
            await append_event(
                tx,
                job_id,
                "callback.rejected",
                "poll",
                now,
                {
                    "reason": "unconfirmed",
                    "claimed": job.callback_status,
                    "provider_status": report.raw_status,
                },
                dedupe=f"unconfirmed:{job.callback_status}:{report.raw_status}",
            )
        job, events = await _transition(tx, job, report, source, now)
        await tx.jobs.poll_answered(job_id)
    elif error is not None:
        if job.poll_errors == 0:
            event = await append_event(
                tx, job_id, "poll.error", "poll", now, {"error": error[:1000]}
            )
            if event:
                events.append(event)
        await tx.jobs.poll_failed(job_id)
    if not job.status.terminal:
        await tx.jobs.next_poll(job_id, next_poll_at)
    await tx.jobs.unlease_held(job_id, owner)
    return await tx.jobs.get(job_id), events


async def reschedule(tx: Tx, rows: list[tuple[float, str, str]]) -> None:
    """Set the next poll of jobs whose poll changed nothing, and release their leases."""
    await tx.jobs.reschedule(rows)
