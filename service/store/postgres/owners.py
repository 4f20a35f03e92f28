"""PostgreSQL adapter: the owners table (a row and a heartbeat per process), per unit."""

from __future__ import annotations

from service.store.postgres.jobs import Conn


class Owners:
    """The owners rows as one unit of work sees them; `service.owners` decides what to do."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def upsert(self, owner: str, host: str, pid: int, now: float) -> None:
        """Add this owner's row, or refresh its heartbeat if the row is there."""
        await self._conn.execute(
            "INSERT INTO owners (id, host, pid, started_at, heartbeat_at)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            (owner, host, pid, now, now),
        )

    async def beat(self, owner: str, now: float) -> tuple[bool, float | None]:
        """Set this owner's heartbeat to `now`: whether its row was there, and the oldest
        heartbeat of another owner (None when there is none)."""
        cur = await self._conn.execute(
            "UPDATE owners SET heartbeat_at = %s WHERE id = %s"
            " RETURNING (SELECT min(heartbeat_at) FROM owners WHERE id <> %s) AS oldest",
            (now, owner, owner),
        )
        row = await cur.fetchone()
        if row is None:
            return False, None
        return True, None if row["oldest"] is None else float(row["oldest"])

    async def oldest_other(self, owner: str) -> float | None:
        """The oldest heartbeat of an owner other than `owner`."""
        cur = await self._conn.execute(
            "SELECT min(heartbeat_at) AS oldest FROM owners WHERE id <> %s", (owner,)
        )
        row = await cur.fetchone()
        return None if row is None or row["oldest"] is None else float(row["oldest"])

    async def drop_silent(self, owner: str, alive_after: float) -> int:
        """Delete the rows of other owners whose heartbeat is not later than `alive_after`."""
        cur = await self._conn.execute(
            "DELETE FROM owners WHERE heartbeat_at <= %s AND id <> %s", (alive_after, owner)
        )
        return cur.rowcount

    async def remove(self, owner: str) -> None:
        """Delete this owner's row."""
        await self._conn.execute("DELETE FROM owners WHERE id = %s", (owner,))
