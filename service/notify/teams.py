"""Microsoft Teams: an Adaptive Card for a Workflows webhook, shrunk until it fits."""

from __future__ import annotations

import json

from service.notify import message
from service.notify.message import Body, Event, clip
from service.notify.template import message_text

# Teams drops Workflows messages over about 28 KB; these caps keep a card well under it.
MAX_BYTES = 28_000
MAX_TEXT = 2000
MAX_FACTS = 30
MAX_FACT_VALUE = 500
MAX_ACTIONS = 5

# (fact value length, metadata facts, output buttons), from generous to bare.
_STEPS = (
    (MAX_FACT_VALUE, MAX_FACTS, MAX_ACTIONS),
    (200, MAX_FACTS, MAX_ACTIONS),
    (60, 10, 2),
    (60, 0, 1),
    (60, 0, 0),
)


def render(event: Event, template: str | None) -> Body:
    """The Teams message for `event`."""
    # Long metadata values and signed URLs can pass the size Teams accepts: shrink until it fits.
    for value_limit, metadata_limit, action_limit in _STEPS:
        card = _message(event, template, value_limit, metadata_limit, action_limit)
        size = len(json.dumps(card, ensure_ascii=False).encode())
        if size <= MAX_BYTES:
            break
    return card


def _message(
    event: Event, template: str | None, value_limit: int, metadata_limit: int, action_limit: int
) -> Body:
    text = clip(message_text(event, template, message.plain), MAX_TEXT)
    body: list[Body] = [
        {"type": "TextBlock", "text": text, "size": "Medium", "weight": "Bolder", "wrap": True}
    ]
    error = message.error(event)
    if error:
        code, detail = error
        text = clip(f"{code}: {detail}" if code else detail, MAX_TEXT)
        body.append({"type": "TextBlock", "text": text, "color": "Attention", "wrap": True})
    facts = [(k, v) for k, v in message.facts(event) if v]
    metadata = message.metadata(event)
    room = min(metadata_limit, MAX_FACTS - len(facts) - 1)
    facts.extend((k, v or "-") for k, v in metadata[:room])
    if len(metadata) > room:
        facts.append(("…", f"{len(metadata) - room} more metadata keys"))
    body.append(
        {
            "type": "FactSet",
            "facts": [{"title": clip(k, 100), "value": clip(v, value_limit)} for k, v in facts],
        }
    )
    outputs = message.outputs(event)
    if len(outputs) > action_limit:
        more = f"…and {len(outputs) - action_limit} more outputs"
        body.append({"type": "TextBlock", "text": more, "isSubtle": True, "wrap": True})
    card: Body = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if outputs and action_limit:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": f"Output {n}", "url": url}
            for n, (url, _) in enumerate(outputs[:action_limit], 1)
        ]
    attachment = {
        "contentType": "application/vnd.microsoft.card.adaptive",
        "contentUrl": None,
        "content": card,
    }
    return {"type": "message", "attachments": [attachment]}
