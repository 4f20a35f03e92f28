"""Write units of archiving: the work added when a job succeeds, each copy settled, the
job announced (before_notify) or its archive reported (after_notify) once all are settled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import owners
from service.outbox import append_event
from service.store import Event, Job, Tx
from service.store.archives import Archive, Copied, NewArchive

PLAN = "archive.plan"  # the key of this process's Plan in the store's memo (ledger units)


@dataclass(frozen=True, slots=True)
class Plan:
    """How this process archives: the mode, and the base of a folder archive's URLs."""

    mode: str  # before_notify | after_notify
    public_url: str
    served: bool  # a local folder: the relay serves GET /v1/outputs/{job_id}/{n}


def install(tx: Tx, plan: Plan | None) -> None:
    """Make the plan known to this process's units (none: jobs are announced as they end)."""
    if plan is None:
        tx.memo.pop(PLAN, None)
    else:
        tx.memo[PLAN] = plan


def output_url(plan: Plan, job_id: str, n: int) -> str:
    """Where the relay serves a folder archive's output."""
    return f"{plan.public_url}/v1/outputs/{job_id}/{n}"


async def begin(tx: Tx, job: Job, now: float, data: dict[str, Any]) -> Event | None:
    """A job just succeeded: add its outputs' copies. Returns the `job.archiving` event when
    its `job.succeeded` waits for them (before_notify), else None (announce it now)."""
    plan = tx.memo.get(PLAN)
    if not isinstance(plan, Plan):
        return None
    hold = plan.mode == "before_notify"
    ended = job.finished_at or now
    rows = [
        NewArchive(job.id, n, out["url"], out.get("media_type"), hold, now, ended)
        for n, out in enumerate(job.outputs)
        if isinstance(out, dict) and isinstance(out.get("url"), str) and out["url"]
    ]
    if not rows:
        return None
    await tx.archives.add(rows)
    tx.notify("archives")
    if not hold:
        return None
    # The job is succeeded (GET /v1/jobs/{id} says so at once); its announcement waits for
    # the archive, and this event says why nothing was announced yet.
    waiting = {**data, "archive": {"mode": plan.mode, "outputs": len(rows)}}
    return await append_event(tx, job.id, "job.archiving", "system", now, waiting, "archiving")


def archived(plan: Plan | None, out: dict[str, Any], row: Archive | None) -> dict[str, Any]:
    """An output as events carry it: the provider's, plus the copy's facts once copied."""
    if row is None or row.state != "done" or row.key is None:
        return dict(out)
    extra: dict[str, Any] = {
        "archive_key": row.key,
        "sha256": row.sha256,
        "bytes": row.bytes,
        "content_type": row.content_type,
    }
    if row.width is not None and row.height is not None:
        extra["width"] = row.width
        extra["height"] = row.height
    if plan is not None and plan.served:
        extra["archive_url"] = output_url(plan, row.job_id, row.n)
    return {**out, **extra}


@dataclass(frozen=True, slots=True)
class Retry:
    """A copy failed; tried again at `due`."""

    due: float
    error: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A copy given up."""

    error: str


Outcome = Copied | Retry | Failed


async def claim(tx: Tx, now: float, limit: int, owner: str, lease: float) -> list[Archive]:
    """Lease due copies, and those leased by a dead owner."""
    return await tx.archives.claim(now, limit, owner, now + lease, owners.alive_after(now))


async def abandon(tx: Tx, owner: str, now: float, limit: int = 100) -> int:
    """Archiving is off now (RELAY_ARCHIVE unset): give up pending copies, so the jobs held
    for them are announced with their provider URLs; returns how many were given up."""
    rows = await tx.archives.claim(float("inf"), limit, owner, now, owners.alive_after(now))
    for row in rows:
        await settle(tx, row, owner, Failed("archiving is off (RELAY_ARCHIVE is not set)"), now)
    return len(rows)


async def settle(tx: Tx, row: Archive, owner: str, outcome: Outcome, now: float) -> list[Event]:
    """Record a copy's outcome; once the job's copies are all settled, announce the job
    (its held `job.succeeded`) or report the archive (`job.archived`)."""
    repo = tx.archives
    if not isinstance(outcome, Retry):
        # PostgreSQL: the job's rows locked in order first, so units settling outputs of
        # one job take turns (never a deadlock) and exactly one sees them all settled
        await repo.for_job(row.job_id)
    if isinstance(outcome, Copied):
        applied = await repo.done(row.job_id, row.n, owner, outcome, now)
    elif isinstance(outcome, Retry):
        if await repo.retry(row.job_id, row.n, owner, outcome.due, outcome.error):
            tx.notify("archives")
        return []
    else:
        applied = await repo.fail(row.job_id, row.n, owner, outcome.error, now)
    if not applied:
        return []  # taken over: the new owner settles it
    events: list[Event] = []
    if isinstance(outcome, Failed):
        job = await tx.jobs.get(row.job_id)
        data: dict[str, Any] = job.notification_data() if job is not None else {"id": row.job_id}
        # `error` carries the reason to subscribers (a notification's keys are fixed)
        data["error"] = {"code": "archive_failed", "message": f"output {row.n}: {outcome.error}"}
        data["archive"] = {"output": row.n, "reason": outcome.error, "attempts": row.attempts + 1}
        dedupe = f"archive_failed:{row.n}"
        failed = await append_event(
            tx, row.job_id, "job.archive_failed", "system", now, data, dedupe, job
        )
        if failed is not None:
            events.append(failed)
    rows = await repo.for_job(row.job_id)
    if any(r.state == "pending" for r in rows):
        return events
    final = await announce(tx, row.job_id, rows, now)
    if final is not None:
        events.append(final)
    return events


async def announce(tx: Tx, job_id: str, rows: Sequence[Archive], now: float) -> Event | None:
    """The job's copies are all settled: its `job.succeeded` (held) or `job.archived`."""
    job = await tx.jobs.get(job_id)
    if job is None:
        return None
    plan = tx.memo.get(PLAN)
    found = plan if isinstance(plan, Plan) else None
    by_n = {r.n: r for r in rows}
    data = job.notification_data()
    data["outputs"] = [archived(found, out, by_n.get(n)) for n, out in enumerate(job.outputs)]
    failed = [r.n for r in rows if r.state == "failed"]
    data["archive"] = {"archived": sum(r.state == "done" for r in rows), "failed": failed}
    if any(r.hold for r in rows):
        return await append_event(
            tx, job_id, "job.succeeded", "system", now, data, "succeeded", job
        )
    return await append_event(tx, job_id, "job.archived", "system", now, data, "archived", job)
