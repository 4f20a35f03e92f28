"""SQLite adapter: the outbox's reads and the operations counts, as queries and Store methods."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from service.store import jobquery
from service.store.base import dumps
from service.store.records import Counts, Delivery, DeliveryLog, LoggedAttempt, Subscription

T = TypeVar("T")

# -- queries: functions of a connection, shared by the reader and by units of work ----------


def newest_first(
    conn: sqlite3.Connection,
    table: str,
    equal: Sequence[tuple[str, Any]],
    before: int | None,
    limit: int,
) -> list[Any]:
    """Rows of `table` newest first, keyset-paginated on seq; `equal` filters skip None/empty.

    `table` and the column names come from the code, never from a request."""
    where = [f"{column} = ?" for column, value in equal if value]
    params: list[Any] = [value for _, value in equal if value]
    if before is not None:
        where.append("seq < ?")
        params.append(before)
    sql = f"SELECT * FROM {table}"  # noqa: S608 - table and columns are the code's own
    if where:
        sql += " WHERE " + " AND ".join(where)
    return conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()


def subscription(conn: sqlite3.Connection, sub_id: str) -> Subscription | None:
    """A subscription by id."""
    row = conn.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
    return Subscription.from_row(row) if row else None


def subscriptions(conn: sqlite3.Connection, before: int | None, limit: int) -> list[Subscription]:
    """Subscriptions newest first, keyset-paginated on seq."""
    rows = newest_first(conn, "subscriptions", (), before, limit)
    return [Subscription.from_row(r) for r in rows]


def delivery(conn: sqlite3.Connection, delivery_id: str) -> Delivery | None:
    """A delivery by id."""
    row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return Delivery.from_row(row) if row else None


def attempt_log(
    conn: sqlite3.Connection, delivery_ids: Sequence[str]
) -> dict[str, list[LoggedAttempt]]:
    """Every attempt of these deliveries, oldest first."""
    out: dict[str, list[LoggedAttempt]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return out
    rows = conn.execute(
        "SELECT * FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (dumps(list(delivery_ids)),),
    )
    for r in rows:
        out[r["delivery_id"]].append(LoggedAttempt.from_row(r))
    return out


def deliveries(
    conn: sqlite3.Connection,
    *,
    subscription_id: str | None,
    job_id: str | None,
    status: str | None,
    before: int | None,
    limit: int,
) -> list[DeliveryLog]:
    """Deliveries newest first, keyset-paginated on seq, each with its attempt log."""
    equal = (("subscription_id", subscription_id), ("job_id", job_id), ("status", status))
    found = [Delivery.from_row(r) for r in newest_first(conn, "deliveries", equal, before, limit)]
    log = attempt_log(conn, [d.id for d in found])
    return [DeliveryLog(d, tuple(log[d.id])) for d in found]


def delivery_log(conn: sqlite3.Connection, delivery_id: str) -> DeliveryLog | None:
    """A delivery by id with its attempt log."""
    found = delivery(conn, delivery_id)
    if found is None:
        return None
    return DeliveryLog(found, tuple(attempt_log(conn, [delivery_id])[delivery_id]))


def counts(conn: sqlite3.Connection) -> Counts:
    """Jobs, deliveries and subscriptions by status, dropped callbacks, the last event id."""
    jobs = {
        (r[0], r[1]): r[2]
        for r in conn.execute("SELECT provider, status, count(*) FROM jobs GROUP BY 1, 2")
    }
    by_delivery = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY 1"))
    by_subscription = dict(conn.execute("SELECT status, count(*) FROM subscriptions GROUP BY 1"))
    dropped = conn.execute("SELECT sum(callbacks_dropped) FROM jobs").fetchone()[0] or 0
    last = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
    # The trigger-kept counts (migration 008), the few jobs being submitted, and one step down
    # the (status, seq) index: none of these grows with the history.
    in_flight = {r[0]: int(r[1]) for r in conn.execute("SELECT provider, n FROM in_flight")}
    deferred = dict(
        conn.execute(
            "SELECT provider, count(*) FROM jobs WHERE status = 'submitting' AND deferred = 1"
            " GROUP BY 1"
        )
    )
    oldest = conn.execute(
        "SELECT created_at FROM deliveries WHERE status = 'pending' ORDER BY seq LIMIT 1"
    ).fetchone()
    return Counts(
        jobs,
        by_delivery,
        by_subscription,
        int(dropped),
        int(last),
        in_flight,
        deferred,
        float(oldest[0]) if oldest else None,
    )


def next_attempt_due(conn: sqlite3.Connection) -> float | None:
    """The earliest time a pending delivery is due, or its subscription's next_send_at when
    that is later (a paced subscription's waiting messages are due then, not before)."""
    # The first in due order whose subscription does not hold it back (deliveries_due)...
    row = conn.execute(
        "SELECT d.next_attempt_at FROM deliveries d WHERE d.next_attempt_at IS NOT NULL"
        " AND d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM subscriptions s"
        " WHERE s.id = d.subscription_id AND s.next_send_at > d.next_attempt_at)"
        " ORDER BY d.next_attempt_at LIMIT 1"
    ).fetchone()
    # ...and the earliest next_send_at that holds one back (few subscriptions are paced).
    held = conn.execute(
        "SELECT min(s.next_send_at) FROM subscriptions s WHERE s.next_send_at IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = s.id"
        " AND d.status = 'pending' AND d.next_attempt_at < s.next_send_at)"
    ).fetchone()
    found = [float(r[0]) for r in (row, held) if r is not None and r[0] is not None]
    return min(found) if found else None


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


# -- the Store's methods -------------------------------------------------------------------


class Reads:
    """The Store's reads of subscriptions and deliveries, its counts and its ping."""

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reader connection (the Store defines it)."""
        raise NotImplementedError

    async def ping(self) -> None:
        """Answer a trivial query: StorageUnavailable when the database does not."""
        await self.read(_ping)

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        """A subscription by id; None when there is none."""
        return await self.read(lambda conn: subscription(conn, sub_id))

    async def list_subscriptions(self, *, before: int | None, limit: int) -> list[Subscription]:
        """Subscriptions newest first; `before` is the seq of the last one of the page before."""
        return await self.read(lambda conn: subscriptions(conn, before, limit))

    async def get_delivery(self, delivery_id: str) -> DeliveryLog | None:
        """A delivery with its attempt log; None when there is none."""
        return await self.read(lambda conn: delivery_log(conn, delivery_id))

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
        return await self.read(
            lambda conn: deliveries(
                conn,
                subscription_id=subscription_id,
                job_id=job_id,
                status=status,
                before=before,
                limit=limit,
            )
        )

    async def counts(self) -> Counts:
        """What /metrics shows of the database."""
        return await self.read(counts)

    async def counts_since(self, since: float) -> dict[str, int]:
        """Jobs created at or after `since`, by status."""
        sql = jobquery.counts_since_sql("sqlite")
        return await self.read(
            lambda conn: {str(r[0]): int(r[1]) for r in conn.execute(sql, (since,))}
        )

    async def next_attempt_due(self) -> float | None:
        """The earliest time a pending delivery is due; None when none is pending."""
        return await self.read(next_attempt_due)
