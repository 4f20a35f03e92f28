"""Notification bodies for webhooks, Slack, Discord, Teams and Google Chat; message templates."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

KINDS = ("webhook", "slack", "discord", "teams", "google_chat")

MAX_TEMPLATE_CHARS = 2000

# Slack Block Kit (docs.slack.dev/reference/block-kit): 50 blocks, header 150, text objects 3000,
# section fields 10 of 2000 each, context elements 10.
MAX_SLACK_BLOCKS = 50
MAX_SLACK_HEADER = 150
MAX_SLACK_TEXT = 3000
MAX_SLACK_FIELDS = 10
MAX_SLACK_FIELD = 2000
MAX_SLACK_CONTEXT_ELEMENTS = 10
MAX_SLACK_OUTPUTS = 20
MAX_SLACK_METADATA_FIELDS = 100

# Discord execute-webhook and embed limits (developers/docs/resources/message#embed-limits).
MAX_DISCORD_CONTENT = 2000
MAX_DISCORD_EMBEDS = 10
MAX_DISCORD_TITLE = 256
MAX_DISCORD_DESCRIPTION = 4096
MAX_DISCORD_FIELDS = 25
MAX_DISCORD_FIELD_NAME = 256
MAX_DISCORD_FIELD_VALUE = 1024
MAX_DISCORD_FOOTER = 2048
MAX_DISCORD_EMBED_TOTAL = 6000

# Teams drops Workflows messages over about 28 KB; these caps keep a card well under it.
MAX_TEAMS_BYTES = 28_000
MAX_TEAMS_TEXT = 2000
MAX_TEAMS_FACTS = 30
MAX_TEAMS_FACT_VALUE = 500
MAX_TEAMS_ACTIONS = 5

# Google Chat: text as the relay's contract caps it; a card shows at most 100 widgets.
MAX_GOOGLE_CHAT_TEXT = 4096
MAX_GOOGLE_CHAT_WIDGETS = 100
MAX_GOOGLE_CHAT_BUTTONS = 10
MAX_GOOGLE_CHAT_METADATA = 40
MAX_GOOGLE_CHAT_VALUE = 1000

Event: TypeAlias = Mapping[str, Any]
Body: TypeAlias = dict[str, Any]

_EMOJI = {"job.succeeded": "✅", "job.failed": "❌", "job.canceled": "⚪"}
_DISCORD_COLOR = {"job.succeeded": 0x2ECC71, "job.failed": 0xE74C3C, "job.canceled": 0x95A5A6}
_DISCORD_INFO_COLOR = 0x3498DB
_ELLIPSIS = "…"
_INFO = "\u2139\ufe0f"  # information source, emoji presentation


# --- templates -------------------------------------------------------------------------------

# Schema of what a placeholder may name: None is a value, a dict an object ("*": any key),
# a one-item list a list of that item.
_Schema: TypeAlias = "dict[str, _Schema] | list[_Schema] | None"
_COMPUTED = ("headline", "duration", "status_emoji", "output_urls")
_FIELDS: dict[str, _Schema] = {
    "type": None,
    "timestamp": None,
    "data": {
        "id": None,
        "model": None,
        "status": None,
        "progress": None,
        "outputs": [{"url": None, "media_type": None}],
        "error": {"code": None, "message": None},
        "metadata": {"*": None},
        "provider": None,
        "provider_job_id": None,
        "created_at": None,
        "updated_at": None,
    },
    **dict.fromkeys(_COMPUTED),
}
# Metadata keys outside this alphabet cannot be named in a template (no quoting syntax yet).
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d+)\]")

_Path: TypeAlias = tuple[str | int, ...]


class TemplateError(ValueError):
    """The message template is not valid."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class _Placeholder:
    path: _Path


def _parse(template: str) -> tuple[list[str | _Placeholder], list[str]]:
    parts: list[str | _Placeholder] = []
    problems: list[str] = []
    if len(template) > MAX_TEMPLATE_CHARS:
        # Checked before parsing: a megabyte template stalled the loop and named every brace.
        return [], [
            f"template is {len(template)} characters long; the limit is {MAX_TEMPLATE_CHARS}"
        ]
    literal: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if template.startswith(("{{", "}}"), i):
            literal.append(ch)
            i += 2
        elif ch == "}":
            problems.append(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
            literal.append(ch)
            i += 1
        elif ch == "{":
            end = template.find("}", i + 1)
            nested = template.find("{", i + 1)
            if end == -1 or -1 < nested < end:
                problems.append(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
                literal.append(ch)
                i += 1
                continue
            path, problem = _parse_path(template[i + 1 : end].strip(), i)
            if problem:
                problems.append(problem)
            else:
                parts.append("".join(literal))
                literal = []
                parts.append(_Placeholder(path))
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    parts.append("".join(literal))
    return [p for p in parts if p != ""], problems


def _parse_path(text: str, position: int) -> tuple[_Path, str | None]:
    where = f"{{{text}}} at position {position}"
    if not text:
        return (), f"empty placeholder '{{}}' at position {position}"
    steps: list[str | int] = []
    i = 0
    while i < len(text):
        if text[i] == "[" and steps:
            index = _INDEX.match(text, i)
            if not index:
                return (), f"bad index in {where}: write [n] with n a whole number, like [0]"
            steps.append(int(index.group(1)))
            i = index.end()
            continue
        if steps and text[i] == ".":
            i += 1
        key = _KEY.match(text, i) if not steps or text[i - 1] == "." else None
        if not key:
            bad = repr(text[i]) if i < len(text) else "end"
            return (), f"bad placeholder {where}: unexpected {bad}; write names like data.model"
        steps.append(key.group(0))
        i = key.end()
    return tuple(steps), _check_path(tuple(steps), where)


def _check_path(path: _Path, where: str) -> str | None:
    node: _Schema = _FIELDS
    seen = ""
    for step in path:
        if isinstance(node, dict) and isinstance(step, str):
            if step not in node and "*" not in node:
                known = ", ".join(k for k in node)
                if not seen:
                    return f"unknown field {step!r} in {where} (known: {known})"
                return f"unknown field {seen}.{step} in {where} (known: {known})"
            node = node.get(step, node.get("*"))
            seen = f"{seen}.{step}" if seen else step
        elif isinstance(node, list) and isinstance(step, int):
            node = node[0]
            seen = f"{seen}[{step}]"
        elif isinstance(node, list):
            return f"{seen} is a list in {where}: index it, like {seen}[0]"
        elif isinstance(step, int):
            return f"{seen} is not a list in {where}: drop the [{step}]"
        else:
            return f"{seen} has no fields in {where}"
    if isinstance(node, dict):
        if "*" in node:
            return f"{seen} is an object in {where}: name one of its keys, like {seen}.tenant"
        return f"{seen} is an object in {where}: name one of {', '.join(node)}"
    if isinstance(node, list):
        hint = "{output_urls}" if seen == "data.outputs" else f"{seen}[0]"
        return f"{seen} is a list in {where}: use {hint}"
    return None


def validate_template(template: str) -> list[str]:
    """Every problem with a message template; an empty list when it is valid."""
    return _parse(template)[1]


def render_template(
    template: str, event: Event, *, escape: Callable[[str], str] | None = None
) -> str:
    """Fill a valid template from the event; missing values render as ''."""
    parts, problems = _parse(template)
    if problems:
        raise TemplateError(problems)
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            value = _text(_lookup(event, part.path))
            out.append(escape(value) if escape else value)
    return "".join(out)


def _lookup(event: Event, path: _Path) -> object:
    name = path[0]
    if name == "headline":
        return headline(event)
    if name == "duration":
        return duration(event)
    if name == "status_emoji":
        return status_emoji(event)
    if name == "output_urls":
        return " ".join(url for url, _ in _outputs(event))
    value: object = event
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, Mapping):
            value = value.get(step)
        else:
            return None
    return value


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- shared pieces -----------------------------------------------------------------------------


def _data(event: Event) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


def _field(event: Event, key: str) -> str:
    return _text(_data(event).get(key))


def _outputs(event: Event) -> list[tuple[str, str]]:
    outputs = _data(event).get("outputs")
    if not isinstance(outputs, list):
        return []
    return [
        (str(o["url"]), str(o.get("media_type") or ""))
        for o in outputs
        if isinstance(o, Mapping) and isinstance(o.get("url"), str) and o["url"]
    ]


def _error(event: Event) -> tuple[str, str] | None:
    error = _data(event).get("error")
    if not isinstance(error, Mapping):
        return None
    return _text(error.get("code")), _text(error.get("message"))


def _metadata(event: Event) -> list[tuple[str, str]]:
    metadata = _data(event).get("metadata")
    if not isinstance(metadata, Mapping):
        return []
    return [(str(k), _text(v)) for k, v in metadata.items()]


def _word(event: Event) -> str:
    return str(event.get("type") or "event").removeprefix("job.")


def status_emoji(event: Event) -> str:
    """The emoji of the event's outcome: success, failure, cancellation or information."""
    return _EMOJI.get(str(event.get("type")), _INFO)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def duration(event: Event) -> str:
    """The job's age at this event (created_at to updated_at), like '14s' or '2m 5s'."""
    start, end = _when(_data(event).get("created_at")), _when(_data(event).get("updated_at"))
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


def _title(event: Event) -> str:
    return f"{status_emoji(event)} Upscale {_word(event)}"


def headline(event: Event) -> str:
    """One line: '✅ Upscale succeeded · pixazo/seedvr-image · job_abc · 14s'."""
    parts = [_title(event), _field(event, "model"), _field(event, "id"), duration(event)]
    return " · ".join(p for p in parts if p)


def _units(text: str) -> int:
    # Count UTF-16 code units: the JavaScript-side counters of these tools see astral
    # characters (most emoji) as two, so clipping by them is the safe side.
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units, ending in an ellipsis when cut."""
    if _units(text) <= limit:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit - 1:
            break
        out.append(ch)
    return "".join(out) + _ELLIPSIS


def _fit(text: str, limit: int, escape: Callable[[str], str]) -> str:
    # Clip before escaping so an entity like '&amp;' is never cut in half.
    size = limit
    while True:
        escaped = escape(clip(text, size))
        over = _units(escaped) - limit
        if over <= 0:
            return escaped
        if size <= 1:
            return _ELLIPSIS
        size = max(1, size - over)


def _message(event: Event, template: str | None, escape: Callable[[str], str]) -> str:
    """The rendered template, or the headline when there is none (or it renders blank)."""
    if template:
        try:
            text = render_template(template, event, escape=escape)
        except TemplateError:
            # A stored template that no longer validates must not block delivery forever.
            text = ""
        if text.strip():
            return text
    return escape(headline(event))


def _plain(text: str) -> str:
    return text


# --- Slack -----------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn gives meaning to (mentions, links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_clip(text: str, limit: int) -> str:
    # Drop an entity the cut left half-written ('&am…'): Slack would show it raw.
    clipped = clip(text, limit)
    return clipped if clipped == text else re.sub(r"&[a-z]*…$", "…", clipped)


def _slack_section(text: str) -> Body:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _slack_link(url: str, label: str) -> str:
    # '|' ends the URL part of Slack's <url|label> syntax.
    return f"<{slack_escape(url).replace('|', '%7C')}|{slack_escape(label)}>"


def _pack(lines: Sequence[str], limit: int) -> list[str]:
    """Join lines into chunks of at most `limit` units (a longer line is clipped)."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, limit)
        if current and _units(current) + 1 + _units(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def _render_slack(event: Event, template: str | None) -> Body:
    text = _slack_clip(_message(event, template, slack_escape), MAX_SLACK_TEXT)
    facts = [
        ("Status", _field(event, "status") or _word(event)),
        ("Model", _field(event, "model")),
        ("Job", _field(event, "id")),
        ("Duration", duration(event)),
        ("Provider", _field(event, "provider")),
    ]
    blocks: list[Body] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": clip(_title(event), MAX_SLACK_HEADER)},
        },
        _slack_section(text),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{_fit(v, 200, slack_escape)}"}
                for k, v in facts
                if v
            ],
        },
    ]
    error = _error(event)
    if error:
        code, message = error
        head = f"*Error* `{_fit(code or 'error', 100, slack_escape)}`\n"
        body = _fit(message, MAX_SLACK_TEXT - _units(head), slack_escape)
        blocks.append(_slack_section(head + body))
    outputs = _outputs(event)
    if outputs:
        lines = []
        for n, (url, media_type) in enumerate(outputs[:MAX_SLACK_OUTPUTS], 1):
            label = f"Output {n}" + (f" ({media_type})" if media_type else "")
            link = _slack_link(url, clip(label, 100))
            # A URL too long for a text object cannot be clipped without breaking it.
            lines.append(link if _units(link) <= MAX_SLACK_TEXT else f"{label}: URL too long")
        if len(outputs) > MAX_SLACK_OUTPUTS:
            lines.append(f"…and {len(outputs) - MAX_SLACK_OUTPUTS} more")
        blocks.extend(_slack_section(chunk) for chunk in _pack(lines, MAX_SLACK_TEXT))
    metadata = _metadata(event)
    shown = [
        {
            "type": "mrkdwn",
            "text": (head := f"*{_fit(k, 150, slack_escape)}*\n")
            + _fit(v, MAX_SLACK_FIELD - _units(head), slack_escape),
        }
        for k, v in metadata[:MAX_SLACK_METADATA_FIELDS]
    ]
    for start in range(0, len(shown), MAX_SLACK_FIELDS):
        blocks.append({"type": "section", "fields": shown[start : start + MAX_SLACK_FIELDS]})
    context = [
        f"`{slack_escape(str(event.get('type', '')))}`",
        slack_escape(_text(event.get("timestamp"))),
    ]
    if len(metadata) > MAX_SLACK_METADATA_FIELDS:
        context.append(f"{len(metadata) - MAX_SLACK_METADATA_FIELDS} more metadata keys not shown")
    elements = [{"type": "mrkdwn", "text": _slack_clip(c, MAX_SLACK_TEXT)} for c in context if c]
    blocks.append({"type": "context", "elements": elements[:MAX_SLACK_CONTEXT_ELEMENTS]})
    return {"text": text, "blocks": blocks[:MAX_SLACK_BLOCKS]}


# --- Discord -------------------------------------------------------------------------------


def _discord_field(name: str, value: str, budget: int) -> Body | None:
    name = clip(name or "-", MAX_DISCORD_FIELD_NAME)
    room = min(MAX_DISCORD_FIELD_VALUE, budget - _units(name))
    # Discord refuses empty field values; a clipped value needs room for more than the ellipsis.
    if room < min(_units(value or "-"), 16):
        return None
    return {"name": name, "value": clip(value or "-", room), "inline": True}


def _render_discord(event: Event, template: str | None) -> Body:
    content = clip(_message(event, template, _plain), MAX_DISCORD_CONTENT)
    model = _field(event, "model")
    title = clip(f"{_title(event)}: {model}" if model else _title(event), MAX_DISCORD_TITLE)
    footer = clip(str(event.get("type") or ""), MAX_DISCORD_FOOTER)
    budget = MAX_DISCORD_EMBED_TOTAL - _units(title) - _units(footer)
    fields: list[Body] = []
    for name, value in [
        ("Job", _field(event, "id")),
        ("Status", _field(event, "status") or _word(event)),
        ("Duration", duration(event)),
        ("Provider", _field(event, "provider")),
    ]:
        field = _discord_field(name, value, budget) if value else None
        if field:
            fields.append(field)
            budget -= _units(field["name"]) + _units(field["value"])
    outputs = _outputs(event)
    lines = [f"[Output {n}]({url})" for n, (url, _) in enumerate(outputs, 1)]
    metadata = _metadata(event)
    wanted = sum(_units(k) + _units(v) for k, v in metadata)
    # Keep room for some metadata: a huge error text must not push the tenant off the card.
    room = min(MAX_DISCORD_DESCRIPTION, budget - min(wanted, 1500))
    error = _error(event)
    if error:
        code, message = error
        line = f"**Error {code}**: {message}" if code else f"**Error**: {message}"
        # ...nor the output links: with outputs, the error gets half the room.
        lines.insert(0, clip(line, room // 2 if outputs else room))
    description = _discord_lines(lines, room)
    budget -= _units(description)
    for n, (name, value) in enumerate(metadata):
        if len(fields) == MAX_DISCORD_FIELDS - 1 and n < len(metadata) - 1:
            more = _discord_field("More metadata", f"{len(metadata) - n} more keys", budget)
            if more:
                fields.append(more)
            break
        field = _discord_field(name, value, budget)
        if field is None:
            break
        fields.append(field)
        budget -= _units(field["name"]) + _units(field["value"])
    embed: Body = {
        "title": title,
        "color": _DISCORD_COLOR.get(str(event.get("type")), _DISCORD_INFO_COLOR),
    }
    if outputs and outputs[0][0].startswith(("https://", "http://")):
        embed["url"] = outputs[0][0]
        if outputs[0][1].startswith("image/"):
            embed["image"] = {"url": outputs[0][0]}
    if description:
        embed["description"] = description
    embed["fields"] = fields
    if footer:
        embed["footer"] = {"text": footer}
    if _when(event.get("timestamp")):
        embed["timestamp"] = event["timestamp"]
    # Metadata is user text: no @everyone, role or user ping may come out of it.
    return {"content": content, "embeds": [embed], "allowed_mentions": {"parse": []}}


def _discord_lines(lines: Sequence[str], room: int) -> str:
    """Whole lines while they fit (a link is never cut), then how many were left out."""
    out: list[str] = []
    used = 0
    for n, line in enumerate(lines):
        if n == 0 and _units(line) > room:
            return clip(line, room) if room > 0 else ""
        rest = len(lines) - n - 1
        tail = _units(f"\n…and {rest} more") if rest else 0
        size = (1 if out else 0) + _units(line)
        if used + size + tail > room:
            out.append(f"…and {len(lines) - n} more")
            break
        out.append(line)
        used += size
    return clip("\n".join(out), room)


# --- Microsoft Teams -----------------------------------------------------------------------


def _render_teams(event: Event, template: str | None) -> Body:
    # Long metadata values and signed URLs can pass the size Teams accepts: shrink until it fits.
    for value_limit, metadata_limit, action_limit in _TEAMS_STEPS:
        message = _teams_message(event, template, value_limit, metadata_limit, action_limit)
        size = len(json.dumps(message, ensure_ascii=False).encode())
        if size <= MAX_TEAMS_BYTES:
            break
    return message


_TEAMS_STEPS = (
    (MAX_TEAMS_FACT_VALUE, MAX_TEAMS_FACTS, MAX_TEAMS_ACTIONS),
    (200, MAX_TEAMS_FACTS, MAX_TEAMS_ACTIONS),
    (60, 10, 2),
    (60, 0, 1),
    (60, 0, 0),
)


def _teams_message(
    event: Event, template: str | None, value_limit: int, metadata_limit: int, action_limit: int
) -> Body:
    text = clip(_message(event, template, _plain), MAX_TEAMS_TEXT)
    body: list[Body] = [
        {"type": "TextBlock", "text": text, "size": "Medium", "weight": "Bolder", "wrap": True}
    ]
    error = _error(event)
    if error:
        code, message = error
        text = clip(f"{code}: {message}" if code else message, MAX_TEAMS_TEXT)
        body.append({"type": "TextBlock", "text": text, "color": "Attention", "wrap": True})
    facts = [
        ("Status", _field(event, "status") or _word(event)),
        ("Model", _field(event, "model")),
        ("Job", _field(event, "id")),
        ("Duration", duration(event)),
        ("Provider", _field(event, "provider")),
    ]
    facts = [(k, v) for k, v in facts if v]
    metadata = _metadata(event)
    room = min(metadata_limit, MAX_TEAMS_FACTS - len(facts) - 1)
    facts.extend((k, v or "-") for k, v in metadata[:room])
    if len(metadata) > room:
        facts.append(("…", f"{len(metadata) - room} more metadata keys"))
    body.append(
        {
            "type": "FactSet",
            "facts": [{"title": clip(k, 100), "value": clip(v, value_limit)} for k, v in facts],
        }
    )
    outputs = _outputs(event)
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


# --- Google Chat ---------------------------------------------------------------------------


def google_chat_escape(text: str) -> str:
    """Neutralise '<' and '>' in Google Chat text: '<users/all>' notifies a whole space."""
    # Chat text has no escape character, so swap in look-alike angle quotes.
    return text.replace("<", "\u2039").replace(">", "\u203a")


def _gchat_html(text: str, limit: int = MAX_GOOGLE_CHAT_VALUE) -> str:
    # Card text takes a subset of HTML.
    return _fit(text, limit, lambda s: html.escape(s, quote=False))


def _render_google_chat(event: Event, template: str | None) -> Body:
    text = clip(_message(event, template, google_chat_escape), MAX_GOOGLE_CHAT_TEXT)
    widgets: list[Body] = []
    for label, value in [
        ("Status", _field(event, "status") or _word(event)),
        ("Model", _field(event, "model")),
        ("Job", _field(event, "id")),
        ("Duration", duration(event)),
        ("Provider", _field(event, "provider")),
    ]:
        if value:
            widgets.append({"decoratedText": {"topLabel": label, "text": _gchat_html(value)}})
    error = _error(event)
    if error:
        code, message = error
        widgets.append(
            {
                "decoratedText": {
                    "topLabel": clip(f"Error {code}".strip(), 100),
                    "text": _gchat_html(message or "-"),
                    "wrapText": True,
                }
            }
        )
    metadata = _metadata(event)
    for key, value in metadata[:MAX_GOOGLE_CHAT_METADATA]:
        widgets.append(
            {"decoratedText": {"topLabel": clip(key, 100), "text": _gchat_html(value or "-")}}
        )
    if len(metadata) > MAX_GOOGLE_CHAT_METADATA:
        more = len(metadata) - MAX_GOOGLE_CHAT_METADATA
        widgets.append({"textParagraph": {"text": f"{more} more metadata keys"}})
    outputs = _outputs(event)
    if outputs:
        buttons = [
            {"text": f"Output {n}", "onClick": {"openLink": {"url": url}}}
            for n, (url, _) in enumerate(outputs[:MAX_GOOGLE_CHAT_BUTTONS], 1)
        ]
        widgets.append({"buttonList": {"buttons": buttons}})
        if len(outputs) > MAX_GOOGLE_CHAT_BUTTONS:
            more = len(outputs) - MAX_GOOGLE_CHAT_BUTTONS
            widgets.append({"textParagraph": {"text": f"…and {more} more outputs"}})
    subtitle = " · ".join(
        p for p in (_field(event, "model"), _field(event, "id"), duration(event)) if p
    )
    card = {
        "header": {"title": _title(event), "subtitle": clip(subtitle, 200)},
        "sections": [{"widgets": widgets[:MAX_GOOGLE_CHAT_WIDGETS]}],
    }
    card_id = f"{_field(event, 'id') or 'job'}-{_word(event)}"
    return {"text": text, "cardsV2": [{"cardId": clip(card_id, 64), "card": card}]}


# --- entry point ---------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[Event, str | None], Body]] = {
    "slack": _render_slack,
    "discord": _render_discord,
    "teams": _render_teams,
    "google_chat": _render_google_chat,
}


def render(kind: str, event: Event, template: str | None = None) -> Body:
    """The JSON body to send a subscription of `kind` for `event`."""
    if kind == "webhook":
        # Standard Webhooks receivers verify the event exactly as the spec defines it.
        return dict(event)
    renderer = _RENDERERS.get(kind)
    if renderer is None:
        raise ValueError(f"unknown subscription kind {kind!r}; expected one of {', '.join(KINDS)}")
    return renderer(event, template)
