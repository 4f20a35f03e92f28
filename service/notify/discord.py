"""Discord: an execute-webhook message with one embed, which pings no one."""

from __future__ import annotations

from collections.abc import Sequence

from service.notify import message
from service.notify.message import Body, Event, clip, units
from service.notify.template import message_text

# Discord execute-webhook and embed limits (developers/docs/resources/message#embed-limits).
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_EMBED_TOTAL = 6000

_COLOR = {"job.succeeded": 0x2ECC71, "job.failed": 0xE74C3C, "job.canceled": 0x95A5A6}
_INFO_COLOR = 0x3498DB


def _field(name: str, value: str, budget: int) -> Body | None:
    name = clip(name or "-", MAX_FIELD_NAME)
    room = min(MAX_FIELD_VALUE, budget - units(name))
    # Discord refuses empty field values; a clipped value needs room for more than the ellipsis.
    if room < min(units(value or "-"), 16):
        return None
    return {"name": name, "value": clip(value or "-", room), "inline": True}


def render(event: Event, template: str | None) -> Body:
    """The Discord message for `event`."""
    content = clip(message_text(event, template, message.plain), MAX_CONTENT)
    model = message.field(event, "model")
    heading = message.title(event)
    title = clip(f"{heading}: {model}" if model else heading, MAX_TITLE)
    footer = clip(str(event.get("type") or ""), MAX_FOOTER)
    budget = MAX_EMBED_TOTAL - units(title) - units(footer)
    fields: list[Body] = []
    for name, value in [
        ("Job", message.field(event, "id")),
        ("Status", message.field(event, "status") or message.word(event)),
        ("Duration", message.duration(event)),
        ("Provider", message.field(event, "provider")),
    ]:
        field = _field(name, value, budget) if value else None
        if field:
            fields.append(field)
            budget -= units(field["name"]) + units(field["value"])
    outputs = message.outputs(event)
    lines = [f"[Output {n}]({url})" for n, (url, _) in enumerate(outputs, 1)]
    metadata = message.metadata(event)
    wanted = sum(units(k) + units(v) for k, v in metadata)
    # Keep room for some metadata: a huge error text must not push the tenant off the card.
    room = min(MAX_DESCRIPTION, budget - min(wanted, 1500))
    error = message.error(event)
    if error:
        code, detail = error
        line = f"**Error {code}**: {detail}" if code else f"**Error**: {detail}"
        # ...nor the output links: with outputs, the error gets half the room.
        lines.insert(0, clip(line, room // 2 if outputs else room))
    description = _lines(lines, room)
    budget -= units(description)
    for n, (name, value) in enumerate(metadata):
        if len(fields) == MAX_FIELDS - 1 and n < len(metadata) - 1:
            more = _field("More metadata", f"{len(metadata) - n} more keys", budget)
            if more:
                fields.append(more)
            break
        field = _field(name, value, budget)
        if field is None:
            break
        fields.append(field)
        budget -= units(field["name"]) + units(field["value"])
    embed: Body = {"title": title, "color": _COLOR.get(str(event.get("type")), _INFO_COLOR)}
    if outputs and outputs[0][0].startswith(("https://", "http://")):
        embed["url"] = outputs[0][0]
        if outputs[0][1].startswith("image/"):
            embed["image"] = {"url": outputs[0][0]}
    if description:
        embed["description"] = description
    embed["fields"] = fields
    if footer:
        embed["footer"] = {"text": footer}
    if message.when(event.get("timestamp")):
        embed["timestamp"] = event["timestamp"]
    # Metadata is user text: no @everyone, role or user ping may come out of it.
    return {"content": content, "embeds": [embed], "allowed_mentions": {"parse": []}}


def _lines(lines: Sequence[str], room: int) -> str:
    """Whole lines while they fit (a link is never cut), then how many were left out."""
    out: list[str] = []
    used = 0
    for n, line in enumerate(lines):
        if n == 0 and units(line) > room:
            return clip(line, room) if room > 0 else ""
        rest = len(lines) - n - 1
        tail = units(f"\n…and {rest} more") if rest else 0
        size = (1 if out else 0) + units(line)
        if used + size + tail > room:
            out.append(f"…and {len(lines) - n} more")
            break
        out.append(line)
        used += size
    return clip("\n".join(out), room)
