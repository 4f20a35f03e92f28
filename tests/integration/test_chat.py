"""Chat subscriptions end to end: Slack, Discord, Teams and Google Chat sims over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.sim.chat import ChatSim
from service.sim.server import serve
from tests.conftest import IMAGE_JOB, Running

FAST = {"RELAY_ALLOW_PRIVATE_TARGETS": "1", "RELAY_RETRY_SCHEDULE": "0,0.1,0.2"}
TERMINAL = {"succeeded", "failed", "canceled"}
KINDS = ("slack", "discord", "teams", "google_chat")
# Paths shaped like each tool's incoming-webhook URL.
HOOK_PATH = {
    "slack": "/services/T000/B000/XXXX",
    "discord": "/api/webhooks/123/token",
    "teams": "/workflows/abc/triggers/manual/paths/invoke",
    "google_chat": "/v1/spaces/AAA/messages",
}
METADATA = {"tenant": "acme", "campaign": "spring-launch"}
JOB = {**IMAGE_JOB, "metadata": METADATA}
FAILING_JOB = {
    "model": "pixazo/seedvr-image",
    "input": {"image_url": "https://example.com/x.png?sim=fail"},
    "metadata": METADATA,
}
# Arrival times are taken by the sim after the relay's send: allow for scheduling noise.
SLACK = 0.02

ServeSim = Callable[..., Awaitable[tuple[ChatSim, str]]]


@pytest.fixture
async def serve_sim() -> AsyncIterator[ServeSim]:
    """Factory: a ChatSim of `kind` on its own loopback port; returns it and its hook URL."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            kind: str,
            *,
            rate_limit: tuple[int, float] | None = None,
            wrap: Callable[[ASGIApp], ASGIApp] | None = None,
        ) -> tuple[ChatSim, str]:
            sim = ChatSim(kind, rate_limit=rate_limit)
            base = await stack.enter_async_context(serve(wrap(sim.app) if wrap else sim.app))
            return sim, base + HOOK_PATH[kind]

        yield start


# --- helpers -----------------------------------------------------------------------------------


async def subscribe(relay: Running, url: str, kind: str, **fields: Any) -> dict[str, Any]:
    answer = await relay.client.post("/v1/subscriptions", json={"url": url, "kind": kind, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def run_job(relay: Running, body: dict[str, Any] = JOB) -> dict[str, Any]:
    answer = await relay.submit(body)
    assert answer.status_code == 202, answer.text
    return await relay.wait_status(answer.json()["id"], TERMINAL)


async def settled(relay: Running, sub_id: str, count: int, limit: float = 8.0) -> list[dict]:
    """The subscription's deliveries once there are `count` and none is pending, oldest first."""
    deadline = time.monotonic() + limit
    while True:
        answer = await relay.client.get(
            "/v1/deliveries", params={"subscription_id": sub_id, "limit": 500}
        )
        assert answer.status_code == 200, answer.text
        found = answer.json()["data"]
        if len(found) == count and all(d["status"] != "pending" for d in found):
            return found[::-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {sub_id} never settled at {count}: {found}")
        await asyncio.sleep(0.02)


def problems(answer: httpx.Response) -> list[dict[str, str]]:
    """The 422's details: [{"field", "message"}]."""
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    return error["details"]


def strings(value: object) -> list[str]:
    """Every string anywhere in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def headline_of(kind: str, body: dict[str, Any]) -> str:
    """The message's main text: where a template lands."""
    if kind == "discord":
        return body["content"]
    if kind == "teams":
        first = body["attachments"][0]["content"]["body"][0]
        assert first["type"] == "TextBlock"
        return first["text"]
    return body["text"]


def fields_of(kind: str, body: dict[str, Any]) -> dict[str, str]:
    """The message's name/value fields (facts, embed fields, decorated texts)."""
    if kind == "slack":
        out = {}
        for block in body["blocks"]:
            for field in block.get("fields", []):
                name, _, value = field["text"].partition("\n")
                out[name.strip("*")] = value
        return out
    if kind == "discord":
        return {f["name"]: f["value"] for f in body["embeds"][0]["fields"]}
    if kind == "teams":
        card = body["attachments"][0]["content"]
        facts = [f for e in card["body"] if e["type"] == "FactSet" for f in e["facts"]]
        return {f["title"]: f["value"] for f in facts}
    widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"]
    return {
        w["decoratedText"]["topLabel"]: w["decoratedText"]["text"]
        for w in widgets
        if "decoratedText" in w
    }


def links_of(kind: str, body: dict[str, Any]) -> list[str]:
    """The URLs the message links to as outputs."""
    if kind == "slack":
        return [m for s in strings(body["blocks"]) for m in re.findall(r"<([^|>]+)\|[^>]*>", s)]
    if kind == "discord":
        embed = body["embeds"][0]
        return [embed.get("url"), *re.findall(r"\]\((\S+?)\)", embed.get("description", ""))]
    if kind == "teams":
        return [a["url"] for a in body["attachments"][0]["content"].get("actions", [])]
    widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"]
    return [
        b["onClick"]["openLink"]["url"]
        for w in widgets
        if "buttonList" in w
        for b in w["buttonList"]["buttons"]
    ]


def job_of(kind: str, body: dict[str, Any], job_ids: list[str]) -> str:
    """Which of `job_ids` a message is about."""
    [found] = [j for j in job_ids if any(j in s for s in strings(body))]
    assert fields_of(kind, body)["Job"] == found
    return found


def strip_headers(app: ASGIApp, names: tuple[str, ...], status: int = 429) -> ASGIApp:
    """`app` with these headers removed from its answers of `status`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def filtered(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == status:
                headers = MutableHeaders(scope=message)
                for name in names:
                    for key in [k for k in headers if k.lower().startswith(name)]:
                        del headers[key]
            await send(message)

        await app(scope, receive, filtered)

    return wrapped


def fail_nth(app: ASGIApp, nth: int, status: int = 503) -> ASGIApp:
    """`app`, but its `nth` request (1-based) is answered `status` before the app sees it."""
    count = 0

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal count
        if scope["type"] == "http":
            count += 1
            if count == nth:
                await PlainTextResponse("upstream busy", status)(scope, receive, send)
                return
        await app(scope, receive, send)

    return wrapped


# --- messages each tool accepts ------------------------------------------------------------------


async def test_succeeded_and_failed_jobs_become_messages_each_tool_accepts(
    start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    sims: dict[str, ChatSim] = {}
    subs: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        sims[kind], url = await serve_sim(kind)
        subs[kind] = await subscribe(relay, url, kind)
    ok, bad = await asyncio.gather(run_job(relay), run_job(relay, FAILING_JOB))
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")
    assert bad["error"]["message"]
    [output] = ok["outputs"]
    for kind, sim in sims.items():
        first, second = await sim.wait_for(2)
        assert sim.rejected == [], kind
        by_job = {job_of(kind, m, [ok["id"], bad["id"]]): m for m in (first, second)}

        message = by_job[ok["id"]]
        headline = headline_of(kind, message)
        for part in ("succeeded", ok["model"], ok["id"]):
            assert part in headline, (kind, part, headline)
        fields = fields_of(kind, message)
        for key, value in METADATA.items():
            assert fields.get(key) == value, (kind, fields)
        assert output["url"] in links_of(kind, message), kind

        message = by_job[bad["id"]]
        headline = headline_of(kind, message)
        assert "failed" in headline and bad["id"] in headline, (kind, headline)
        assert any(bad["error"]["message"] in s for s in strings(message)), (kind, message)
        assert fields_of(kind, message).get("tenant") == "acme", kind
        assert [link for link in links_of(kind, message) if link] == [], kind

        made = await settled(relay, subs[kind]["id"], 2)
        assert [d["status"] for d in made] == ["succeeded", "succeeded"], (kind, made)
        assert {d["event_type"] for d in made} == {"job.succeeded", "job.failed"}
        assert len(sim.received) == 2, kind
        assert sim.headers[0]["content-type"] == "application/json"


# --- templates -----------------------------------------------------------------------------------

TEMPLATE = "{status_emoji} {data.model} for {data.metadata.tenant}: {output_urls} {{done}}"


async def test_a_template_renders_into_the_main_text_of_each_tool(
    start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    sims: dict[str, ChatSim] = {}
    for kind in KINDS:
        sims[kind], url = await serve_sim(kind)
        sub = await subscribe(relay, url, kind, template=TEMPLATE)
        assert sub["template"] == TEMPLATE
    job = await run_job(relay)
    [output] = job["outputs"]
    expected = f"✅ pixazo/seedvr-image for acme: {output['url']} {{done}}"
    for kind, sim in sims.items():
        [message] = await sim.wait_for(1)
        assert sim.rejected == [], kind
        assert headline_of(kind, message) == expected, kind
        # The template replaces the main text only: the fields are still there.
        fields = fields_of(kind, message)
        assert (fields["Job"], fields["campaign"]) == (job["id"], "spring-launch"), kind


BAD_TEMPLATES: list[tuple[object, tuple[str, ...]]] = [
    ("{data.modle}", ("data.modle", "model")),  # misspelt
    ("done {unclosed", ("unclosed", "position 5", "{{")),
    ("{data.outputs}", ("data.outputs", "{output_urls}")),  # a list
    ("{data.metadata}", ("data.metadata", "data.metadata.tenant")),  # an object
    ("{}", ("empty placeholder",)),
    ("50% off }", ("unmatched", "}}")),
    ("{data.outputs[x]}", ("bad index", "[0]")),
    ("x" * 2001, ("2001", "2000")),
    (42, ("string",)),
]


def assert_template_refused(answer: httpx.Response, hints: tuple[str, ...]) -> None:
    """A 422 naming `template` only, its message carrying every hint."""
    details = problems(answer)
    assert {d["field"] for d in details} == {"template"}, details
    message = " ".join(d["message"] for d in details)
    for hint in hints:
        assert hint in message, (hint, message)
    assert "template" in answer.json()["error"]["message"]


async def test_a_bad_template_is_refused_at_create(start_relay, serve_sim: ServeSim) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_sim("slack")
    for kind in KINDS:
        for template, hints in BAD_TEMPLATES:
            answer = await relay.client.post(
                "/v1/subscriptions", json={"url": url, "kind": kind, "template": template}
            )
            assert_template_refused(answer, hints)
    assert (await relay.client.get("/v1/subscriptions")).json()["data"] == []


async def test_a_bad_template_is_refused_at_patch_and_a_good_one_is_used(
    start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    sim, url = await serve_sim("discord")
    sub = await subscribe(relay, url, "discord")
    assert sub["template"] is None
    path = f"/v1/subscriptions/{sub['id']}"
    good = "{headline} for {data.metadata.tenant}"
    changed = await relay.client.patch(path, json={"template": good})
    assert changed.status_code == 200, changed.text
    assert changed.json()["template"] == good
    for template, hints in BAD_TEMPLATES:
        assert_template_refused(await relay.client.patch(path, json={"template": template}), hints)
    # A refused change leaves the subscription as it was, and deliveries use the good template.
    assert (await relay.client.get(path)).json()["template"] == good
    job = await run_job(relay)
    [message] = await sim.wait_for(1)
    content = headline_of("discord", message)
    assert content.startswith("✅ Upscale succeeded · pixazo/seedvr-image · " + job["id"])
    assert content.endswith(" for acme")
    # Clearing the template goes back to the headline.
    cleared = await relay.client.patch(path, json={"template": None})
    assert cleared.status_code == 200 and cleared.json()["template"] is None


async def test_a_template_on_a_webhook_subscription_is_refused(
    start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_sim("slack")
    answer = await relay.client.post(
        "/v1/subscriptions", json={"url": url, "kind": "webhook", "template": "{headline}"}
    )
    [detail] = problems(answer)
    assert detail["field"] == "template"
    assert "webhook" in detail["message"] and "chat" in detail["message"]
    hook = await relay.client.post("/v1/subscriptions", json={"url": url})
    assert hook.status_code == 201, hook.text
    answer = await relay.client.patch(
        f"/v1/subscriptions/{hook.json()['id']}", json={"template": "{headline}"}
    )
    assert [d["field"] for d in problems(answer)] == ["template"]


# --- throttling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "wait"),
    [
        ("slack", 1.0),  # Retry-After: 1
        ("discord", 1.0),  # retry_after 1.0 in the JSON body (and the headers)
        ("teams", 1.0),  # Retry-After: 1
        ("google_chat", 0.08),  # no Retry-After: the schedule's 0.1 s, jittered by 20 %
    ],
)
async def test_a_429_delays_the_message_which_arrives_once(
    kind: str, wait: float, start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    sim, url = await serve_sim(kind)
    sim.rate_limit_next(1, retry_after=1)
    sub = await subscribe(relay, url, kind)
    job = await run_job(relay)
    [message] = await sim.wait_for(1)
    assert job_of(kind, message, [job["id"]]) == job["id"]
    (limited_at, limited), (sent_at, status) = sim.attempts
    assert limited == 429 and 200 <= status < 300
    assert sent_at - limited_at >= wait - SLACK
    [delivery] = await settled(relay, sub["id"], 1)
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 2
    assert [a["status_code"] for a in delivery["attempt_log"]] == [429, status]
    assert len(sim.received) == 1
    assert len(sim.rejected) == 1


async def test_discord_json_retry_after_is_honored_without_headers(
    start_relay, serve_sim: ServeSim
) -> None:
    # Only the JSON body says how long to wait: no Retry-After, no X-RateLimit-* headers.
    sim, url = await serve_sim(
        "discord", wrap=lambda app: strip_headers(app, ("retry-after", "x-ratelimit-"))
    )
    relay = await start_relay(**FAST)
    sim.rate_limit_next(1, retry_after=0.8)
    sub = await subscribe(relay, url, "discord")
    await run_job(relay)
    await sim.wait_for(1)
    (limited_at, limited), (sent_at, status) = sim.attempts
    assert (limited, status) == (429, 204)
    # The schedule alone would wait 0.1 s, the subscription's pace 0.5 s.
    assert sent_at - limited_at >= 0.8 - SLACK
    [delivery] = await settled(relay, sub["id"], 1)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [429, 204]
    assert "rate limited" in delivery["attempt_log"][0]["response"]


async def test_discord_ratelimit_headers_pace_sends_before_any_429(
    start_relay, serve_sim: ServeSim
) -> None:
    # One message per second: after each one, X-RateLimit-Remaining is 0 and Reset-After ~1 s,
    # longer than Discord's default pace of 2 per second.
    sim, url = await serve_sim("discord", rate_limit=(1, 1.0))
    relay = await start_relay(**FAST)
    sub = await subscribe(relay, url, "discord")
    assert sub["rate_per_second"] == 2.0
    await asyncio.gather(run_job(relay), run_job(relay))
    await sim.wait_for(2)
    assert sim.rejected == []
    assert [s for _, s in sim.attempts] == [204, 204]
    first, second = sim.received_at
    assert second - first >= 1.0 - SLACK


async def test_throttles_do_not_spend_the_retry_schedule(start_relay, serve_sim: ServeSim) -> None:
    # Three 429s that say when to come back, then one 503: the 503 is the first real failure
    # and RELAY_RETRY_SCHEDULE="0,0.1,0.2" allows two more attempts after it.
    sim, url = await serve_sim("slack", wrap=lambda app: fail_nth(app, 4))
    relay = await start_relay(**FAST)
    sim.rate_limit_next(3, retry_after=0)
    sub = await subscribe(relay, url, "slack", rate_per_second=50)
    await run_job(relay)
    [delivery] = await settled(relay, sub["id"], 1)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [429, 429, 429, 503, 200]
    assert delivery["status"] == "succeeded"
    assert len(sim.received) == 1


async def test_a_burst_arrives_whole_in_order_at_the_subscription_rate(
    start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    sim, url = await serve_sim("slack")
    sub = await subscribe(relay, url, "slack", rate_per_second=10)
    assert sub["rate_per_second"] == 10
    answers = await asyncio.gather(*(relay.submit(JOB) for _ in range(8)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    ids = [a.json()["id"] for a in answers]
    await sim.wait_for(3)
    sim.rate_limit_next(1, retry_after=1)  # Slack pushes back in the middle of the burst
    received = await sim.wait_for(8, timeout=10)
    made = await settled(relay, sub["id"], 8)
    assert all(d["status"] == "succeeded" for d in made)

    # None dropped, none duplicated, in the order the jobs finished.
    events = (await relay.client.get("/v1/events", params={"limit": 500})).json()["data"]
    finished = [e["job_id"] for e in events if e["type"] == "job.succeeded"]
    assert sorted(finished) == sorted(ids)
    assert len(sim.received) == 8
    assert [job_of("slack", m, ids) for m in received] == finished
    assert [d["job_id"] for d in made] == finished

    statuses = [s for _, s in sim.attempts]
    assert statuses.count(429) == 1
    limited = statuses.index(429)
    assert 3 <= limited < len(statuses) - 1, statuses
    assert sim.attempts[limited + 1][0] - sim.attempts[limited][0] >= 1.0 - SLACK
    [retried] = [d for d in made if d["attempts"] == 2]
    assert [a["status_code"] for a in retried["attempt_log"]] == [429, 200]
    gaps = [b - a for a, b in itertools.pairwise(sim.received_at)]
    assert min(gaps) >= 0.1 - SLACK, gaps


async def test_slack_is_paced_at_one_message_per_second_by_default(
    start_relay, serve_sim: ServeSim
) -> None:
    relay = await start_relay(**FAST)
    sim, url = await serve_sim("slack")
    sub = await subscribe(relay, url, "slack")
    assert (sub["rate_per_second"], sub["max_in_flight"]) == (1.0, 1)
    jobs = await asyncio.gather(*(run_job(relay) for _ in range(3)))
    await sim.wait_for(3, timeout=6)
    assert sim.rejected == []
    assert sorted(job_of("slack", m, [j["id"] for j in jobs]) for m in sim.received) == sorted(
        j["id"] for j in jobs
    )
    gaps = [b - a for a, b in itertools.pairwise(sim.received_at)]
    assert min(gaps) >= 0.9, gaps
