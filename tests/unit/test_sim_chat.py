"""The chat-tool and Standard Webhooks receiver sims, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import standardwebhooks

from service import notify
from service.sim import chat
from service.sim.server import serve
from service.sim.subscriber import CLIENT_CLOSED, Subscriber, verify

from .test_notify import extreme, failed, make_event

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_c2VjcmV0LW51bWJlci10d28tZm9yLXJvdGF0aW9u"
HOOK_PATH = {
    "slack": "/services/T000/B000/XXXX",
    "discord": "/api/webhooks/123/token",
    "teams": "/workflows/abc/triggers/manual/paths/invoke?api-version=1",
    "google_chat": "/v1/spaces/AAA/messages?key=k&token=t",
}


async def post(sim: chat.ChatSim, body: Any, path: str | None = None) -> httpx.Response:
    """One request through the sim's app in process: the many refusal cases stay fast."""
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        return await client.post(path or HOOK_PATH[sim.kind], json=body)


# --- rendered bodies are accepted -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status"), [("slack", 200), ("discord", 204), ("teams", 202), ("google_chat", 200)]
)
async def test_rendered_bodies_are_accepted(kind: str, status: int) -> None:
    sim = chat.ChatSim(kind)
    bodies = [notify.render(kind, e) for e in (make_event(), failed(), extreme())]
    bodies.append(notify.render(kind, make_event(), "{status_emoji} {data.metadata.tenant}"))
    async with serve(sim.app) as base, httpx.AsyncClient() as client:
        for body in bodies:
            response = await client.post(base + HOOK_PATH[kind], json=body)
            assert response.status_code == status, response.text
    assert sim.received == bodies
    assert sim.rejected == []
    assert sim.received_at == sorted(sim.received_at) and len(sim.received_at) == 4
    assert [s for _, s in sim.attempts] == [status] * 4
    assert sim.headers[0]["content-type"] == "application/json"


async def test_success_answers_look_like_the_tools() -> None:
    response = await post(chat.ChatSim("slack"), {"text": "hi"})
    assert response.text == "ok"
    response = await post(chat.ChatSim("google_chat"), {"text": "hi"})
    assert response.json()["text"] == "hi" and response.json()["name"].startswith("spaces/")
    response = await post(chat.ChatSim("discord"), {"content": "hi"})
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "4"
    assert float(response.headers["x-ratelimit-reset-after"]) > 0
    assert response.headers["x-ratelimit-bucket"]
    response = await post(chat.ChatSim("discord"), {"content": "hi"}, "/api/webhooks/1/t?wait=true")
    assert response.status_code == 200 and response.json()["content"] == "hi"


# --- over-limit bodies are refused ------------------------------------------------------------


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text)}


def fields(count: int, size: int) -> dict[str, Any]:
    return {"type": "section", "fields": [mrkdwn("f" * size)] * count}


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ({"blocks": [section("x")] * 51}, "invalid_blocks"),
        ({"text": "t", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
        ({"text": "t", "blocks": [fields(11, 1)]}, "invalid_blocks"),
        ({"text": "t", "blocks": [fields(1, 2001)]}, "invalid_blocks"),
        ({"text": "t", "blocks": [{"type": "header", "text": plain("h" * 151)}]}, "invalid_blocks"),
        ({"text": "t", "blocks": [{"type": "header", "text": mrkdwn("h")}]}, "invalid_blocks"),
        ({"text": "t", "blocks": [{"type": "bogus"}]}, "invalid_blocks"),
        ({"text": "t", "blocks": [{"type": "section"}]}, "invalid_blocks"),
        ({"text": "t", "blocks": [section("")]}, "invalid_blocks"),
        ({"text": "t", "blocks": [{"type": "context", "elements": [mrkdwn("c")] * 11}]}, "invalid_blocks"),  # noqa: E501
        ({"text": "t", "blocks": [{"type": "actions", "elements": []}]}, "invalid_blocks"),
        ({"text": "t", "blocks": [{"type": "divider", "block_id": "b" * 256}]}, "invalid_blocks"),
        ({"text": "t", "blocks": "nope"}, "invalid_blocks"),
        ({}, "no_text"),
        ({"text": "  "}, "no_text"),
        ([1, 2], "invalid_payload"),
    ],
)  # fmt: skip
async def test_slack_refuses(body: Any, answer: str) -> None:
    sim = chat.ChatSim("slack")
    response = await post(sim, body)
    assert (response.status_code, response.text) == (400, answer)
    assert sim.received == [] and sim.rejected[0][0] == 400


async def test_slack_refuses_a_body_that_is_not_json() -> None:
    sim = chat.ChatSim("slack")
    async with serve(sim.app) as base, httpx.AsyncClient() as client:
        response = await client.post(base + "/services/x", content=b"{nope")
    assert (response.status_code, response.text) == (400, "invalid_payload")
    assert sim.rejected == [(400, "body: invalid JSON")]


def embed(**fields: Any) -> dict[str, Any]:
    return {"embeds": [{"title": "t", **fields}]}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"content": "x" * 2001}, ["content"]),
        ({"embeds": [{"title": "t"}] * 11}, ["embeds"]),
        (embed(title="t" * 257), ["embeds", "0", "title"]),
        (embed(description="d" * 4097), ["embeds", "0", "description"]),
        (embed(fields=[{"name": "n", "value": "v"}] * 26), ["embeds", "0", "fields"]),
        (
            embed(fields=[{"name": "n", "value": "v" * 1025}]),
            ["embeds", "0", "fields", "0", "value"],
        ),
        (embed(fields=[{"name": "n" * 257, "value": "v"}]), ["embeds", "0", "fields", "0", "name"]),
        (embed(fields=[{"name": "n", "value": ""}]), ["embeds", "0", "fields", "0", "value"]),
        (embed(footer={"text": "f" * 2049}), ["embeds", "0", "footer", "text"]),
        (embed(color=0x1000000), ["embeds", "0", "color"]),
        (embed(url="javascript:alert(1)"), ["embeds", "0", "url"]),
        (embed(timestamp="yesterday"), ["embeds", "0", "timestamp"]),
        ({"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]}, ["embeds"]),
        ({"content": "x", "allowed_mentions": {"parse": ["channels"]}}, ["allowed_mentions"]),
    ],
)
async def test_discord_refuses(body: dict[str, Any], path: list[str]) -> None:
    sim = chat.ChatSim("discord")
    response = await post(sim, body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["code"], answer["message"]) == (50035, "Invalid Form Body")
    node = answer["errors"]
    for part in path:
        node = node[part]
    assert node["_errors"][0]["code"]
    assert sim.received == []


async def test_discord_refuses_an_empty_message() -> None:
    response = await post(chat.ChatSim("discord"), {"content": "", "embeds": []})
    assert response.status_code == 400
    assert response.json() == {"code": 50006, "message": "Cannot send an empty message"}


def teams(**card: Any) -> dict[str, Any]:
    content = {"type": "AdaptiveCard", "version": "1.4", "body": [], **card}
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "content": content}
    return {"type": "message", "attachments": [attachment]}


@pytest.mark.parametrize(
    "body",
    [
        {"text": "legacy connector message"},
        {"type": "message", "attachments": []},
        {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.hero"}],
        },
        teams(type="MessageCard"),
        teams(version=None),
        teams(body="text"),
        teams(body=[{"text": "no type"}]),
        teams(actions=[{"type": "Action.OpenUrl"}]),
        teams(body=[{"type": "FactSet", "facts": [{"title": "t"}]}]),
    ],
)
async def test_teams_refuses(body: dict[str, Any]) -> None:
    sim = chat.ChatSim("teams")
    response = await post(sim, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidRequestContent"
    assert sim.received == []


async def test_teams_refuses_an_oversized_message() -> None:
    body = teams(body=[{"type": "TextBlock", "text": "x" * 30_000}])
    response = await post(chat.ChatSim("teams"), body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "RequestEntityTooLarge"


@pytest.mark.parametrize(
    "body",
    [
        {"text": "x" * 4097},
        {},
        {"text": "", "cardsV2": []},
        {"cardsV2": [{"card": {}}]},
        {"cardsV2": [{"cardId": "c"}]},
        {"cardsV2": [{"cardId": "c", "card": {"sections": [{"widgets": "w"}]}}]},
        {"cardsV2": {"cardId": "c"}},
    ],
)
async def test_google_chat_refuses(body: dict[str, Any]) -> None:
    sim = chat.ChatSim("google_chat")
    response = await post(sim, body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert sim.received == []


OVER_LIMIT = {
    "slack": ({"text": "t", "blocks": [section("x" * 3001)]}, 400),
    "discord": ({"content": "x" * 2001}, 400),
    "teams": ({"type": "message", "attachments": [{"contentType": "text/plain"}]}, 400),
    "google_chat": ({"text": "x" * 4097}, 400),
}


@pytest.mark.parametrize("kind", list(OVER_LIMIT))
async def test_over_limit_refused_over_loopback(kind: str) -> None:
    sim = chat.ChatSim(kind)
    body, status = OVER_LIMIT[kind]
    async with serve(sim.app) as base, httpx.AsyncClient() as client:
        response = await client.post(base + HOOK_PATH[kind], json=body)
    assert response.status_code == status
    assert sim.received == [] and sim.rejected[0][0] == status
    assert sim.attempts[0][1] == status


def test_unknown_chat_kind() -> None:
    with pytest.raises(ValueError, match="unknown chat kind"):
        chat.ChatSim("webhook")


# --- rate limiting ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["slack", "teams", "google_chat", "discord"])
async def test_rate_limit_next(kind: str) -> None:
    sim = chat.ChatSim(kind)
    sim.rate_limit_next(2, retry_after=1.5)
    body = notify.render(kind, make_event())
    async with serve(sim.app) as base, httpx.AsyncClient() as client:
        answers = [await client.post(base + HOOK_PATH[kind], json=body) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [429, 429]
    assert answers[2].is_success
    assert len(sim.received) == 1
    assert [s for s, _ in sim.rejected] == [429, 429]
    first = answers[0]
    if kind == "google_chat":
        assert "retry-after" not in first.headers
        assert first.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    else:
        assert first.headers["retry-after"] == "2"
    if kind == "slack":
        assert first.text == "rate_limited"
    if kind == "discord":
        assert first.json() == {
            "message": "You are being rate limited.",
            "retry_after": 1.5,
            "global": False,
        }
        assert first.headers["x-ratelimit-remaining"] == "0"
        assert first.headers["x-ratelimit-reset-after"] == "1.500"
        assert first.headers["x-ratelimit-limit"] == "5"
        assert first.headers["x-ratelimit-bucket"]
        assert float(first.headers["x-ratelimit-reset"]) > time.time()


async def test_rolling_rate_limit() -> None:
    sim = chat.ChatSim("discord", rate_limit=(2, 30.0))
    async with serve(sim.app) as base, httpx.AsyncClient() as client:
        answers = [await client.post(base + "/hook", json={"content": "x"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [204, 204, 429]
    assert answers[1].headers["x-ratelimit-remaining"] == "0"
    assert 29 < answers[2].json()["retry_after"] <= 30
    assert answers[2].headers["x-ratelimit-limit"] == "2"


async def test_chat_wait_for() -> None:
    sim = chat.ChatSim("slack")
    async with serve(sim.app) as base, httpx.AsyncClient() as client:

        async def later() -> None:
            await asyncio.sleep(0.05)
            await client.post(base + "/s", json={"text": "one"})
            await client.post(base + "/s", json={"text": "two"})

        task = asyncio.create_task(later())
        got = await sim.wait_for(2, timeout=5)
        await task
    assert [b["text"] for b in got] == ["one", "two"]
    with pytest.raises(TimeoutError, match="2 of 3 messages"):
        await sim.wait_for(3, timeout=0.05)


# --- Subscriber -------------------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET, msg_id: str = "msg_1") -> dict[str, str]:
    now = datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, now, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def test_subscriber_verifies_signatures(client: httpx.AsyncClient) -> None:
    sub = Subscriber(SECRET)
    body = json.dumps(make_event()).encode()
    async with serve(sub.app) as base:
        assert (await client.post(base + "/hook", content=body, headers=signed(body))).text == "ok"
        await client.post(base + "/hook", content=body, headers=signed(body, OTHER, "msg_2"))
        await client.post(base + "/hook", content=body + b" ", headers=signed(body, msg_id="msg_3"))
        await client.post(base + "/hook", content=body)
    assert [r.verified for r in sub.received] == [True, False, False, False]
    first = sub.received[0]
    assert first.json == make_event() and first.body == body and first.path == "/hook"
    assert first.headers["webhook-id"] == "msg_1" and first.method == "POST" and first.status == 200
    assert sub.ids() == ["msg_1", "msg_2", "msg_3", ""]


async def test_subscriber_accepts_any_of_several_secrets(client: httpx.AsyncClient) -> None:
    sub = Subscriber([OTHER, SECRET])
    body = b'{"type": "job.test"}'
    async with serve(sub.app) as base:
        await client.post(base, content=body, headers=signed(body))
        sub.secrets = [OTHER]
        await client.post(base, content=body, headers=signed(body))
        sub.secret = None
        await client.post(base, content=body, headers=signed(body))
    assert [r.verified for r in sub.received] == [True, False, None]


def test_verify_treats_a_bad_secret_as_unverified() -> None:
    body = b"{}"
    assert verify(["not base64!"], body, signed(body)) is False
    assert verify([], body, signed(body)) is None
    assert verify(["whsec_", SECRET], body, signed(body)) is True


async def test_subscriber_can_require_signatures(client: httpx.AsyncClient) -> None:
    sub = Subscriber(SECRET, require_signature=True)
    body = b"{}"
    async with serve(sub.app) as base:
        assert (await client.post(base, content=body)).status_code == 401
        assert (await client.post(base, content=body, headers=signed(body))).status_code == 200
    assert [r.status for r in sub.attempts] == [401, 200] and len(sub.received) == 1


async def test_subscriber_failure_injection(client: httpx.AsyncClient) -> None:
    sub = Subscriber()
    sub.fail_next(500, 2, retry_after=2.5)
    sub.fail_next(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    sub.fail_next(400)
    async with serve(sub.app) as base:
        answers = [await client.post(base + "/x", json={"n": n}) for n in range(5)]
        sub.down = True
        assert (await client.post(base, json={})).status_code == 503
        sub.down, sub.gone = False, True
        assert (await client.post(base, json={})).status_code == 410
    assert [a.status_code for a in answers] == [500, 500, 429, 400, 200]
    assert answers[0].headers["retry-after"] == "3"
    assert answers[2].headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert "retry-after" not in answers[3].headers
    assert [r.json for r in sub.received] == [{"n": 4}]
    assert [r.status for r in sub.attempts] == [500, 500, 429, 400, 200, 503, 410]
    assert [r.at for r in sub.attempts] == sorted(r.at for r in sub.attempts)


async def test_subscriber_hang_outlasts_a_client_timeout(client: httpx.AsyncClient) -> None:
    sub = Subscriber()
    sub.hang_seconds = 10
    async with serve(sub.app) as base:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(base, json={}, timeout=0.2)
        for _ in range(200):
            if sub.attempts:
                break
            await asyncio.sleep(0.01)
        sub.hang_seconds = 0.1
        started = time.monotonic()
        assert (await client.post(base, json={"n": 2}, timeout=5)).status_code == 200
        assert time.monotonic() - started >= 0.1
    assert [r.status for r in sub.attempts] == [CLIENT_CLOSED, 200]
    assert [r.json for r in sub.received] == [{"n": 2}]


async def test_subscriber_wait_for(client: httpx.AsyncClient) -> None:
    sub = Subscriber()
    sub.fail_next(503)
    async with serve(sub.app) as base:

        async def deliver() -> None:
            for n in range(3):
                await asyncio.sleep(0.02)
                await client.post(base, json={"n": n}, headers={"webhook-id": f"msg_{n}"})

        task = asyncio.create_task(deliver())
        got = await sub.wait_for(2, timeout=5)
        await task
    assert [r.json for r in got] == [{"n": 1}, {"n": 2}]
    assert sub.ids() == ["msg_1", "msg_2"]
    with pytest.raises(TimeoutError, match="2 of 5 deliveries"):
        await sub.wait_for(5, timeout=0.05)
