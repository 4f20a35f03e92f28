"""Notification bodies for webhooks, Slack, Discord, Teams and Google Chat; message templates."""

from __future__ import annotations

from collections.abc import Callable

from service.notify import discord, google_chat, slack, teams
from service.notify.message import Body, Event, clip, duration, headline, status_emoji
from service.notify.template import (
    MAX_TEMPLATE_CHARS,
    TemplateError,
    render_template,
    validate_template,
)

__all__ = [
    "KINDS",
    "MAX_TEMPLATE_CHARS",
    "Body",
    "Event",
    "TemplateError",
    "clip",
    "duration",
    "google_chat_escape",
    "headline",
    "render",
    "render_template",
    "slack_escape",
    "status_emoji",
    "validate_template",
]

KINDS = ("webhook", "slack", "discord", "teams", "google_chat")

slack_escape = slack.escape
google_chat_escape = google_chat.escape

_RENDERERS: dict[str, Callable[[Event, str | None], Body]] = {
    "slack": slack.render,
    "discord": discord.render,
    "teams": teams.render,
    "google_chat": google_chat.render,
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
