"""GET /metrics: open by default, behind a bearer token when RELAY_METRICS_TOKEN is set; what
each metric counts, scraped over HTTP from a relay working against the simulators."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.subscriber import Subscriber
from tests.conftest import IMAGE_JOB, Running, StartRelay
from tests.integration.helpers import (
    FAST,
    TERMINAL,
    ServeSubscriber,
    deliveries,
    held_job,
    run_job,
    settled,
    subscribe,
    until,
)


async def _metrics(relay: Running, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=relay.url) as client:
        return await client.get("/metrics", headers=headers)


async def test_metrics_are_open_without_a_token(relay: Running) -> None:
    answer = await _metrics(relay, None)
    assert answer.status_code == 200
    assert "relay_events_total" in answer.text


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer wrong", "Basic m3trics-token", "m3trics-token"]
)
async def test_metrics_token_is_required_when_set(
    start_relay: StartRelay, authorization: str | None
) -> None:
    relay = await start_relay(RELAY_METRICS_TOKEN="m3trics-token", RELAY_API_TOKENS="api-token")
    answer = await _metrics(relay, authorization)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "m3trics-token" not in answer.text


async def test_metrics_answer_the_right_token_only(start_relay: StartRelay) -> None:
    relay = await start_relay(RELAY_METRICS_TOKEN="m3trics-token", RELAY_API_TOKENS="api-token")
    answer = await _metrics(relay, "Bearer m3trics-token")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "relay_jobs" in answer.text
    # an API token is not the metrics token
    assert (await _metrics(relay, "Bearer api-token")).status_code == 401
    assert (await _metrics(relay, "bearer m3trics-token")).status_code == 200


# -- what the metrics count (scraped over HTTP, parsed with prometheus_client's parser) -------

IMAGE_GENERATE = "POST /seedvr-upscale/v1/upscale-image/generate"
SLOW = {**FAST, "RELAY_RETRY_SCHEDULE": "0,600"}  # a failed attempt waits ten minutes


async def scrape(relay: Running, accept: str | None = None) -> list[Metric]:
    headers = {"Accept": accept} if accept else {}
    async with httpx.AsyncClient(base_url=relay.url) as anon:
        answer = await anon.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    return list(text_string_to_metric_families(answer.text))


def value(families: list[Metric], sample: str, **labels: str) -> float:
    """The sum of the samples named `sample` whose labels include `labels` (0 when none)."""
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def labelled(families: list[Metric], sample: str) -> list[dict[str, str]]:
    return [s.labels for f in families for s in f.samples if s.name == sample]


async def test_callbacks_are_counted_by_outcome_and_rejected_ones_by_reason(
    relay: Running, pixazo: PixazoSim
) -> None:
    before = await scrape(relay)
    assert value(before, "relay_callbacks_rejected_total") == 0
    _, hook = await held_job(relay, pixazo)  # one PROCESSING callback, applied
    async with httpx.AsyncClient() as client:
        assert (await client.post(hook, content=b"{broken")).status_code == 400
        assert (await client.post(hook + "x", content=b"{}")).status_code == 404
        assert (await client.post(relay.url + "/hooks/pixazo/forged", content=b"{}")).is_error
        assert (await client.get(hook)).status_code == 405
    after = await scrape(relay)
    assert value(after, "relay_callbacks_received_total", outcome="applied") == 1
    assert value(after, "relay_callbacks_rejected_total", reason="invalid_json") == 1
    assert value(after, "relay_callbacks_rejected_total", reason="not_found") == 2
    assert value(after, "relay_callbacks_rejected_total", reason="method_not_allowed") == 1
    # counted by this process: every per-process series names it
    names = labelled(after, "relay_callbacks_rejected_total")
    assert {n["process"] for n in names} == {relay.relay.metrics.process}
    assert ":" in relay.relay.metrics.process  # host:pid


async def test_provider_calls_are_counted_by_endpoint_and_status(
    relay: Running, pixazo: PixazoSim
) -> None:
    pixazo.fail_next(503)  # the submission is retried once (outbound retries 5xx)
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 202, answer.text
    job = await relay.wait_status(answer.json()["id"], TERMINAL)
    assert job["status"] == "succeeded"
    found = await scrape(relay)
    calls = "relay_provider_calls_total"
    assert value(found, calls, provider="pixazo", endpoint=IMAGE_GENERATE, status="503") == 1
    assert value(found, calls, provider="pixazo", endpoint=IMAGE_GENERATE, status="202") == 1
    # the terminal callback was confirmed with Pixazo's status endpoint, its id out of the label
    status = "GET /v2/requests/status/{id}"
    assert value(found, calls, provider="pixazo", endpoint=status, status="200") >= 1
    endpoints = {s["endpoint"] for s in labelled(found, calls)}
    assert endpoints <= {IMAGE_GENERATE, status}
    timed = value(found, "relay_provider_call_duration_seconds_count", endpoint=IMAGE_GENERATE)
    assert timed == 2
    # the job's duration, from creation to its end, observed once by model and outcome
    ended = value(
        found,
        "relay_job_duration_seconds_count",
        model="pixazo/seedvr-image",
        outcome="succeeded",
    )
    assert ended == 1
    assert value(found, "relay_job_duration_seconds_sum") > 0
    assert value(found, "relay_jobs", provider="pixazo", status="succeeded") == 1


async def test_an_unreachable_provider_is_counted_by_its_error(start_relay) -> None:
    relay = await start_relay(PIXAZO_BASE_URL="http://127.0.0.1:9")  # nothing listens there
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 502, answer.text
    found = await scrape(relay)
    calls = "relay_provider_calls_total"
    assert value(found, calls, provider="pixazo", status="ConnectError") >= 1
    failed = value(found, "relay_job_duration_seconds_count", outcome="failed")
    assert failed == 1


async def test_polls_are_counted_with_their_lateness(relay: Running, scenario: ScenarioSim) -> None:
    asset = scenario.add_asset(b"x", "image/png")
    body = {"model": "scenario/upscale-v3", "input": {"image": asset}}
    answer = await relay.submit(body)
    await relay.wait_status(answer.json()["id"], TERMINAL)
    found = await scrape(relay)
    assert value(found, "relay_polls_total", provider="scenario", outcome="answered") >= 1
    late = value(found, "relay_poll_lateness_seconds_count", provider="scenario")
    assert late >= 1
    bucket = "relay_poll_lateness_seconds_bucket"
    assert value(found, bucket, provider="scenario", le="+Inf") == late
    assert (
        value(
            found, "relay_provider_calls_total", provider="scenario", endpoint="GET /v1/jobs/{id}"
        )
        >= 1
    )


async def test_deliveries_are_counted_by_kind_and_outcome(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    subscriber.fail_next(400)  # final at once: failed
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    [failed] = await settled(relay, 1, subscription_id=sub["id"])
    assert failed["status"] == "failed"
    await run_job(relay)
    await settled(relay, 2, subscription_id=sub["id"])
    found = await scrape(relay)
    attempts = "relay_delivery_attempts_total"
    assert value(found, attempts, kind="webhook", outcome="failed") == 1
    assert value(found, attempts, kind="webhook", outcome="delivered") == 1
    assert value(found, "relay_delivery_attempt_duration_seconds_count", kind="webhook") == 2
    # the latency from the event to the subscriber's 2xx: only the delivered one
    assert value(found, "relay_delivery_latency_seconds_count", kind="webhook") == 1
    assert value(found, "relay_delivery_latency_seconds_sum", kind="webhook") > 0
    assert value(found, "relay_deliveries", status="failed") == 1
    assert value(found, "relay_outbox_depth") == 0
    assert value(found, "relay_outbox_oldest_pending_age_seconds") == 0


async def _pending_and_paused(relay: Running, url: str, subscriber: Subscriber) -> None:
    """One delivery waiting for its retry, one paused subscription."""
    subscriber.fail_next(500)
    sub = await subscribe(relay, f"{url}/hook")
    await run_job(relay)
    await until(lambda: len(subscriber.attempts) == 1)
    other = await subscribe(relay, f"{url}/other")
    paused = await relay.client.patch(f"/v1/subscriptions/{other['id']}", json={"paused": True})
    assert paused.status_code == 200, paused.text
    deadline = asyncio.get_running_loop().time() + 5
    while (await deliveries(relay, subscription_id=sub["id"]))[0]["attempts"] < 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def test_the_outbox_shows_its_depth_and_its_oldest_pending_age(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**SLOW)
    subscriber, url = await serve_subscriber()
    before = await scrape(relay)
    assert value(before, "relay_subscriptions_paused") == 0
    await _pending_and_paused(relay, url, subscriber)
    await asyncio.sleep(0.05)
    found = await scrape(relay)
    assert value(found, "relay_delivery_attempts_total", outcome="retrying") == 1
    assert value(found, "relay_outbox_depth") == 1
    assert value(found, "relay_deliveries", status="pending") == 1
    assert value(found, "relay_outbox_oldest_pending_age_seconds") > 0.05
    assert value(found, "relay_subscriptions_paused") == 1
    assert value(found, "relay_subscriptions", status="paused") == 1


async def test_jobs_in_flight_and_held_back_by_the_cap(start_relay, pixazo: PixazoSim) -> None:
    relay = await start_relay(RELAY_MAX_IN_FLIGHT="1")
    empty = await scrape(relay)
    # every configured provider shows up at 0 before its first job
    assert value(empty, "relay_jobs_in_flight", provider="scenario") == 0
    assert {s["provider"] for s in labelled(empty, "relay_jobs_deferred")} == {
        "pixazo",
        "scenario",
    }
    await held_job(relay, pixazo)  # processing: in flight
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "submitting"
    found = await scrape(relay)
    assert value(found, "relay_jobs_in_flight", provider="pixazo") == 1
    assert value(found, "relay_jobs_deferred", provider="pixazo") == 1
    assert value(found, "relay_jobs_deferred", provider="scenario") == 0


async def test_open_event_streams_are_shown(relay: Running) -> None:
    assert value(await scrape(relay), "relay_event_streams") == 0
    async with relay.client.stream("GET", "/v1/events/stream") as response:
        assert response.status_code == 200
        assert value(await scrape(relay), "relay_event_streams") == 1
    await until_async(lambda: scrape(relay), lambda f: value(f, "relay_event_streams") == 0)


async def until_async(
    fetch: Callable[[], Awaitable[list[Metric]]], check: Callable[[list[Metric]], bool]
) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not check(await fetch()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_two_apps_in_one_interpreter_count_apart(
    start_relay: StartRelay, pixazo: PixazoSim
) -> None:
    first, second = await start_relay(), await start_relay()
    async with httpx.AsyncClient() as client:
        await client.post(first.url + "/hooks/pixazo/forged", content=b"{}")
    assert value(await scrape(first), "relay_callbacks_rejected_total") == 1
    assert value(await scrape(second), "relay_callbacks_rejected_total") == 0
    assert first.relay.metrics.registry is not second.relay.metrics.registry


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(relay: Running) -> None:
    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    async with httpx.AsyncClient(base_url=relay.url) as anon:
        answer = await anon.get("/metrics", headers={"Accept": accept})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    families = {f.name for f in openmetrics_families(answer.text)}
    assert {"relay_events", "relay_callbacks_rejected", "relay_outbox_depth"} <= families


async def test_postgres_reads_the_gauges_from_the_database(
    start_relay, serve_subscriber: ServeSubscriber, pg_url: str
) -> None:
    relay = await start_relay(RELAY_DATABASE=pg_url, RELAY_MAX_IN_FLIGHT="1", **SLOW)
    subscriber, url = await serve_subscriber()
    await _pending_and_paused(relay, url, subscriber)  # one job succeeded: none in flight
    await asyncio.sleep(0.05)
    found = await scrape(relay)
    assert value(found, "relay_outbox_depth") == 1
    assert value(found, "relay_outbox_oldest_pending_age_seconds") > 0.05
    assert value(found, "relay_subscriptions_paused") == 1
    assert value(found, "relay_jobs_in_flight", provider="pixazo") == 0
    assert value(found, "relay_jobs", provider="pixazo", status="succeeded") == 1
    assert value(found, "relay_events_total") > 0
    assert value(found, "relay_job_duration_seconds_count", outcome="succeeded") == 1
    assert value(found, "relay_delivery_attempts_total", outcome="retrying") == 1
