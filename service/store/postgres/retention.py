"""PostgreSQL adapter: retention, one short transaction per batch, one process at a time."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from service.store.records import Pruned

Conn = AsyncConnection[DictRow]

# pg_try_advisory_xact_lock key of a prune batch ('rlyp'): one process prunes at a time. A
# transaction-level lock is released by the commit or by the death of its connection, so no
# lease outlives a crashed process; a process that finds it taken ends its pass at once.
PRUNE_LOCK = 0x726C7970
JOBS_PER_BATCH = 50
_TERMINAL = "('succeeded', 'failed', 'canceled')"
_CANDIDATES = (
    "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND pruned_at IS NULL"  # noqa: S608
    f" AND finished_at < %(before)s AND status IN {_TERMINAL}"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = jobs.id"
    " AND d.status = 'pending')"
)


async def _count(conn: Conn, sql: str, params: dict[str, object]) -> int:
    cur = await conn.execute(sql, params)
    return cur.rowcount


async def batch(conn: Conn, before: float, now: float, budget: int) -> Pruned | None:
    """Delete up to `budget` rows of jobs ended before `before` (attempts, then deliveries,
    then events) and mark pruned the jobs left with nothing; None when another process holds
    the prune lock. Runs in the caller's transaction."""
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS mine", (PRUNE_LOCK,))
    row = await cur.fetchone()
    if row is None or not row["mine"]:
        return None
    query = f"{_CANDIDATES} ORDER BY finished_at LIMIT %(n)s"
    cur = await conn.execute(query, {"before": before, "n": JOBS_PER_BATCH})
    ids = [r["id"] for r in await cur.fetchall()]
    if not ids:
        return Pruned()
    params: dict[str, object] = {"ids": ids, "left": budget, "before": before, "now": now}
    attempts = await _count(
        conn,
        "DELETE FROM attempts WHERE id IN (SELECT a.id FROM deliveries d"
        " JOIN attempts a ON a.delivery_id = d.id WHERE d.job_id = ANY(%(ids)s)"
        " LIMIT %(left)s)",
        params,
    )
    params["left"] = budget - attempts
    deliveries = events = 0
    if budget - attempts > 0:
        # a delivery made pending by a transaction since the candidates were read is kept
        deliveries = await _count(
            conn,
            "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries"
            " WHERE job_id = ANY(%(ids)s) AND status != 'pending' LIMIT %(left)s)",
            params,
        )
        params["left"] = budget - attempts - deliveries
    if budget - attempts - deliveries > 0:
        # the trigger events_append_only lets these through under this setting, which ends
        # with the transaction; events a pending delivery carries are kept
        await conn.execute("SELECT set_config('relay.prune_before', %s, true)", (repr(before),))
        events = await _count(
            conn,
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
            " WHERE e.job_id = ANY(%(ids)s) AND e.id < (SELECT max(id) FROM events)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = e.job_id"
            " AND d.event_id = e.id) LIMIT %(left)s)",
            params,
        )
    done = await _count(
        conn,
        "UPDATE jobs SET pruned_at = %(now)s WHERE id = ANY(%(ids)s)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = jobs.id)"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id"
        " AND e.id < (SELECT max(id) FROM events))",
        params,
    )
    return Pruned(done, events, deliveries, attempts)


PREVIEW = (
    f"WITH c AS ({_CANDIDATES}) SELECT"  # noqa: S608 - fixed SQL
    " (SELECT count(*) FROM c) AS jobs,"
    " (SELECT count(*) FROM events WHERE job_id IN (SELECT id FROM c)"
    " AND id < (SELECT max(id) FROM events)) AS events,"
    " (SELECT count(*) FROM deliveries WHERE job_id IN (SELECT id FROM c)) AS deliveries,"
    " (SELECT count(*) FROM deliveries d JOIN attempts a ON a.delivery_id = d.id"
    " WHERE d.job_id IN (SELECT id FROM c)) AS attempts"
)
