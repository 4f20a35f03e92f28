"""PostgreSQL adapter: one unit of work's view (repositories over its transaction)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from service.store.base import NewEvent
from service.store.codec import dumps
from service.store.postgres.archives import Archives
from service.store.postgres.jobs import Conn, Idempotency, Jobs
from service.store.postgres.outbox import Deliveries, Subscriptions
from service.store.postgres.owners import Owners
from service.store.records import Event

# pg_advisory_xact_lock key that orders event ids ('rlye'): see Events.append
EVENT_LOCK = 0x726C7965

# The subscriptions version as of now, not as of the statement's snapshot (taken before the
# event lock was granted): FOR SHARE reads the newest committed row and holds a change back
# until this unit commits, so versions are read in event-id order, as after a separate
# statement behind the lock, and a subscription sees every event after the first it gets.
_VERSION = "(SELECT value FROM meta WHERE key = 'subscriptions_version' FOR SHARE) AS version"
_COLUMNS = "INSERT INTO events (job_id, type, source, created_at, data, dedupe)"
# the event-order lock is held already: the insert alone
_APPEND = (
    f"{_COLUMNS} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id, {_VERSION}"
)
_APPEND_ORDERED = (
    "WITH ordered AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s))"  # noqa: S608 - fixed
    f" {_COLUMNS} SELECT %s, %s, %s, %s, %s, %s FROM ordered"
    f" ON CONFLICT DO NOTHING RETURNING id, {_VERSION}"
)


class Events:
    """The event log as one unit of work sees it: appended to, never changed."""

    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: Conn, tx: PgTx) -> None:
        self._conn = conn
        self._tx = tx

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
        # GET /v1/events?after=N must never skip an event. Ids come from a sequence at insert
        # time, so with concurrent writers id 101 could commit before id 100 and a follower
        # that read 101 would never see 100. Taking this lock before the insert and holding it
        # to the commit makes event-writing transactions commit in id order. The lock is taken
        # in the insert's own statement (one round trip): the materialized CTE is scanned before
        # the row is projected, so the id is drawn only once the lock is held.
        values = (job_id, type_, source, now, dumps(data), dedupe)
        if self._tx.ordered:
            cur = await self._conn.execute(_APPEND, values)
        else:
            cur = await self._conn.execute(_APPEND_ORDERED, (EVENT_LOCK, *values))
            self._tx.ordered = True
        row = await cur.fetchone()
        if row is None:
            return None
        # the subscriptions version the fan-out reads next, read by the same statement (see
        # _VERSION): Subscriptions.version() in this unit answers it without a round trip
        self._tx.version = str(row["version"]) if row["version"] is not None else "0"
        return Event(int(row["id"]), job_id, type_, source, now, data)

    async def append_many(self, rows: Sequence[NewEvent]) -> list[Event | None]:
        """Append these events in this order; None for one whose job has an event under its
        dedupe key already. One statement each: every unit has its own transaction here."""
        if len({(r[0], r[5]) for r in rows}) < len(rows):
            raise ValueError("two events of one batch share a job and a dedupe key")
        return [await self.append(*row) for row in rows]

    async def exists(self, job_id: str, dedupe: str) -> bool:
        """Whether the job has an event under this dedupe key."""
        cur = await self._conn.execute(
            "SELECT 1 FROM events WHERE job_id = %s AND dedupe = %s", (job_id, dedupe)
        )
        return await cur.fetchone() is not None

    async def by_ids(self, event_ids: Iterable[int]) -> dict[int, Event]:
        """These events, by id (what the deliveries carry)."""
        cur = await self._conn.execute(
            "SELECT * FROM events WHERE id = ANY(%s)", (sorted(set(event_ids)),)
        )
        return {r["id"]: Event.from_row(r) for r in await cur.fetchall()}


class PgTx:
    """A unit in its own transaction; its wake-ups go out as NOTIFY when it commits."""

    __slots__ = ("channels", "conn", "hooks", "memo", "ordered", "version")

    def __init__(self, conn: Conn, memo: dict[str, Any]) -> None:
        self.conn = conn  # the adapter's own units use it; the domain sees the Tx protocol
        self.memo = memo
        self.channels: set[str] = set()
        self.ordered = False  # whether this transaction holds the event-order lock
        # the subscriptions version read behind that lock by the last append, None when
        # unread or changed since (see Subscriptions.version)
        self.version: str | None = None
        self.hooks: list[Callable[[], None]] | None = None

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn` once this unit has committed (a rerun attempt's calls are dropped)."""
        if self.hooks is None:
            self.hooks = []
        self.hooks.append(fn)

    def notify(self, channel: str) -> None:
        """Wake whoever waits on `channel`, in every process, once this unit has committed."""
        self.channels.add(channel)

    @property
    def jobs(self) -> Jobs:
        """The jobs rows."""
        return Jobs(self.conn)

    @property
    def events(self) -> Events:
        """The event log."""
        return Events(self.conn, self)

    @property
    def idempotency(self) -> Idempotency:
        """The idempotency keys."""
        return Idempotency(self.conn)

    @property
    def subscriptions(self) -> Subscriptions:
        """The subscriptions rows and the service-wide secret."""
        return Subscriptions(self.conn, self)

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
