"""Subscriptions and the delivery outbox: fan-out inside the event's transaction, leases, log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from service import owners, signing
from service.notification import Notification, NotificationData, pick
from service.store import Event, Job, Tx, dumps, iso
from service.store import sqlite_reads as reads

# re-exported: the outbox's callers know them as outbox.Subscription and outbox.Delivery
from service.store.records import Delivery as Delivery
from service.store.records import Subscription as Subscription

NOTIFY_TYPES = ("job.queued", "job.processing", "job.succeeded", "job.failed", "job.canceled")
TERMINAL_TYPES = ("job.succeeded", "job.failed", "job.canceled")
TEST_TYPE = "job.test"
# Pixazo's own webhook_events_filter names, as the relay applies them to per-job webhooks.
JOB_FILTERS = {
    "*": NOTIFY_TYPES,
    "completed": TERMINAL_TYPES,
    "start": ("job.processing",),
    "output": ("job.succeeded",),
}
ROTATION_OVERLAP = 24 * 3600.0
_VERSION_KEY = "subscriptions_version"


def new_subscription_id() -> str:
    """A fresh subscription id."""
    return "sub_" + secrets.token_hex(10)


def notification(event: Event) -> Notification:
    """The body every subscriber gets for an event (SPEC: Outgoing notifications)."""
    return {"type": event.type, "timestamp": iso(event.created_at), "data": pick(event.data)}


def _bump(tx: Tx) -> None:
    tx.conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key)"
        " DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        (_VERSION_KEY,),
    )


def default_pace(kind: str) -> tuple[bool, float | None, int]:
    """(ordered, messages per second, in flight) by kind: chat channels get one at a time."""
    if kind == "webhook":
        return False, None, 4
    # Slack documents about one message per second per channel; the others are similar.
    return True, {"discord": 2.0}.get(kind, 1.0), 1


class Fanout:
    """The event hook: one delivery per matching destination, in the event's transaction."""

    def __init__(self) -> None:
        self._version: str | None = None
        self._subs: list[Subscription] = []

    def _active(self, tx: Tx) -> list[Subscription]:
        row = tx.one("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,))
        version = row["value"] if row else "0"
        if version != self._version:
            rows = tx.conn.execute("SELECT * FROM subscriptions")
            self._subs = [Subscription.from_row(r) for r in rows]
            self._version = version
        return self._subs

    def __call__(self, tx: Tx, event: Event, job: Job | None) -> None:
        if event.job_id is None or event.type not in NOTIFY_TYPES:
            return
        rows: list[tuple[Any, ...]] = []
        now = event.created_at
        for sub in self._active(tx):
            if sub.wants(event.type, event.data):
                ordered, _, _ = default_pace(sub.kind)
                rows.append(
                    (
                        signing.new_message_id(),
                        sub.id,
                        event.job_id,
                        event.id,
                        event.type,
                        sub.kind,
                        None,
                        int(ordered),
                        now,
                        now,
                        now,
                    )
                )
        if job is None:
            job = tx.job(event.job_id)
        if job is not None and job.webhook:
            names = job.webhook_events or ["completed"]
            if any(event.type in JOB_FILTERS.get(n, ()) for n in names):
                row = (
                    signing.new_message_id(),
                    None,
                    event.job_id,
                    event.id,
                    event.type,
                    "webhook",
                    job.webhook,
                    0,
                    now,
                    now,
                    now,
                )
                rows.append(row)
        if rows:
            tx.conn.executemany(
                "INSERT INTO deliveries (id, subscription_id, job_id, event_id, event_type, kind,"
                " url, ordered, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            tx.signal("deliveries")


# -- subscriptions -------------------------------------------------------------------------


def get_subscription(tx: Tx, sub_id: str) -> Subscription | None:
    """A subscription by id, read inside the transaction."""
    return reads.subscription(tx.conn, sub_id)


def create_subscription(tx: Tx, fields: dict[str, Any], now: float) -> Subscription:
    """Insert a subscription; a webhook one gets a whsec_ secret."""
    _, rate, in_flight = default_pace(fields["kind"])
    sub_id = new_subscription_id()
    tx.conn.execute(
        "INSERT INTO subscriptions (id, url, kind, events, filter, template, description, secret,"
        " status, rate_per_second, max_in_flight, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            sub_id,
            fields["url"],
            fields["kind"],
            dumps(fields["events"]),
            dumps(fields["filter"]) if fields.get("filter") else None,
            fields.get("template"),
            fields.get("description"),
            signing.new_secret() if fields["kind"] == "webhook" else None,
            "paused" if fields.get("paused") else "active",
            fields.get("rate_per_second", rate),
            fields.get("max_in_flight", in_flight),
            now,
            now,
        ),
    )
    _bump(tx)
    sub = get_subscription(tx, sub_id)
    assert sub is not None  # noqa: S101
    return sub


def update_subscription(
    tx: Tx, sub_id: str, changes: dict[str, Any], now: float
) -> Subscription | None:
    """Apply a PATCH: url, events, filter, template, description, paused."""
    sub = get_subscription(tx, sub_id)
    if sub is None:
        return None
    sets: dict[str, Any] = {}
    for key in ("url", "template", "description", "rate_per_second", "max_in_flight"):
        if key in changes:
            sets[key] = changes[key]
    if "events" in changes:
        sets["events"] = dumps(changes["events"])
    if "filter" in changes:
        sets["filter"] = dumps(changes["filter"]) if changes["filter"] else None
    if "paused" in changes:
        sets["status"] = "paused" if changes["paused"] else "active"
        sets["paused_reason"] = "by request" if changes["paused"] else None
        if not changes["paused"]:
            sets["failing_since"] = None
    if sets:
        sets["updated_at"] = now
        assignments = ", ".join(f"{k} = ?" for k in sets)
        tx.conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = ?",  # noqa: S608
            (*sets.values(), sub_id),
        )
        _bump(tx)
        if changes.get("paused") is False:
            tx.signal("deliveries")
    return get_subscription(tx, sub_id)


def delete_subscription(tx: Tx, sub_id: str, now: float) -> bool:
    """Delete a subscription; its pending deliveries are canceled (kept in the log)."""
    cur = tx.conn.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
    if cur.rowcount == 0:
        return False
    tx.conn.execute(
        "UPDATE deliveries SET status = 'canceled', next_attempt_at = NULL, updated_at = ?,"
        " last_error = 'subscription deleted' WHERE subscription_id = ? AND status = 'pending'",
        (now, sub_id),
    )
    _bump(tx)
    return True


class ServiceSecret:
    """The service-wide `whsec_` secret that signs per-job webhooks, and its predecessor."""

    __slots__ = ("current", "previous", "previous_until")

    def __init__(self, current: str, previous: str | None, previous_until: float | None) -> None:
        self.current = current
        self.previous = previous
        self.previous_until = previous_until

    def signing_secrets(self, now: float) -> list[str]:
        """The current secret, and the previous one while it overlaps."""
        if self.previous and (self.previous_until or 0) > now:
            return [self.current, self.previous]
        return [self.current]

    def public(self) -> dict[str, Any]:
        """The secret as the API shows it."""
        out: dict[str, Any] = {"secret": self.current}
        if self.previous and self.previous_until:
            out["previous_secret_expires_at"] = iso(self.previous_until)
        return out


_SERVICE_KEYS = ("webhook_secret", "webhook_secret_previous", "webhook_secret_previous_until")


def service_secret(tx: Tx) -> ServiceSecret:
    """The service-wide secret, made on first use (OR IGNORE: two processes keep one)."""
    tx.conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('webhook_secret', ?)",
        (signing.new_secret(),),
    )
    rows = tx.conn.execute(
        "SELECT key, value FROM meta WHERE key IN (?, ?, ?)", _SERVICE_KEYS
    ).fetchall()
    values = {row[0]: row[1] for row in rows}
    until = values.get("webhook_secret_previous_until")
    return ServiceSecret(
        values["webhook_secret"],
        values.get("webhook_secret_previous"),
        float(until) if until else None,
    )


def rotate_service_secret(tx: Tx, now: float) -> ServiceSecret:
    """A new service-wide secret; the old one keeps signing for 24 hours beside it."""
    old = service_secret(tx)
    values = (signing.new_secret(), old.current, repr(now + ROTATION_OVERLAP))
    for key, value in zip(_SERVICE_KEYS, values, strict=True):
        tx.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
    return service_secret(tx)


def rotate_secret(tx: Tx, sub_id: str, now: float) -> Subscription | None:
    """A new secret; the old one keeps signing for 24 hours beside it."""
    sub = get_subscription(tx, sub_id)
    if sub is None or sub.kind != "webhook":
        return sub
    tx.conn.execute(
        "UPDATE subscriptions SET old_secret = secret, old_secret_expires_at = ?, secret = ?,"
        " updated_at = ? WHERE id = ?",
        (now + ROTATION_OVERLAP, signing.new_secret(), now, sub_id),
    )
    _bump(tx)
    return get_subscription(tx, sub_id)


def pause(tx: Tx, sub_id: str, reason: str, now: float) -> None:
    """Pause a subscription for a reason of the relay's own and record it as an event."""
    cur = tx.conn.execute(
        "UPDATE subscriptions SET status = 'paused', paused_reason = ?, updated_at = ?"
        " WHERE id = ? AND status = 'active'",
        (reason, now, sub_id),
    )
    if cur.rowcount:
        _bump(tx)
        tx.add_event(
            None,
            "subscription.paused",
            "system",
            now,
            {"subscription_id": sub_id, "reason": reason},
        )


def send_test(tx: Tx, sub: Subscription, now: float) -> Delivery:
    """Record a test event and one delivery of it to this subscription only."""
    sample: NotificationData = {
        "id": "job_test",
        "model": "pixazo/seedvr-image",
        "status": "succeeded",
        "progress": 1.0,
        "outputs": [{"url": "https://example.com/upscaled.png", "media_type": "image/png"}],
        "error": None,
        "metadata": {"test": "true"},
        "provider": "pixazo",
        "provider_job_id": None,
        "cost": None,
        "created_at": iso(now),
        "updated_at": iso(now),
    }
    event = tx.add_event(None, TEST_TYPE, "api", now, {**sample, "subscription_id": sub.id})
    assert event is not None  # noqa: S101
    ordered, _, _ = default_pace(sub.kind)
    delivery_id = signing.new_message_id()
    tx.conn.execute(
        "INSERT INTO deliveries (id, subscription_id, event_id, event_type, kind, ordered,"
        " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (delivery_id, sub.id, event.id, TEST_TYPE, sub.kind, int(ordered), now, now, now),
    )
    tx.signal("deliveries")
    found = get_delivery(tx, delivery_id)
    assert found is not None  # noqa: S101
    return found


# -- deliveries ----------------------------------------------------------------------------


def get_delivery(tx: Tx, delivery_id: str) -> Delivery | None:
    """A delivery by id, read inside the transaction."""
    return reads.delivery(tx.conn, delivery_id)


@dataclass(frozen=True, slots=True)
class Claimed:
    """Deliveries leased for sending, with what is needed to send them."""

    deliveries: list[Delivery]
    subscriptions: dict[str, Subscription]
    events: dict[int, Event]


def claim(tx: Tx, now: float, limit: int, owner: str, lease: float) -> Claimed:
    """Lease due deliveries (and those leased by a dead owner: its heartbeat stale or its row
    gone): the head only for ordered destinations, never more per subscription than its
    max_in_flight less those in flight, and for a paced one (rate_per_second) one at a time
    and not before its next_send_at, which the same transaction moves on by 1/rate."""
    # In flight: pending deliveries leased by a live owner, lease not run out, in any process.
    # Counted from the rows rather than kept in a counter: a crashed process's sends stop
    # counting as soon as its heartbeat is stale, and nothing can make a count drift.
    # The takeover term is a list computed once from the few leased rows (deliveries_leased);
    # the unary plus keeps the planner off deliveries_status, which would read every pending
    # delivery (a backlog of retries included), for the due range of deliveries_due (and, in
    # `busy`, for the few leased rows of deliveries_leased).
    rows = tx.conn.execute(
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
            "alive_after": owners.alive_after(now),
        },
    ).fetchall()
    deliveries = sorted((Delivery.from_row(r) for r in rows), key=lambda d: d.seq)
    subs: dict[str, Subscription] = {}
    events: dict[int, Event] = {}
    if deliveries:
        sub_ids = sorted({d.subscription_id for d in deliveries if d.subscription_id})
        # A paced subscription's next message waits 1/rate, whichever process claims it.
        tx.conn.execute(
            "UPDATE subscriptions SET next_send_at = ? + 1.0 / rate_per_second"
            " WHERE id IN (SELECT value FROM json_each(?)) AND rate_per_second > 0",
            (now, dumps(sub_ids)),
        )
        for r in tx.conn.execute(
            "SELECT * FROM subscriptions WHERE id IN (SELECT value FROM json_each(?))",
            (dumps(sub_ids),),
        ):
            subs[r["id"]] = Subscription.from_row(r)
        for r in tx.conn.execute(
            "SELECT * FROM events WHERE id IN (SELECT value FROM json_each(?))",
            (dumps(sorted({d.event_id for d in deliveries})),),
        ):
            events[r["id"]] = Event.from_row(r)
    return Claimed(deliveries, subs, events)


def release(tx: Tx, owner: str, now: float) -> int:
    """Give up every delivery `owner` has leased (a drain's end): due now, for whoever is next."""
    released = tx.conn.execute(
        "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL"
        " WHERE lease_owner = ? AND status = 'pending'",
        (now, owner),
    ).rowcount
    if released:
        tx.signal("deliveries")
    return released


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one send came to."""

    status_code: int | None
    latency_ms: float
    response: str | None
    error: str | None
    delivered: bool
    retry_at: float | None
    gone: bool = False
    # a 429 that said when to come back: a throttle, not a failure, so the retry schedule
    # is not spent on it (a burst to a chat channel is delayed, never dropped)
    throttled: bool = False
    # the earliest time the subscription may be sent its next message, as the answer asked
    # (a 429's Retry-After, Discord's bucket reset, 1/rate after the answer)
    not_before: float | None = None


def record_attempt(
    tx: Tx, delivery: Delivery, owner: str, attempt: Attempt, now: float, pause_after: float
) -> None:
    """Log the attempt and move the delivery on: delivered, rescheduled or failed."""
    tx.conn.execute(
        "INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, response,"
        " error) VALUES (?, ?, ?, ?, ?, ?)",
        (
            delivery.id,
            now,
            attempt.status_code,
            attempt.latency_ms,
            attempt.response,
            attempt.error,
        ),
    )
    if attempt.delivered:
        status, due = "succeeded", None
    elif attempt.retry_at is not None:
        status, due = "pending", attempt.retry_at
    else:
        status, due = "failed", None
    tx.conn.execute(
        "UPDATE deliveries SET status = ?, next_attempt_at = ?, attempts = attempts + 1,"
        " round = round + ?, last_status_code = ?, last_error = ?, updated_at = ?,"
        " delivered_at = ?, lease_owner = NULL WHERE id = ? AND status = 'pending'",
        (
            status,
            due,
            0 if attempt.throttled else 1,
            attempt.status_code,
            attempt.error,
            now,
            now if attempt.delivered else None,
            delivery.id,
        ),
    )
    if status == "pending":
        tx.signal("deliveries")  # the next one of an ordered destination may be due now
    if delivery.subscription_id is None:
        return
    if attempt.not_before is not None:
        # Written where every process's claim reads it; never moved earlier.
        tx.conn.execute(
            "UPDATE subscriptions SET next_send_at = CASE WHEN next_send_at > ?"
            " THEN next_send_at ELSE ? END WHERE id = ?",
            (attempt.not_before, attempt.not_before, delivery.subscription_id),
        )
    if attempt.delivered:
        tx.conn.execute(
            "UPDATE subscriptions SET failing_since = NULL WHERE id = ?"
            " AND failing_since IS NOT NULL",
            (delivery.subscription_id,),
        )
        return
    tx.conn.execute(
        "UPDATE subscriptions SET failing_since = ? WHERE id = ? AND failing_since IS NULL",
        (now, delivery.subscription_id),
    )
    if attempt.gone:
        pause(tx, delivery.subscription_id, "the subscriber answered 410 Gone", now)
        return
    row = tx.one(
        "SELECT failing_since FROM subscriptions WHERE id = ?", (delivery.subscription_id,)
    )
    if row and row["failing_since"] is not None and now - row["failing_since"] >= pause_after:
        pause(
            tx,
            delivery.subscription_id,
            f"every delivery failed for {pause_after / 86400:g} days",
            now,
        )


def retry_now(tx: Tx, delivery_id: str, now: float) -> Delivery | None:
    """Send a delivery again now, with a fresh retry schedule (not one whose subscription
    was deleted: it has nowhere to go)."""
    found = get_delivery(tx, delivery_id)
    if found is None or found.status == "canceled":
        return found
    tx.conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, round = 0,"
        " lease_owner = NULL, updated_at = ? WHERE id = ?",
        (now, now, delivery_id),
    )
    tx.signal("deliveries")
    return get_delivery(tx, delivery_id)
