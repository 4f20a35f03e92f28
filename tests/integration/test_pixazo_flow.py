"""Pixazo end to end: submission, callbacks, confirmation, over real loopback HTTP."""

from __future__ import annotations

import asyncio

from service.sim.pixazo import PixazoSim
from tests.conftest import IMAGE_JOB, VIDEO_JOB, Running

TERMINAL = {"succeeded", "failed", "canceled"}


async def test_image_and_video_reach_succeeded_through_callbacks(
    relay: Running, pixazo: PixazoSim
) -> None:
    ids = []
    for body in (IMAGE_JOB, VIDEO_JOB):
        answer = await relay.submit(body)
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["status"] == "queued"
        assert job["provider_job_id"].startswith("seedvr-upscale_")
        assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
        ids.append(job["id"])
    for job_id, ext in zip(ids, ("png", "mp4"), strict=True):
        job = await relay.wait_status(job_id, TERMINAL)
        assert job["status"] == "succeeded"
        assert job["progress"] == 1.0
        assert job["outputs"][0]["url"].endswith(f"output.{ext}")
        types = [e["type"] for e in await relay.events(job_id)]
        assert types[:2] == ["job.created", "job.queued"]
        assert types.count("job.succeeded") == 1
        assert types.count("job.processing") == 1
        succeeded = next(e for e in await relay.events(job_id) if e["type"] == "job.succeeded")
        assert succeeded["source"] == "callback"
    generate = [r for r in pixazo.requests if r.path.endswith("/generate")]
    assert len(generate) == 2
    for request in generate:
        assert request.headers["ocp-apim-subscription-key"] == pixazo.api_key
        assert request.headers["x-webhook-url"].startswith(f"{relay.url}/hooks/pixazo/")
        assert "sync_mode" not in request.json
    assert generate[0].json == IMAGE_JOB["input"]
    # every terminal callback was confirmed against the status endpoint
    assert sum(r.path.startswith("/v2/requests/status/") for r in pixazo.requests) >= 2


async def test_job_metadata_and_read_routes(relay: Running) -> None:
    job = (await relay.submit(IMAGE_JOB)).json()
    done = await relay.wait_status(job["id"], TERMINAL)
    assert done["metadata"] == {"tenant": "acme"}
    assert done["model"] == "pixazo/seedvr-image"
    assert done["provider"] == "pixazo"
    assert done["created_at"].endswith("Z") and done["finished_at"].endswith("Z")


async def test_lost_callbacks_are_covered_by_polling_after_the_grace(
    start_relay, pixazo: PixazoSim
) -> None:
    pixazo.lose_callbacks = True
    relay = await start_relay(RELAY_CALLBACK_GRACE="0.3")
    job = (await relay.submit(IMAGE_JOB)).json()
    done = await relay.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded"
    events = await relay.events(job["id"])
    assert next(e for e in events if e["type"] == "job.succeeded")["source"] == "poll"
    assert not any(e["type"] == "callback.received" for e in events)


async def test_callback_before_the_submission_answer_is_applied(
    relay: Running, pixazo: PixazoSim
) -> None:
    pixazo.callback_before_answer = True
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 202
    done = await relay.wait_status(answer.json()["id"], TERMINAL)
    assert done["status"] == "succeeded"
    types = [e["type"] for e in await relay.events(done["id"])]
    assert "callback.received" in types
    assert types.count("job.succeeded") == 1


async def test_duplicate_callbacks_write_one_event_each(relay: Running, pixazo: PixazoSim) -> None:
    pixazo.duplicate_callbacks = True
    job = (await relay.submit(VIDEO_JOB)).json()
    await relay.wait_status(job["id"], TERMINAL)
    await asyncio.sleep(0.1)  # let the duplicate of the last callback land too
    types = [e["type"] for e in await relay.events(job["id"])]
    assert types.count("job.succeeded") == 1
    assert types.count("job.processing") == 1
    assert types.count("callback.received") == 2  # identical bodies are recorded once


async def test_failed_and_error_outcomes(relay: Running) -> None:
    for word in ("fail", "error"):
        body = {
            "model": "pixazo/seedvr-image",
            "input": {"image_url": f"https://example.com/x.png?sim={word}"},
        }
        job = (await relay.submit(body)).json()
        done = await relay.wait_status(job["id"], TERMINAL)
        assert done["status"] == "failed"
        assert done["error"]["code"] == f"provider_{'failed' if word == 'fail' else 'error'}"
        assert done["error"]["message"]
        assert done["outputs"] == []
