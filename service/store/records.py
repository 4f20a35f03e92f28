"""What the store holds for the outbox: subscriptions, deliveries and their attempt log."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.store.codec import iso


@dataclass(frozen=True, slots=True)
class Event:
    """An event row: append-only."""

    id: int
    job_id: str | None
    type: str
    source: str
    created_at: float
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        """Decode an events row."""
        return cls(
            row["id"],
            row["job_id"],
            row["type"],
            row["source"],
            row["created_at"],
            json.loads(row["data"]),
        )

    def public(self) -> dict[str, Any]:
        """The event as the API shows it."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "type": self.type,
            "source": self.source,
            "created_at": iso(self.created_at),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription row."""

    id: str
    url: str
    kind: str
    events: tuple[str, ...]
    filter: dict[str, Any] | None
    template: str | None
    description: str | None
    secret: str | None
    old_secret: str | None
    old_secret_expires_at: float | None
    status: str
    paused_reason: str | None
    rate_per_second: float | None
    max_in_flight: int
    failing_since: float | None
    created_at: float
    updated_at: float
    seq: int = 0
    # the earliest time its next message may go (pacing, a 429's Retry-After); not public
    next_send_at: float | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Subscription:
        """Decode a subscriptions row."""
        return cls(
            id=row["id"],
            url=row["url"],
            kind=row["kind"],
            events=tuple(json.loads(row["events"])),
            filter=json.loads(row["filter"]) if row["filter"] else None,
            template=row["template"],
            description=row["description"],
            secret=row["secret"],
            old_secret=row["old_secret"],
            old_secret_expires_at=row["old_secret_expires_at"],
            status=row["status"],
            paused_reason=row["paused_reason"],
            rate_per_second=row["rate_per_second"],
            max_in_flight=row["max_in_flight"],
            failing_since=row["failing_since"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            seq=row["seq"],
            next_send_at=row["next_send_at"],
        )

    def wants(self, event_type: str, data: dict[str, Any]) -> bool:
        """True when this subscription takes an event of this type about this job (a paused
        one too: its deliveries wait and are sent when it resumes)."""
        if event_type not in self.events and "job.*" not in self.events:
            return False
        flt = self.filter or {}
        models = flt.get("models")
        if models and data.get("model") not in models:
            return False
        wanted = flt.get("metadata") or {}
        have = data.get("metadata") or {}
        return all(k in have and str(have[k]) == str(v) for k, v in wanted.items())

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets to sign with: the current one, and the previous one while it overlaps."""
        out = [self.secret] if self.secret else []
        if self.old_secret and (self.old_secret_expires_at or 0) > now:
            out.append(self.old_secret)
        return out

    def public(self, *, with_secret: bool = False) -> dict[str, Any]:
        """The subscription as the API shows it (the secret only when asked)."""
        out: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "kind": self.kind,
            "events": list(self.events),
            "filter": self.filter,
            "template": self.template,
            "description": self.description,
            "status": self.status,
            "paused_reason": self.paused_reason,
            "rate_per_second": self.rate_per_second,
            "max_in_flight": self.max_in_flight,
            "failing_since": iso(self.failing_since),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }
        if with_secret and self.secret:
            out["secret"] = self.secret
            if self.old_secret and self.old_secret_expires_at:
                out["previous_secret_expires_at"] = iso(self.old_secret_expires_at)
        return out


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery row: one event for one destination."""

    seq: int
    id: str
    subscription_id: str | None
    job_id: str | None
    event_id: int
    event_type: str
    kind: str
    url: str | None
    ordered: bool
    status: str
    attempts: int
    round: int
    next_attempt_at: float | None
    last_status_code: int | None
    last_error: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Delivery:
        """Decode a deliveries row."""
        return cls(
            row["seq"],
            row["id"],
            row["subscription_id"],
            row["job_id"],
            row["event_id"],
            row["event_type"],
            row["kind"],
            row["url"],
            bool(row["ordered"]),
            row["status"],
            row["attempts"],
            row["round"],
            row["next_attempt_at"],
            row["last_status_code"],
            row["last_error"],
            row["created_at"],
            row["updated_at"],
            row["delivered_at"],
        )

    def public(self, attempts: Sequence[LoggedAttempt] | None = None) -> dict[str, Any]:
        """The delivery as the API shows it."""
        out: dict[str, Any] = {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "job_id": self.job_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at) if self.status == "pending" else None,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "delivered_at": iso(self.delivered_at),
        }
        if self.url is not None:
            out["url"] = self.url
        if attempts is not None:
            out["attempt_log"] = [a.public() for a in attempts]
        return out


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery to add: pending, due at `created_at`, not yet tried."""

    id: str
    subscription_id: str | None
    job_id: str | None
    event_id: int
    event_type: str
    kind: str
    url: str | None
    ordered: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class LoggedAttempt:
    """One logged send of a delivery."""

    attempted_at: float
    status_code: int | None
    latency_ms: float
    response: str | None
    error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LoggedAttempt:
        """Decode an attempts row."""
        return cls(
            row["attempted_at"],
            row["status_code"],
            row["latency_ms"],
            row["response"],
            row["error"],
        )

    def public(self) -> dict[str, Any]:
        """The attempt as the delivery log shows it."""
        return {
            "at": iso(self.attempted_at),
            "status_code": self.status_code,
            "latency_ms": round(self.latency_ms, 2),
            "response": self.response,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    """A delivery with every attempt at it, oldest first."""

    delivery: Delivery
    attempts: tuple[LoggedAttempt, ...]

    def public(self) -> dict[str, Any]:
        """The delivery as the delivery log shows it."""
        return self.delivery.public(self.attempts)


@dataclass(frozen=True, slots=True)
class Counts:
    """What /metrics reads of the database: rows by status, dropped callbacks, the last event
    id, jobs in flight and held back by provider, and when the oldest pending delivery began."""

    jobs: dict[tuple[str, str], int]  # (provider, status) -> jobs
    deliveries: dict[str, int]  # status -> deliveries
    subscriptions: dict[str, int]  # status -> subscriptions
    callbacks_dropped: int
    last_event_id: int
    in_flight: dict[str, int] = field(default_factory=dict)  # provider -> jobs in flight
    deferred: dict[str, int] = field(default_factory=dict)  # provider -> jobs held back by the cap
    oldest_pending: float | None = None  # created_at of the oldest pending delivery


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune removed (or would remove): rows per table, and the jobs it finished."""

    jobs: int = 0  # jobs left with nothing to prune (their rows stay, marked pruned_at)
    events: int = 0
    deliveries: int = 0
    attempts: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.jobs + other.jobs,
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.attempts + other.attempts,
        )

    @property
    def rows(self) -> int:
        """Rows deleted (the jobs rows are kept, so they are not counted)."""
        return self.events + self.deliveries + self.attempts
