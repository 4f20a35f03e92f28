"""Google Chat: text plus a cardsV2 card (facts, error, metadata, output buttons)."""

from __future__ import annotations

import html

from service.notify import message
from service.notify.message import Body, Event, clip, fit
from service.notify.template import message_text

# Google Chat: text as the relay's contract caps it; a card shows at most 100 widgets.
MAX_TEXT = 4096
MAX_WIDGETS = 100
MAX_BUTTONS = 10
MAX_METADATA = 40
MAX_VALUE = 1000


def escape(text: str) -> str:
    """Neutralise '<' and '>' in Google Chat text: '<users/all>' notifies a whole space."""
    # Chat text has no escape character, so swap in look-alike angle quotes.
    return text.replace("<", "\u2039").replace(">", "\u203a")


def _html(text: str, limit: int = MAX_VALUE) -> str:
    # Card text takes a subset of HTML.
    return fit(text, limit, lambda s: html.escape(s, quote=False))


def render(event: Event, template: str | None) -> Body:
    """The Google Chat message for `event`."""
    text = clip(message_text(event, template, escape), MAX_TEXT)
    widgets: list[Body] = [
        {"decoratedText": {"topLabel": label, "text": _html(value)}}
        for label, value in message.facts(event)
        if value
    ]
    error = message.error(event)
    if error:
        code, detail = error
        widgets.append(
            {
                "decoratedText": {
                    "topLabel": clip(f"Error {code}".strip(), 100),
                    "text": _html(detail or "-"),
                    "wrapText": True,
                }
            }
        )
    metadata = message.metadata(event)
    for key, value in metadata[:MAX_METADATA]:
        widgets.append({"decoratedText": {"topLabel": clip(key, 100), "text": _html(value or "-")}})
    if len(metadata) > MAX_METADATA:
        more = len(metadata) - MAX_METADATA
        widgets.append({"textParagraph": {"text": f"{more} more metadata keys"}})
    outputs = message.outputs(event)
    if outputs:
        buttons = [
            {"text": f"Output {n}", "onClick": {"openLink": {"url": url}}}
            for n, (url, _) in enumerate(outputs[:MAX_BUTTONS], 1)
        ]
        widgets.append({"buttonList": {"buttons": buttons}})
        if len(outputs) > MAX_BUTTONS:
            more = len(outputs) - MAX_BUTTONS
            widgets.append({"textParagraph": {"text": f"…and {more} more outputs"}})
    parts = (message.field(event, "model"), message.field(event, "id"), message.duration(event))
    card = {
        "header": {
            "title": message.title(event),
            "subtitle": clip(" · ".join(p for p in parts if p), 200),
        },
        "sections": [{"widgets": widgets[:MAX_WIDGETS]}],
    }
    card_id = f"{message.field(event, 'id') or 'job'}-{message.word(event)}"
    return {"text": text, "cardsV2": [{"cardId": clip(card_id, 64), "card": card}]}
