"""SQLite adapter: the archives rows as a unit's repository."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from service.store.archives import INSERT_COLUMNS, Archive, Copied, NewArchive

_INSERT = (
    f"INSERT INTO archives ({', '.join(INSERT_COLUMNS)})"  # noqa: S608 - fixed columns
    f" VALUES ({', '.join('?' for _ in INSERT_COLUMNS)}) ON CONFLICT DO NOTHING"
)


class Archives:
    """The archives rows as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def add(self, rows: Sequence[NewArchive]) -> None:
        """Add outputs to copy, each due at once (one already there is left alone)."""
        self._conn.executemany(_INSERT, [r.values() for r in rows])

    async def claim(
        self, now: float, limit: int, owner: str, until: float, alive_after: float
    ) -> list[Archive]:
        """Lease to `owner` until `until` pending rows that are due, or leased by an owner not
        alive after `alive_after` (or gone), oldest due first."""
        rows = self._conn.execute(
            "UPDATE archives SET next_attempt_at = :until, lease_owner = :owner"
            " WHERE rowid IN (SELECT rowid FROM archives WHERE state = 'pending'"
            "  AND (next_attempt_at <= :now OR rowid IN (SELECT rowid FROM archives"
            "   WHERE lease_owner IS NOT NULL AND lease_owner != :owner AND lease_owner NOT IN"
            "   (SELECT id FROM owners WHERE heartbeat_at > :alive_after)))"
            "  ORDER BY next_attempt_at LIMIT :limit) RETURNING *",
            dict(until=until, owner=owner, now=now, limit=limit, alive_after=alive_after),
        ).fetchall()
        return sorted((Archive.from_row(r) for r in rows), key=lambda a: (a.job_id, a.n))

    async def done(self, job_id: str, n: int, owner: str, copied: Copied, now: float) -> bool:
        """The copy is in the archive: whether `owner` still held the row's lease."""
        return (
            self._conn.execute(
                "UPDATE archives SET state = 'done', key = ?, sha256 = ?, bytes = ?,"
                " content_type = ?, width = ?, height = ?, error = NULL, finished_at = ?,"
                " next_attempt_at = NULL, lease_owner = NULL, attempts = attempts + 1"
                " WHERE job_id = ? AND n = ? AND state = 'pending' AND lease_owner = ?",
                (
                    copied.key,
                    copied.sha256,
                    copied.bytes,
                    copied.content_type,
                    copied.width,
                    copied.height,
                    now,
                    job_id,
                    n,
                    owner,
                ),
            ).rowcount
            > 0
        )

    async def retry(self, job_id: str, n: int, owner: str, due: float, error: str) -> bool:
        """The copy failed and is tried again at `due`: whether `owner` held the lease."""
        return (
            self._conn.execute(
                "UPDATE archives SET next_attempt_at = ?, lease_owner = NULL, error = ?,"
                " attempts = attempts + 1"
                " WHERE job_id = ? AND n = ? AND state = 'pending' AND lease_owner = ?",
                (due, error, job_id, n, owner),
            ).rowcount
            > 0
        )

    async def fail(self, job_id: str, n: int, owner: str, error: str, now: float) -> bool:
        """The copy is given up: whether `owner` held the lease."""
        return (
            self._conn.execute(
                "UPDATE archives SET state = 'failed', error = ?, finished_at = ?,"
                " next_attempt_at = NULL, lease_owner = NULL, attempts = attempts + 1"
                " WHERE job_id = ? AND n = ? AND state = 'pending' AND lease_owner = ?",
                (error, now, job_id, n, owner),
            ).rowcount
            > 0
        )

    async def for_job(self, job_id: str) -> list[Archive]:
        """A job's rows, by output number."""
        rows = self._conn.execute(
            "SELECT * FROM archives WHERE job_id = ? ORDER BY n", (job_id,)
        ).fetchall()
        return [Archive.from_row(r) for r in rows]

    async def release(self, owner: str, now: float) -> int:
        """Give up every pending row `owner` has leased: due at `now`."""
        return self._conn.execute(
            "UPDATE archives SET next_attempt_at = ?, lease_owner = NULL"
            " WHERE lease_owner = ? AND state = 'pending'",
            (now, owner),
        ).rowcount

    async def expired(self, before: float, limit: int) -> list[Archive]:
        """Up to `limit` copied rows of jobs that ended before `before`."""
        rows = self._conn.execute(
            "SELECT * FROM archives WHERE state = 'done' AND job_finished_at < ?"
            " ORDER BY job_finished_at LIMIT ?",
            (before, limit),
        ).fetchall()
        return [Archive.from_row(r) for r in rows]

    async def deleted(self, job_id: str, n: int, now: float) -> None:
        """The copy was removed from the archive (retention)."""
        self._conn.execute(
            "UPDATE archives SET state = 'deleted', finished_at = ?"
            " WHERE job_id = ? AND n = ? AND state = 'done'",
            (now, job_id, n),
        )

    async def next_due(self) -> float | None:
        """When the next pending row is due (or its lease runs out)."""
        row = self._conn.execute(
            "SELECT min(next_attempt_at) FROM archives WHERE state = 'pending'"
        ).fetchone()
        return None if row[0] is None else float(row[0])
