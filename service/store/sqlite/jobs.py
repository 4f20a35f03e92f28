"""SQLite adapter: jobs (state, callbacks, poll claims) and idempotency keys, per unit."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from service.jobs import Status
from service.store.base import Applied
from service.store.model import JOB_COLUMNS, Head, Idempotent, Job, _idem, dumps
from service.store.schema import job_sets, states_before


def _apply_sql(status: Status) -> str:
    earlier = states_before(status)
    # fixed states and columns, no input
    return (
        "UPDATE jobs SET status = ?,"  # noqa: S608
        " progress = CASE WHEN ? > progress THEN ? ELSE progress END,"
        f" updated_at = ? WHERE id = ? AND status IN ({earlier}) AND provider_job_id != ''"
        f" AND (? IS NULL OR provider_job_id = ?) RETURNING {JOB_COLUMNS}"
    )


# `apply_callback`'s statement per state it moves a job to (the states before it are fixed)
_APPLY = {s: _apply_sql(s) for s in Status if not s.terminal and s.rank > 0}

T = TypeVar("T")

# The most rows one set-based statement writes (and so the most sizes it is prepared in)
GROUP_MOST = 256

# `apply_callbacks`: the same change for many jobs, each row's state checked against its own
_EARLIER = " ".join(f"WHEN '{s}' THEN jobs.status IN ({states_before(s)})" for s in _APPLY)


def _apply_many_sql(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    # fixed states and columns; the values are parameters
    return (
        "UPDATE jobs SET status = v.column2,"  # noqa: S608
        " progress = CASE WHEN v.column3 > jobs.progress THEN v.column3 ELSE jobs.progress END,"
        f" updated_at = v.column5 FROM (VALUES {values}) AS v WHERE jobs.id = v.column1"
        f" AND CASE v.column2 {_EARLIER} ELSE 0 END AND jobs.provider_job_id != ''"
        " AND (v.column4 IS NULL OR jobs.provider_job_id = v.column4)"
        f" RETURNING {JOB_COLUMNS}"
    )


def chunks(rows: Sequence[T]) -> list[Sequence[T]]:
    """`rows` in pieces of at most GROUP_MOST: one statement each, prepared once per size (the
    writer's statement cache holds every size: see store.CACHED_STATEMENTS)."""
    return [rows[i : i + GROUP_MOST] for i in range(0, len(rows), GROUP_MOST)]


class Jobs:
    """The jobs rows as one unit of work sees them; `service.ledger` decides what to do."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # -- submission ------------------------------------------------------------------------

    async def in_flight(self, provider: str) -> int:
        """Jobs of a provider that it is working on now, or that are being submitted to it."""
        # kept by triggers in the same transactions (migration 008): one row, not a count
        row = self._conn.execute(
            "SELECT n FROM in_flight WHERE provider = ?", (provider,)
        ).fetchone()
        return int(row[0]) if row else 0

    async def insert_submitting(
        self,
        job_id: str,
        model: str,
        provider: str,
        input_: dict[str, Any],
        metadata: dict[str, Any],
        webhook: str | None,
        webhook_events: list[str] | None,
        now: float,
        lease_until: float,
        owner: str | None,
    ) -> int:
        """Insert a job as `submitting`, its due time (and `owner`'s lease) at `lease_until`;
        returns its seq."""
        row = self._conn.execute(
            "INSERT INTO jobs (id, model, provider, status, input, metadata, webhook,"
            " webhook_events, created_at, updated_at, next_poll_at, lease_owner, lease_expires_at)"
            " VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                job_id,
                model,
                provider,
                dumps(input_),
                dumps(metadata),
                webhook,
                dumps(webhook_events) if webhook_events else None,
                now,
                now,
                lease_until,
                owner,
                lease_until if owner is not None else None,
            ),
        ).fetchone()
        return int(row[0])

    async def defer(self, job_id: str, due: float) -> None:
        """Hold a job back, unleased, until `due`."""
        self._conn.execute(
            "UPDATE jobs SET deferred = 1, next_poll_at = ?, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE id = ?",
            (due, job_id),
        )

    async def push_back(self, job_id: str, due: float) -> None:
        """A deferred job stays deferred: due again at `due`, no owner."""
        self._conn.execute(
            "UPDATE jobs SET next_poll_at = ?, lease_owner = NULL WHERE id = ?", (due, job_id)
        )

    async def undefer(self, job_id: str, now: float, lease_until: float) -> None:
        """A deferred job is taken for submission, its lease running to `lease_until`."""
        self._conn.execute(
            "UPDATE jobs SET deferred = 0, next_poll_at = ?, lease_expires_at = ?, updated_at = ?"
            " WHERE id = ?",
            (lease_until, lease_until, now, job_id),
        )

    async def submitted(self, job_id: str, due: float) -> None:
        """The submission's answer: first poll at `due`, lease released."""
        self._conn.execute(
            "UPDATE jobs SET next_poll_at = ?, poll_attempt = 0, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE id = ?",
            (due, job_id),
        )

    async def unlease(self, job_id: str) -> None:
        """Drop a job's lease, whoever holds it."""
        self._conn.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?", (job_id,)
        )

    # -- state -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """A job by id."""
        row = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?",  # noqa: S608 - fixed columns
            (job_id,),
        ).fetchone()
        return Job.from_values(row) if row else None

    async def head(self, job_id: str) -> Head | None:
        """The head of a job."""
        row = self._conn.execute(
            "SELECT id, status, progress, cost, provider_job_id, callback_status, next_poll_at"
            " FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        return Head(row[0], Status(row[1]), row[2], row[3], row[4], row[5], row[6])

    async def update(self, job_id: str, sets: Mapping[str, Any]) -> Job:
        """Set the columns named in `sets` (fixed keys, never input) and return the job."""
        names, values = job_sets(sets)
        assignments = ", ".join(f"{k} = ?" for k in names)
        row = self._conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? RETURNING {JOB_COLUMNS}",  # noqa: S608
            (*values, job_id),
        ).fetchone()
        return Job.from_values(row)

    async def fail(self, job_id: str, error: dict[str, Any], now: float) -> None:
        """Mark a job failed with `error`: unscheduled, unclaimed, unleased."""
        self._conn.execute(
            "UPDATE jobs SET status = 'failed', error = ?, updated_at = ?, finished_at = ?,"
            " next_poll_at = NULL, callback_status = NULL, lease_owner = NULL WHERE id = ?",
            (dumps(error), now, now, job_id),
        )

    # -- callbacks -------------------------------------------------------------------------

    async def apply_callback(
        self,
        job_id: str,
        status: Status,
        progress: float | None,
        request_id: str | None,
        now: float,
    ) -> Job | None:
        """The common callback in one statement: the job moves to `status` (not terminal) if
        it is at an earlier state, its provider id is known and is `request_id` (when given);
        progress only grows. The job as it leaves it, or None (nothing changed)."""
        row = self._conn.execute(
            _APPLY[status],
            (str(status), progress, progress, now, job_id, request_id, request_id),
        ).fetchone()
        return Job.from_values(row) if row else None

    async def apply_callbacks(self, rows: Sequence[Applied]) -> dict[str, Job]:
        """`apply_callback` for each (job id, status, progress, request id, now) row, no job id
        twice, in one statement (per power-of-two chunk). The jobs it changed, by id."""
        changed: dict[str, Job] = {}
        for chunk in chunks(rows):
            params: list[Any] = []
            for job_id, status, progress, request_id, now in chunk:
                if status not in _APPLY:
                    raise ValueError(f"a callback does not move a job to {status} in one step")
                params += (job_id, str(status), progress, request_id, now)
            for row in self._conn.execute(_apply_many_sql(len(chunk)), params):
                job = Job.from_values(row)
                changed[job.id] = job
        return changed

    async def callback_budget(self, job_id: str) -> tuple[int, int]:
        """The callback events stored for a job: in all, and after it ended."""
        row = self._conn.execute(
            "SELECT callback_events, callback_events_late FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    async def count_callback(self, job_id: str, ended: bool) -> None:
        """One more callback event stored (and one more late one when the job had ended)."""
        self._conn.execute(
            "UPDATE jobs SET callback_events = callback_events + 1,"
            " callback_events_late = callback_events_late + ? WHERE id = ?",
            (int(ended), job_id),
        )

    async def count_dropped(self, job_id: str) -> None:
        """One more callback counted but not stored."""
        self._conn.execute(
            "UPDATE jobs SET callbacks_dropped = callbacks_dropped + 1 WHERE id = ?", (job_id,)
        )

    async def claim(self, job_id: str, status: Status, due: float | None) -> None:
        """A callback claims `status`: confirmed by a poll due at `due`, from the first attempt."""
        self._conn.execute(
            "UPDATE jobs SET callback_status = ?, next_poll_at = ?, poll_attempt = 0 WHERE id = ?",
            (str(status), due, job_id),
        )

    async def claim_leased(
        self,
        job_id: str,
        status: Status,
        now: float,
        owner: str,
        until: float,
        providers: Sequence[str],
    ) -> Job | None:
        """A callback claims `status`, its confirmation poll (due at `now`) leased at once to
        `owner` until `until`, as `claim_due` leases it; only if the job's provider is one of
        `providers`. The job as leased, or None (nothing changed)."""
        # claimed_due is the due time a claim would have found: the lateness metric counts it
        marks = ", ".join("?" * len(providers))
        row = self._conn.execute(
            "UPDATE jobs SET callback_status = ?, poll_attempt = 0, claimed_due = ?,"  # noqa: S608
            " next_poll_at = ?, lease_owner = ?, lease_expires_at = ?"
            f" WHERE id = ? AND provider IN ({marks}) RETURNING {JOB_COLUMNS}",
            (str(status), now, until, owner, until, job_id, *providers),
        ).fetchone()
        return None if row is None else Job.from_row(row)

    async def note_claim(self, job_id: str, status: Status) -> None:
        """A callback claims `status`, the schedule unchanged."""
        self._conn.execute(
            "UPDATE jobs SET callback_status = ? WHERE id = ?", (str(status), job_id)
        )

    # -- polls and their leases ------------------------------------------------------------

    async def claim_due(
        self, provider: str, now: float, limit: int, owner: str, until: float, alive_after: float
    ) -> list[tuple[Job, float | None]]:
        """Lease to `owner` until `until` up to `limit` jobs that are due, or whose lease is
        held by an owner not alive after `alive_after`; each with the due time it had."""
        # The lease is the due time itself: pushed to the lease's end, so a job whose poller
        # hung becomes due again by itself, and "next due" never counts jobs being polled.
        # Two branches, each served by its index: the few leased rows (jobs_leased; the unary
        # plus keeps the planner off jobs_due, which would scan every scheduled job) and the
        # due range in due order (jobs_due, stopping at the limit). A process never takes over
        # its own leases, and a live owner's are never taken before they run out.
        rows = self._conn.execute(
            "UPDATE jobs SET lease_owner = :owner, lease_expires_at = :until,"
            " claimed_due = next_poll_at, next_poll_at = :until"
            " WHERE seq IN ("
            "  SELECT seq FROM (SELECT seq FROM jobs WHERE lease_owner IS NOT NULL"
            "   AND lease_owner != :owner AND lease_owner NOT IN"
            "   (SELECT id FROM owners WHERE heartbeat_at > :alive_after)"
            "   AND +provider = :provider AND +next_poll_at > :now)"
            "  UNION ALL"
            "  SELECT seq FROM (SELECT seq FROM jobs WHERE provider = :provider"
            "   AND next_poll_at IS NOT NULL AND next_poll_at <= :now"
            "   ORDER BY next_poll_at LIMIT :limit)"
            "  LIMIT :limit) RETURNING *",
            {
                "owner": owner,
                "until": until,
                "provider": provider,
                "now": now,
                "limit": limit,
                "alive_after": alive_after,
            },
        ).fetchall()
        # SET saw the old due time, RETURNING shows it in claimed_due
        return [(Job.from_row(r), r["claimed_due"]) for r in rows]

    async def next_due(self, provider: str) -> float | None:
        """The earliest poll time scheduled for a provider."""
        row = self._conn.execute(
            "SELECT min(next_poll_at) FROM jobs WHERE provider = ? AND next_poll_at IS NOT NULL",
            (provider,),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def release(self, owner: str, now: float) -> int:
        """Every scheduled job `owner` leases: unleased and due at `now`."""
        return self._conn.execute(
            "UPDATE jobs SET next_poll_at = :now, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE lease_owner = :owner AND next_poll_at IS NOT NULL",
            {"owner": owner, "now": now},
        ).rowcount

    async def poll_answered(self, job_id: str) -> None:
        """A poll had an answer: error count reset, callback claim settled."""
        self._conn.execute(
            "UPDATE jobs SET poll_errors = 0, callback_status = NULL WHERE id = ?", (job_id,)
        )

    async def poll_failed(self, job_id: str) -> None:
        """One more poll error in a row."""
        self._conn.execute("UPDATE jobs SET poll_errors = poll_errors + 1 WHERE id = ?", (job_id,))

    async def next_poll(self, job_id: str, due: float) -> None:
        """The next poll at `due`, one attempt later."""
        self._conn.execute(
            "UPDATE jobs SET next_poll_at = ?, poll_attempt = poll_attempt + 1 WHERE id = ?",
            (due, job_id),
        )

    async def unlease_held(self, job_id: str, owner: str) -> None:
        """Drop a job's lease if `owner` holds it."""
        self._conn.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = ? AND lease_owner = ?",
            (job_id, owner),
        )

    async def reschedule(self, rows: Iterable[tuple[float, str, str]]) -> None:
        """(due, job id, owner) rows: the next poll, one attempt later, the owner's lease
        dropped; a job no longer leased by that owner, or unscheduled, is left alone."""
        self._conn.executemany(
            "UPDATE jobs SET next_poll_at = ?, poll_attempt = poll_attempt + 1,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = ? AND lease_owner = ? AND next_poll_at IS NOT NULL",
            rows,
        )


class Idempotency:
    """The idempotency keys as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def get(self, key: str) -> Idempotent | None:
        """The key's record, if stored."""
        row = self._conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
        return _idem(row) if row else None

    async def add(self, key: str, request_hash: str, job_id: str, now: float) -> None:
        """Store a key for the job its request creates; its answer comes later."""
        self._conn.execute(
            "INSERT INTO idempotency (key, request_hash, job_id, created_at) VALUES (?, ?, ?, ?)",
            (key, request_hash, job_id, now),
        )

    async def answer(self, key: str, status_code: int, body: dict[str, Any]) -> None:
        """Keep the answer given under a key."""
        self._conn.execute(
            "UPDATE idempotency SET status_code = ?, response = ? WHERE key = ?",
            (status_code, dumps(body), key),
        )
