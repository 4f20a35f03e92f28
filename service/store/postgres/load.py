"""migrate-store's PostgreSQL side: one transaction that COPYs rows in, keeping their ids."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors, sql

# how long the copy waits for a running relay's locks before it gives up (it should be stopped)
LOCK_TIMEOUT = "5s"
# what the driver raises, for the engine-neutral caller (service/store/transfer.py)
DatabaseError = psycopg.Error


class TargetBusy(Exception):
    """Another session holds the target's tables: a relay is probably running on it."""


class PgTarget:
    """A connection to the target database; everything happens inside `transaction()`."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=False, connect_timeout=10)

    @contextmanager
    def transaction(self, tables: Sequence[str]) -> Iterator[None]:
        """One transaction holding `tables` against writers: all of it commits, or nothing."""
        with self._conn.transaction():
            self._conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(LOCK_TIMEOUT))
            try:
                self._conn.execute(
                    sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                        sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                    )
                )
            except errors.LockNotAvailable as exc:
                raise TargetBusy("its tables are in use (stop every relay on it first)") from exc
            yield

    def columns(self, table: str) -> list[str]:
        """The table's column names in the current schema, in their order."""
        cur = self._conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s"
            " ORDER BY ordinal_position",
            (table,),
        )
        return [str(r[0]) for r in cur.fetchall()]

    def count(self, table: str) -> int:
        """How many rows the table holds."""
        cur = self._conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """COPY the rows in (ids included, as given); returns how many."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        count = 0
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    def put_meta(self, rows: Iterable[tuple[str, str]]) -> int:
        """Store settings by key, the given value replacing one the target had; how many."""
        count = 0
        with self._conn.cursor() as cur:
            for key, value in rows:
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
                count += 1
        return count

    def get_meta(self, key: str) -> str | None:
        """A setting's value, None when unset."""
        cur = self._conn.execute("SELECT value FROM meta WHERE key = %s", (key,))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def move_identities(self, tables: Sequence[str]) -> None:
        """Move each identity sequence of `tables` past the largest id copied in."""
        cur = self._conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'"
            " AND table_name = ANY(%s)",
            (list(tables),),
        )
        for table, column in cur.fetchall():
            # the next id given is max + 1; an empty table keeps its sequence as it is
            self._conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence(%s, %s), m)"
                    " FROM (SELECT max({}) AS m FROM {}) AS top WHERE m IS NOT NULL"
                ).format(sql.Identifier(column), sql.Identifier(table)),
                (sql.Identifier(table).as_string(self._conn), column),
            )

    def last(self, table: str, column: str) -> int | None:
        """The largest value of an id column, None when the table is empty."""
        cur = self._conn.execute(
            sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), sql.Identifier(table))
        )
        row = cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        """Close the connection (a transaction left open is rolled back)."""
        self._conn.close()
