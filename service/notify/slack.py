"""Slack: a Block Kit message (header, text, facts, error, output links, metadata, context)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from service.notify import message
from service.notify.message import Body, Event, clip, fit, units
from service.notify.template import message_text

# Slack Block Kit (docs.slack.dev/reference/block-kit): 50 blocks, header 150, text objects 3000,
# section fields 10 of 2000 each, context elements 10.
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_OUTPUTS = 20
MAX_METADATA_FIELDS = 100


def escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn gives meaning to (mentions, links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    # Drop an entity the cut left half-written ('&am…'): Slack would show it raw.
    clipped = clip(text, limit)
    return clipped if clipped == text else re.sub(r"&[a-z]*…$", "…", clipped)


def _section(text: str) -> Body:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _link(url: str, label: str) -> str:
    # '|' ends the URL part of Slack's <url|label> syntax.
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def _pack(lines: Sequence[str], limit: int) -> list[str]:
    """Join lines into chunks of at most `limit` units (a longer line is clipped)."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, limit)
        if current and units(current) + 1 + units(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def render(event: Event, template: str | None) -> Body:
    """The Slack message for `event`."""
    text = _clip(message_text(event, template, escape), MAX_TEXT)
    blocks: list[Body] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(message.title(event), MAX_HEADER)},
        },
        _section(text),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{fit(v, 200, escape)}"}
                for k, v in message.facts(event)
                if v
            ],
        },
    ]
    error = message.error(event)
    if error:
        code, detail = error
        head = f"*Error* `{fit(code or 'error', 100, escape)}`\n"
        body = fit(detail, MAX_TEXT - units(head), escape)
        blocks.append(_section(head + body))
    outputs = message.outputs(event)
    if outputs:
        lines = []
        for n, (url, media_type) in enumerate(outputs[:MAX_OUTPUTS], 1):
            label = f"Output {n}" + (f" ({media_type})" if media_type else "")
            link = _link(url, clip(label, 100))
            # A URL too long for a text object cannot be clipped without breaking it.
            lines.append(link if units(link) <= MAX_TEXT else f"{label}: URL too long")
        if len(outputs) > MAX_OUTPUTS:
            lines.append(f"…and {len(outputs) - MAX_OUTPUTS} more")
        blocks.extend(_section(chunk) for chunk in _pack(lines, MAX_TEXT))
    metadata = message.metadata(event)
    shown = [
        {
            "type": "mrkdwn",
            "text": (head := f"*{fit(k, 150, escape)}*\n")
            + fit(v, MAX_FIELD - units(head), escape),
        }
        for k, v in metadata[:MAX_METADATA_FIELDS]
    ]
    for start in range(0, len(shown), MAX_FIELDS):
        blocks.append({"type": "section", "fields": shown[start : start + MAX_FIELDS]})
    context = [
        f"`{escape(str(event.get('type', '')))}`",
        escape(message.text(event.get("timestamp"))),
    ]
    if len(metadata) > MAX_METADATA_FIELDS:
        context.append(f"{len(metadata) - MAX_METADATA_FIELDS} more metadata keys not shown")
    elements = [{"type": "mrkdwn", "text": _clip(c, MAX_TEXT)} for c in context if c]
    blocks.append({"type": "context", "elements": elements[:MAX_CONTEXT_ELEMENTS]})
    return {"text": text, "blocks": blocks[:MAX_BLOCKS]}
