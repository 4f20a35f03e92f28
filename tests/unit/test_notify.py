"""Unit tests of notification bodies and message templates, checked against each tool's limits."""

from __future__ import annotations

import ast
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from service import notification, notify
from service.notify import discord, google_chat, slack, teams
from service.sim import chat

CHAT_KINDS = ("slack", "discord", "teams", "google_chat")
MENTIONS = "@everyone @here <!channel> <!here> <@U123> <users/all> <@&42>"


def make_event(type_: str = "job.succeeded", **data: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "job_abc",
        "model": "pixazo/seedvr-image",
        "status": type_.removeprefix("job."),
        "progress": 1.0,
        "outputs": [
            {"url": "https://cdn.example.com/out.png?sig=a&b=c", "media_type": "image/png"}
        ],
        "error": None,
        "metadata": {"tenant": "acme", "priority": 3, "rush": True},
        "provider": "pixazo",
        "provider_job_id": "req_123",
        "created_at": "2026-11-21T09:59:46Z",
        "updated_at": "2026-11-21T10:00:00Z",
    }
    base.update(data)
    return {"type": type_, "timestamp": "2026-11-21T10:00:00Z", "data": base}


def failed(message: str = "upscaler ran out of memory", code: str = "provider_error") -> Any:
    return make_event("job.failed", outputs=[], error={"code": code, "message": message})


def extreme() -> dict[str, Any]:
    """Everything at once: long metadata, 30 long outputs, a huge error, mention strings."""
    metadata: dict[str, Any] = {f"key_{n}_" + "k" * 300: MENTIONS + "v" * 5000 for n in range(60)}
    metadata["tenant"] = MENTIONS
    outputs = [
        {"url": f"https://cdn.example.com/{n}.png?sig=" + "s" * 1500, "media_type": "image/png"}
        for n in range(30)
    ]
    error = {"code": "E" * 500, "message": ("<!channel> & huge " * 10_000)}
    return make_event(
        "job.failed", model="m" * 400, id="job_" + "x" * 300, outputs=outputs, error=error,
        metadata=metadata,
    )  # fmt: skip


EXTREMES = {
    "plain": make_event(),
    "failed": failed(),
    "canceled": make_event("job.canceled", outputs=[]),
    "queued": make_event("job.queued", outputs=[], progress=0),
    "test": make_event("job.test"),
    "long_metadata": make_event(metadata={f"k{n}": "v" * 3000 for n in range(200)}),
    "thirty_outputs": make_event(
        outputs=[
            {"url": f"https://cdn.example.com/{n}.mp4", "media_type": "video/mp4"}
            for n in range(30)
        ]
    ),
    "huge_error": failed("boom " * 50_000),
    "mentions": make_event(metadata={"who": MENTIONS, MENTIONS: MENTIONS}),
    "astral": make_event(metadata={"fire": "🔥" * 3000}),
    "empty": {"type": "job.succeeded", "timestamp": "2026-11-21T10:00:00Z", "data": {}},
    "extreme": extreme(),
}


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- headline, duration, clip -----------------------------------------------------------------


def test_headline_matches_the_spec_example() -> None:
    assert (
        notify.headline(make_event())
        == "✅ Upscale succeeded · pixazo/seedvr-image · job_abc · 14s"
    )


@pytest.mark.parametrize(
    ("type_", "emoji"),
    [
        ("job.succeeded", "✅"),
        ("job.failed", "❌"),
        ("job.canceled", "⚪"),
        ("job.queued", "ℹ️"),  # noqa: RUF001 - the emoji itself
        ("job.processing", "ℹ️"),  # noqa: RUF001
        ("job.test", "ℹ️"),  # noqa: RUF001
    ],
)
def test_headline_emoji_and_word(type_: str, emoji: str) -> None:
    line = notify.headline(make_event(type_))
    assert line.startswith(f"{emoji} Upscale {type_.removeprefix('job.')} · ")
    assert notify.status_emoji(make_event(type_)) == emoji


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-21T10:00:00Z", "2026-11-21T10:00:00Z", "0s"),
        ("2026-11-21T10:00:00Z", "2026-11-21T10:02:05Z", "2m 5s"),
        ("2026-11-21T10:00:00Z", "2026-11-21T11:03:59Z", "1h 3m"),
        ("2026-11-20T08:00:00Z", "2026-11-21T10:00:00Z", "1d 2h"),
        ("2026-11-21T10:00:00Z", "2026-11-21T09:00:00Z", ""),
        ("2026-11-21T10:00:00Z", "not a date", ""),
        ("2026-11-21T10:00:00", "2026-11-21T10:00:01Z", ""),
        (None, "2026-11-21T10:00:00Z", ""),
    ],
)
def test_duration(start: str | None, end: str, expected: str) -> None:
    assert notify.duration(make_event(created_at=start, updated_at=end)) == expected


def test_headline_skips_missing_parts() -> None:
    assert notify.headline({"type": "job.failed"}) == "❌ Upscale failed"
    assert notify.headline({}) == "ℹ️ Upscale event"  # noqa: RUF001


def test_clip_counts_utf16_units_and_marks_the_cut() -> None:
    assert notify.clip("abc", 3) == "abc"
    assert notify.clip("abcd", 3) == "ab…"
    assert notify.clip("🔥🔥🔥", 6) == "🔥🔥🔥"
    clipped = notify.clip("🔥🔥🔥", 5)
    assert clipped == "🔥🔥…" and units(clipped) == 5


def imports(path: Path) -> set[str]:
    return {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }


def test_notify_stays_pure() -> None:
    files = [*Path(notify.__file__).parent.glob("*.py"), Path(notification.__file__)]
    assert len(files) == 8
    for path in files:
        imported = imports(path)
        assert not {name.split(".")[0] for name in imported} & {
            "httpx",
            "starlette",
            "aiosqlite",
            "sqlite3",
            "uvicorn",
        }, path
        # Within the service, only the keys module and the package's own modules.
        inside = {n for n in imported if n.split(".")[0] == "service"}
        assert inside <= {"service", "service.notify", "service.notification"} | {
            f"service.notify.{p.stem}" for p in files
        }, path


# --- render: every kind within every limit ----------------------------------------------------


def test_webhook_body_is_the_event() -> None:
    event = make_event()
    assert notify.render("webhook", event) == event
    assert notify.render("webhook", event, "{data.id}") == event


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown subscription kind 'sms'"):
        notify.render("sms", make_event())


def test_kinds_constant() -> None:
    assert notify.KINDS == ("webhook", "slack", "discord", "teams", "google_chat")


@pytest.mark.parametrize("kind", CHAT_KINDS)
@pytest.mark.parametrize("name", list(EXTREMES))
def test_every_body_is_accepted_by_the_tool(kind: str, name: str) -> None:
    event = copy.deepcopy(EXTREMES[name])
    body = notify.render(kind, event)
    assert chat.check(kind, body) == []
    assert event == EXTREMES[name], "render must not change the event"
    json.dumps(body)  # serialisable as is


@pytest.mark.parametrize("kind", CHAT_KINDS)
def test_template_bodies_are_accepted_too(kind: str) -> None:
    template = "{headline} {data.error.message} {output_urls} {data.metadata.tenant} " * 20
    body = notify.render(kind, extreme(), template)
    assert chat.check(kind, body) == []


def test_slack_layout() -> None:
    body = notify.render("slack", make_event())
    assert body["text"] == notify.headline(make_event())
    blocks = body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "✅ Upscale succeeded"},
    }
    text = json.dumps(blocks, ensure_ascii=False)
    assert "<https://cdn.example.com/out.png?sig=a&amp;b=c|Output 1 (image/png)>" in text
    assert "*tenant*\\nacme" in text and "*priority*\\n3" in text and "*rush*\\ntrue" in text
    assert blocks[-1]["type"] == "context"


def test_slack_escapes_user_text_and_mentions() -> None:
    event = make_event(metadata={"<@U1>": MENTIONS}, model="a&b<c>")
    body = notify.render("slack", event)
    raw = json.dumps(body)
    for mention in ("<!channel>", "<!here>", "<@U123>", "<@U1>", "a&b<c>"):
        assert mention not in raw
    assert "&lt;!channel&gt;" in raw and "a&amp;b&lt;c&gt;" in raw


def test_slack_failure_shows_the_error() -> None:
    body = notify.render("slack", failed("disk <full> & sad"))
    sections = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section" and "text" in b]
    assert "*Error* `provider_error`\ndisk &lt;full&gt; &amp; sad" in sections


def test_slack_at_the_limits() -> None:
    body = notify.render("slack", extreme())
    blocks = body["blocks"]
    assert len(blocks) <= slack.MAX_BLOCKS
    assert units(body["text"]) <= slack.MAX_TEXT
    for block in blocks:
        if block["type"] == "section":
            assert len(block.get("fields", [])) <= slack.MAX_FIELDS
            assert all(units(f["text"]) <= slack.MAX_FIELD for f in block.get("fields", []))
            if "text" in block:
                assert units(block["text"]["text"]) <= slack.MAX_TEXT
    error = next(b for b in blocks if b.get("text", {}).get("text", "").startswith("*Error*"))
    assert error["text"]["text"].endswith("…")
    assert not error["text"]["text"].endswith(("&…", "&a…", "&am…", "&amp…", "&lt…", "&l…"))


def test_slack_lists_thirty_outputs_with_a_remainder() -> None:
    body = notify.render("slack", EXTREMES["thirty_outputs"])
    text = json.dumps(body["blocks"])
    assert "Output 20" in text and "Output 21" not in text
    assert "…and 10 more" in json.dumps(body["blocks"], ensure_ascii=False)


def test_slack_keeps_an_over_long_url_out_of_the_link() -> None:
    event = make_event(outputs=[{"url": "https://x.example/" + "a" * 4000, "media_type": ""}])
    body = notify.render("slack", event)
    assert "Output 1: URL too long" in json.dumps(body)
    assert chat.check("slack", body) == []


def test_slack_link_keeps_pipes_out_of_the_url() -> None:
    event = make_event(outputs=[{"url": "https://x.example/a|b", "media_type": "image/png"}])
    assert "<https://x.example/a%7Cb|Output 1 (image/png)>" in json.dumps(
        notify.render("slack", event)
    )


def test_discord_layout() -> None:
    body = notify.render("discord", make_event())
    assert body["content"] == notify.headline(make_event())
    assert body["allowed_mentions"] == {"parse": []}
    [embed] = body["embeds"]
    assert embed["title"] == "✅ Upscale succeeded: pixazo/seedvr-image"
    assert embed["color"] == 0x2ECC71
    assert embed["url"] == "https://cdn.example.com/out.png?sig=a&b=c"
    assert embed["image"] == {"url": embed["url"]}
    assert embed["timestamp"] == "2026-11-21T10:00:00Z"
    assert embed["footer"] == {"text": "job.succeeded"}
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Job"] == "job_abc" and fields["Duration"] == "14s"
    assert fields["tenant"] == "acme" and fields["rush"] == "true"
    assert "[Output 1](https://cdn.example.com/out.png?sig=a&b=c)" in embed["description"]


@pytest.mark.parametrize(
    ("event", "color"),
    [
        (failed(), 0xE74C3C),
        (make_event("job.canceled"), 0x95A5A6),
        (make_event("job.queued"), 0x3498DB),
    ],
)
def test_discord_colors(event: dict[str, Any], color: int) -> None:
    assert notify.render("discord", event)["embeds"][0]["color"] == color


def embed_size(embed: dict[str, Any]) -> int:
    parts = [
        embed.get("title", ""),
        embed.get("description", ""),
        embed.get("footer", {}).get("text", ""),
    ]
    parts += [f["name"] + f["value"] for f in embed.get("fields", [])]
    return sum(units(p) for p in parts)


def test_discord_at_the_limits() -> None:
    body = notify.render("discord", extreme())
    assert units(body["content"]) <= discord.MAX_CONTENT
    assert len(body["embeds"]) <= discord.MAX_EMBEDS
    embed = body["embeds"][0]
    assert units(embed["title"]) <= discord.MAX_TITLE and embed["title"].endswith("…")
    assert units(embed["description"]) <= discord.MAX_DESCRIPTION
    assert len(embed["fields"]) <= discord.MAX_FIELDS
    for field in embed["fields"]:
        assert units(field["name"]) <= discord.MAX_FIELD_NAME
        assert 0 < units(field["value"]) <= discord.MAX_FIELD_VALUE
    assert embed_size(embed) <= discord.MAX_EMBED_TOTAL


def test_discord_huge_error_is_clipped_but_metadata_stays() -> None:
    event = failed("boom " * 50_000)
    embed = notify.render("discord", event)["embeds"][0]
    assert embed["description"].startswith("**Error provider_error**: boom boom")
    assert embed["description"].endswith("…")
    assert {"name": "tenant", "value": "acme", "inline": True} in embed["fields"]


def test_discord_thirty_outputs_name_the_rest() -> None:
    embed = notify.render("discord", EXTREMES["thirty_outputs"])["embeds"][0]
    assert "[Output 30](https://cdn.example.com/29.mp4)" in embed["description"]
    embed = notify.render("discord", extreme())["embeds"][0]
    assert "more" in embed["description"].splitlines()[-1]


def test_discord_many_metadata_keys_end_with_a_count() -> None:
    event = make_event(metadata={f"k{n}": str(n) for n in range(40)})
    fields = notify.render("discord", event)["embeds"][0]["fields"]
    assert len(fields) == discord.MAX_FIELDS
    assert fields[-1]["name"] == "More metadata" and fields[-1]["value"].endswith("more keys")


def test_teams_layout() -> None:
    body = notify.render("teams", make_event())
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["body"][0]["type"] == "TextBlock"
    assert card["body"][0]["text"] == notify.headline(make_event())
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert facts["Status"] == "succeeded" and facts["tenant"] == "acme"
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Output 1",
            "url": "https://cdn.example.com/out.png?sig=a&b=c",
        }
    ]


def test_teams_failure_and_many_outputs() -> None:
    card = notify.render("teams", failed())["attachments"][0]["content"]
    assert card["body"][1] == {
        "type": "TextBlock",
        "text": "provider_error: upscaler ran out of memory",
        "color": "Attention",
        "wrap": True,
    }
    assert "actions" not in card
    card = notify.render("teams", EXTREMES["thirty_outputs"])["attachments"][0]["content"]
    assert len(card["actions"]) == teams.MAX_ACTIONS
    assert any(b.get("text") == "…and 25 more outputs" for b in card["body"])


def test_teams_shrinks_to_fit_the_size_limit() -> None:
    body = notify.render("teams", extreme())
    assert len(json.dumps(body, ensure_ascii=False).encode()) <= teams.MAX_BYTES
    card = body["attachments"][0]["content"]
    assert len(card["body"][-2]["facts"] if card["body"][-1]["type"] != "FactSet" else []) >= 0
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert len(facts) <= teams.MAX_FACTS


def test_google_chat_layout() -> None:
    body = notify.render("google_chat", make_event())
    assert body["text"] == notify.headline(make_event())
    [card] = body["cardsV2"]
    assert card["cardId"] == "job_abc-succeeded"
    assert card["card"]["header"] == {
        "title": "✅ Upscale succeeded",
        "subtitle": "pixazo/seedvr-image · job_abc · 14s",
    }
    widgets = card["card"]["sections"][0]["widgets"]
    assert {"decoratedText": {"topLabel": "tenant", "text": "acme"}} in widgets
    assert widgets[-1] == {
        "buttonList": {
            "buttons": [
                {
                    "text": "Output 1",
                    "onClick": {"openLink": {"url": "https://cdn.example.com/out.png?sig=a&b=c"}},
                }
            ]
        }
    }


def test_google_chat_escapes_card_html_and_text_mentions() -> None:
    event = make_event(metadata={"who": "<b>x</b> & <users/all>"})
    body = notify.render("google_chat", event, "hi {data.metadata.who}")
    assert "<users/all>" not in body["text"] and body["text"].startswith(
        "hi \u2039b\u203ax\u2039/b\u203a & "
    )
    widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"]
    assert {
        "decoratedText": {"topLabel": "who", "text": "&lt;b&gt;x&lt;/b&gt; &amp; &lt;users/all&gt;"}
    } in widgets


def test_google_chat_caps_buttons_and_widgets() -> None:
    body = notify.render("google_chat", extreme())
    widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"]
    assert len(widgets) <= google_chat.MAX_WIDGETS
    [buttons] = [w["buttonList"]["buttons"] for w in widgets if "buttonList" in w]
    assert len(buttons) == google_chat.MAX_BUTTONS
    assert {"textParagraph": {"text": "…and 20 more outputs"}} in widgets
    assert units(body["text"]) <= google_chat.MAX_TEXT


# --- templates --------------------------------------------------------------------------------

EXAMPLE = (
    "{status_emoji} {data.model} finished: {data.outputs[0].url} (tenant {data.metadata.tenant})"
)


def test_template_example_renders() -> None:
    assert notify.validate_template(EXAMPLE) == []
    assert notify.render_template(EXAMPLE, make_event()) == (
        "✅ pixazo/seedvr-image finished: https://cdn.example.com/out.png?sig=a&b=c (tenant acme)"
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("{{literal}} {data.id}", "{literal} job_abc"),
        ("{{{data.id}}}", "{job_abc}"),
        ("}}{{", "}{"),
        ("{ data.id }", "job_abc"),
        ("{type} at {timestamp}", "job.succeeded at 2026-11-21T10:00:00Z"),
        ("{duration}", "14s"),
        ("{headline}", "✅ Upscale succeeded · pixazo/seedvr-image · job_abc · 14s"),
        ("{output_urls}", "https://cdn.example.com/out.png?sig=a&b=c"),
        ("{data.progress} {data.metadata.priority} {data.metadata.rush}", "1.0 3 true"),
        ("{data.outputs[0].media_type}", "image/png"),
        ("[{data.outputs[5].url}]", "[]"),
        ("[{data.metadata.missing}]", "[]"),
        ("[{data.error.message}]", "[]"),
        ("{data.metadata.my-key_2}", ""),
    ],
)
def test_render_template(template: str, expected: str) -> None:
    assert notify.validate_template(template) == []
    assert notify.render_template(template, make_event()) == expected


def test_render_template_never_raises_on_odd_events() -> None:
    template = (
        "{data.outputs[0].url}{data.error.code}{data.metadata.x}{headline}{duration}{output_urls}"
    )
    for event in (
        {},
        {"data": None},
        {"data": {"outputs": "nope", "metadata": []}},
        {"data": {"outputs": [1]}},
    ):
        notify.render_template(template, event)


def test_render_template_escapes_values_only() -> None:
    event = make_event(metadata={"tenant": "<!channel>"})
    text = notify.render_template(
        "<!here> {data.metadata.tenant}", event, escape=notify.slack_escape
    )
    assert text == "<!here> &lt;!channel&gt;"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{", "unclosed '{' at position 0"),
        ("x {data.id", "unclosed '{' at position 2"),
        ("{a{data.id}", "unclosed '{' at position 0"),
        ("}", "unmatched '}' at position 0"),
        ("a } b", "unmatched '}' at position 2"),
        ("{}", "empty placeholder '{}' at position 0"),
        ("{   }", "empty placeholder '{}' at position 0"),
        ("{foo}", "unknown field 'foo' in {foo} at position 0 (known: type, timestamp, data,"),
        ("{data.modle}", "unknown field data.modle in {data.modle}"),
        ("{data.outputs[0].size}", "unknown field data.outputs[0].size"),
        ("{data.outputs[x].url}", "bad index in {data.outputs[x].url} at position 0"),
        ("{data.outputs[-1].url}", "bad index in {data.outputs[-1].url}"),
        ("{data.outputs[0}", "bad index in {data.outputs[0}"),
        ("{data.outputs[]}", "bad index in {data.outputs[]}"),
        ("{[0]}", "bad placeholder {[0]} at position 0: unexpected '['"),
        ("{data..id}", "bad placeholder {data..id} at position 0: unexpected '.'"),
        ("{data.}", "bad placeholder {data.} at position 0: unexpected end"),
        ("{data.id:>10}", "bad placeholder {data.id:>10} at position 0: unexpected ':'"),
        ("{data.id!r}", "unexpected '!'"),
        ("{data.id.__class__}", "data.id has no fields"),
        ("{data.outputs[0]url}", "unexpected 'u'"),
        (
            "{data.model[0]}",
            "data.model is not a list in {data.model[0]} at position 0: drop the [0]",
        ),
        (
            "{data.outputs.url}",
            "data.outputs is a list in {data.outputs.url} at position 0: index it",
        ),
        (
            "{data.outputs}",
            "data.outputs is a list in {data.outputs} at position 0: use {output_urls}",
        ),
        (
            "{data.metadata}",
            "data.metadata is an object in {data.metadata} at position 0: name one",
        ),
        (
            "{data.error}",
            "data.error is an object in {data.error} at position 0: name one of code, message",
        ),
        ("{data}", "data is an object"),
        ("{data.metadata.tenant.x}", "data.metadata.tenant has no fields"),
        ("{headline.x}", "headline has no fields"),
        ("{data.metadata[0]}", "data.metadata is not a list"),
        ("x" * 2001, "template is 2001 characters long; the limit is 2000"),
    ],
)
def test_validate_template_names_the_problem(template: str, problem: str) -> None:
    problems = notify.validate_template(template)
    assert any(problem in p for p in problems), problems
    with pytest.raises(notify.TemplateError) as raised:
        notify.render_template(template, make_event())
    assert raised.value.problems == problems


def test_validate_template_reports_every_problem() -> None:
    problems = notify.validate_template("{foo} } {} {data.outputs[x]} {")
    assert len(problems) == 5


def test_template_limit_is_exact() -> None:
    assert notify.validate_template("x" * notify.MAX_TEMPLATE_CHARS) == []
    assert notify.validate_template("x" * (notify.MAX_TEMPLATE_CHARS + 1)) == [
        f"template is 2001 characters long; the limit is {notify.MAX_TEMPLATE_CHARS}"
    ]


def test_an_overlong_template_is_refused_before_it_is_parsed() -> None:
    # a megabyte of braces once took seconds and named every one of them
    started = time.perf_counter()
    problems = notify.validate_template("{" * 1_000_000)
    assert time.perf_counter() - started < 0.05
    assert problems == [
        f"template is 1000000 characters long; the limit is {notify.MAX_TEMPLATE_CHARS}"
    ]


@pytest.mark.parametrize("kind", CHAT_KINDS)
def test_template_replaces_the_headline(kind: str) -> None:
    body = notify.render(kind, make_event(), "{data.model} done for {data.metadata.tenant}")
    text = {
        "slack": lambda b: b["text"],
        "discord": lambda b: b["content"],
        "teams": lambda b: b["attachments"][0]["content"]["body"][0]["text"],
        "google_chat": lambda b: b["text"],
    }[kind](body)
    assert text == "pixazo/seedvr-image done for acme"
    if kind == "slack":
        assert body["blocks"][1]["text"]["text"] == text


@pytest.mark.parametrize("kind", CHAT_KINDS)
@pytest.mark.parametrize("template", ["{data.metadata.missing}", "   ", "{bad", None, ""])
def test_blank_or_broken_template_falls_back_to_the_headline(
    kind: str, template: str | None
) -> None:
    body = notify.render(kind, make_event(), template)
    assert notify.headline(make_event()) in json.dumps(body, ensure_ascii=False)
    assert chat.check(kind, body) == []
