"""A relay's SQLite file opened read-only, its tables streamed for migrate-store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

BATCH = 1000


class SourceError(Exception):
    """The SQLite file cannot be read as a relay's database; the message says why."""


class SqliteSource:
    """One read transaction over a relay's SQLite file: every table seen at the same moment."""

    def __init__(self, path: str) -> None:
        file = Path(path)
        if not file.exists():
            raise SourceError(f"{path}: no such file")
        if not file.is_file():
            raise SourceError(f"{path}: not a file")
        # mode=ro: the copy never writes (nor migrates) the installation it reads
        uri = f"file:{quote(str(file.resolve()))}?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            # one snapshot for every table, even if a relay still wrote (it should be stopped)
            self._conn.execute("BEGIN")
            self.version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            names = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            raise SourceError(f"{path}: {exc}") from exc
        if "events" not in names or "jobs" not in names:
            self._conn.close()
            raise SourceError(f"{path}: not an upscale-relay database (no jobs or events table)")
        self._tables = names

    def live_owners(self, alive_after: float) -> int:
        """How many relay processes had a heartbeat later than `alive_after` (epoch s)."""
        if "owners" not in self._tables:
            return 0
        row = self._conn.execute(
            "SELECT count(*) FROM owners WHERE heartbeat_at > ?", (alive_after,)
        ).fetchone()
        return int(row[0])

    def columns(self, table: str) -> list[str]:
        """The table's column names, in their order; empty when there is no such table."""
        if table not in self._tables:
            return []
        return [str(r[1]) for r in self._conn.execute(f"PRAGMA table_info({table})")]

    def rows(
        self, table: str, columns: Sequence[str], where: str = ""
    ) -> Iterator[tuple[Any, ...]]:
        """The table's rows (those columns), fetched BATCH at a time, never all at once."""
        names = ", ".join(f'"{c}"' for c in columns)
        try:
            # rowid order: ids arrive ascending, as they were given
            cur = self._conn.execute(f"SELECT {names} FROM {table} {where} ORDER BY rowid")  # noqa: S608
            try:
                while batch := cur.fetchmany(BATCH):
                    yield from batch
            finally:
                cur.close()
        except sqlite3.Error as exc:
            raise SourceError(f"reading {table}: {exc}") from exc

    def close(self) -> None:
        """End the read transaction and close the file."""
        self._conn.close()
