"""The delivery worker over loopback HTTP: retries, Retry-After, failures, pauses, isolation."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.conftest import IMAGE_JOB, Running
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


def epoch(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC).timestamp()


async def paused_events(relay: Running, sub_id: str) -> list[dict[str, Any]]:
    events = (await relay.client.get("/v1/events", params={"limit": 500})).json()["data"]
    return [
        e
        for e in events
        if e["type"] == "subscription.paused" and e["data"].get("subscription_id") == sub_id
    ]


# -- retries ----------------------------------------------------------------------------------


async def test_5xx_is_retried_with_the_same_webhook_id_and_every_attempt_logged(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    subscriber.fail_next(500, count=2)
    sub = await subscribe(relay, f"{url}/hook")
    job = await run_job(relay)
    [received] = await subscriber.wait_for(1)
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 3
    assert delivery["job_id"] == job["id"]
    assert delivery["last_status_code"] == 200
    assert delivery["delivered_at"]
    log = delivery["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert [a["error"] for a in log] == ["HTTP 500", "HTTP 500", None]
    assert "injected failure" in log[0]["response"]
    assert log[2]["response"] == "ok"
    assert all(isinstance(a["latency_ms"], int | float) and a["latency_ms"] > 0 for a in log)
    assert [epoch(a["at"]) for a in log] == sorted(epoch(a["at"]) for a in log)
    assert [a.status for a in subscriber.attempts] == [500, 500, 200]
    assert {a.headers["webhook-id"] for a in subscriber.attempts} == {delivery["id"]}
    for attempt in subscriber.attempts:
        verify(sub["secret"], attempt)
    assert verify(sub["secret"], received)["type"] == "job.succeeded"


async def test_the_attempt_log_keeps_the_first_kib_of_the_answer(start_relay) -> None:
    calls: list[Request] = []

    async def chatty(request: Request) -> PlainTextResponse:
        calls.append(request)  # 3 KiB answers: a failure first, then a success
        return PlainTextResponse("x" * 3000, 500 if len(calls) == 1 else 200)

    app = Starlette(routes=[Route("/hook", chatty, methods=["POST"])])
    relay = await start_relay(**FAST)
    async with serve(app) as url:
        sub = await subscribe(relay, f"{url}/hook")
        await run_job(relay)
        [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "succeeded"
    log = delivery["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 200]
    assert [a["response"] for a in log] == ["x" * 1024, "x" * 1024]


async def test_429_retry_after_is_honored(start_relay, serve_subscriber: ServeSubscriber) -> None:
    relay = await start_relay(**{**FAST, "RELAY_RETRY_SCHEDULE": "0,0.01,0.01"})
    subscriber, url = await serve_subscriber()
    subscriber.fail_next(429, retry_after=0.3)
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    await subscriber.wait_for(1)
    first, second = subscriber.attempts
    assert (first.status, second.status) == (429, 200)
    # The subscriber writes Retry-After in whole seconds; the schedule alone would wait 0.01 s.
    asked = math.ceil(0.3)
    assert second.at - first.at >= asked - 0.05
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert [a["status_code"] for a in delivery["attempt_log"]] == [429, 200]


async def test_timeouts_are_retried(start_relay, serve_subscriber: ServeSubscriber) -> None:
    relay = await start_relay(**{**FAST, "RELAY_RETRY_SCHEDULE": "0,0.3,0.3"})
    subscriber, url = await serve_subscriber()
    subscriber.hang_seconds = 3.0  # past RELAY_DELIVERY_TIMEOUT=0.5
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    await until(lambda: len(subscriber.attempts) >= 1)  # the relay hung up on it
    subscriber.hang_seconds = 0
    [received] = await subscriber.wait_for(1)
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "succeeded"
    timed_out, ok = delivery["attempt_log"]
    assert timed_out["status_code"] is None
    assert "timeout" in timed_out["error"]
    assert timed_out["latency_ms"] >= 450
    assert ok["status_code"] == 200
    assert subscriber.attempts[0].headers["webhook-id"] == received.headers["webhook-id"]


async def test_400_fails_at_once(start_relay, serve_subscriber: ServeSubscriber) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    subscriber.fail_next(400)
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 400
    assert [a["status_code"] for a in delivery["attempt_log"]] == [400]
    assert len(subscriber.attempts) == 1
    got = (await relay.client.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert got["status"] == "active"  # a plain 4xx fails the delivery, not the subscription


async def test_410_fails_and_pauses_the_subscription(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    subscriber.gone = True
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [410]
    got = (await relay.client.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert got["status"] == "paused"
    assert "410" in got["paused_reason"]
    [event] = await paused_events(relay, sub["id"])
    assert event["job_id"] is None
    assert event["source"] == "system"
    assert "410" in event["data"]["reason"]
    assert len(subscriber.attempts) == 1


async def test_spent_schedule_fails_and_a_manual_retry_delivers(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    subscriber.down = True
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    [failed] = await settled(relay, 1, subscription_id=sub["id"])
    assert failed["status"] == "failed"
    assert failed["attempts"] == 3  # RELAY_RETRY_SCHEDULE="0,0.1,0.2"
    assert [a["status_code"] for a in failed["attempt_log"]] == [503, 503, 503]
    assert failed["next_attempt_at"] is None
    assert [d["id"] for d in await deliveries(relay, status="failed")] == [failed["id"]]
    assert await deliveries(relay, status="succeeded") == []
    assert (await relay.client.get("/v1/deliveries", params={"status": "lost"})).status_code == 400
    one = await relay.client.get(f"/v1/deliveries/{failed['id']}")
    assert one.json()["status"] == "failed"
    assert len(one.json()["attempt_log"]) == 3

    subscriber.down = False
    answer = await relay.client.post(f"/v1/deliveries/{failed['id']}/retry")
    assert answer.status_code == 202, answer.text
    [received] = await subscriber.wait_for(1)
    assert received.headers["webhook-id"] == failed["id"]
    verify(sub["secret"], received)
    [done] = await settled(relay, 1, subscription_id=sub["id"])
    assert done["status"] == "succeeded"
    assert [a["status_code"] for a in done["attempt_log"]] == [503, 503, 503, 200]
    assert (await relay.client.post("/v1/deliveries/msg_nope/retry")).status_code == 404


async def test_outage_then_recovery_delivers_every_notification(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**{**FAST, "RELAY_RETRY_SCHEDULE": "0,0.2,0.2,0.2,0.2,0.2"})
    subscriber, url = await serve_subscriber()
    subscriber.down = True
    sub = await subscribe(relay, f"{url}/hook")
    jobs = await asyncio.gather(*(run_job(relay) for _ in range(3)))
    await until(lambda: len({a.headers["webhook-id"] for a in subscriber.attempts}) == 3)
    subscriber.down = False
    received = await subscriber.wait_for(3)
    made = await settled(relay, 3, subscription_id=sub["id"])
    assert all(d["status"] == "succeeded" for d in made)
    assert all(d["attempt_log"][0]["status_code"] == 503 for d in made)
    assert sorted(verify(sub["secret"], r)["data"]["id"] for r in received) == sorted(
        j["id"] for j in jobs
    )
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(d["id"] for d in made)


async def test_a_subscription_failing_for_pause_after_is_paused(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    # RELAY_PAUSE_AFTER has a floor of 1 second in service.config.
    relay = await start_relay(
        **{
            **FAST,
            "RELAY_PAUSE_AFTER": "1",
            "RELAY_RETRY_SCHEDULE": "0,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3",
        }
    )
    subscriber, url = await serve_subscriber()
    subscriber.down = True
    sub = await subscribe(relay, f"{url}/hook")
    job = await run_job(relay)
    path = f"/v1/subscriptions/{sub['id']}"
    deadline = time.monotonic() + 5
    while (got := (await relay.client.get(path)).json())["status"] != "paused":
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.05)
    assert "every delivery failed" in got["paused_reason"]
    assert got["failing_since"]
    [event] = await paused_events(relay, sub["id"])
    assert event["data"]["reason"] == got["paused_reason"]
    [held] = await deliveries(relay, subscription_id=sub["id"])
    assert held["status"] in ("pending", "failed")  # kept in the log either way
    times = [epoch(a["at"]) for a in held["attempt_log"]]
    assert times[-1] - times[0] >= 1.0
    assert all(a["status_code"] == 503 for a in held["attempt_log"])

    # Resuming sends what was held (nothing is lost).
    subscriber.down = False
    resumed = await relay.client.patch(path, json={"paused": False})
    assert resumed.json()["status"] == "active"
    assert resumed.json()["failing_since"] is None
    if held["status"] == "failed":
        await relay.client.post(f"/v1/deliveries/{held['id']}/retry")
    [received] = await subscriber.wait_for(1)
    assert verify(sub["secret"], received)["data"]["id"] == job["id"]


# -- isolation and the address guard ----------------------------------------------------------


async def test_a_hanging_subscriber_does_not_delay_the_others(
    serve_subscriber: ServeSubscriber, start_relay
) -> None:
    relay = await start_relay(**{**FAST, "RELAY_DELIVERY_TIMEOUT": "2"})
    slow, slow_url = await serve_subscriber()
    healthy, healthy_url = await serve_subscriber()
    slow.hang_seconds = 5
    await subscribe(relay, f"{slow_url}/slow", events=["job.*"])
    await subscribe(relay, f"{slow_url}/slow-too")
    sub = await subscribe(relay, f"{healthy_url}/ok")
    job = await run_job(relay)
    assert job["status"] == "succeeded"
    [received] = await healthy.wait_for(1, timeout=1.0)
    assert verify(sub["secret"], received)["type"] == "job.succeeded"
    finished = next(e for e in await relay.events(job["id"]) if e["type"] == "job.succeeded")
    arrived = received.at + (time.time() - time.monotonic())
    assert arrived - epoch(finished["created_at"]) < 1.0
    assert slow.attempts == []  # still hanging: four deliveries in flight to it


async def test_private_target_is_refused_at_delivery(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    fast = {"RELAY_RETRY_SCHEDULE": "0,0.1,0.2", "RELAY_DELIVERY_TIMEOUT": "0.5"}
    subscriber, url = await serve_subscriber()
    # Submission refuses a private webhook too; a job accepted while private targets were
    # allowed is still refused at delivery once they no longer are.
    allowing = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1", workers=False, **fast)
    answer = await allowing.submit({**IMAGE_JOB, "webhook": f"{url}/hook"})
    assert answer.status_code == 202, answer.text
    relay = await start_relay(RELAY_DATABASE=allowing.settings.database, **fast)
    job = await relay.wait_status(answer.json()["id"], TERMINAL)
    [delivery] = await settled(relay, 1, job_id=job["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 1
    [attempt] = delivery["attempt_log"]
    assert attempt["status_code"] is None
    assert "refused" in attempt["error"]
    assert "loopback" in attempt["error"]
    assert subscriber.attempts == []


async def test_retry_of_a_canceled_delivery_is_refused(start_relay) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1")
    subscriber = Subscriber()
    subscriber.down = True
    async with serve(subscriber.app) as url:
        sub = (await relay.client.post("/v1/subscriptions", json={"url": f"{url}/h"})).json()
        await relay.client.post(f"/v1/subscriptions/{sub['id']}/test")
        assert (await relay.client.delete(f"/v1/subscriptions/{sub['id']}")).status_code == 204
        deliveries = (await relay.client.get("/v1/deliveries")).json()["data"]
        assert deliveries[0]["status"] == "canceled"
        answer = await relay.client.post(f"/v1/deliveries/{deliveries[0]['id']}/retry")
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "delivery_canceled"
