"""Scenario through the relay: submission, durable polling, outputs, errors, cost, dry runs."""

from __future__ import annotations

import pytest

from service.sim.scenario import ScenarioSim
from tests.conftest import Running

TERMINAL = {"succeeded", "failed", "canceled"}


def _job(model: str, media: str, **params: object) -> dict:
    key = "image" if model == "scenario/upscale-v3" else "video"
    return {"model": model, "input": {key: media, **params}, "metadata": {"tenant": "acme"}}


@pytest.mark.parametrize(
    ("model", "mime", "params"),
    [
        ("scenario/seedvr2-video", "video/mp4", {"upscaleFactor": 2, "outputQuality": "high"}),
        ("scenario/magnific-video-creative", "video/mp4", {"creativity": 40, "flavor": "natural"}),
        ("scenario/upscale-v3", "image/png", {"style": "standard", "strength": 0.2}),
    ],
)
async def test_each_scenario_model_is_polled_to_success(
    relay: Running, scenario: ScenarioSim, model: str, mime: str, params: dict
) -> None:
    asset = scenario.add_asset(b"x" * 100, mime)
    answer = await relay.submit(_job(model, asset, **params))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] == "queued"
    assert job["provider_job_id"].startswith("job_")
    assert job["cost"] is not None
    done = await relay.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded"
    assert done["progress"] == 1.0
    url = done["outputs"][0]["url"]
    assert "Signature=abc%2Bdef" in url  # the signed query string is kept as is
    call = scenario.generate_calls[-1]
    assert call.json == {("image" if "v3" in model else "video"): asset, **params}
    types = [e["type"] for e in await relay.events(job["id"])]
    assert types.count("job.succeeded") == 1
    assert all(e in types for e in ("job.created", "job.queued", "job.processing"))
    # progress is recorded per meaningful change, not per poll
    polls = len(scenario.poll_log[job["provider_job_id"]])
    assert types.count("job.progress") < polls


async def test_media_url_is_fetched_and_uploaded_first(
    start_relay, scenario: ScenarioSim, media: str
) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1")
    image = await relay.submit(_job("scenario/upscale-v3", f"{media}/media/photo.png?size=4096"))
    assert image.status_code == 202, image.text
    video = await relay.submit(
        _job("scenario/seedvr2-video", f"{media}/media/clip.mp4?size={6 * 1024 * 1024}")
    )
    assert video.status_code == 202, video.text
    assert scenario.request_count["asset_create"] == 1
    assert scenario.request_count["upload_create"] == 1
    for answer in (image, video):
        sent = answer.json()["input"]
        assert (await relay.wait_status(answer.json()["id"], TERMINAL))["status"] == "succeeded"
        assert sent  # the job keeps the input as the caller gave it
    assert all(
        c.json.get("image", c.json.get("video", "")).startswith("asset_")
        for c in scenario.generate_calls
    )


async def test_media_url_errors_are_clear(start_relay, scenario: ScenarioSim, media: str) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1")
    missing = await relay.submit(_job("scenario/upscale-v3", f"{media}/media/missing.png"))
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "media_unreachable"
    wrong = await relay.submit(_job("scenario/upscale-v3", f"{media}/media/clip.mp4"))
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "media_wrong_type"
    guarded = await start_relay()
    refused = await guarded.submit(_job("scenario/upscale-v3", f"{media}/media/photo.png"))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "media_refused"
    assert scenario.request_count["generate"] == 0


@pytest.mark.parametrize(
    ("marker", "status", "has_hint"),
    [("fail", "failed", True), ("failedspelling", "failed", True), ("cancel", "canceled", False)],
)
async def test_failure_and_cancel_keep_the_error(
    relay: Running, scenario: ScenarioSim, marker: str, status: str, has_hint: bool
) -> None:
    asset = scenario.add_asset(b"x", "video/mp4", name=f"clip-{marker}")
    job = (await relay.submit(_job("scenario/seedvr2-video", asset))).json()
    done = await relay.wait_status(job["id"], TERMINAL)
    assert done["status"] == status
    if has_hint:
        assert done["error"]["message"]
        assert "hint" in done["error"]["message"]
    assert done["outputs"] == []


async def test_429_bursts_back_off_and_the_job_still_finishes(
    relay: Running, scenario: ScenarioSim
) -> None:
    asset = scenario.add_asset(b"x", "image/png")
    job = (await relay.submit(_job("scenario/upscale-v3", asset))).json()
    scenario.burst_429(3)
    done = await relay.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded"
    types = [e["type"] for e in await relay.events(job["id"])]
    assert types.count("poll.error") == 1  # one event per streak, not per failed poll


async def test_retry_after_on_poll_is_honored(start_relay, scenario: ScenarioSim) -> None:
    relay = await start_relay(RELAY_POLL_MIN="0.05", RELAY_POLL_MAX="2")
    asset = scenario.add_asset(b"x", "image/png")
    job = (await relay.submit(_job("scenario/upscale-v3", asset))).json()
    scenario.burst_429(1, retry_after=1)
    await relay.wait_status(job["id"], TERMINAL)
    stamps = scenario.poll_log[job["provider_job_id"]]
    assert stamps[1] - stamps[0] >= 0.95


async def test_job_older_than_the_timeout_fails_with_timeout(
    start_relay, scenario: ScenarioSim
) -> None:
    scenario.process_seconds = 60
    relay = await start_relay(RELAY_JOB_TIMEOUT="1")
    asset = scenario.add_asset(b"x", "image/png")
    job = (await relay.submit(_job("scenario/upscale-v3", asset))).json()
    done = await relay.wait_status(job["id"], TERMINAL, limit=5)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "timeout"


async def test_dry_run_answers_the_cost_and_creates_no_job(
    relay: Running, scenario: ScenarioSim
) -> None:
    asset = scenario.add_asset(b"x", "video/mp4")
    answer = await relay.client.post(
        "/v1/jobs",
        params={"dry_run": "1"},
        json=_job("scenario/magnific-video-creative", asset, resolution="4k"),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dry_run"] is True
    assert body["cost"] == 40
    assert body["input"]["resolution"] == "4k"
    assert scenario.generate_calls[-1].dry_run is True
    assert scenario.jobs == {}
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []
    bad = await relay.client.post(
        "/v1/jobs",
        params={"dry_run": "1"},
        json=_job("scenario/magnific-video-creative", asset, resolution="8k"),
    )
    assert bad.status_code == 422
    assert len(scenario.generate_calls) == 1


async def test_project_id_is_sent_when_set(start_relay, scenario: ScenarioSim) -> None:
    relay = await start_relay(SCENARIO_PROJECT_ID="proj_123")
    asset = scenario.add_asset(b"x", "image/png")
    await relay.submit(_job("scenario/upscale-v3", asset))
    assert scenario.generate_calls[-1].project_id == "proj_123"


async def test_wrong_scenario_credentials_are_a_clear_error(
    start_relay, scenario: ScenarioSim
) -> None:
    relay = await start_relay(SCENARIO_API_SECRET="wrong")
    asset = scenario.add_asset(b"x", "image/png")
    answer = await relay.submit(_job("scenario/upscale-v3", asset))
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "provider_unauthorized"


async def test_in_flight_cap_holds_jobs_back_and_submits_them_later(
    start_relay, scenario: ScenarioSim
) -> None:
    scenario.process_seconds = 0.4
    relay = await start_relay(RELAY_MAX_IN_FLIGHT="2")
    asset = scenario.add_asset(b"x", "image/png")
    answers = [(await relay.submit(_job("scenario/upscale-v3", asset))).json() for _ in range(5)]
    assert [a["status"] for a in answers] == ["queued", "queued"] + ["submitting"] * 3
    assert all(a.get("deferred") for a in answers[2:])
    assert len(scenario.generate_calls) == 2
    for answer in answers:
        done = await relay.wait_status(answer["id"], TERMINAL, limit=15)
        assert done["status"] == "succeeded"
    # never more than two jobs running at Scenario at once
    spans = sorted(
        (job.started, job.started + job.queue_seconds + job.process_seconds)
        for job in scenario.jobs.values()
    )
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2


async def test_metrics_show_how_late_polls_start(relay: Running, scenario: ScenarioSim) -> None:
    asset = scenario.add_asset(b"x", "image/png")
    job = (await relay.submit(_job("scenario/upscale-v3", asset))).json()
    await relay.wait_status(job["id"], TERMINAL)
    text = (await relay.client.get("/metrics")).text
    count = next(
        line for line in text.splitlines() if line.startswith("relay_poll_lateness_seconds_count")
    )
    assert float(count.split()[-1]) >= 1
    assert "relay_poll_lateness_max_seconds" in text
