"""SQLite adapter: one unit of work's view (repositories over the writer connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from service.store.base import NewEvent
from service.store.codec import dumps, ids_json
from service.store.records import Event
from service.store.sqlite.archives import Archives
from service.store.sqlite.jobs import Idempotency, Jobs, chunks
from service.store.sqlite.outbox import Deliveries, Subscriptions
from service.store.sqlite.owners import Owners


def _append_many_sql(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * count)
    # fixed columns; the values are parameters
    return (
        "INSERT INTO events (job_id, type, source, created_at, data, dedupe)"  # noqa: S608
        f" VALUES {values} ON CONFLICT DO NOTHING RETURNING id, job_id, dedupe"
    )


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

    async def append_many(self, rows: Sequence[NewEvent]) -> list[Event | None]:
        """Append these events in this order, one statement per power-of-two chunk; None for
        one whose job has an event under its dedupe key already."""
        if len({(r[0], r[5]) for r in rows}) < len(rows):
            raise ValueError("two events of one batch share a job and a dedupe key")
        out: list[Event | None] = []
        for chunk in chunks(rows):
            params: list[Any] = []
            for job_id, type_, source, now, data, dedupe in chunk:
                params += (job_id, type_, source, now, dumps(data), dedupe)
            # one writer, rows inserted in the order given: ids ascend with it, and commit in order
            cur = self._conn.execute(_append_many_sql(len(chunk)), params)
            ids = {(job_id, dedupe): event_id for event_id, job_id, dedupe in cur}
            for job_id, type_, source, now, data, dedupe in chunk:
                event_id = ids.get((job_id, dedupe))
                out.append(
                    None if event_id is None else Event(event_id, job_id, type_, source, now, data)
                )
        return out

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
