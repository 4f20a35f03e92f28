"""Subscriptions and the delivery outbox: fan-out inside the event's transaction, leases, log."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import owners, signing
from service.handoff import HANDOFF as HANDOFF
from service.handoff import Fresh as Fresh
from service.handoff import Handoff as Handoff
from service.handoff import hand_off
from service.notification import Notification, NotificationData, pick
from service.store import Event, Job, Tx, iso

# re-exported: the outbox's callers know them as outbox.Subscription and outbox.Delivery
from service.store.records import Delivery as Delivery
from service.store.records import NewDelivery
from service.store.records import Subscription as Subscription

NOTIFY_TYPES = ("job.queued", "job.processing", "job.succeeded", "job.failed", "job.canceled")
# Archiving (RELAY_ARCHIVE): fanned out only to subscriptions that name them (or job.*),
# never to per-job webhooks, never by default.
ARCHIVE_TYPES = ("job.archived", "job.archive_failed")
FAN_OUT_TYPES = frozenset((*NOTIFY_TYPES, *ARCHIVE_TYPES))
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


def new_subscription_id() -> str:
    """A fresh subscription id."""
    return "sub_" + secrets.token_hex(10)


def notification(event: Event) -> Notification:
    """The body every subscriber gets for an event (SPEC: Outgoing notifications)."""
    return {"type": event.type, "timestamp": iso(event.created_at), "data": pick(event.data)}


def default_pace(kind: str) -> tuple[bool, float | None, int]:
    """(ordered, messages per second, in flight) by kind: chat channels get one at a time."""
    if kind == "webhook":
        return False, None, 4
    # Slack documents about one message per second per channel; the others are similar.
    return True, {"discord": 2.0}.get(kind, 1.0), 1


class _Subscriptions:
    """This process's copy of the subscriptions, checked against their version in each unit."""

    __slots__ = ("items", "version")

    def __init__(self) -> None:
        self.version: str | None = None
        self.items: list[Subscription] = []


async def _active(tx: Tx) -> list[Subscription]:
    cached = tx.memo.get("subscriptions")
    if not isinstance(cached, _Subscriptions):
        cached = tx.memo["subscriptions"] = _Subscriptions()
    version = await tx.subscriptions.version()
    if version != cached.version:
        cached.items = await tx.subscriptions.all()
        cached.version = version
    return cached.items


async def append_event(
    tx: Tx,
    job_id: str | None,
    type_: str,
    source: str,
    now: float,
    data: dict[str, Any],
    dedupe: str | None = None,
    job: Job | None = None,
) -> Event | None:
    """Append an event and, in the same transaction, its deliveries: one per matching
    destination. None when the job has an event under `dedupe` already.

    `job` is the job as this event leaves it (it saves the fan-out a query)."""
    event = await tx.events.append(job_id, type_, source, now, data, dedupe)
    if event is None:
        return None
    tx.notify("events")
    if event.job_id is not None and event.type in FAN_OUT_TYPES:
        await _fan_out(tx, event, job)
    return event


async def fanned_out(appended: Sequence[tuple[Tx, Event, Job]]) -> None:
    """What `append_event` does after its insert, for job events appended together
    (`EventsRepo.append_many`): each on its own unit's Tx, the subscriptions read once."""
    if not appended:
        return
    subs = await _active(appended[0][0])
    for tx, event, job in appended:
        tx.notify("events")
        if event.job_id is not None and event.type in NOTIFY_TYPES:
            await _fan_out(tx, event, job, subs)


async def _fan_out(
    tx: Tx, event: Event, job: Job | None, subs: list[Subscription] | None = None
) -> None:
    assert event.job_id is not None  # noqa: S101 - checked by the caller
    rows: list[NewDelivery] = []
    wanted: dict[str, Subscription] = {}
    now = event.created_at
    for sub in await _active(tx) if subs is None else subs:
        if sub.wants(event.type, event.data):
            ordered, _, _ = default_pace(sub.kind)
            wanted[sub.id] = sub
            rows.append(
                NewDelivery(
                    signing.new_message_id(),
                    sub.id,
                    event.job_id,
                    event.id,
                    event.type,
                    sub.kind,
                    None,
                    ordered,
                    now,
                )
            )
    if job is None:
        job = await tx.jobs.get(event.job_id)
    if job is not None and job.webhook:
        names = job.webhook_events or ["completed"]
        if any(event.type in JOB_FILTERS.get(n, ()) for n in names):
            rows.append(
                NewDelivery(
                    signing.new_message_id(),
                    None,
                    event.job_id,
                    event.id,
                    event.type,
                    "webhook",
                    job.webhook,
                    False,
                    now,
                )
            )
    if not rows:
        return
    handoff = tx.memo.get(HANDOFF)
    if isinstance(handoff, Handoff):
        rows = await hand_off(tx, handoff, event, rows, wanted)
    if rows:
        await tx.deliveries.add(rows)
        tx.notify("deliveries")


# -- subscriptions -------------------------------------------------------------------------


async def get_subscription(tx: Tx, sub_id: str) -> Subscription | None:
    """A subscription by id, read inside the transaction."""
    return await tx.subscriptions.get(sub_id)


async def create_subscription(tx: Tx, fields: dict[str, Any], now: float) -> Subscription:
    """Insert a subscription; a webhook one gets a whsec_ secret."""
    _, rate, in_flight = default_pace(fields["kind"])
    sub_id = new_subscription_id()
    await tx.subscriptions.insert(
        Subscription(
            id=sub_id,
            url=fields["url"],
            kind=fields["kind"],
            events=tuple(fields["events"]),
            filter=fields.get("filter") or None,
            template=fields.get("template"),
            description=fields.get("description"),
            secret=signing.new_secret() if fields["kind"] == "webhook" else None,
            old_secret=None,
            old_secret_expires_at=None,
            status="paused" if fields.get("paused") else "active",
            paused_reason=None,
            rate_per_second=fields.get("rate_per_second", rate),
            max_in_flight=fields.get("max_in_flight", in_flight),
            failing_since=None,
            created_at=now,
            updated_at=now,
        )
    )
    await tx.subscriptions.bump()
    sub = await tx.subscriptions.get(sub_id)
    assert sub is not None  # noqa: S101
    return sub


async def update_subscription(
    tx: Tx, sub_id: str, changes: dict[str, Any], now: float
) -> Subscription | None:
    """Apply a PATCH: url, events, filter, template, description, paused."""
    sub = await get_subscription(tx, sub_id)
    if sub is None:
        return None
    sets: dict[str, Any] = {}
    for key in ("url", "template", "description", "rate_per_second", "max_in_flight"):
        if key in changes:
            sets[key] = changes[key]
    if "events" in changes:
        sets["events"] = list(changes["events"])
    if "filter" in changes:
        sets["filter"] = changes["filter"] or None
    if "paused" in changes:
        sets["status"] = "paused" if changes["paused"] else "active"
        sets["paused_reason"] = "by request" if changes["paused"] else None
        if not changes["paused"]:
            sets["failing_since"] = None
    if sets:
        sets["updated_at"] = now
        await tx.subscriptions.update(sub_id, sets)
        await tx.subscriptions.bump()
        if changes.get("paused") is False:
            tx.notify("deliveries")
    return await get_subscription(tx, sub_id)


async def delete_subscription(tx: Tx, sub_id: str, now: float) -> bool:
    """Delete a subscription; its pending deliveries are canceled (kept in the log)."""
    if not await tx.subscriptions.delete(sub_id):
        return False
    await tx.deliveries.cancel_pending(sub_id, now, "subscription deleted")
    await tx.subscriptions.bump()
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


async def service_secret(tx: Tx) -> ServiceSecret:
    """The service-wide secret, made on first use (OR IGNORE: two processes keep one)."""
    values = await tx.subscriptions.service_secret(signing.new_secret())
    until = values.get("webhook_secret_previous_until")
    return ServiceSecret(
        values["webhook_secret"],
        values.get("webhook_secret_previous"),
        float(until) if until else None,
    )


async def rotate_service_secret(tx: Tx, now: float) -> ServiceSecret:
    """A new service-wide secret; the old one keeps signing for 24 hours beside it."""
    old = await service_secret(tx)
    await tx.subscriptions.set_service_secret(
        signing.new_secret(), old.current, now + ROTATION_OVERLAP
    )
    return await service_secret(tx)


async def rotate_secret(tx: Tx, sub_id: str, now: float) -> Subscription | None:
    """A new secret; the old one keeps signing for 24 hours beside it."""
    sub = await get_subscription(tx, sub_id)
    if sub is None or sub.kind != "webhook":
        return sub
    await tx.subscriptions.rotate_secret(sub_id, signing.new_secret(), now + ROTATION_OVERLAP, now)
    await tx.subscriptions.bump()
    return await get_subscription(tx, sub_id)


async def pause(tx: Tx, sub_id: str, reason: str, now: float) -> None:
    """Pause a subscription for a reason of the relay's own and record it as an event."""
    if await tx.subscriptions.pause(sub_id, reason, now):
        await tx.subscriptions.bump()
        await append_event(
            tx,
            None,
            "subscription.paused",
            "system",
            now,
            {"subscription_id": sub_id, "reason": reason},
        )


async def send_test(tx: Tx, sub: Subscription, now: float) -> Delivery:
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
    event = await append_event(
        tx, None, TEST_TYPE, "api", now, {**sample, "subscription_id": sub.id}
    )
    assert event is not None  # noqa: S101
    ordered, _, _ = default_pace(sub.kind)
    delivery_id = signing.new_message_id()
    await tx.deliveries.add(
        [NewDelivery(delivery_id, sub.id, None, event.id, TEST_TYPE, sub.kind, None, ordered, now)]
    )
    tx.notify("deliveries")
    found = await get_delivery(tx, delivery_id)
    assert found is not None  # noqa: S101
    return found


# -- deliveries ----------------------------------------------------------------------------


async def get_delivery(tx: Tx, delivery_id: str) -> Delivery | None:
    """A delivery by id, read inside the transaction."""
    return await tx.deliveries.get(delivery_id)


@dataclass(frozen=True, slots=True)
class Claimed:
    """Deliveries leased for sending, with what is needed to send them."""

    deliveries: list[Delivery]
    subscriptions: dict[str, Subscription]
    events: dict[int, Event]


async def claim(tx: Tx, now: float, limit: int, owner: str, lease: float) -> Claimed:
    """Lease due deliveries (and those leased by a dead owner: its heartbeat stale or its row
    gone): the head only for ordered destinations, never more per subscription than its
    max_in_flight less those in flight, and for a paced one (rate_per_second) one at a time
    and not before its next_send_at, which the same transaction moves on by 1/rate."""
    deliveries = await tx.deliveries.claim(now, limit, owner, lease, owners.alive_after(now))
    if not deliveries:
        return Claimed(deliveries, {}, {})
    sub_ids = {d.subscription_id for d in deliveries if d.subscription_id}
    # A paced subscription's next message waits 1/rate, whichever process claims it.
    await tx.subscriptions.pace(sub_ids, now)
    subs = await tx.subscriptions.by_ids(sub_ids)
    events = await tx.events.by_ids(d.event_id for d in deliveries)
    return Claimed(deliveries, subs, events)


async def release(tx: Tx, owner: str, now: float) -> int:
    """Give up every delivery `owner` has leased (a drain's end): due now, for whoever is next."""
    released = await tx.deliveries.release(owner, now)
    if released:
        tx.notify("deliveries")
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


async def record_attempt(
    tx: Tx, delivery: Delivery, owner: str, attempt: Attempt, now: float, pause_after: float
) -> None:
    """Log the attempt and move the delivery on: delivered, rescheduled or failed."""
    await tx.deliveries.log_attempt(
        delivery.id,
        now,
        attempt.status_code,
        attempt.latency_ms,
        attempt.response,
        attempt.error,
    )
    if attempt.delivered:
        status, due = "succeeded", None
    elif attempt.retry_at is not None:
        status, due = "pending", attempt.retry_at
    else:
        status, due = "failed", None
    await tx.deliveries.settle(
        delivery.id,
        status,
        due,
        not attempt.throttled,
        attempt.status_code,
        attempt.error,
        now,
    )
    if status == "pending":
        tx.notify("deliveries")  # the next one of an ordered destination may be due now
    if delivery.subscription_id is None:
        return
    if attempt.not_before is not None:
        # Written where every process's claim reads it; never moved earlier.
        await tx.subscriptions.not_before(delivery.subscription_id, attempt.not_before)
    if attempt.delivered:
        await tx.subscriptions.succeeded(delivery.subscription_id)
        return
    failing_since = await tx.subscriptions.failed(delivery.subscription_id, now)
    if attempt.gone:
        await pause(tx, delivery.subscription_id, "the subscriber answered 410 Gone", now)
        return
    if failing_since is not None and now - failing_since >= pause_after:
        await pause(
            tx,
            delivery.subscription_id,
            f"every delivery failed for {pause_after / 86400:g} days",
            now,
        )


async def retry_now(tx: Tx, delivery_id: str, now: float) -> Delivery | None:
    """Send a delivery again now, with a fresh retry schedule (not one whose subscription
    was deleted: it has nowhere to go)."""
    found = await get_delivery(tx, delivery_id)
    if found is None or found.status == "canceled":
        return found
    await tx.deliveries.retry(delivery_id, now)
    tx.notify("deliveries")
    return await get_delivery(tx, delivery_id)
