"""The notification every subscriber gets, defined once: its keys, types and JSON Schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast


class NotificationData(TypedDict):
    """A notification's `data`: the job as subscribers see it (SPEC: Outgoing notifications)."""

    id: str
    model: str
    status: str
    progress: float
    outputs: list[dict[str, Any]]
    error: dict[str, Any] | None
    metadata: dict[str, Any]
    provider: str
    provider_job_id: str | None
    cost: float | None
    created_at: str | None
    updated_at: str | None


class Notification(TypedDict):
    """The body a webhook subscriber gets; chat kinds get it rendered in their own format."""

    type: str
    timestamp: str | None
    data: NotificationData


# The one list of the keys: everything else (the job's data, the test event, the templates'
# fields, the OpenAPI schema) is derived from the TypedDict above.
DATA_KEYS: tuple[str, ...] = tuple(NotificationData.__annotations__)
OUTPUT_KEYS = ("url", "media_type")
ERROR_KEYS = ("code", "message")

_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}
_TIME = {"type": "string", "description": "ISO 8601 UTC time, like 2026-11-21T10:00:00Z"}

# JSON Schema of each key of `data`, in the order of DATA_KEYS (a unit test holds them equal).
DATA_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": _STR,
    "model": _STR,
    "status": _STR,
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "outputs": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": _STR,
                "media_type": _NULL_STR,
                # RELAY_ARCHIVE: the copy in the team's storage, once archived
                "archive_url": {"type": ["string", "null"]},
                "archive_status": {"enum": ["pending", "archived", "failed", "deleted"]},
                "archive_error": _STR,
                "sha256": _STR,
                "bytes": {"type": "integer", "minimum": 0},
                "content_type": _STR,
                "width": {"type": "integer", "minimum": 0},
                "height": {"type": "integer", "minimum": 0},
            },
        },
    },
    "error": {
        "type": ["object", "null"],
        "properties": {"code": _STR, "message": _STR},
    },
    "metadata": {"type": "object"},
    "provider": _STR,
    "provider_job_id": _NULL_STR,
    "cost": {"type": ["number", "null"]},
    "created_at": _TIME,
    "updated_at": _TIME,
}


def pick(data: Mapping[str, Any]) -> NotificationData:
    """The notification's keys of an event's data (None where missing); other keys stay out."""
    return cast(NotificationData, {key: data.get(key) for key in DATA_KEYS})
