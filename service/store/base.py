"""What the store holds and hands out: jobs, events, idempotency keys, and the unit of work."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from service.store.codec import dumps as dumps
from service.store.codec import iso as iso
from service.store.model import Idempotent as Idempotent
from service.store.model import Job as Job
from service.store.model import _idem as _idem
from service.store.records import Event as Event
from service.store.sqlite_jobs import Idempotency, Jobs
from service.store.sqlite_outbox import Deliveries, Subscriptions
from service.store.sqlite_owners import Owners

Fn = Callable[["Tx"], Any]
EventHook = Callable[["Tx", "Event", "Job | None"], None]


class Tx:
    """One unit of work inside a group-commit batch; `signal` wakes waiters after the commit."""

    __slots__ = ("conn", "hooks", "signals")

    def __init__(self, conn: sqlite3.Connection, hooks: list[EventHook]) -> None:
        self.conn = conn
        self.hooks = hooks
        self.signals: set[str] = set()

    def signal(self, name: str) -> None:
        """Wake whoever waits on `name` once this transaction has committed."""
        self.signals.add(name)

    @property
    def owners(self) -> Owners:
        """The owners rows (process liveness); built when used: other units pay nothing."""
        return Owners(self.conn)

    @property
    def subscriptions(self) -> Subscriptions:
        """The subscriptions rows; built when used, like `owners`."""
        return Subscriptions(self.conn)

    @property
    def deliveries(self) -> Deliveries:
        """The deliveries rows and their attempt log; built when used, like `owners`."""
        return Deliveries(self.conn)

    @property
    def jobs(self) -> Jobs:
        """The jobs rows (state, callbacks, poll leases); built when used."""
        return Jobs(self.conn)

    @property
    def idempotency(self) -> Idempotency:
        """The idempotency keys; built when used."""
        return Idempotency(self.conn)

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of a query."""
        row: sqlite3.Row | None = self.conn.execute(sql, tuple(params)).fetchone()
        return row

    def job(self, job_id: str) -> Job | None:
        """A job by id, read inside the transaction."""
        row = self.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    def add_event(
        self,
        job_id: str | None,
        type_: str,
        source: str,
        now: float,
        data: dict[str, Any],
        dedupe: str | None = None,
        job: Job | None = None,
    ) -> Event | None:
        """Append an event; None when an event with the same dedupe key already exists.

        `job` is the job as this event leaves it, for the hooks (it saves them a query)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO events (job_id, type, source, created_at, data, dedupe)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, type_, source, now, dumps(data), dedupe),
        )
        if cur.rowcount == 0:
            return None
        event = Event(int(cur.lastrowid or 0), job_id, type_, source, now, data)
        for hook in self.hooks:
            hook(self, event, job)
        self.signal("events")
        return event


def body_hash(body: bytes) -> str:
    """A short stable digest of a raw body."""
    return hashlib.sha256(body).hexdigest()[:32]
