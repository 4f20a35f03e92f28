"""SQLite adapter: retention, one short batch per unit of work, and what a prune would remove."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from service.store.records import Pruned

# The ended jobs a batch takes (its rows are bounded by the budget, not by this).
JOBS_PER_BATCH = 50
_TERMINAL = "('succeeded', 'failed', 'canceled')"
# Ended before the cutoff, not pruned yet (the partial index jobs_unpruned), and with no
# delivery still pending: those are kept with their events until they are settled.
_CANDIDATES = (
    "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND pruned_at IS NULL"  # noqa: S608
    f" AND finished_at < ? AND status IN {_TERMINAL}"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = jobs.id"
    " AND d.status = 'pending')"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def batch(conn: sqlite3.Connection, before: float, now: float, budget: int) -> Pruned:
    """Delete up to `budget` rows of jobs ended before `before`: attempts, then deliveries,
    then events; mark pruned the jobs left with nothing. Runs in the caller's transaction."""
    query = f"{_CANDIDATES} ORDER BY finished_at LIMIT ?"
    ids = [r[0] for r in conn.execute(query, (before, JOBS_PER_BATCH))]
    if not ids:
        return Pruned()
    marks, left = _marks(len(ids)), budget
    attempts = conn.execute(
        "DELETE FROM attempts WHERE id IN (SELECT a.id FROM deliveries d"  # noqa: S608
        f" JOIN attempts a ON a.delivery_id = d.id WHERE d.job_id IN ({marks}) LIMIT ?)",
        (*ids, left),
    ).rowcount
    left -= attempts
    deliveries = events = 0
    if left > 0:
        # none pending (see _CANDIDATES, and this transaction is the only writer)
        deliveries = conn.execute(
            "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries"  # noqa: S608
            f" WHERE job_id IN ({marks}) AND status != 'pending' LIMIT ?)",
            (*ids, left),
        ).rowcount
        left -= deliveries
    if left > 0:
        # The trigger events_append_only_delete lets these through only under this marker,
        # which this transaction removes before it commits.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('prune_before', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (repr(before),),
        )
        try:
            events = conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events"  # noqa: S608
                f" WHERE job_id IN ({marks}) AND id < (SELECT max(id) FROM events) LIMIT ?)",
                (*ids, left),
            ).rowcount
        finally:
            conn.execute("DELETE FROM meta WHERE key = 'prune_before'")
    done = _mark(conn, ids, now)
    return Pruned(done, events, deliveries, attempts)


def _mark(conn: sqlite3.Connection, ids: Sequence[str], now: float) -> int:
    """Mark pruned the jobs with no delivery and no event left but the log's newest."""
    return conn.execute(
        f"UPDATE jobs SET pruned_at = ? WHERE id IN ({_marks(len(ids))})"  # noqa: S608
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = jobs.id)"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id"
        " AND e.id < (SELECT max(id) FROM events))",
        (now, *ids),
    ).rowcount


def preview(conn: sqlite3.Connection, before: float) -> Pruned:
    """What pruning everything ended before `before` would remove (a read: nothing changes)."""
    row = conn.execute(
        f"WITH c AS ({_CANDIDATES}) SELECT"  # noqa: S608 - fixed SQL
        " (SELECT count(*) FROM c),"
        " (SELECT count(*) FROM events WHERE job_id IN (SELECT id FROM c)"
        " AND id < (SELECT max(id) FROM events)),"
        " (SELECT count(*) FROM deliveries WHERE job_id IN (SELECT id FROM c)),"
        " (SELECT count(*) FROM deliveries d JOIN attempts a ON a.delivery_id = d.id"
        " WHERE d.job_id IN (SELECT id FROM c))",
        (before,),
    ).fetchone()
    return Pruned(int(row[0]), int(row[1]), int(row[2]), int(row[3]))
