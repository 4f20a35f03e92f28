"""SQLite adapter: subscriptions, deliveries and their attempt log, as a unit's repositories."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.store.codec import ids_json
from service.store.records import Delivery, NewDelivery, Subscription
from service.store.schema import (
    DELIVERY_COLUMNS,
    SERVICE_KEYS,
    SUBSCRIPTION_COLUMNS,
    VERSION_KEY,
    delivery_values,
    subscription_sets,
    subscription_values,
)


class Subscriptions:
    """The subscriptions rows (and the service-wide secret) as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def version(self) -> str:
        """A value that changes whenever any subscription does."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (VERSION_KEY,)).fetchone()
        return str(row[0]) if row else "0"

    async def bump(self) -> None:
        """Move the version on: every process's cached list is stale."""
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key)"
            " DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (VERSION_KEY,),
        )

    async def all(self) -> list[Subscription]:
        """Every subscription."""
        return [Subscription.from_row(r) for r in self._conn.execute("SELECT * FROM subscriptions")]

    async def get(self, sub_id: str) -> Subscription | None:
        """A subscription by id."""
        row = self._conn.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
        return Subscription.from_row(row) if row else None

    async def by_ids(self, sub_ids: Iterable[str]) -> dict[str, Subscription]:
        """These subscriptions, by id."""
        rows = self._conn.execute(
            "SELECT * FROM subscriptions WHERE id IN (SELECT value FROM json_each(?))",
            (ids_json(sub_ids),),
        )
        return {r["id"]: Subscription.from_row(r) for r in rows}

    async def insert(self, sub: Subscription) -> None:
        """Add a subscription (its seq is the store's to give)."""
        self._conn.execute(
            f"INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS})"  # noqa: S608 - fixed names
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            subscription_values(sub),
        )

    async def update(self, sub_id: str, changes: Mapping[str, Any]) -> None:
        """Set these columns (events a list, filter a dict or None) on one subscription."""
        sets = subscription_sets(changes)
        if not sets:
            return
        assignments = ", ".join(f"{k} = ?" for k in sets)
        self._conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = ?",  # noqa: S608
            (*sets.values(), sub_id),
        )

    async def delete(self, sub_id: str) -> bool:
        """Delete a subscription: whether it was there."""
        cur = self._conn.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
        return cur.rowcount > 0

    async def rotate_secret(self, sub_id: str, secret: str, old_until: float, now: float) -> None:
        """Make `secret` current; the current one becomes the old one until `old_until`."""
        self._conn.execute(
            "UPDATE subscriptions SET old_secret = secret, old_secret_expires_at = ?, secret = ?,"
            " updated_at = ? WHERE id = ?",
            (old_until, secret, now, sub_id),
        )

    async def pause(self, sub_id: str, reason: str, now: float) -> bool:
        """Pause an active subscription: whether it was active."""
        cur = self._conn.execute(
            "UPDATE subscriptions SET status = 'paused', paused_reason = ?, updated_at = ?"
            " WHERE id = ? AND status = 'active'",
            (reason, now, sub_id),
        )
        return cur.rowcount > 0

    async def pace(self, sub_ids: Iterable[str], now: float) -> None:
        """A paced subscription's next message waits 1/rate from `now`."""
        self._conn.execute(
            "UPDATE subscriptions SET next_send_at = ? + 1.0 / rate_per_second"
            " WHERE id IN (SELECT value FROM json_each(?)) AND rate_per_second > 0",
            (now, ids_json(sub_ids)),
        )

    async def not_before(self, sub_id: str, when: float) -> None:
        """Its next message waits until `when`; never moved earlier."""
        self._conn.execute(
            "UPDATE subscriptions SET next_send_at = CASE WHEN next_send_at > ?"
            " THEN next_send_at ELSE ? END WHERE id = ?",
            (when, when, sub_id),
        )

    async def succeeded(self, sub_id: str) -> None:
        """A delivery got through: the subscription is not failing."""
        self._conn.execute(
            "UPDATE subscriptions SET failing_since = NULL WHERE id = ?"
            " AND failing_since IS NOT NULL",
            (sub_id,),
        )

    async def failed(self, sub_id: str, now: float) -> float | None:
        """A delivery failed: since when every one has (None when the row is gone)."""
        self._conn.execute(
            "UPDATE subscriptions SET failing_since = ? WHERE id = ? AND failing_since IS NULL",
            (now, sub_id),
        )
        row = self._conn.execute(
            "SELECT failing_since FROM subscriptions WHERE id = ?", (sub_id,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def service_secret(self, fresh: str) -> dict[str, str]:
        """The service-wide secret's values by key, `fresh` stored first if there is none."""
        self._conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('webhook_secret', ?)", (fresh,)
        )
        rows = self._conn.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?, ?)", SERVICE_KEYS
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    async def set_service_secret(self, current: str, previous: str, previous_until: float) -> None:
        """Store a new service-wide secret and the one it replaces."""
        values = (current, previous, repr(previous_until))
        for key, value in zip(SERVICE_KEYS, values, strict=True):
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


class Deliveries:
    """The deliveries rows and their attempt log as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def get(self, delivery_id: str) -> Delivery | None:
        """A delivery by id."""
        row = self._conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return Delivery.from_row(row) if row else None

    async def add(self, new: Sequence[NewDelivery], lease: tuple[str, float] | None = None) -> None:
        """Add pending deliveries, each due at once; with `lease` (owner, until), leased to
        that owner until then instead, as a claim would have left them."""
        self._conn.executemany(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608 - fixed names
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            delivery_values(new, lease),
        )

    async def room(self, sub_ids: Iterable[str], now: float, most: int) -> dict[str, int]:
        """How many fresh deliveries each of these subscriptions may be sent now without a
        claim: its max_in_flight less its pending deliveries (any, counted up to `most`); only
        active subscriptions without a pace and not held back by next_send_at are named."""
        # One writer: nothing can claim between this count and the commit of the leases it
        # lets the caller set. Counting every pending row, due or not, errs on the side of
        # the claim; the LIMIT keeps a retry backlog from costing a scan per event.
        rows = self._conn.execute(
            "SELECT s.id, s.max_in_flight - (SELECT count(*) FROM (SELECT 1 FROM deliveries d"
            "  WHERE d.subscription_id = s.id AND d.status = 'pending' LIMIT :most)) AS room"
            " FROM subscriptions s WHERE s.id IN (SELECT value FROM json_each(:ids))"
            " AND s.status = 'active' AND coalesce(s.rate_per_second, 0) <= 0"
            " AND (s.next_send_at IS NULL OR s.next_send_at <= :now)",
            {"ids": ids_json(sub_ids), "now": now, "most": most},
        )
        return {r[0]: r[1] for r in rows if r[1] > 0}

    async def cancel_pending(self, sub_id: str, now: float, reason: str) -> None:
        """Cancel a subscription's pending deliveries (they stay in the log)."""
        self._conn.execute(
            "UPDATE deliveries SET status = 'canceled', next_attempt_at = NULL, updated_at = ?,"
            " last_error = ? WHERE subscription_id = ? AND status = 'pending'",
            (now, reason, sub_id),
        )

    async def claim(
        self, now: float, limit: int, owner: str, lease: float, alive_after: float
    ) -> list[Delivery]:
        """Lease due deliveries, and those leased by an owner not heard from after
        `alive_after` (or gone), oldest first: the head only for ordered destinations, never
        more per subscription than its max_in_flight less those in flight, one at a time for
        a paced one and not before its next_send_at."""
        # In flight: pending deliveries leased by a live owner, lease not run out, in any
        # process. Counted from the rows rather than kept in a counter: a crashed process's
        # sends stop counting as soon as its heartbeat is stale, and nothing can make a count
        # drift. The takeover term is a list computed once from the few leased rows
        # (deliveries_leased); the unary plus keeps the planner off deliveries_status, which
        # would read every pending delivery (a backlog of retries included), for the due range
        # of deliveries_due (and, in `busy`, for the few leased rows of deliveries_leased).
        rows = self._conn.execute(
            "WITH busy AS (SELECT subscription_id AS id, count(*) AS n FROM deliveries"
            "  WHERE lease_owner IS NOT NULL AND +status = 'pending'"
            "  AND +subscription_id IS NOT NULL AND +next_attempt_at > :now"
            "  AND lease_owner IN (SELECT id FROM owners WHERE heartbeat_at > :alive_after)"
            "  GROUP BY subscription_id)"
            " UPDATE deliveries SET next_attempt_at = :until, lease_owner = :owner WHERE seq IN ("
            " SELECT seq FROM ("
            "  SELECT d.seq, d.next_attempt_at, row_number() OVER ("
            "   PARTITION BY coalesce(d.subscription_id, d.seq) ORDER BY d.seq) AS rank,"
            "   coalesce(s.max_in_flight, 1) - coalesce(b.n, 0) AS free,"
            "   coalesce(s.rate_per_second, 0) > 0 AS paced"
            "  FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id"
            "  LEFT JOIN busy b ON b.id = d.subscription_id"
            "  WHERE (d.next_attempt_at <= :now OR d.seq IN (SELECT seq FROM deliveries"
            "   WHERE lease_owner IS NOT NULL AND lease_owner != :owner AND lease_owner NOT IN"
            "   (SELECT id FROM owners WHERE heartbeat_at > :alive_after)))"
            "  AND +d.status = 'pending'"
            "  AND (d.subscription_id IS NULL OR s.status = 'active')"
            "  AND (d.ordered = 0 OR d.seq = (SELECT min(seq) FROM deliveries h"
            "   WHERE h.subscription_id = d.subscription_id AND h.status = 'pending'))"
            "  AND (s.next_send_at IS NULL OR s.next_send_at <= :now)"
            " ) WHERE rank <= free AND (rank = 1 OR NOT paced)"
            " ORDER BY next_attempt_at LIMIT :limit) RETURNING *",
            {
                "until": now + lease,
                "owner": owner,
                "now": now,
                "limit": limit,
                "alive_after": alive_after,
            },
        ).fetchall()
        return sorted((Delivery.from_row(r) for r in rows), key=lambda d: d.seq)

    async def release(self, owner: str, now: float) -> int:
        """Give up every pending delivery `owner` has leased: due at `now`."""
        return self._conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL"
            " WHERE lease_owner = ? AND status = 'pending'",
            (now, owner),
        ).rowcount

    async def log_attempt(
        self,
        delivery_id: str,
        now: float,
        status_code: int | None,
        latency_ms: float,
        response: str | None,
        error: str | None,
    ) -> None:
        """Append one send to the attempt log."""
        self._conn.execute(
            "INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, response,"
            " error) VALUES (?, ?, ?, ?, ?, ?)",
            (delivery_id, now, status_code, latency_ms, response, error),
        )

    async def settle(
        self,
        delivery_id: str,
        status: str,
        due: float | None,
        counts_round: bool,
        status_code: int | None,
        error: str | None,
        now: float,
    ) -> None:
        """Move a pending delivery on after an attempt and drop its lease."""
        self._conn.execute(
            "UPDATE deliveries SET status = ?, next_attempt_at = ?, attempts = attempts + 1,"
            " round = round + ?, last_status_code = ?, last_error = ?, updated_at = ?,"
            " delivered_at = ?, lease_owner = NULL WHERE id = ? AND status = 'pending'",
            (
                status,
                due,
                1 if counts_round else 0,
                status_code,
                error,
                now,
                now if status == "succeeded" else None,
                delivery_id,
            ),
        )

    async def retry(self, delivery_id: str, now: float) -> None:
        """Make a delivery pending and due at `now` with a fresh retry schedule."""
        self._conn.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, round = 0,"
            " lease_owner = NULL, updated_at = ? WHERE id = ?",
            (now, now, delivery_id),
        )
