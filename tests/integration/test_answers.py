"""What the API answers as the README describes it: refusals before a job is recorded create
none, an unconfigured provider names its variables, `progress` is always a float."""

from __future__ import annotations

from typing import Any

from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.subscriber import Subscriber
from tests.conftest import IMAGE_JOB, Running, StartRelay
from tests.integration.helpers import FAST, ServeSubscriber, subscribe

TERMINAL = {"succeeded", "failed", "canceled"}


def _scenario_job(url: str) -> dict[str, Any]:
    return {"model": "scenario/upscale-v3", "input": {"image": url}}


async def _jobs(relay: Running) -> list[dict[str, Any]]:
    return (await relay.client.get("/v1/jobs")).json()["data"]


async def _events(relay: Running) -> list[dict[str, Any]]:
    return (await relay.client.get("/v1/events")).json()["data"]


# -- 503 provider_not_configured ----------------------------------------------------------


async def test_an_unconfigured_provider_names_the_variables_to_set(start_relay: StartRelay) -> None:
    relay = await start_relay(PIXAZO_API_KEY="", SCENARIO_API_SECRET="")
    pixazo = await relay.submit(IMAGE_JOB)
    assert pixazo.status_code == 503
    error = pixazo.json()["error"]
    assert error["code"] == "provider_not_configured"
    assert "PIXAZO_API_KEY" in error["message"]
    assert error["details"] == {"provider": "pixazo", "variables": ["PIXAZO_API_KEY"]}
    # the key is there, the secret is not: only the secret is named
    scenario = await relay.submit(_scenario_job("asset_abc"))
    assert scenario.status_code == 503
    error = scenario.json()["error"]
    assert "set SCENARIO_API_SECRET " in error["message"]
    assert error["details"] == {"provider": "scenario", "variables": ["SCENARIO_API_SECRET"]}
    assert await _jobs(relay) == []


async def test_a_provider_with_nothing_set_names_all_its_variables(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay(SCENARIO_API_KEY="", SCENARIO_API_SECRET="")
    answer = await relay.submit(_scenario_job("asset_abc"))
    error = answer.json()["error"]
    assert "set SCENARIO_API_KEY and SCENARIO_API_SECRET " in error["message"]
    assert error["details"]["variables"] == ["SCENARIO_API_KEY", "SCENARIO_API_SECRET"]


# -- 422 media_*: before the job is recorded, none; after, a failed job ---------------------


async def test_a_media_url_to_a_private_address_creates_no_job(
    start_relay: StartRelay,
    serve_subscriber: ServeSubscriber,
    scenario: ScenarioSim,
    media: str,
) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="0")
    headers = {"Idempotency-Key": "media-1"}
    body = _scenario_job(f"{media}/media/photo.png?sig=secret-sig")
    refused = await relay.submit(body, headers=headers)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "media_refused"
    assert "secret-sig" not in refused.text
    assert error["details"][0]["field"] == "input.image"
    assert "job_id" not in error["details"][0]
    # like any other validation error: no job, no event, nothing to notify
    assert await _jobs(relay) == []
    assert await _events(relay) == []
    assert scenario.request_count["generate"] == 0
    # a repeat of the key is judged afresh (nothing was kept), and so is a corrected body
    again = await relay.submit(body, headers=headers)
    assert again.status_code == 422 and again.json() == refused.json()
    fixed = await relay.submit(
        _scenario_job(scenario.add_asset(b"x", "image/png")), headers=headers
    )
    assert fixed.status_code == 202, fixed.text
    assert len(await _jobs(relay)) == 1


async def test_a_media_url_that_fails_to_download_fails_its_job_once(
    start_relay: StartRelay,
    serve_subscriber: ServeSubscriber,
    scenario: ScenarioSim,
    media: str,
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    await subscribe(relay, f"{url}/hook", events=["job.failed"])
    headers = {"Idempotency-Key": "media-2"}
    body = _scenario_job(f"{media}/media/missing.png")
    first = await relay.submit(body, headers=headers)
    assert first.status_code == 422, first.text
    error = first.json()["error"]
    assert error["code"] == "media_unreachable"
    job = (await relay.client.get(f"/v1/jobs/{error['details']['job_id']}")).json()
    assert job["status"] == "failed" and job["error"]["code"] == "media_unreachable"
    [notified] = await subscriber.wait_for(1)
    assert notified.json["type"] == "job.failed"
    assert notified.json["data"]["id"] == job["id"]
    # the same key and body: the same answer, and still one job
    second = await relay.submit(body, headers=headers)
    assert (second.status_code, second.json()) == (422, first.json())
    assert [j["id"] for j in await _jobs(relay)] == [job["id"]]
    assert scenario.request_count["generate"] == 0


# -- progress is a float everywhere ----------------------------------------------------------


def _progress_values(value: Any) -> list[Any]:
    """Every `progress` value anywhere inside a JSON value."""
    found: list[Any] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "progress":
                found.append(item)
            else:
                found += _progress_values(item)
    elif isinstance(value, list):
        for item in value:
            found += _progress_values(item)
    return found


async def test_progress_is_a_float_in_jobs_events_and_notifications(
    start_relay: StartRelay,
    serve_subscriber: ServeSubscriber,
    pixazo: PixazoSim,
    scenario: ScenarioSim,
) -> None:
    relay = await start_relay(**FAST)
    subscriber: Subscriber
    subscriber, url = await serve_subscriber()
    await subscribe(relay, f"{url}/hook", events=["job.*"])
    asset = scenario.add_asset(b"x", "image/png")
    bodies = [
        IMAGE_JOB,
        {**IMAGE_JOB, "input": {"image_url": "https://example.com/a.png?sim=fail"}},
        _scenario_job(asset),
    ]
    answers = [await relay.submit(body) for body in bodies]
    seen: list[Any] = []
    for answer in answers:
        assert answer.status_code == 202, answer.text
        seen += _progress_values(answer.json())
        done = await relay.wait_status(answer.json()["id"], TERMINAL)
        seen += _progress_values(done)
        seen += _progress_values(await relay.events(done["id"]))
    seen += _progress_values(await _jobs(relay))
    seen += _progress_values(await _events(relay))
    notified = await subscriber.wait_for(6)
    seen += _progress_values([n.json for n in notified])
    assert len(seen) > 20
    assert [v for v in seen if type(v) is not float] == [], [(type(v), v) for v in seen]


# -- pages: next_cursor (jobs) and has_more (events) say whether another page follows --------


async def test_a_full_last_page_says_nothing_more_follows(relay: Running) -> None:
    ids = [(await relay.submit(IMAGE_JOB)).json()["id"] for _ in range(3)]
    for job_id in ids:
        await relay.wait_status(job_id, TERMINAL)
    jobs = relay.client.get
    whole = (await jobs("/v1/jobs", params={"limit": 3})).json()
    assert [j["id"] for j in whole["data"]] == ids[::-1]
    assert whole["next_cursor"] is None
    first = (await jobs("/v1/jobs", params={"limit": 2})).json()
    assert first["next_cursor"] is not None
    rest = (await jobs("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["next_cursor"] is None

    count = len(await _events(relay))
    for path, total in (("/v1/events", count), (f"/v1/jobs/{ids[0]}/events", None)):
        total = total or len((await jobs(path)).json()["data"])
        exact = (await jobs(path, params={"limit": total})).json()
        assert len(exact["data"]) == total and exact["has_more"] is False
        short = (await jobs(path, params={"limit": total - 1})).json()
        assert len(short["data"]) == total - 1 and short["has_more"] is True
        last = (await jobs(path, params={"after": short["next_cursor"]})).json()
        assert len(last["data"]) == 1 and last["has_more"] is False


async def test_subscription_and_delivery_pages_say_when_nothing_more_follows(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1")
    for n in range(2):
        body = {"url": f"http://127.0.0.1:9/hook{n}", "kind": "webhook"}
        assert (await relay.client.post("/v1/subscriptions", json=body)).status_code == 201
    for _ in range(2):
        await relay.wait_status((await relay.submit(IMAGE_JOB)).json()["id"], TERMINAL)
    get = relay.client.get
    for path, count in (("/v1/subscriptions", 2), ("/v1/deliveries", 4)):
        exact = (await get(path, params={"limit": count})).json()
        assert len(exact["data"]) == count and exact["next_cursor"] is None, path
        short = (await get(path, params={"limit": count - 1})).json()
        assert short["next_cursor"] is not None, path
        rest = (await get(path, params={"cursor": short["next_cursor"]})).json()
        assert len(rest["data"]) == 1 and rest["next_cursor"] is None, path


async def test_a_subscription_takes_the_documented_defaults(
    start_relay: StartRelay, serve_subscriber: ServeSubscriber
) -> None:
    """README: 4 webhook deliveries in flight; chat channels one at a time, paced."""
    relay = await start_relay(**FAST)
    _, url = await serve_subscriber()
    webhook = await subscribe(relay, f"{url}/hook")
    assert (webhook["max_in_flight"], webhook["rate_per_second"]) == (4, None)
    slack = await subscribe(relay, f"{url}/slack", kind="slack")
    assert (slack["max_in_flight"], slack["rate_per_second"]) == (1, 1.0)
    discord = await subscribe(relay, f"{url}/discord", kind="discord")
    assert (discord["max_in_flight"], discord["rate_per_second"]) == (1, 2.0)
    chosen = await subscribe(relay, f"{url}/more", max_in_flight=16)
    assert chosen["max_in_flight"] == 16
