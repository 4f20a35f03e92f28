"""SQLite adapter: one unit of work's view (repositories over the writer connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from service.store.codec import dumps, ids_json
from service.store.records import Event
from service.store.sqlite.archives import Archives
from service.store.sqlite.jobs import Idempotency, Jobs
from service.store.sqlite.outbox import Deliveries, Subscriptions
from service.store.sqlite.owners import Owners


class Events:
    """The event log as one unit of work sees it: appended to, never changed."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def append(
        self,
        job_id: str | None,
        type_: str,
        source: str,
        now: float,
        data: dict[str, Any],
        dedupe: str | None = None,
    ) -> Event | None:
        """Append an event; None when the job has an event under `dedupe` already."""
        # one writer: ids are given, and committed, in order, so every id is a safe cursor
        cur = self._conn.execute(
            "INSERT INTO events (job_id, type, source, created_at, data, dedupe)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (job_id, type_, source, now, dumps(data), dedupe),
        )
        if cur.rowcount == 0:
            return None
        return Event(int(cur.lastrowid or 0), job_id, type_, source, now, data)

    async def exists(self, job_id: str, dedupe: str) -> bool:
        """Whether the job has an event under this dedupe key."""
        row = self._conn.execute(
            "SELECT 1 FROM events WHERE job_id = ? AND dedupe = ?", (job_id, dedupe)
        ).fetchone()
        return row is not None

    async def by_ids(self, event_ids: Iterable[int]) -> dict[int, Event]:
        """These events, by id (what the deliveries carry)."""
        rows = self._conn.execute(
            "SELECT * FROM events WHERE id IN (SELECT value FROM json_each(?))",
            (ids_json(event_ids),),
        )
        return {r["id"]: Event.from_row(r) for r in rows}


class SqliteTx:
    """A unit inside a group-commit batch; its wake-ups fire after the batch commits."""

    __slots__ = ("channels", "conn", "hooks", "memo")

    def __init__(self, conn: sqlite3.Connection, memo: dict[str, Any]) -> None:
        self.conn = conn  # the adapter's own units use it; the domain sees the Tx protocol
        self.memo = memo
        self.channels: set[str] = set()
        self.hooks: list[Callable[[], None]] | None = None

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn` once this unit has committed (never if it is rolled back)."""
        if self.hooks is None:
            self.hooks = []
        self.hooks.append(fn)

    def notify(self, channel: str) -> None:
        """Wake whoever waits on `channel` once this unit has committed (one process: SQLite
        may be shared by processes on one host, whose workers find the work by their scans)."""
        self.channels.add(channel)

    # Repositories are built when used: a unit pays only for the ones it touches.
    @property
    def jobs(self) -> Jobs:
        """The jobs rows."""
        return Jobs(self.conn)

    @property
    def events(self) -> Events:
        """The event log."""
        return Events(self.conn)

    @property
    def idempotency(self) -> Idempotency:
        """The idempotency keys."""
        return Idempotency(self.conn)

    @property
    def subscriptions(self) -> Subscriptions:
        """The subscriptions rows and the service-wide secret."""
        return Subscriptions(self.conn)

    @property
    def deliveries(self) -> Deliveries:
        """The deliveries rows and their attempt log."""
        return Deliveries(self.conn)

    @property
    def owners(self) -> Owners:
        """The owners rows."""
        return Owners(self.conn)

    @property
    def archives(self) -> Archives:
        """The archives rows (outputs to copy)."""
        return Archives(self.conn)
