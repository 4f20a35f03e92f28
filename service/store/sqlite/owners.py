"""SQLite adapter: the owners table (a row and a heartbeat per process), as a unit's repository."""

from __future__ import annotations

import sqlite3


class Owners:
    """The owners rows as one unit of work sees them; `service.owners` decides what to do."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def upsert(self, owner: str, host: str, pid: int, now: float) -> None:
        """Add this owner's row, or refresh its heartbeat if the row is there."""
        self._conn.execute(
            "INSERT INTO owners (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            (owner, host, pid, now, now),
        )

    async def beat(self, owner: str, now: float) -> tuple[bool, float | None]:
        """Set this owner's heartbeat to `now`: whether its row was there, and the oldest
        heartbeat of another owner (None when there is none)."""
        # one statement: the heartbeat path runs every second in every process
        row = self._conn.execute(
            "UPDATE owners SET heartbeat_at = ? WHERE id = ?"
            " RETURNING (SELECT min(heartbeat_at) FROM owners WHERE id != ?)",
            (now, owner, owner),
        ).fetchone()
        if row is None:
            return False, None
        return True, None if row[0] is None else float(row[0])

    async def oldest_other(self, owner: str) -> float | None:
        """The oldest heartbeat of an owner other than `owner`."""
        row = self._conn.execute(
            "SELECT min(heartbeat_at) FROM owners WHERE id != ?", (owner,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def drop_silent(self, owner: str, alive_after: float) -> int:
        """Delete the rows of other owners whose heartbeat is not later than `alive_after`."""
        return self._conn.execute(
            "DELETE FROM owners WHERE heartbeat_at <= ? AND id != ?", (alive_after, owner)
        ).rowcount

    async def remove(self, owner: str) -> None:
        """Delete this owner's row."""
        self._conn.execute("DELETE FROM owners WHERE id = ?", (owner,))
