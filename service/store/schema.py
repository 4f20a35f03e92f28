"""What both engines' adapters share about the schema: migration files, the columns a change
may set, and the values of a new row (only the SQL text and its placeholders differ)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from service.errors import StorageUnavailable
from service.jobs import Status
from service.store.codec import dumps
from service.store.records import NewDelivery, Subscription

# meta keys: the subscriptions' version, and the service-wide secret with its predecessor
VERSION_KEY = "subscriptions_version"
SERVICE_KEYS = ("webhook_secret", "webhook_secret_previous", "webhook_secret_previous_until")

# The columns `update` may set; their names go into the statement, so never from input.
JOB_SETTABLE = frozenset(
    {
        "status",
        "progress",
        "outputs",
        "error",
        "provider_job_id",
        "cost",
        "updated_at",
        "finished_at",
        "next_poll_at",
        "poll_attempt",
        "poll_errors",
        "callback_status",
        "lease_owner",
        "lease_expires_at",
    }
)
_JOB_JSON = frozenset({"outputs", "error"})
SUBSCRIPTION_SETTABLE = frozenset(
    {
        "url",
        "template",
        "description",
        "rate_per_second",
        "max_in_flight",
        "events",
        "filter",
        "status",
        "paused_reason",
        "failing_since",
        "updated_at",
    }
)
SUBSCRIPTION_COLUMNS = (
    "id, url, kind, events, filter, template, description, secret, status, rate_per_second,"
    " max_in_flight, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, subscription_id, job_id, event_id, event_type, kind, url, ordered, next_attempt_at,"
    " lease_owner, created_at, updated_at"
)


def migrations(package: str) -> list[tuple[int, str]]:
    """The numbered `NNN_name.sql` files of an adapter's `migrations` folder, in order."""
    folder = resources.files(package) / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql") and entry.name[:3].isdigit():
            found.append((int(entry.name[:3]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def refuse_newer(version: int, known: Sequence[tuple[int, str]]) -> None:
    """Refuse a database that a newer release migrated: this one would misread and damage it."""
    latest = known[-1][0] if known else 0
    if version > latest:
        raise StorageUnavailable(
            f"its schema is version {version}, newer than this upscale-relay knows ({latest}):"
            " a newer release upgraded it, and downgrades are not supported; run that release,"
            " or restore the backup taken before the upgrade"
        )


def states_before(status: Status) -> str:
    """The unfinished states ranked below `status`, quoted for an `IN (...)` list."""
    return ", ".join(f"'{s}'" for s in Status if not s.terminal and s.rank < status.rank)


def job_sets(sets: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """The column names and stored values of a job change; ValueError for an unknown one."""
    unknown = set(sets) - JOB_SETTABLE
    if unknown:
        raise ValueError(f"not a settable job column: {sorted(unknown)}")
    return list(sets), [dumps(v) if k in _JOB_JSON else v for k, v in sets.items()]


def subscription_sets(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription change as stored values (events a list, filter a dict or None)."""
    sets: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in SUBSCRIPTION_SETTABLE:
            raise ValueError(f"not a settable subscription field: {key}")
        if key == "events":
            value = dumps(value)
        elif key == "filter":
            value = dumps(value) if value else None
        sets[key] = value
    return sets


def subscription_values(sub: Subscription) -> tuple[Any, ...]:
    """A new subscription's values, in SUBSCRIPTION_COLUMNS' order."""
    return (
        sub.id,
        sub.url,
        sub.kind,
        dumps(list(sub.events)),
        dumps(sub.filter) if sub.filter else None,
        sub.template,
        sub.description,
        sub.secret,
        sub.status,
        sub.rate_per_second,
        sub.max_in_flight,
        sub.created_at,
        sub.updated_at,
    )


def delivery_values(
    new: Sequence[NewDelivery], lease: tuple[str, float] | None
) -> Iterable[tuple[Any, ...]]:
    """New deliveries' values, in DELIVERY_COLUMNS' order: due at once, or with `lease`
    (owner, until) leased to that owner until then, as a claim would have left them."""
    owner, until = lease if lease is not None else (None, None)
    return [
        (
            d.id,
            d.subscription_id,
            d.job_id,
            d.event_id,
            d.event_type,
            d.kind,
            d.url,
            int(d.ordered),
            d.created_at if until is None else until,
            owner,
            d.created_at,
            d.created_at,
        )
        for d in new
    ]
