"""PostgreSQL adapter: a pool of connections, one transaction per unit, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from service.errors import StorageUnavailable
from service.store import jobquery
from service.store.archives import Archive
from service.store.base import Unit, run_hooks
from service.store.codec import redacted
from service.store.model import Idempotent, Job, _idem
from service.store.postgres import retention
from service.store.postgres.conn import RelayConn, RelayCursor
from service.store.postgres.tx import PgTx
from service.store.records import (
    Counts,
    Delivery,
    DeliveryLog,
    Event,
    LoggedAttempt,
    Pruned,
    Subscription,
)
from service.store.schema import migrations, refuse_newer

log = logging.getLogger(__name__)
T = TypeVar("T")

# pg_advisory_lock key held while migrating ('rlym'): processes starting together migrate once
MIGRATE_LOCK = 0x726C796D
# the one NOTIFY channel; the payload names the relay's channel ("poll", "deliveries", ...)
CHANNEL = "upscale_relay"
POOL_SIZE = 10
PROBE_BYTES = 65536
# a unit that lost a deadlock, a serialization conflict or a unique-key race is run again:
# it read before it wrote, and on the rerun it reads what the other transaction committed
_RERUN = (errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation)
_RERUNS = 5
_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def _migrations() -> list[tuple[int, str]]:
    return migrations("service.store.postgres")


async def _migrate(conn: AsyncConnection[Any]) -> int:
    """Apply the missing migrations, each in its own transaction, under a session lock."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        known = _migrations()
        refuse_newer(version, known)
        for number, script in known:
            if number <= version:
                continue
            async with conn.transaction():
                await conn.execute(script.encode())  # no parameters: several statements run
                await conn.execute(
                    "INSERT INTO schema_version VALUES (%s, extract(epoch from now()))", (number,)
                )
            version = number
        return version
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


def storage_error(exc: BaseException) -> StorageUnavailable | None:
    """The 503 an exception amounts to when the database caused it; None for any other."""
    if isinstance(exc, StorageUnavailable):
        return exc
    if isinstance(exc, OSError):
        return StorageUnavailable(exc.strerror or str(exc))
    if isinstance(exc, psycopg.OperationalError | errors.InsufficientResources):
        # connection lost or refused, server shutting down, pool exhausted, disk full
        return StorageUnavailable(type(exc).__name__)
    return None


async def _in_transaction(conn: RelayConn, tx: PgTx, fn: Unit[T]) -> T:
    """Run `fn` in a transaction: its BEGIN goes with its first statement (RelayCursor), its
    wake-ups with its COMMIT, each pair in one round trip."""
    conn.begin_pending = True
    try:
        result = await fn(tx)
        began = not conn.begin_pending  # a unit that ran no statement has nothing to commit
        conn.begin_pending = False
        async with conn.pipeline():
            if tx.channels:
                # delivered to every listener when (and only if) this commits
                await conn.execute(
                    "SELECT pg_notify(%s, c) FROM unnest(%s::text[]) AS c",
                    (CHANNEL, sorted(tx.channels)),
                )
            if began:
                await conn.execute(b"COMMIT")
    except BaseException:
        conn.begin_pending = False
        if conn.info.transaction_status in _OPEN:
            with contextlib.suppress(Exception):  # a broken connection: the pool drops it
                await conn.rollback()
        raise
    return result


class PostgresStore:
    """A PostgreSQL database: units of work on pooled connections, reads beside them."""

    def __init__(self, pool: AsyncConnectionPool[RelayConn], url: str) -> None:
        self._pool = pool
        self._url = url
        self._memo: dict[str, Any] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self.refusing: str | None = None

    @classmethod
    async def open(
        cls, url: str, *, lock_wait: float = 10.0, pool_size: int = POOL_SIZE
    ) -> PostgresStore:
        """Connect, migrate (once across processes starting together), start listening.

        Raises StorageUnavailable when the server cannot be reached or written."""
        try:
            async with await AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, round(lock_wait))
            ) as conn:
                await _migrate(conn)
                # the subscriptions version row exists before any unit reads it: an append
                # reads it FOR SHARE (Events.append), which finds a row changed while it
                # waited on the event lock but not one inserted then
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('subscriptions_version', '0')"
                    " ON CONFLICT DO NOTHING"
                )
            pool: AsyncConnectionPool[RelayConn] = AsyncConnectionPool(
                url,
                connection_class=RelayConn,
                min_size=1,
                max_size=pool_size,
                timeout=lock_wait,
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "cursor_factory": RelayCursor,
                },
                open=False,
                name="relay",
            )
            await pool.open(wait=True, timeout=lock_wait)
        except Exception as exc:
            failure = storage_error(exc)
            if failure is None:
                raise
            raise StorageUnavailable(f"{redacted(url)}: {failure.reason}") from exc
        store = cls(pool, url)
        store._listener = asyncio.create_task(store._listen(), name="store-listener")
        return store

    @property
    def where(self) -> str:
        """The database's URL without its password."""
        return redacted(self._url)

    async def close(self) -> None:
        """Stop listening and close the pool (units in progress finish first)."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._pool.close()

    def waiter(self, channel: str) -> asyncio.Event:
        """An event set whenever a unit in any process notified `channel`."""
        return self._waiters.setdefault(channel, asyncio.Event())

    async def _listen(self) -> None:
        """One connection outside the pool LISTENs; notifications set this process's events.

        While it is down notifications are lost, so after each (re)connect every waiter is
        woken: the workers rescan, as they do on their periodic scan anyway."""
        while not self._closing:
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    for event in self._waiters.values():
                        event.set()
                    async for note in conn.notifies():
                        self.waiter(note.payload).set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for wake-ups failed (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(1.0)

    # -- writes ------------------------------------------------------------------------------

    async def write(self, fn: Unit[T]) -> T:
        """Run `fn` in a transaction of its own; return once it is committed.

        Raises StorageUnavailable (nothing of `fn` kept) when the database refuses the write."""
        for attempt in range(_RERUNS):
            tx: PgTx | None = None
            try:
                async with self._pool.connection() as conn:
                    tx = PgTx(conn, self._memo)
                    result = await _in_transaction(conn, tx, fn)
            except _RERUN:
                if attempt == _RERUNS - 1:
                    raise
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            except Exception as exc:
                failure = storage_error(exc)
                if failure is None:
                    raise
                self._refused(failure)
                raise failure from exc
            self._stored()
            for channel in tx.channels:
                self.waiter(channel).set()  # this process need not wait for its own NOTIFY
            if tx.hooks:
                run_hooks(tx.hooks)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _refused(self, failure: StorageUnavailable) -> None:
        if self.refusing is None:
            log.warning("the database %s refuses writes: %s", self.where, failure.reason)
        self.refusing = failure.reason

    def _stored(self) -> None:
        if self.refusing is not None:
            log.warning("the database %s takes writes again", self.where)
        self.refusing = None

    async def _own(self, sql: str, params: Sequence[Any] = ()) -> None:
        async def unit(tx: Any) -> None:
            assert isinstance(tx, PgTx)  # noqa: S101 - this adapter's units get its Tx
            await tx.conn.execute(sql.encode() if not params else sql, params or None)

        await self.write(unit)

    async def probe(self) -> None:
        """Store PROBE_BYTES and take them back, committed: StorageUnavailable if it fails."""
        await self._own(
            "INSERT INTO meta (key, value) VALUES ('probe', repeat('x', %s))"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (PROBE_BYTES,),
        )
        await self._own("DELETE FROM meta WHERE key = 'probe'")

    async def limit_size(self, max_bytes: int | None) -> None:
        """PostgreSQL's size is the server's to manage (tablespaces, quotas): nothing here."""
        del max_bytes

    async def meta_get_or_set(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of `key`, storing `make()` first when there is none."""
        value = make()

        async def unit(tx: Any) -> str:
            assert isinstance(tx, PgTx)  # noqa: S101
            await tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (key, value),
            )
            cur = await tx.conn.execute("SELECT value FROM meta WHERE key = %s", (key,))
            row = await cur.fetchone()
            assert row is not None  # noqa: S101 - inserted or already there
            return str(row["value"])

        return await self.write(unit)

    async def prune(self, before: float, now: float, budget: int) -> Pruned | None:
        """One retention batch in a transaction of its own; None when another process holds
        the prune lock."""

        async def unit(tx: Any) -> Pruned | None:
            assert isinstance(tx, PgTx)  # noqa: S101
            return await retention.batch(tx.conn, before, now, budget)

        return await self.write(unit)

    async def prunable(self, before: float) -> Pruned:
        """What pruning every job ended before `before` would remove; nothing changes."""
        [row] = await self._rows(retention.PREVIEW, {"before": before})
        return Pruned(*(int(row[k]) for k in ("jobs", "events", "deliveries", "attempts")))

    # -- reads -------------------------------------------------------------------------------

    async def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[DictRow]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params or None)
                return await cur.fetchall()
        except Exception as exc:
            failure = storage_error(exc)
            if failure is None:
                raise
            raise failure from exc

    async def _newest_first(
        self, table: str, equal: Sequence[tuple[str, Any]], before: int | None, limit: int
    ) -> list[DictRow]:
        """Rows of `table` newest first, keyset-paginated on seq (names are the code's own)."""
        where = [f"{column} = %s" for column, value in equal if value]
        params: list[Any] = [value for _, value in equal if value]
        if before is not None:
            where.append("seq < %s")
            params.append(before)
        sql = f"SELECT * FROM {table}"  # noqa: S608 - table and columns are the code's own
        if where:
            sql += " WHERE " + " AND ".join(where)
        return await self._rows(sql + " ORDER BY seq DESC LIMIT %s", (*params, limit))

    async def ping(self) -> None:
        """Answer a trivial query: StorageUnavailable when the database does not."""
        await self._rows("SELECT 1 AS one")

    async def get_job(self, job_id: str) -> Job | None:
        """A job by id."""
        rows = await self._rows("SELECT * FROM jobs WHERE id = %s", (job_id,))
        return Job.from_row(rows[0]) if rows else None

    async def archives(self, job_id: str) -> list[Archive]:
        """A job's archives rows, by output number."""
        rows = await self._rows("SELECT * FROM archives WHERE job_id = %s ORDER BY n", (job_id,))
        return [Archive.from_row(r) for r in rows]

    async def list_jobs(
        self,
        *,
        status: str | None,
        model: str | None,
        before: int | None,
        limit: int,
        provider: str | None = None,
        metadata: tuple[str, str | None] | None = None,
    ) -> list[Job]:
        """Jobs newest first, keyset-paginated on seq."""
        where, params = jobquery.jobs_where(
            "postgresql",
            status=status,
            model=model,
            provider=provider,
            metadata=metadata,
            before=before,
        )
        rows = await self._rows(jobquery.jobs_sql("postgresql", where), (*params, limit))
        return [Job.from_row(r) for r in rows]

    async def counts_since(self, since: float) -> dict[str, int]:
        """Jobs created at or after `since`, by status."""
        rows = await self._rows(jobquery.counts_since_sql("postgresql"), (since,))
        return {str(r["status"]): int(r["n"]) for r in rows}

    async def events(
        self, *, job_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events oldest first after a cursor, for one job or for all."""
        if job_id is None:
            rows = await self._rows(
                "SELECT * FROM events WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
            )
        else:
            rows = await self._rows(
                "SELECT * FROM events WHERE job_id = %s AND id > %s ORDER BY id LIMIT %s",
                (job_id, after, limit),
            )
        return [Event.from_row(r) for r in rows]

    async def idempotent(self, key: str) -> Idempotent | None:
        """A stored idempotency key."""
        rows = await self._rows("SELECT * FROM idempotency WHERE key = %s", (key,))
        return _idem(rows[0]) if rows else None

    async def next_due(self, provider: str) -> float | None:
        """The earliest poll time scheduled for a provider."""
        rows = await self._rows(
            "SELECT min(next_poll_at) AS due FROM jobs WHERE provider = %s"
            " AND next_poll_at IS NOT NULL",
            (provider,),
        )
        return None if not rows or rows[0]["due"] is None else float(rows[0]["due"])

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        """A subscription by id; None when there is none."""
        rows = await self._rows("SELECT * FROM subscriptions WHERE id = %s", (sub_id,))
        return Subscription.from_row(rows[0]) if rows else None

    async def list_subscriptions(self, *, before: int | None, limit: int) -> list[Subscription]:
        """Subscriptions newest first; `before` is the seq of the last one of the page before."""
        rows = await self._newest_first("subscriptions", (), before, limit)
        return [Subscription.from_row(r) for r in rows]

    async def _attempts(self, delivery_ids: Sequence[str]) -> dict[str, list[LoggedAttempt]]:
        out: dict[str, list[LoggedAttempt]] = {d: [] for d in delivery_ids}
        if delivery_ids:
            rows = await self._rows(
                "SELECT * FROM attempts WHERE delivery_id = ANY(%s) ORDER BY id",
                (list(delivery_ids),),
            )
            for r in rows:
                out[r["delivery_id"]].append(LoggedAttempt.from_row(r))
        return out

    async def get_delivery(self, delivery_id: str) -> DeliveryLog | None:
        """A delivery with its attempt log; None when there is none."""
        rows = await self._rows("SELECT * FROM deliveries WHERE id = %s", (delivery_id,))
        if not rows:
            return None
        attempts = await self._attempts([delivery_id])
        return DeliveryLog(Delivery.from_row(rows[0]), tuple(attempts[delivery_id]))

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        job_id: str | None = None,
        status: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[DeliveryLog]:
        """Deliveries newest first, each with its attempt log; filters left None match all."""
        equal = (("subscription_id", subscription_id), ("job_id", job_id), ("status", status))
        found = [
            Delivery.from_row(r)
            for r in await self._newest_first("deliveries", equal, before, limit)
        ]
        attempts = await self._attempts([d.id for d in found])
        return [DeliveryLog(d, tuple(attempts[d.id])) for d in found]

    async def counts(self) -> Counts:
        """What /metrics shows of the database."""
        jobs = {
            (r["provider"], r["status"]): int(r["n"])
            for r in await self._rows(
                "SELECT provider, status, count(*) AS n FROM jobs GROUP BY 1, 2"
            )
        }
        deliveries = {
            r["status"]: int(r["n"])
            for r in await self._rows("SELECT status, count(*) AS n FROM deliveries GROUP BY 1")
        }
        subscriptions = {
            r["status"]: int(r["n"])
            for r in await self._rows("SELECT status, count(*) AS n FROM subscriptions GROUP BY 1")
        }
        # The in-flight slots (migration 008), the few jobs being submitted and one step down
        # the (status, seq) index, in the same round trip as the totals.
        [totals] = await self._rows(
            "SELECT (SELECT coalesce(sum(callbacks_dropped), 0) FROM jobs) AS dropped,"
            " (SELECT coalesce(max(id), 0) FROM events) AS last,"
            " (SELECT coalesce(json_object_agg(provider, n), '{}') FROM (SELECT provider,"
            " sum(n) AS n FROM in_flight GROUP BY 1) f) AS in_flight,"
            " (SELECT coalesce(json_object_agg(provider, n), '{}') FROM (SELECT provider,"
            " count(*) AS n FROM jobs WHERE status = 'submitting' AND deferred = 1"
            " GROUP BY 1) d) AS deferred,"
            " (SELECT created_at FROM deliveries WHERE status = 'pending' ORDER BY seq LIMIT 1)"
            " AS oldest"
        )
        oldest = totals["oldest"]
        return Counts(
            jobs,
            deliveries,
            subscriptions,
            int(totals["dropped"]),
            int(totals["last"]),
            {str(k): int(v) for k, v in totals["in_flight"].items()},
            {str(k): int(v) for k, v in totals["deferred"].items()},
            None if oldest is None else float(oldest),
        )

    async def next_attempt_due(self) -> float | None:
        """The earliest time a pending delivery is due, or its subscription's next_send_at when
        that is later (a paced subscription's waiting messages are due then, not before)."""
        [row] = await self._rows(
            "SELECT (SELECT d.next_attempt_at FROM deliveries d WHERE d.next_attempt_at IS NOT"
            " NULL AND d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM subscriptions s"
            " WHERE s.id = d.subscription_id AND s.next_send_at > d.next_attempt_at)"
            " ORDER BY d.next_attempt_at LIMIT 1) AS due,"
            " (SELECT min(s.next_send_at) FROM subscriptions s WHERE s.next_send_at IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = s.id"
            " AND d.status = 'pending' AND d.next_attempt_at < s.next_send_at)) AS held"
        )
        found = [float(v) for v in (row["due"], row["held"]) if v is not None]
        return min(found) if found else None
