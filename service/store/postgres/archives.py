"""PostgreSQL adapter: the archives rows as a unit's repository."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.store.archives import INSERT_COLUMNS, Archive, Copied, NewArchive
from service.store.postgres.jobs import Conn

_INSERT = (
    f"INSERT INTO archives ({', '.join(INSERT_COLUMNS)})"  # noqa: S608 - fixed columns
    f" VALUES ({', '.join('%s' for _ in INSERT_COLUMNS)}) ON CONFLICT DO NOTHING"
)


class Archives:
    """The archives rows as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def _count(self, sql: str, params: tuple[Any, ...]) -> int:
        cur = await self._conn.execute(sql, params)
        return int(cur.rowcount)

    async def add(self, rows: Sequence[NewArchive]) -> None:
        """Add outputs to copy, each due at once (one already there is left alone)."""
        async with self._conn.cursor() as cur:
            await cur.executemany(_INSERT, [r.values() for r in rows])

    async def claim(
        self, now: float, limit: int, owner: str, until: float, alive_after: float
    ) -> list[Archive]:
        """Lease to `owner` until `until` pending rows that are due, or leased by an owner not
        alive after `alive_after` (or gone), oldest due first."""
        # SKIP LOCKED: processes claiming at once each take other rows, none waits on another.
        cur = await self._conn.execute(
            "UPDATE archives SET next_attempt_at = %(until)s, lease_owner = %(owner)s"
            " WHERE (job_id, n) IN (SELECT job_id, n FROM archives WHERE state = 'pending'"
            "  AND (next_attempt_at <= %(now)s OR (lease_owner IS NOT NULL"
            "   AND lease_owner <> %(owner)s AND lease_owner NOT IN"
            "   (SELECT id FROM owners WHERE heartbeat_at > %(alive_after)s)))"
            "  ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING *",
            dict(until=until, owner=owner, now=now, limit=limit, alive_after=alive_after),
        )
        rows = await cur.fetchall()
        return sorted((Archive.from_row(r) for r in rows), key=lambda a: (a.job_id, a.n))

    async def done(self, job_id: str, n: int, owner: str, copied: Copied, now: float) -> bool:
        """The copy is in the archive: whether `owner` still held the row's lease."""
        return (
            await self._count(
                "UPDATE archives SET state = 'done', key = %s, sha256 = %s, bytes = %s,"
                " content_type = %s, width = %s, height = %s, error = NULL, finished_at = %s,"
                " next_attempt_at = NULL, lease_owner = NULL, attempts = attempts + 1"
                " WHERE job_id = %s AND n = %s AND state = 'pending' AND lease_owner = %s",
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
            )
            > 0
        )

    async def retry(self, job_id: str, n: int, owner: str, due: float, error: str) -> bool:
        """The copy failed and is tried again at `due`: whether `owner` held the lease."""
        return (
            await self._count(
                "UPDATE archives SET next_attempt_at = %s, lease_owner = NULL, error = %s,"
                " attempts = attempts + 1"
                " WHERE job_id = %s AND n = %s AND state = 'pending' AND lease_owner = %s",
                (due, error, job_id, n, owner),
            )
            > 0
        )

    async def fail(self, job_id: str, n: int, owner: str, error: str, now: float) -> bool:
        """The copy is given up: whether `owner` held the lease."""
        return (
            await self._count(
                "UPDATE archives SET state = 'failed', error = %s, finished_at = %s,"
                " next_attempt_at = NULL, lease_owner = NULL, attempts = attempts + 1"
                " WHERE job_id = %s AND n = %s AND state = 'pending' AND lease_owner = %s",
                (error, now, job_id, n, owner),
            )
            > 0
        )

    async def for_job(self, job_id: str) -> list[Archive]:
        """A job's rows, by output number (locked: settling units of one job take turns)."""
        cur = await self._conn.execute(
            "SELECT * FROM archives WHERE job_id = %s ORDER BY n FOR UPDATE", (job_id,)
        )
        return [Archive.from_row(r) for r in await cur.fetchall()]

    async def release(self, owner: str, now: float) -> int:
        """Give up every pending row `owner` has leased: due at `now`."""
        return await self._count(
            "UPDATE archives SET next_attempt_at = %s, lease_owner = NULL"
            " WHERE lease_owner = %s AND state = 'pending'",
            (now, owner),
        )

    async def expired(self, before: float, limit: int) -> list[Archive]:
        """Up to `limit` copied rows of jobs that ended before `before`."""
        cur = await self._conn.execute(
            "SELECT * FROM archives WHERE state = 'done' AND job_finished_at < %s"
            " ORDER BY job_finished_at LIMIT %s",
            (before, limit),
        )
        return [Archive.from_row(r) for r in await cur.fetchall()]

    async def deleted(self, job_id: str, n: int, now: float) -> None:
        """The copy was removed from the archive (retention)."""
        await self._conn.execute(
            "UPDATE archives SET state = 'deleted', finished_at = %s"
            " WHERE job_id = %s AND n = %s AND state = 'done'",
            (now, job_id, n),
        )

    async def next_due(self) -> float | None:
        """When the next pending row is due (or its lease runs out)."""
        cur = await self._conn.execute(
            "SELECT min(next_attempt_at) AS due FROM archives WHERE state = 'pending'"
        )
        row = await cur.fetchone()
        return None if row is None or row["due"] is None else float(row["due"])
