"""A look-alike of the message each chat tool would show, drawn in HTML from the very body
service.notify renders for it: every text escaped, markup turned into tags by pattern only."""

from __future__ import annotations

import html
import re
from typing import Any

from markupsafe import Markup, escape

from service.ui.render import TEMPLATES

# Formatting marks, matched on text that is already HTML-escaped (so no tag can come in).
_BOLD_SLACK = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_BOLD_MD = re.compile(r"\*\*([^*\n]+)\*\*")
_ITALIC = re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])")
_CODE = re.compile(r"`([^`\n]+)`")
# <url|label> (Slack, Google Chat) and [label](url) (Discord)
_ANGLE_LINK = re.compile(r"<([^<>|\s]+)(?:\|([^<>]*))?>")
_MD_LINK = re.compile(r"\[([^\[\]\n]+)\]\((https?://[^()\s]+)\)")
_COLORS = {0x2ECC71: "green", 0xE74C3C: "red", 0x95A5A6: "grey"}


def _link(url: str, label: str) -> Markup:
    if not url.startswith(("https://", "http://")):
        return escape(label or url)
    return Markup('<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>').format(
        url, label or url
    )


def _marks(text: str, bold: re.Pattern[str]) -> Markup:
    """Escape `text`, then bold, italic, strike and code marks as tags."""
    out = str(escape(text))
    out = _CODE.sub(r"<code>\1</code>", out)
    out = bold.sub(r"<strong>\1</strong>", out)
    out = _ITALIC.sub(r"<em>\1</em>", out)
    out = _STRIKE.sub(r"<s>\1</s>", out)
    return Markup(out)  # noqa: S704 - built from escaped text and fixed tags only


def _angle(text: str, unentity: bool) -> Markup:
    """Text with <url|label> links (Slack's entities &amp; &lt; &gt; undone when asked)."""
    parts: list[Markup] = []
    at = 0
    plain = html.unescape if unentity else (lambda s: s)
    for found in _ANGLE_LINK.finditer(text):
        parts.append(_marks(plain(text[at : found.start()]), _BOLD_SLACK))
        parts.append(_link(plain(found[1]), plain(found[2] or "")))
        at = found.end()
    parts.append(_marks(plain(text[at:]), _BOLD_SLACK))
    return Markup("").join(parts)


def slack_mrkdwn(text: Any) -> Markup:
    """Slack mrkdwn as HTML."""
    return _angle(str(text or ""), unentity=True)


def google_chat_text(text: Any) -> Markup:
    """Google Chat message text (*bold*, _italic_, <url|label>) as HTML."""
    return _angle(str(text or ""), unentity=False)


def card_html(text: Any) -> Markup:
    """Google Chat card text: the relay sends it HTML-escaped; shown as the text it stands for."""
    return escape(html.unescape(str(text or "")))


def discord_markdown(text: Any) -> Markup:
    """Discord markdown (**bold**, *italic*, `code`, [label](url)) as HTML."""
    source = str(text or "")
    parts: list[Markup] = []
    at = 0
    for found in _MD_LINK.finditer(source):
        parts.append(_marks(source[at : found.start()], _BOLD_MD))
        parts.append(_link(found[2], found[1]))
        at = found.end()
    parts.append(_marks(source[at:], _BOLD_MD))
    return Markup("").join(parts)


def discord_color(value: Any) -> str:
    """The CSS class of an embed's colour (no inline style: the CSP allows none)."""
    return _COLORS.get(value, "blue") if isinstance(value, int) else "blue"


TEMPLATES.env.filters.update(
    mrkdwn=slack_mrkdwn,
    gchat=google_chat_text,
    cardhtml=card_html,
    discordmd=discord_markdown,
    discordcolor=discord_color,
)


def fragment(kind: str, body: Any) -> str:
    """The HTML of the message `kind`'s tool would show for `body` (service.notify's output)."""
    template = TEMPLATES.env.get_template("_preview.html")
    return template.render(kind=kind, body=body if isinstance(body, dict) else {})
