"""RELAY_ARCHIVE with a local folder: outputs copied from the Pixazo simulator before the job is
announced, retried, refused, served with range requests; after_notify reports later."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import httpx

from service.sim.pixazo import PixazoSim
from tests.conftest import IMAGE_JOB, VIDEO_JOB, Running, StartRelay
from tests.integration.helpers import FAST, ServeSubscriber, subscribe

TOKEN = "archive-test-token"


async def archiving(start_relay: StartRelay, tmp_path: Path, **env: str) -> Running:
    values = {
        **FAST,
        "RELAY_ARCHIVE": f"file://{tmp_path}/archive",
        "RELAY_ARCHIVE_RETRY_SCHEDULE": "0,0.1,0.2",
        "RELAY_API_TOKENS": TOKEN,
        **env,
    }
    return await start_relay(**values)


async def event_types(relay: Running, job_id: str, until: str, limit: float = 10) -> list[str]:
    """The job's event types once one of type `until` is there."""
    deadline = time.monotonic() + limit
    while True:
        found = [e["type"] for e in await relay.events(job_id)]
        if until in found:
            return found
        assert time.monotonic() < deadline, f"no {until} for {job_id}: {found}"
        await asyncio.sleep(0.02)


async def succeeded(relay: Running, body: dict[str, Any] = IMAGE_JOB) -> dict[str, Any]:
    answer = await relay.submit(body)
    assert answer.status_code == 202, answer.text
    return await relay.wait_status(answer.json()["id"], {"succeeded"})


async def test_outputs_are_archived_before_the_job_is_announced(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim, serve_subscriber: ServeSubscriber
) -> None:
    subscriber, hook = await serve_subscriber()
    relay = await archiving(start_relay, tmp_path)
    await subscribe(relay, hook)  # the default: job.succeeded, job.failed, job.canceled
    pixazo.output_dimensions = (320, 200)
    job = await succeeded(relay)
    types = await event_types(relay, job["id"], "job.succeeded")
    assert types.index("job.archiving") < types.index("job.succeeded")
    (received,) = await subscriber.wait_for(1)
    assert received.json["type"] == "job.succeeded"
    (out,) = received.json["data"]["outputs"]
    body = pixazo.output_bodies[job["provider_job_id"]]
    assert out["url"].startswith(pixazo.base_url)
    assert out["archive_url"] == f"{relay.url}/v1/outputs/{job['id']}/0"
    assert out["sha256"] == hashlib.sha256(body).hexdigest()
    assert (out["bytes"], out["content_type"]) == (len(body), "image/png")
    assert (out["width"], out["height"]) == (320, 200)
    assert "archive_key" not in out
    # in the folder, under {yyyy}/{mm}/{dd}/{job_id}/{n}.{ext}
    (stored,) = (tmp_path / "archive").rglob("*.png")
    assert stored.read_bytes() == body
    assert stored.relative_to(tmp_path / "archive").parts[3:] == (job["id"], "0.png")
    assert time.strftime("%Y/%m/%d", time.gmtime()) in str(stored)
    # the job as read: the copy's facts beside the provider's URL
    shown = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["outputs"][0]
    assert shown["archive_status"] == "archived"
    assert shown["sha256"] == out["sha256"]
    assert shown["archive_url"] == out["archive_url"]
    served = await relay.client.get(out["archive_url"])
    assert served.status_code == 200
    assert served.content == body
    assert served.headers["content-type"] == "image/png"
    assert served.headers["etag"] == f'"{out["sha256"]}"'
    assert served.headers["accept-ranges"] == "bytes"
    anonymous = await relay.client.get(out["archive_url"], headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_a_url_that_fails_twice_is_archived_on_the_third_try(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path)
    pixazo.output_failures = 2
    job = await succeeded(relay)
    types = await event_types(relay, job["id"], "job.succeeded")
    assert "job.archive_failed" not in types
    assert pixazo.output_requests == 3
    events = await relay.events(job["id"])
    (out,) = next(e for e in events if e["type"] == "job.succeeded")["data"]["outputs"]
    assert out["sha256"] == hashlib.sha256(pixazo.output_bodies[job["provider_job_id"]]).hexdigest()


async def test_a_url_that_keeps_failing_is_given_up_and_the_job_still_announced(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim, serve_subscriber: ServeSubscriber
) -> None:
    subscriber, hook = await serve_subscriber()
    relay = await archiving(start_relay, tmp_path)
    await subscribe(relay, hook, events=["job.succeeded", "job.archive_failed"])
    pixazo.output_status = 503
    job = await succeeded(relay)
    types = await event_types(relay, job["id"], "job.succeeded")
    assert types.index("job.archive_failed") < types.index("job.succeeded")
    assert pixazo.output_requests == 3  # the schedule: 0, 0.1, 0.2
    received = await subscriber.wait_for(2)
    by_type = {r.json["type"]: r.json["data"] for r in received}
    assert by_type["job.archive_failed"]["error"]["message"] == (
        "output 0: the provider's URL answered HTTP 503"
    )
    (out,) = by_type["job.succeeded"]["outputs"]
    assert set(out) == {"url", "media_type"}  # the provider's URL only
    shown = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["outputs"][0]
    assert shown["archive_status"] == "failed"
    assert not list((tmp_path / "archive").rglob("*.png"))


async def test_an_output_over_the_cap_is_refused_without_retry(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path, RELAY_ARCHIVE_MAX_IMAGE_BYTES="4000")
    pixazo.output_size = 5000
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    failed = next(e for e in await relay.events(job["id"]) if e["type"] == "job.archive_failed")
    assert failed["data"]["archive"]["reason"] == (
        "the output is 5000 bytes, over the image cap of 4000 bytes"
    )
    assert pixazo.output_requests == 1
    assert not [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]


async def test_a_body_longer_than_announced_is_cut_at_the_cap(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    # streamed without a length: the cap is found while counting
    relay = await archiving(start_relay, tmp_path, RELAY_ARCHIVE_MAX_IMAGE_BYTES="100000")
    pixazo.output_size = 300_000
    pixazo.output_delay = 0.001
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    failed = next(e for e in await relay.events(job["id"]) if e["type"] == "job.archive_failed")
    assert "larger than the image cap of 100000 bytes" in failed["data"]["archive"]["reason"]
    assert not [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]


async def test_private_output_urls_are_refused_by_the_guard(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path, RELAY_ALLOW_PRIVATE_TARGETS="0")
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    failed = next(e for e in await relay.events(job["id"]) if e["type"] == "job.archive_failed")
    assert "refused" in failed["data"]["archive"]["reason"]
    assert pixazo.output_requests == 0


async def test_after_notify_announces_first_then_reports_the_archive(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim, serve_subscriber: ServeSubscriber
) -> None:
    subscriber, hook = await serve_subscriber()
    relay = await archiving(start_relay, tmp_path, RELAY_ARCHIVE_MODE="after_notify")
    await subscribe(relay, hook, events=["job.succeeded", "job.archived"])
    job = await succeeded(relay)
    types = await event_types(relay, job["id"], "job.archived")
    assert "job.archiving" not in types
    assert types.index("job.succeeded") < types.index("job.archived")
    first, second = await subscriber.wait_for(2)
    assert (first.json["type"], second.json["type"]) == ("job.succeeded", "job.archived")
    assert "sha256" not in first.json["data"]["outputs"][0]
    assert second.json["data"]["outputs"][0]["archive_url"].endswith(f"/{job['id']}/0")


async def test_a_video_is_served_in_ranges(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path)
    pixazo.output_size = 4096
    job = await succeeded(relay, VIDEO_JOB)
    await event_types(relay, job["id"], "job.succeeded")
    body = pixazo.output_bodies[job["provider_job_id"]]
    url = f"/v1/outputs/{job['id']}/0"
    seek = await relay.client.get(url, headers={"Range": "bytes=100-199"})
    assert seek.status_code == 206
    assert seek.content == body[100:200]
    assert seek.headers["content-range"] == "bytes 100-199/4096"
    assert seek.headers["content-length"] == "100"
    assert seek.headers["content-type"] == "video/mp4"
    tail = await relay.client.get(url, headers={"Range": "bytes=-96"})
    assert (tail.status_code, tail.content) == (206, body[-96:])
    rest = await relay.client.get(url, headers={"Range": "bytes=4000-"})
    assert (rest.status_code, rest.content) == (206, body[4000:])
    past = await relay.client.get(url, headers={"Range": "bytes=5000-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == "bytes */4096"
    several = await relay.client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, body)  # one range only: all of it
    for missing in (f"/v1/outputs/{job['id']}/1", "/v1/outputs/job_nope/0", url + "x"):
        assert (await relay.client.get(missing)).status_code == 404


async def test_without_an_archive_nothing_changes(
    start_relay: StartRelay, pixazo: PixazoSim
) -> None:
    relay = await start_relay()
    job = await succeeded(relay)
    types = await event_types(relay, job["id"], "job.succeeded")
    assert "job.archiving" not in types
    assert set(job["outputs"][0]) == {"url", "media_type"}
    assert pixazo.output_requests == 0
    assert (await relay.client.get(f"/v1/outputs/{job['id']}/0")).status_code == 404


async def test_retention_deletes_old_archived_files_and_their_urls(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    # 0.00002 days: 1.7 s; the pass runs every second for so short a retention
    relay = await archiving(start_relay, tmp_path, RELAY_ARCHIVE_RETENTION_DAYS="0.00002")
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    (stored,) = (tmp_path / "archive").rglob("*.png")
    url = f"/v1/outputs/{job['id']}/0"
    assert (await relay.client.get(url)).status_code == 200
    deadline = time.monotonic() + 10
    while stored.exists():
        assert time.monotonic() < deadline, "the archived file was never deleted"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the row is marked once the file is gone
    shown = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["outputs"][0]
    assert shown["archive_status"] == "deleted"
    assert "archive_url" not in shown
    assert (await relay.client.get(url)).status_code == 404
    # RELAY_RETENTION_DAYS is unset: the job's events are kept
    assert "job.succeeded" in [e["type"] for e in await relay.events(job["id"])]


async def test_an_output_of_another_media_kind_is_refused(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path)
    pixazo.output_media_type = "text/html"  # an error page answered with 200
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    failed = next(e for e in await relay.events(job["id"]) if e["type"] == "job.archive_failed")
    assert failed["data"]["archive"]["reason"] == (
        "the output is text/html, not the image this model makes"
    )
    assert pixazo.output_requests == 1


async def test_the_dashboard_shows_and_serves_the_archived_copy(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path)
    pixazo.output_dimensions = (32, 24)
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    body = pixazo.output_bodies[job["provider_job_id"]]
    view = f"/ui/outputs/{job['id']}/0"
    async with httpx.AsyncClient(base_url=relay.url) as browser:
        # no session: the sign-in page, not the file
        assert (await browser.get(view)).status_code in (303, 401)
        form = await browser.get("/ui/signin")
        token = re.search(r'name="csrf-token" content="([^"]+)"', form.text)
        assert token is not None
        signed = await browser.post("/ui/signin", data={"csrf": token[1], "token": TOKEN})
        assert signed.status_code == 303
        page = (await browser.get(f"/ui/jobs/{job['id']}")).text
        assert "Archived copies" in page
        assert f'href="{view}"' in page
        assert "32\u00d724" in page
        assert hashlib.sha256(body).hexdigest()[:16] in page
        served = await browser.get(view)
        assert (served.status_code, served.content) == (200, body)


async def test_a_generic_content_type_takes_the_providers_media_type(
    start_relay: StartRelay, tmp_path: Path, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, tmp_path)
    pixazo.output_media_type = "binary/octet-stream"  # as a bucket answers an untyped object
    job = await succeeded(relay)
    await event_types(relay, job["id"], "job.succeeded")
    shown = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["outputs"][0]
    assert (shown["archive_status"], shown["content_type"]) == ("archived", "image/png")
    assert (shown["width"], shown["height"]) == (64, 48)
