"""PostgreSQL adapter: jobs (state, callbacks, poll claims) and idempotency keys, per unit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, tuple_row

from service.jobs import Status
from service.store.base import Applied
from service.store.model import JOB_COLUMNS, Head, Idempotent, Job, _idem, dumps
from service.store.schema import job_sets, states_before

# pg_advisory_xact_lock(key, hashtext(provider)) of admission against the in-flight cap
# ('rlyf'; the two-key form, whose key space is apart from the one-key locks)
ADMIT_LOCK = 0x726C7966

Conn = AsyncConnection[DictRow]


def _apply_sql(status: Status) -> str:
    earlier = states_before(status)
    # fixed states and columns, no input
    return (
        "UPDATE jobs SET status = %s, progress = CASE WHEN %s::float8 > progress"  # noqa: S608
        " THEN %s::float8 ELSE progress END, updated_at = %s"
        f" WHERE id = %s AND status IN ({earlier}) AND provider_job_id != ''"
        f" AND (%s::text IS NULL OR provider_job_id = %s) RETURNING {JOB_COLUMNS}"
    )


# `apply_callback`'s statement per state it moves a job to (the states before it are fixed)
_APPLY = {s: _apply_sql(s) for s in Status if not s.terminal and s.rank > 0}


class Jobs:
    """The jobs rows as one unit of work sees them; `service.ledger` decides what to do."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def _run(self, sql: str, params: Any = None) -> int:
        cur = await self._conn.execute(sql, params)
        return cur.rowcount

    # -- submission ------------------------------------------------------------------------

    async def in_flight(self, provider: str) -> int:
        """Jobs of a provider that it is working on now, or that are being submitted to it.

        Read to admit a job against RELAY_MAX_IN_FLIGHT, so it first takes the provider's
        admission lock, held to commit: two transactions admitting at once (two submissions,
        two deferred jobs resumed) would each count the other's job as not yet there.
        """
        # A statement of its own: read committed takes the sum's snapshot after the wait.
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ADMIT_LOCK, provider)
        )
        # kept by triggers in the same transactions, over at most 16 slots (migration 008)
        cur = await self._conn.execute(
            "SELECT coalesce(sum(n), 0) AS n FROM in_flight WHERE provider = %s", (provider,)
        )
        row = await cur.fetchone()
        return int(row["n"]) if row else 0

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
        cur = await self._conn.execute(
            "INSERT INTO jobs (id, model, provider, status, input, metadata, webhook,"
            " webhook_events, created_at, updated_at, next_poll_at, lease_owner, lease_expires_at)"
            " VALUES (%s, %s, %s, 'submitting', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING seq",
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
        )
        row = await cur.fetchone()
        assert row is not None  # noqa: S101 - RETURNING of an INSERT
        return int(row["seq"])

    async def defer(self, job_id: str, due: float) -> None:
        """Hold a job back, unleased, until `due`."""
        await self._run(
            "UPDATE jobs SET deferred = 1, next_poll_at = %s, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE id = %s",
            (due, job_id),
        )

    async def push_back(self, job_id: str, due: float) -> None:
        """A deferred job stays deferred: due again at `due`, no owner."""
        await self._run(
            "UPDATE jobs SET next_poll_at = %s, lease_owner = NULL WHERE id = %s", (due, job_id)
        )

    async def undefer(self, job_id: str, now: float, lease_until: float) -> None:
        """A deferred job is taken for submission, its lease running to `lease_until`."""
        await self._run(
            "UPDATE jobs SET deferred = 0, next_poll_at = %s, lease_expires_at = %s,"
            " updated_at = %s WHERE id = %s",
            (lease_until, lease_until, now, job_id),
        )

    async def submitted(self, job_id: str, due: float) -> None:
        """The submission's answer: first poll at `due`, lease released."""
        await self._run(
            "UPDATE jobs SET next_poll_at = %s, poll_attempt = 0, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE id = %s",
            (due, job_id),
        )

    async def unlease(self, job_id: str) -> None:
        """Drop a job's lease, whoever holds it."""
        await self._run(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = %s", (job_id,)
        )

    # -- state -----------------------------------------------------------------------------

    # A unit reads a job to decide what to write to it: FOR UPDATE makes units on the same
    # job take turns, as SQLite's single writer does, so two callbacks arriving together
    # cannot both apply a transition decided on the same stale state.
    async def get(self, job_id: str) -> Job | None:
        """A job by id, locked until the unit ends."""
        row = await self._values(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s FOR UPDATE",  # noqa: S608 - fixed
            (job_id,),
        )
        return Job.from_values(row) if row else None

    async def _values(self, sql: str, params: Any) -> tuple[Any, ...] | None:
        """The first row of `sql` as a tuple (decoded by position: cheaper than by name)."""
        async with self._conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()

    async def head(self, job_id: str) -> Head | None:
        """The head of a job, locked until the unit ends."""
        cur = await self._conn.execute(
            "SELECT id, status, progress, cost, provider_job_id, callback_status, next_poll_at"
            " FROM jobs WHERE id = %s FOR UPDATE",
            (job_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        return Head(
            row["id"],
            Status(row["status"]),
            row["progress"],
            row["cost"],
            row["provider_job_id"],
            row["callback_status"],
            row["next_poll_at"],
        )

    async def update(self, job_id: str, sets: Mapping[str, Any]) -> Job:
        """Set the columns named in `sets` (fixed keys, never input) and return the job."""
        names, values = job_sets(sets)
        assignments = ", ".join(f"{k} = %s" for k in names)
        row = await self._values(
            f"UPDATE jobs SET {assignments} WHERE id = %s RETURNING {JOB_COLUMNS}",  # noqa: S608
            (*values, job_id),
        )
        assert row is not None  # noqa: S101 - the ledger updates jobs it has read
        return Job.from_values(row)

    async def fail(self, job_id: str, error: dict[str, Any], now: float) -> None:
        """Mark a job failed with `error`: unscheduled, unclaimed, unleased."""
        await self._run(
            "UPDATE jobs SET status = 'failed', error = %s, updated_at = %s, finished_at = %s,"
            " next_poll_at = NULL, callback_status = NULL, lease_owner = NULL WHERE id = %s",
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
        # The UPDATE locks the row and, after waiting on another unit's, re-checks its WHERE
        # on the committed row: two callbacks at once cannot both apply the same transition.
        row = await self._values(
            _APPLY[status], (str(status), progress, progress, now, job_id, request_id, request_id)
        )
        return Job.from_values(row) if row else None

    async def apply_callbacks(self, rows: Sequence[Applied]) -> dict[str, Job]:
        """`apply_callback` for each (job id, status, progress, request id, now) row, no job id
        twice. One statement each: this adapter runs every unit in its own transaction."""
        changed: dict[str, Job] = {}
        for job_id, status, progress, request_id, now in rows:
            job = await self.apply_callback(job_id, status, progress, request_id, now)
            if job is not None:
                changed[job_id] = job
        return changed

    async def callback_budget(self, job_id: str) -> tuple[int, int]:
        """The callback events stored for a job: in all, and after it ended."""
        cur = await self._conn.execute(
            "SELECT callback_events, callback_events_late FROM jobs WHERE id = %s", (job_id,)
        )
        row = await cur.fetchone()
        return (row["callback_events"], row["callback_events_late"]) if row else (0, 0)

    async def count_callback(self, job_id: str, ended: bool) -> None:
        """One more callback event stored (and one more late one when the job had ended)."""
        await self._run(
            "UPDATE jobs SET callback_events = callback_events + 1,"
            " callback_events_late = callback_events_late + %s WHERE id = %s",
            (int(ended), job_id),
        )

    async def count_dropped(self, job_id: str) -> None:
        """One more callback counted but not stored."""
        await self._run(
            "UPDATE jobs SET callbacks_dropped = callbacks_dropped + 1 WHERE id = %s", (job_id,)
        )

    async def claim(self, job_id: str, status: Status, due: float | None) -> None:
        """A callback claims `status`: confirmed by a poll due at `due`, from the first attempt."""
        await self._run(
            "UPDATE jobs SET callback_status = %s, next_poll_at = %s, poll_attempt = 0"
            " WHERE id = %s",
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
        cur = await self._conn.execute(
            "UPDATE jobs SET callback_status = %s, poll_attempt = 0, claimed_due = %s,"  # noqa: S608
            " next_poll_at = %s, lease_owner = %s, lease_expires_at = %s"
            f" WHERE id = %s AND provider = ANY(%s) RETURNING {JOB_COLUMNS}",
            (str(status), now, until, owner, until, job_id, list(providers)),
        )
        row = await cur.fetchone()
        return None if row is None else Job.from_row(row)

    async def note_claim(self, job_id: str, status: Status) -> None:
        """A callback claims `status`, the schedule unchanged."""
        await self._run("UPDATE jobs SET callback_status = %s WHERE id = %s", (str(status), job_id))

    # -- polls and their leases ------------------------------------------------------------

    async def claim_due(
        self, provider: str, now: float, limit: int, owner: str, until: float, alive_after: float
    ) -> list[tuple[Job, float | None]]:
        """Lease to `owner` until `until` up to `limit` jobs that are due, or whose lease is
        held by an owner not alive after `alive_after`; each with the due time it had."""
        # SKIP LOCKED: processes claiming at once each take other rows, none waits on another.
        # The leases of dead owners come first (their work is late already), then due order.
        cur = await self._conn.execute(
            "UPDATE jobs SET lease_owner = %(owner)s, lease_expires_at = %(until)s,"
            " claimed_due = next_poll_at, next_poll_at = %(until)s"
            " WHERE seq IN (SELECT seq FROM jobs WHERE provider = %(provider)s"
            "  AND next_poll_at IS NOT NULL AND (next_poll_at <= %(now)s OR ("
            "   lease_owner IS NOT NULL AND lease_owner <> %(owner)s AND lease_owner NOT IN"
            "   (SELECT id FROM owners WHERE heartbeat_at > %(alive_after)s)))"
            "  ORDER BY next_poll_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " RETURNING *",
            {
                "owner": owner,
                "until": until,
                "provider": provider,
                "now": now,
                "limit": limit,
                "alive_after": alive_after,
            },
        )
        rows = await cur.fetchall()
        return [(Job.from_row(r), r["claimed_due"]) for r in rows]

    async def next_due(self, provider: str) -> float | None:
        """The earliest poll time scheduled for a provider."""
        cur = await self._conn.execute(
            "SELECT min(next_poll_at) AS due FROM jobs WHERE provider = %s"
            " AND next_poll_at IS NOT NULL",
            (provider,),
        )
        row = await cur.fetchone()
        return None if row is None or row["due"] is None else float(row["due"])

    async def release(self, owner: str, now: float) -> int:
        """Every scheduled job `owner` leases: unleased and due at `now`."""
        return await self._run(
            "UPDATE jobs SET next_poll_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL"
            " WHERE lease_owner = %(owner)s AND next_poll_at IS NOT NULL",
            {"owner": owner, "now": now},
        )

    async def poll_answered(self, job_id: str) -> None:
        """A poll had an answer: error count reset, callback claim settled."""
        await self._run(
            "UPDATE jobs SET poll_errors = 0, callback_status = NULL WHERE id = %s", (job_id,)
        )

    async def poll_failed(self, job_id: str) -> None:
        """One more poll error in a row."""
        await self._run("UPDATE jobs SET poll_errors = poll_errors + 1 WHERE id = %s", (job_id,))

    async def next_poll(self, job_id: str, due: float) -> None:
        """The next poll at `due`, one attempt later."""
        await self._run(
            "UPDATE jobs SET next_poll_at = %s, poll_attempt = poll_attempt + 1 WHERE id = %s",
            (due, job_id),
        )

    async def unlease_held(self, job_id: str, owner: str) -> None:
        """Drop a job's lease if `owner` holds it."""
        await self._run(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL"
            " WHERE id = %s AND lease_owner = %s",
            (job_id, owner),
        )

    async def reschedule(self, rows: Iterable[tuple[float, str, str]]) -> None:
        """(due, job id, owner) rows: the next poll, one attempt later, the owner's lease
        dropped; a job no longer leased by that owner, or unscheduled, is left alone."""
        dues, ids, owners = [], [], []
        for due, job_id, owner in rows:
            dues.append(due)
            ids.append(job_id)
            owners.append(owner)
        if not ids:
            return
        # one statement for the whole batch (a quiet poll round can be thousands of jobs)
        await self._run(
            "UPDATE jobs SET next_poll_at = r.due, poll_attempt = poll_attempt + 1,"
            " lease_owner = NULL, lease_expires_at = NULL"
            " FROM unnest(%s::float8[], %s::text[], %s::text[]) AS r(due, id, owner)"
            " WHERE jobs.id = r.id AND jobs.lease_owner = r.owner"
            " AND jobs.next_poll_at IS NOT NULL",
            (dues, ids, owners),
        )


class Idempotency:
    """The idempotency keys as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def get(self, key: str) -> Idempotent | None:
        """The key's record, if stored."""
        cur = await self._conn.execute("SELECT * FROM idempotency WHERE key = %s", (key,))
        row = await cur.fetchone()
        return _idem(row) if row else None

    async def add(self, key: str, request_hash: str, job_id: str, now: float) -> None:
        """Store a key for the job its request creates; its answer comes later."""
        await self._conn.execute(
            "INSERT INTO idempotency (key, request_hash, job_id, created_at)"
            " VALUES (%s, %s, %s, %s)",
            (key, request_hash, job_id, now),
        )

    async def answer(self, key: str, status_code: int, body: dict[str, Any]) -> None:
        """Keep the answer given under a key."""
        await self._conn.execute(
            "UPDATE idempotency SET status_code = %s, response = %s WHERE key = %s",
            (status_code, dumps(body), key),
        )
