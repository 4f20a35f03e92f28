"""What every chat message says: the event's fields, headline, duration, emoji; clipping text."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeAlias

Event: TypeAlias = Mapping[str, Any]
Body: TypeAlias = dict[str, Any]

ELLIPSIS = "…"
_EMOJI = {"job.succeeded": "✅", "job.failed": "❌", "job.canceled": "⚪"}
_INFO = "\u2139\ufe0f"  # information source, emoji presentation


def text(value: object) -> str:
    """A value as message text: '' for None, strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def data(event: Event) -> Mapping[str, Any]:
    """The event's `data` ({} when it has none)."""
    found = event.get("data")
    return found if isinstance(found, Mapping) else {}


def field(event: Event, key: str) -> str:
    """One key of the event's data as text."""
    return text(data(event).get(key))


def outputs(event: Event) -> list[tuple[str, str]]:
    """(url, media type) of each output that has a URL."""
    found = data(event).get("outputs")
    if not isinstance(found, list):
        return []
    return [
        (str(o["url"]), str(o.get("media_type") or ""))
        for o in found
        if isinstance(o, Mapping) and isinstance(o.get("url"), str) and o["url"]
    ]


def output_urls(event: Event) -> str:
    """The output URLs, separated by spaces."""
    return " ".join(url for url, _ in outputs(event))


def error(event: Event) -> tuple[str, str] | None:
    """(code, message) of the job's error, or None."""
    found = data(event).get("error")
    if not isinstance(found, Mapping):
        return None
    return text(found.get("code")), text(found.get("message"))


def metadata(event: Event) -> list[tuple[str, str]]:
    """(key, value as text) of the job's metadata."""
    found = data(event).get("metadata")
    if not isinstance(found, Mapping):
        return []
    return [(str(k), text(v)) for k, v in found.items()]


def word(event: Event) -> str:
    """The event type without 'job.': 'succeeded', 'queued', ..."""
    return str(event.get("type") or "event").removeprefix("job.")


def facts(event: Event) -> list[tuple[str, str]]:
    """(label, value) of the job's status, model, id, duration and provider."""
    return [
        ("Status", field(event, "status") or word(event)),
        ("Model", field(event, "model")),
        ("Job", field(event, "id")),
        ("Duration", duration(event)),
        ("Provider", field(event, "provider")),
    ]


def status_emoji(event: Event) -> str:
    """The emoji of the event's outcome: success, failure, cancellation or information."""
    return _EMOJI.get(str(event.get("type")), _INFO)


def when(value: object) -> datetime | None:
    """An ISO 8601 time, or None when `value` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def duration(event: Event) -> str:
    """The job's age at this event (created_at to updated_at), like '14s' or '2m 5s'."""
    start, end = when(data(event).get("created_at")), when(data(event).get("updated_at"))
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return ""
    seconds = int((end - start).total_seconds())
    if seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def title(event: Event) -> str:
    """'✅ Upscale succeeded'."""
    return f"{status_emoji(event)} Upscale {word(event)}"


def headline(event: Event) -> str:
    """One line: '✅ Upscale succeeded · pixazo/seedvr-image · job_abc · 14s'."""
    parts = [title(event), field(event, "model"), field(event, "id"), duration(event)]
    return " · ".join(p for p in parts if p)


def units(value: str) -> int:
    """Length in UTF-16 code units."""
    # The JavaScript-side counters of these tools see astral characters (most emoji) as two,
    # so clipping by them is the safe side.
    return len(value) + sum(1 for ch in value if ord(ch) > 0xFFFF)


def clip(value: str, limit: int) -> str:
    """`value` cut to `limit` UTF-16 units, ending in an ellipsis when cut."""
    if units(value) <= limit:
        return value
    out: list[str] = []
    used = 0
    for ch in value:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit - 1:
            break
        out.append(ch)
    return "".join(out) + ELLIPSIS


def fit(value: str, limit: int, escape: Callable[[str], str]) -> str:
    """`value` clipped and escaped to at most `limit` units."""
    # Clip before escaping so an entity like '&amp;' is never cut in half.
    size = limit
    while True:
        escaped = escape(clip(value, size))
        over = units(escaped) - limit
        if over <= 0:
            return escaped
        if size <= 1:
            return ELLIPSIS
        size = max(1, size - over)


def plain(value: str) -> str:
    """No escaping: for tools whose text has no markup to neutralise."""
    return value
