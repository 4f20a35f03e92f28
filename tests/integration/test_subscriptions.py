"""Subscriptions API, filters, per-job webhooks and signing, over real loopback HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import IMAGE_JOB, SPEC_DATA_KEYS, VIDEO_JOB
from tests.integration.helpers import (
    FAST,
    ServeSubscriber,
    deliveries,
    run_job,
    settled,
    subscribe,
    until,
    verify,
)

TERMINAL = {"succeeded", "failed", "canceled"}
TERMINAL_EVENTS = ["job.succeeded", "job.failed", "job.canceled"]


def problem_fields(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    return {d["field"] for d in error["details"]}


def parse_iso(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


# -- create, read, list ----------------------------------------------------------------------


async def test_create_shows_the_secret_only_when_asked(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_subscriber()
    created = await subscribe(relay, f"{url}/hook")
    assert created["id"].startswith("sub_")
    assert created["kind"] == "webhook"
    assert created["status"] == "active"
    assert created["events"] == TERMINAL_EVENTS
    assert created["secret"].startswith("whsec_")
    Webhook(created["secret"])  # a secret the standard library accepts

    got = await relay.client.get(f"/v1/subscriptions/{created['id']}")
    assert got.status_code == 200
    assert got.json()["url"] == f"{url}/hook"
    assert not [k for k in got.json() if "secret" in k]
    listed = (await relay.client.get("/v1/subscriptions")).json()["data"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert not [k for k in listed[0] if "secret" in k]
    shown = await relay.client.get(f"/v1/subscriptions/{created['id']}/secret")
    assert shown.status_code == 200
    assert shown.json()["secret"] == created["secret"]

    for kind in ("slack", "discord", "teams", "google_chat"):
        chat = await subscribe(relay, f"{url}/{kind}", kind=kind)
        assert chat["kind"] == kind
        assert "secret" not in chat
        assert chat["events"] == TERMINAL_EVENTS
        answer = await relay.client.get(f"/v1/subscriptions/{chat['id']}/secret")
        assert answer.status_code == 409
    missing = await relay.client.get("/v1/subscriptions/sub_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "subscription_not_found"


async def test_create_refuses_bad_and_private_urls(start_relay) -> None:
    relay = await start_relay()  # RELAY_ALLOW_PRIVATE_TARGETS not set
    for url in (
        "ftp://example.com/x",
        "http://user:pass@example.com/",
        "http:///x",
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/x",  # a name that resolves to loopback
    ):
        answer = await relay.client.post("/v1/subscriptions", json={"url": url})
        assert problem_fields(answer) == {"url"}, url
    assert problem_fields(await relay.client.post("/v1/subscriptions", json={})) == {"url"}
    assert (await relay.client.get("/v1/subscriptions")).json()["data"] == []


async def test_create_refuses_unknown_names_and_fields(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_subscriber()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"events": ["job.done"]}, "events"),
        ({"events": []}, "events"),
        ({"filter": {"models": ["pixazo/nope"]}}, "filter.models"),
        ({"filter": {"colour": "red"}}, "filter.colour"),
        ({"colour": "red"}, "colour"),
        ({"template": "{{ type }}"}, "template"),
        ({"kind": "webhook", "template": "{{ type }}"}, "template"),
        ({"kind": "email"}, "kind"),
    ]
    for extra, field in cases:
        answer = await relay.client.post("/v1/subscriptions", json={"url": url, **extra})
        assert field in problem_fields(answer), (extra, answer.text)
    assert (await relay.client.get("/v1/subscriptions")).json()["data"] == []


async def test_list_pages_newest_first_with_a_cursor(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_subscriber()
    ids = [(await subscribe(relay, f"{url}/{n}"))["id"] for n in range(3)]
    first = (await relay.client.get("/v1/subscriptions", params={"limit": 2})).json()
    assert [s["id"] for s in first["data"]] == [ids[2], ids[1]]
    assert first["next_cursor"]
    second = (
        await relay.client.get(
            "/v1/subscriptions", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [s["id"] for s in second["data"]] == [ids[0]]
    assert second["next_cursor"] is None


# -- PATCH and DELETE ------------------------------------------------------------------------


async def test_events_while_paused_are_delivered_after_resume(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    sub = await subscribe(relay, f"{url}/hook")
    paused = await relay.client.patch(f"/v1/subscriptions/{sub['id']}", json={"paused": True})
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert paused.json()["paused_reason"]

    job = await run_job(relay)
    # The fan-out commits with the event, so the delivery exists once the job is terminal.
    held = await deliveries(relay, subscription_id=sub["id"])
    assert [(d["job_id"], d["event_type"], d["status"]) for d in held] == [
        (job["id"], "job.succeeded", "pending")
    ]
    await asyncio.sleep(0.2)  # a paused subscription gets nothing meanwhile
    assert subscriber.attempts == []

    resumed = await relay.client.patch(f"/v1/subscriptions/{sub['id']}", json={"paused": False})
    assert resumed.json()["status"] == "active"
    assert resumed.json()["paused_reason"] is None
    [received] = await subscriber.wait_for(1)
    body = verify(sub["secret"], received)
    assert (body["type"], body["data"]["id"]) == ("job.succeeded", job["id"])
    assert received.headers["webhook-id"] == held[0]["id"]
    [done] = await settled(relay, 1, subscription_id=sub["id"])
    assert done["status"] == "succeeded"


async def test_pause_holds_a_pending_retry_until_resume(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**{**FAST, "RELAY_RETRY_SCHEDULE": "0,0.2,0.2"})
    subscriber, url = await serve_subscriber()
    subscriber.down = True
    sub = await subscribe(relay, f"{url}/hook")
    job = await run_job(relay)
    await until(lambda: len(subscriber.attempts) >= 1)
    path = f"/v1/subscriptions/{sub['id']}"
    assert (await relay.client.patch(path, json={"paused": True})).json()["status"] == "paused"
    subscriber.down = False
    tried = len(subscriber.attempts)
    await asyncio.sleep(0.4)  # twice the retry delay: a paused subscription gets nothing
    assert len(subscriber.attempts) == tried
    [held] = await deliveries(relay, subscription_id=sub["id"])
    assert held["status"] == "pending"

    assert (await relay.client.patch(path, json={"paused": False})).json()["status"] == "active"
    [received] = await subscriber.wait_for(1)
    assert verify(sub["secret"], received)["data"]["id"] == job["id"]
    assert received.headers["webhook-id"] == held["id"]
    [done] = await settled(relay, 1, subscription_id=sub["id"])
    assert done["status"] == "succeeded"


async def test_patch_url_sends_a_pending_delivery_to_the_new_url(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**{**FAST, "RELAY_RETRY_SCHEDULE": "0,0.4,0.4"})
    old, old_url = await serve_subscriber()
    new, new_url = await serve_subscriber()
    old.down = True
    sub = await subscribe(relay, f"{old_url}/hook")
    await run_job(relay)
    await until(lambda: len(old.attempts) >= 1)

    bad = await relay.client.patch(f"/v1/subscriptions/{sub['id']}", json={"url": "ftp://x/"})
    assert problem_fields(bad) == {"url"}
    moved = await relay.client.patch(
        f"/v1/subscriptions/{sub['id']}", json={"url": f"{new_url}/moved"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["url"] == f"{new_url}/moved"

    [received] = await new.wait_for(1)
    assert received.path == "/moved"
    assert received.headers["webhook-id"] == old.attempts[0].headers["webhook-id"]
    verify(sub["secret"], received)
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [503, 200]
    assert all(a.status == 503 for a in old.attempts)


async def test_patch_events_changes_what_is_delivered(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    sub = await subscribe(relay, f"{url}/hook")
    path = f"/v1/subscriptions/{sub['id']}"
    assert problem_fields(await relay.client.patch(path, json={"events": ["job.nope"]})) == {
        "events"
    }
    assert "kind" in problem_fields(await relay.client.patch(path, json={"kind": "slack"}))
    changed = await relay.client.patch(path, json={"events": ["job.processing"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["job.processing"]

    job = await run_job(relay)
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert (delivery["event_type"], delivery["job_id"]) == ("job.processing", job["id"])
    [received] = await subscriber.wait_for(1)
    assert verify(sub["secret"], received)["type"] == "job.processing"


async def test_delete_then_404_and_pending_deliveries_are_canceled(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**{**FAST, "RELAY_RETRY_SCHEDULE": "0,30"})
    subscriber, url = await serve_subscriber()
    subscriber.down = True
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    await until(lambda: len(subscriber.attempts) >= 1)
    [pending] = await deliveries(relay, subscription_id=sub["id"])
    assert pending["status"] == "pending"

    path = f"/v1/subscriptions/{sub['id']}"
    deleted = await relay.client.delete(path)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await relay.client.get(path)).status_code == 404
    assert (await relay.client.delete(path)).status_code == 404
    [canceled] = await deliveries(relay, subscription_id=sub["id"])
    assert canceled["id"] == pending["id"]
    assert canceled["status"] == "canceled"
    assert canceled["next_attempt_at"] is None
    assert [d["id"] for d in await deliveries(relay, status="canceled")] == [pending["id"]]


# -- the whole flow ---------------------------------------------------------------------------


async def test_a_job_fans_out_one_signed_delivery_per_matching_subscription(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    terminal = await subscribe(relay, f"{url}/terminal")
    everything = await subscribe(relay, f"{url}/all", events=["job.*"])
    other_model = await subscribe(
        relay, f"{url}/video", events=["job.*"], filter={"models": ["pixazo/seedvr-video"]}
    )
    secrets = {"/terminal": terminal["secret"], "/all": everything["secret"]}

    job = await run_job(relay)
    assert job["status"] == "succeeded"
    received = await subscriber.wait_for(4)
    made = await settled(relay, 4, job_id=job["id"])
    assert all(d["status"] == "succeeded" for d in made)
    by_sub: dict[str, list[str]] = {}
    for d in made:
        by_sub.setdefault(d["subscription_id"], []).append(d["event_type"])
    assert by_sub == {
        terminal["id"]: ["job.succeeded"],
        everything["id"]: ["job.succeeded", "job.processing", "job.queued"],  # newest first
    }
    assert await deliveries(relay, subscription_id=other_model["id"]) == []

    await asyncio.sleep(0.1)  # nothing more is coming
    assert len(subscriber.attempts) == 4
    ids = [r.headers["webhook-id"] for r in received]
    assert len(set(ids)) == 4
    assert set(ids) == {d["id"] for d in made}
    events = {e["id"]: e for e in await relay.events(job["id"])}
    delivery_of = {d["id"]: d for d in made}
    for item in received:
        body = verify(secrets[item.path], item)
        assert item.headers["webhook-signature"].startswith("v1,")
        assert item.headers["content-type"] == "application/json"
        delivery = delivery_of[item.headers["webhook-id"]]
        assert set(body) == {"type", "timestamp", "data"}
        assert body["type"] == delivery["event_type"]
        assert body["timestamp"] == events[delivery["event_id"]]["created_at"]
        parse_iso(body["timestamp"])
        data = body["data"]
        assert set(SPEC_DATA_KEYS) <= set(data)
        assert data["id"] == job["id"]
        assert data["model"] == "pixazo/seedvr-image"
        assert data["metadata"] == {"tenant": "acme"}
        assert data["provider"] == "pixazo"
        assert data["provider_job_id"] == job["provider_job_id"]
        if body["type"] == "job.succeeded":
            assert data["status"] == "succeeded"
            assert data["progress"] == 1.0
            assert data["outputs"] == job["outputs"]
            assert data["error"] is None
    # each subscription signs with its own secret
    other = next(r for r in received if r.path == "/terminal")
    with pytest.raises(WebhookVerificationError):
        verify(everything["secret"], other)


async def test_filters_by_model_and_metadata(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    filters = {
        "image": {"models": ["pixazo/seedvr-image"]},
        "video": {"models": ["pixazo/seedvr-video"]},
        "acme": {"metadata": {"tenant": "acme"}},
        "globex": {"metadata": {"tenant": "globex"}},
        "image-acme": {"models": ["pixazo/seedvr-image"], "metadata": {"tenant": "acme"}},
        "video-acme": {"models": ["pixazo/seedvr-video"], "metadata": {"tenant": "acme"}},
    }
    subs = {}
    for name, flt in filters.items():
        subs[name] = await subscribe(relay, f"{url}/{name}", filter=flt)
        assert subs[name]["filter"] == flt
    image, video = await asyncio.gather(run_job(relay, IMAGE_JOB), run_job(relay, VIDEO_JOB))
    assert video["metadata"] in ({}, None)
    expected = {
        "image": [image["id"]],
        "video": [video["id"]],
        "acme": [image["id"]],
        "globex": [],
        "image-acme": [image["id"]],
        "video-acme": [],
    }
    for name, job_ids in expected.items():
        made = await deliveries(relay, subscription_id=subs[name]["id"])
        assert [d["job_id"] for d in made] == job_ids, name
    received = await subscriber.wait_for(4)
    await asyncio.sleep(0.1)
    paths = sorted(r.path for r in subscriber.attempts)
    assert paths == ["/acme", "/image", "/image-acme", "/video"]
    for item in received:
        verify(subs[item.path.lstrip("/")]["secret"], item)


async def test_per_job_webhook_is_signed_with_the_service_secret_and_filtered(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    answer = await relay.client.get("/v1/webhook-secret")
    assert answer.status_code == 200
    secret = answer.json()["secret"]
    assert secret.startswith("whsec_")
    filters: dict[str, list[str] | None] = {
        "star": ["*"],
        "default": None,
        "completed": ["completed"],
        "start": ["start"],
        "output": ["output"],
    }
    expected = {
        "star": {"job.queued", "job.processing", "job.succeeded"},
        "default": {"job.succeeded"},
        "completed": {"job.succeeded"},
        "start": {"job.processing"},
        "output": {"job.succeeded"},
    }
    bad = await relay.submit({**IMAGE_JOB, "webhook_events_filter": ["done"]})
    assert problem_fields(bad) == {"webhook_events_filter"}

    async def job_for(name: str) -> dict[str, Any]:
        body: dict[str, Any] = {**IMAGE_JOB, "webhook": f"{url}/{name}"}
        if filters[name] is not None:
            body["webhook_events_filter"] = filters[name]
        return await run_job(relay, body)

    jobs = dict(zip(filters, await asyncio.gather(*map(job_for, filters)), strict=True))
    total = sum(len(v) for v in expected.values())
    received = await subscriber.wait_for(total)
    for name, job in jobs.items():
        assert job["webhook"] == f"{url}/{name}"
        made = await settled(relay, len(expected[name]), job_id=job["id"])
        assert {d["event_type"] for d in made} == expected[name], name
        assert all(d["subscription_id"] is None for d in made)
        assert all(d["url"] == f"{url}/{name}" for d in made)
        assert all(d["status"] == "succeeded" for d in made)
    await asyncio.sleep(0.1)
    assert len(subscriber.attempts) == total
    for item in received:
        name = item.path.lstrip("/")
        body = verify(secret, item)
        assert body["data"]["id"] == jobs[name]["id"]
        assert body["type"] in expected[name]


# -- test event and secret rotation ----------------------------------------------------------


async def test_test_endpoint_sends_a_signed_job_test(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    sub = await subscribe(relay, f"{url}/hook")
    answer = await relay.client.post(f"/v1/subscriptions/{sub['id']}/test")
    assert answer.status_code == 202, answer.text
    delivery = answer.json()
    assert delivery["event_type"] == "job.test"
    assert delivery["subscription_id"] == sub["id"]
    [received] = await subscriber.wait_for(1)
    body = verify(sub["secret"], received)
    assert body["type"] == "job.test"
    assert set(body) == {"type", "timestamp", "data"}
    assert set(SPEC_DATA_KEYS) <= set(body["data"])
    assert received.headers["webhook-id"] == delivery["id"]
    missing = await relay.client.post("/v1/subscriptions/sub_nope/test")
    assert missing.status_code == 404


async def test_rotated_secret_signs_with_the_new_and_the_old_one(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    sub = await subscribe(relay, f"{url}/hook")
    old = sub["secret"]
    answer = await relay.client.post(f"/v1/subscriptions/{sub['id']}/rotate-secret")
    assert answer.status_code == 200, answer.text
    new = answer.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old
    overlap = parse_iso(answer.json()["previous_secret_expires_at"]) - datetime.now(UTC)
    assert 23.9 * 3600 < overlap.total_seconds() <= 24 * 3600
    shown = (await relay.client.get(f"/v1/subscriptions/{sub['id']}/secret")).json()
    assert shown["secret"] == new
    assert "secret" not in (await relay.client.get(f"/v1/subscriptions/{sub['id']}")).json()

    await relay.client.post(f"/v1/subscriptions/{sub['id']}/test")
    job = await run_job(relay)
    received = await subscriber.wait_for(2)
    bodies = {verify(new, r)["type"]: verify(old, r) for r in received}
    assert set(bodies) == {"job.test", "job.succeeded"}
    assert bodies["job.succeeded"]["data"]["id"] == job["id"]
    for item in received:
        assert len(item.headers["webhook-signature"].split()) == 2
    slack = await subscribe(relay, f"{url}/slack", kind="slack")
    refused = await relay.client.post(f"/v1/subscriptions/{slack['id']}/rotate-secret")
    assert refused.status_code == 409


async def test_the_service_wide_secret_rotates_and_both_sign_for_a_day(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    old = (await relay.client.get("/v1/webhook-secret")).json()["secret"]
    answer = await relay.client.post("/v1/webhook-secret/rotate")
    assert answer.status_code == 200, answer.text
    new = answer.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old
    overlap = parse_iso(answer.json()["previous_secret_expires_at"]) - datetime.now(UTC)
    assert 23.9 * 3600 < overlap.total_seconds() <= 24 * 3600
    assert (await relay.client.get("/v1/webhook-secret")).json()["secret"] == new

    await run_job(relay, {**IMAGE_JOB, "webhook": f"{url}/per-job"})
    [received] = await subscriber.wait_for(1)
    assert verify(new, received)["type"] == "job.succeeded"
    assert verify(old, received)["type"] == "job.succeeded"
    assert len(received.headers["webhook-signature"].split()) == 2

    # Kept in the database: a relay started on the same file signs with the same two.
    again = await start_relay(RELAY_DATABASE=relay.settings.database, **FAST)
    shown = (await again.client.get("/v1/webhook-secret")).json()
    assert shown["secret"] == new
    assert shown["previous_secret_expires_at"] == answer.json()["previous_secret_expires_at"]


# -- bad input and limits (issue 9) ----------------------------------------------------------

ODD_FIELDS: list[dict[str, Any]] = [
    {"events": [["job.succeeded"]]},
    {"events": [{}]},
    {"events": [None, 1, 2.5, True]},
    {"events": "job.succeeded"},
    {"filter": {"models": [["x"]]}},
    {"filter": {"models": [{}]}},
    {"filter": {"models": "pixazo/seedvr-image"}},
    {"filter": {"metadata": {"a": {"b": 1}}}},
    {"filter": {"metadata": [["a"]]}},
    {"filter": {"metadata": {"": 1}}},
    {"filter": [[]]},
    {"filter": {"models": [], "colour": {}}},
    {"kind": ["slack"]},
    {"kind": {}},
    {"template": ["x"]},
    {"template": {}},
    {"description": {}},
    {"paused": "yes"},
    {"rate_per_second": [1]},
    {"rate_per_second": 1e308},
    {"max_in_flight": 2.0},
    {"max_in_flight": 2**70},
    {"url": ["http://x.example"]},
    {"url": None},
]


@pytest.mark.parametrize("extra", ODD_FIELDS, ids=repr)
async def test_odd_values_are_422_on_post_and_patch(
    start_relay, serve_subscriber: ServeSubscriber, extra: dict[str, Any]
) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_subscriber()
    answer = await relay.client.post("/v1/subscriptions", json={"url": url, **extra})
    assert answer.status_code == 422, answer.text
    assert problem_fields(answer)
    slack = await subscribe(relay, url, kind="slack")
    answer = await relay.client.patch(f"/v1/subscriptions/{slack['id']}", json=extra)
    assert answer.status_code == 422, answer.text
    now = await relay.client.get(f"/v1/subscriptions/{slack['id']}")
    assert now.json() == {k: v for k, v in slack.items() if k != "secret"}


async def test_subscription_limits_at_their_edges(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    _, url = await serve_subscriber()
    base = f"{url}/"
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"url": base + "a" * (2048 - len(base))}, {"url": base + "a" * (2049 - len(base))}, "url"),
        ({"events": ["job.*"] * 16}, {"events": ["job.*"] * 17}, "events"),
        (
            {"kind": "slack", "template": "x" * 2000},
            {"kind": "slack", "template": "{" * 2001},
            "template",
        ),
        ({"description": "d" * 500}, {"description": "d" * 501}, "description"),
        ({"max_in_flight": 64}, {"max_in_flight": 65}, "max_in_flight"),
        ({"rate_per_second": 1000}, {"rate_per_second": 1000.5}, "rate_per_second"),
    ]
    for good, bad, field in cases:
        created = await relay.client.post("/v1/subscriptions", json={"url": url, **good})
        assert created.status_code == 201, (field, created.text)
        answer = await relay.client.post("/v1/subscriptions", json={"url": url, **bad})
        assert problem_fields(answer) == {field}
        patched = await relay.client.patch(
            f"/v1/subscriptions/{created.json()['id']}",
            json={k: v for k, v in bad.items() if k != "kind"},
        )
        assert problem_fields(patched) == {field}
    refused = await relay.client.post(
        "/v1/subscriptions", json={"url": url, "kind": "slack", "template": "{" * 2001}
    )
    [problem] = refused.json()["error"]["details"]
    assert problem["message"] == "template is 2001 characters long; the limit is 2000"
