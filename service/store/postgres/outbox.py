"""PostgreSQL adapter: subscriptions, deliveries and their attempt log, as a unit's repositories."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from service.store.postgres.jobs import Conn
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


class Versioned(Protocol):
    """The unit that holds the subscriptions version its last event append read."""

    version: str | None


# pg_advisory_xact_lock key of the delivery claim ('rlyd'): see Deliveries.claim
CLAIM_LOCK = 0x726C7964


class Subscriptions:
    """The subscriptions rows (and the service-wide secret) as one unit of work sees them."""

    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: Conn, tx: Versioned | None = None) -> None:
        self._conn = conn
        self._tx = tx

    async def version(self) -> str:
        """A value that changes whenever any subscription does."""
        if self._tx is not None and self._tx.version is not None:
            return self._tx.version  # read by this unit's last event append, behind its lock
        cur = await self._conn.execute("SELECT value FROM meta WHERE key = %s", (VERSION_KEY,))
        row = await cur.fetchone()
        return str(row["value"]) if row else "0"

    async def bump(self) -> None:
        """Move the version on: every process's cached list is stale."""
        if self._tx is not None:
            self._tx.version = None
        await self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (%s, '1') ON CONFLICT (key)"
            " DO UPDATE SET value = (meta.value::bigint + 1)::text",
            (VERSION_KEY,),
        )

    async def all(self) -> list[Subscription]:
        """Every subscription."""
        cur = await self._conn.execute("SELECT * FROM subscriptions")
        return [Subscription.from_row(r) for r in await cur.fetchall()]

    async def get(self, sub_id: str) -> Subscription | None:
        """A subscription by id, locked until the unit ends (a change reads, then writes)."""
        cur = await self._conn.execute(
            "SELECT * FROM subscriptions WHERE id = %s FOR UPDATE", (sub_id,)
        )
        row = await cur.fetchone()
        return Subscription.from_row(row) if row else None

    async def by_ids(self, sub_ids: Iterable[str]) -> dict[str, Subscription]:
        """These subscriptions, by id."""
        cur = await self._conn.execute(
            "SELECT * FROM subscriptions WHERE id = ANY(%s)", (sorted(set(sub_ids)),)
        )
        return {r["id"]: Subscription.from_row(r) for r in await cur.fetchall()}

    async def insert(self, sub: Subscription) -> None:
        """Add a subscription (its seq is the store's to give)."""
        await self._conn.execute(
            f"INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS})"  # noqa: S608 - fixed names
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            subscription_values(sub),
        )

    async def update(self, sub_id: str, changes: Mapping[str, Any]) -> None:
        """Set these columns (events a list, filter a dict or None) on one subscription."""
        sets = subscription_sets(changes)
        if not sets:
            return
        assignments = ", ".join(f"{k} = %s" for k in sets)
        await self._conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = %s",  # noqa: S608
            (*sets.values(), sub_id),
        )

    async def delete(self, sub_id: str) -> bool:
        """Delete a subscription: whether it was there."""
        cur = await self._conn.execute("DELETE FROM subscriptions WHERE id = %s", (sub_id,))
        return cur.rowcount > 0

    async def rotate_secret(self, sub_id: str, secret: str, old_until: float, now: float) -> None:
        """Make `secret` current; the current one becomes the old one until `old_until`."""
        await self._conn.execute(
            "UPDATE subscriptions SET old_secret = secret, old_secret_expires_at = %s,"
            " secret = %s, updated_at = %s WHERE id = %s",
            (old_until, secret, now, sub_id),
        )

    async def pause(self, sub_id: str, reason: str, now: float) -> bool:
        """Pause an active subscription: whether it was active."""
        cur = await self._conn.execute(
            "UPDATE subscriptions SET status = 'paused', paused_reason = %s, updated_at = %s"
            " WHERE id = %s AND status = 'active'",
            (reason, now, sub_id),
        )
        return cur.rowcount > 0

    async def pace(self, sub_ids: Iterable[str], now: float) -> None:
        """A paced subscription's next message waits 1/rate from `now`."""
        await self._conn.execute(
            "UPDATE subscriptions SET next_send_at = %s + 1.0 / rate_per_second"
            " WHERE id = ANY(%s) AND rate_per_second > 0",
            (now, sorted(set(sub_ids))),
        )

    async def not_before(self, sub_id: str, when: float) -> None:
        """Its next message waits until `when`; never moved earlier."""
        await self._conn.execute(
            "UPDATE subscriptions SET next_send_at = GREATEST(coalesce(next_send_at, %s), %s)"
            " WHERE id = %s",
            (when, when, sub_id),
        )

    async def succeeded(self, sub_id: str) -> None:
        """A delivery got through: the subscription is not failing."""
        await self._conn.execute(
            "UPDATE subscriptions SET failing_since = NULL WHERE id = %s"
            " AND failing_since IS NOT NULL",
            (sub_id,),
        )

    async def failed(self, sub_id: str, now: float) -> float | None:
        """A delivery failed: since when every one has (None when the row is gone)."""
        cur = await self._conn.execute(
            "UPDATE subscriptions SET failing_since = coalesce(failing_since, %s) WHERE id = %s"
            " RETURNING failing_since",
            (now, sub_id),
        )
        row = await cur.fetchone()
        return None if row is None or row["failing_since"] is None else float(row["failing_since"])

    async def service_secret(self, fresh: str) -> dict[str, str]:
        """The service-wide secret's values by key, `fresh` stored first if there is none."""
        await self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('webhook_secret', %s) ON CONFLICT DO NOTHING",
            (fresh,),
        )
        cur = await self._conn.execute(
            "SELECT key, value FROM meta WHERE key = ANY(%s)", (list(SERVICE_KEYS),)
        )
        return {row["key"]: row["value"] for row in await cur.fetchall()}

    async def set_service_secret(self, current: str, previous: str, previous_until: float) -> None:
        """Store a new service-wide secret and the one it replaces."""
        values = (current, previous, repr(previous_until))
        for key, value in zip(SERVICE_KEYS, values, strict=True):
            await self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


class Deliveries:
    """The deliveries rows and their attempt log as one unit of work sees them."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def get(self, delivery_id: str) -> Delivery | None:
        """A delivery by id, locked until the unit ends."""
        cur = await self._conn.execute(
            "SELECT * FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,)
        )
        row = await cur.fetchone()
        return Delivery.from_row(row) if row else None

    async def add(self, new: Sequence[NewDelivery], lease: tuple[str, float] | None = None) -> None:
        """Add pending deliveries, each due at once; with `lease` (owner, until), leased to
        that owner until then instead, as a claim would have left them."""
        async with self._conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608 - fixed names
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                delivery_values(new, lease),
            )

    async def room(self, sub_ids: Iterable[str], now: float, most: int) -> dict[str, int]:
        """How many fresh deliveries each of these subscriptions may be sent now without a
        claim: its max_in_flight less its pending deliveries (any, counted up to `most`); only
        active subscriptions without a pace and not held back by next_send_at are named.
        Empty when another transaction is claiming."""
        # The claims' lock, held to this transaction's end, so no claim in any process reads
        # the rows between this count and the commit of the leases it lets the caller set.
        # Tried, never waited for: when a claim holds it, the fresh deliveries take the claim.
        cur = await self._conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS got", (CLAIM_LOCK,))
        got = await cur.fetchone()
        if got is None or not got["got"]:
            return {}
        cur = await self._conn.execute(
            "SELECT s.id, s.max_in_flight - (SELECT count(*) FROM (SELECT 1 FROM deliveries d"
            "  WHERE d.subscription_id = s.id AND d.status = 'pending' LIMIT %(most)s) p)"
            "  AS room"
            " FROM subscriptions s WHERE s.id = ANY(%(ids)s)"
            " AND s.status = 'active' AND coalesce(s.rate_per_second, 0) <= 0"
            " AND (s.next_send_at IS NULL OR s.next_send_at <= %(now)s)",
            {"ids": sorted(set(sub_ids)), "now": now, "most": most},
        )
        return {r["id"]: r["room"] for r in await cur.fetchall() if r["room"] > 0}

    async def cancel_pending(self, sub_id: str, now: float, reason: str) -> None:
        """Cancel a subscription's pending deliveries (they stay in the log)."""
        await self._conn.execute(
            "UPDATE deliveries SET status = 'canceled', next_attempt_at = NULL, updated_at = %s,"
            " last_error = %s WHERE subscription_id = %s AND status = 'pending'",
            (now, reason, sub_id),
        )

    async def claim(
        self, now: float, limit: int, owner: str, lease: float, alive_after: float
    ) -> list[Delivery]:
        """Lease due deliveries, and those leased by an owner not heard from after
        `alive_after` (or gone), oldest first: the head only for ordered destinations, never
        more per subscription than its max_in_flight less those in flight, one at a time for
        a paced one and not before its next_send_at."""
        # A subscription's in-flight cap and pace span every process, and both are read from
        # the rows this claim changes: claims take turns on a transaction lock (held for one
        # statement and the pacing update), so each sees every lease committed before it.
        # Row locks alone (SKIP LOCKED) could not stop two claims from each filling the same
        # free slot with a different row.
        await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
        cur = await self._conn.execute(
            "WITH busy AS (SELECT subscription_id AS id, count(*) AS n FROM deliveries"
            "  WHERE lease_owner IS NOT NULL AND status = 'pending'"
            "  AND subscription_id IS NOT NULL AND next_attempt_at > %(now)s"
            "  AND lease_owner IN (SELECT id FROM owners WHERE heartbeat_at > %(alive_after)s)"
            "  GROUP BY subscription_id),"
            " picked AS (SELECT seq FROM ("
            "  SELECT d.seq, d.next_attempt_at, row_number() OVER ("
            "   PARTITION BY coalesce(d.subscription_id, d.seq::text) ORDER BY d.seq) AS rank,"
            "   coalesce(s.max_in_flight, 1) - coalesce(b.n, 0) AS free,"
            "   coalesce(s.rate_per_second, 0) > 0 AS paced"
            "  FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscription_id"
            "  LEFT JOIN busy b ON b.id = d.subscription_id"
            "  WHERE (d.next_attempt_at <= %(now)s OR (d.lease_owner IS NOT NULL"
            "   AND d.lease_owner <> %(owner)s AND d.lease_owner NOT IN"
            "   (SELECT id FROM owners WHERE heartbeat_at > %(alive_after)s)))"
            "  AND d.status = 'pending'"
            "  AND (d.subscription_id IS NULL OR s.status = 'active')"
            "  AND (d.ordered = 0 OR d.seq = (SELECT min(seq) FROM deliveries h"
            "   WHERE h.subscription_id = d.subscription_id AND h.status = 'pending'))"
            "  AND (s.next_send_at IS NULL OR s.next_send_at <= %(now)s)"
            " ) ranked WHERE rank <= free AND (rank = 1 OR NOT paced)"
            " ORDER BY next_attempt_at LIMIT %(limit)s)"
            " UPDATE deliveries SET next_attempt_at = %(until)s, lease_owner = %(owner)s"
            " FROM picked WHERE deliveries.seq = picked.seq RETURNING deliveries.*",
            {
                "until": now + lease,
                "owner": owner,
                "now": now,
                "limit": limit,
                "alive_after": alive_after,
            },
        )
        rows = await cur.fetchall()
        return sorted((Delivery.from_row(r) for r in rows), key=lambda d: d.seq)

    async def release(self, owner: str, now: float) -> int:
        """Give up every pending delivery `owner` has leased: due at `now`."""
        cur = await self._conn.execute(
            "UPDATE deliveries SET next_attempt_at = %s, lease_owner = NULL"
            " WHERE lease_owner = %s AND status = 'pending'",
            (now, owner),
        )
        return cur.rowcount

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
        await self._conn.execute(
            "INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, response,"
            " error) VALUES (%s, %s, %s, %s, %s, %s)",
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
        await self._conn.execute(
            "UPDATE deliveries SET status = %s, next_attempt_at = %s, attempts = attempts + 1,"
            " round = round + %s, last_status_code = %s, last_error = %s, updated_at = %s,"
            " delivered_at = %s, lease_owner = NULL WHERE id = %s AND status = 'pending'",
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
        await self._conn.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = %s, round = 0,"
            " lease_owner = NULL, updated_at = %s WHERE id = %s",
            (now, now, delivery_id),
        )
