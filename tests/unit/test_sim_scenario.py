"""The Scenario and media simulators over real loopback HTTP: jobs, assets, uploads, 429s."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.types import ASGIApp, Receive, Scope, Send

from service.sim.media import MediaSim
from service.sim.scenario import PART_SIZE, ScenarioSim
from tests.unit.conftest import Swap

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEEDVR = "/v1/generate/custom/model_seedvr-2-upscale-video"
MAGNIFIC = "/v1/generate/custom/model_magnific-video-upscaler-creative"
UPSCALE_V3 = "/v1/generate/custom/model_upscale-v3"
TERMINAL = {"success", "failure", "failed", "canceled"}


def _with_media(app: ASGIApp, media: MediaSim) -> ASGIApp:
    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        target = media.app if scope.get("path", "").startswith("/media/") else app
        await target(scope, receive, send)

    return route


@pytest.fixture
def media() -> MediaSim:
    return MediaSim(slow_seconds=0.05)


@pytest_asyncio.fixture(loop_scope="module")
async def sim(server: Swap, media: MediaSim) -> AsyncIterator[ScenarioSim]:
    async with ScenarioSim(queue_seconds=0.02, process_seconds=0.05) as scenario:
        scenario.base_url = server.url
        server.app = _with_media(scenario.app, media)
        yield scenario
        server.app = None


@pytest_asyncio.fixture(loop_scope="module")
async def client(sim: ScenarioSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, auth=("sim-key", "sim-secret")) as http:
        yield http


async def _generate(client: httpx.AsyncClient, path: str, key: str, asset_id: str) -> str:
    response = await client.post(path, json={key: asset_id}, params={"projectId": "proj_1"})
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["status"] == "queued"
    assert job["jobId"].startswith("job_")
    return str(job["jobId"])


async def _poll(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(2):
        while not seen or seen[-1]["status"] not in TERMINAL:
            response = await client.get(f"/v1/jobs/{job_id}")
            assert response.status_code == 200, response.text
            seen.append(response.json()["job"])
            await asyncio.sleep(0.005)
    return seen


async def test_generate_poll_success_and_download(
    sim: ScenarioSim, client: httpx.AsyncClient
) -> None:
    source = sim.add_asset(mime_type="video/mp4", name="clip.mp4")
    job_id = await _generate(client, SEEDVR, "video", source)
    call = sim.generate_calls[-1]
    assert (call.model_id, call.project_id, call.dry_run) == (
        "model_seedvr-2-upscale-video",
        "proj_1",
        False,
    )
    assert call.json == {"video": source}

    seen = await _poll(client, job_id)
    statuses = [job["status"] for job in seen]
    assert statuses[0] == "queued"
    assert "processing" in statuses
    assert statuses[-1] == "success"
    progress = [job["progress"] for job in seen]
    assert progress == sorted(progress)
    assert all(0 <= p <= 1 for p in progress)
    final = seen[-1]
    assert final["progress"] == 1
    assert final["billing"] == {"cuCost": 20}
    [asset_id] = final["metadata"]["assetIds"]
    assert "error" not in final["metadata"]

    asset = (await client.get(f"/v1/assets/{asset_id}")).json()["asset"]
    assert asset["id"] == asset_id
    assert asset["mimeType"] == "video/mp4"
    assert "Signature=abc%2Bdef" in asset["url"]
    async with httpx.AsyncClient() as cdn:
        download = await cdn.get(asset["url"])
        assert download.status_code == 200
        assert download.headers["content-type"] == "video/mp4"
        # A client that decodes the signed query string is refused, as by a real CDN.
        broken = await cdn.get(asset["url"].replace("%2B", "+"))
        assert broken.status_code == 403
    assert len(sim.poll_log[job_id]) == len(seen)
    assert sim.in_flight == 0


async def test_auth_unknowns_and_validation(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    source = sim.add_asset()
    async with httpx.AsyncClient(base_url=sim.base_url, auth=("sim-key", "wrong")) as bad:
        denied = await bad.post(UPSCALE_V3, json={"image": source})
        assert denied.status_code == 401
        assert "error" in denied.json()
        assert (await bad.get("/v1/jobs/job_x")).status_code == 401
        assert (await bad.get(f"/v1/assets/{source}")).status_code == 401
    unknown_model = await client.post("/v1/generate/custom/model_nope", json={"image": source})
    assert unknown_model.status_code == 404
    wrong_key = await client.post(UPSCALE_V3, json={"video": source})
    assert wrong_key.status_code == 400
    unknown_asset = await client.post(UPSCALE_V3, json={"image": "asset_unknown"})
    assert unknown_asset.status_code == 400
    assert (await client.post(UPSCALE_V3, content=b"{")).status_code == 400
    assert (await client.get("/v1/jobs/job_unknown")).status_code == 404
    assert (await client.get("/v1/assets/asset_unknown")).status_code == 404
    assert sim.jobs == {}


async def test_dry_run_prices_without_a_job(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    response = await client.post(
        MAGNIFIC, json={"video": "https://x.test/a.mp4"}, params={"dryRun": "", "projectId": "p"}
    )
    assert response.status_code == 200
    assert response.json() == {"creativeUnitsCost": 40, "job": None}
    assert sim.jobs == {}
    assert sim.generate_calls[-1].dry_run is True


@pytest.mark.parametrize(
    ("name", "status"),
    [("a-fail.png", "failure"), ("a-cancel.png", "canceled"), ("failedspelling.png", "failed")],
)
async def test_outcome_from_the_input_asset(
    sim: ScenarioSim, client: httpx.AsyncClient, name: str, status: str
) -> None:
    source = sim.add_asset(name=name)
    final = (await _poll(client, await _generate(client, UPSCALE_V3, "image", source)))[-1]
    assert final["status"] == status
    assert final["metadata"]["assetIds"] == []
    if status != "canceled":
        assert final["metadata"]["error"]
        assert final["metadata"]["hint"]


async def test_next_outcomes_override(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    sim.next_outcomes.extend(["canceled"])
    sim.processing_status = "in-progress"
    sim.outputs_per_job = 2
    source = sim.add_asset(name="ok.png")
    first = await _generate(client, UPSCALE_V3, "image", source)
    second = await _generate(client, UPSCALE_V3, "image", source)
    statuses = [job["status"] for job in await _poll(client, first)]
    assert statuses[-1] == "canceled"
    assert "in-progress" in statuses
    final = (await _poll(client, second))[-1]
    assert final["status"] == "success"
    assert len(final["metadata"]["assetIds"]) == 2
    assert all(a in sim.assets for a in final["metadata"]["assetIds"])


async def test_fail_next_generate(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    source = sim.add_asset()
    sim.fail_next_generate(503, count=2)
    for _ in range(2):
        assert (await client.post(UPSCALE_V3, json={"image": source})).status_code == 503
    await _generate(client, UPSCALE_V3, "image", source)
    assert sim.request_count["generate"] == 3


async def test_burst_429_on_polls(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    job_id = await _generate(client, UPSCALE_V3, "image", sim.add_asset())
    sim.burst_429(2, retry_after=0.5)
    for _ in range(2):
        limited = await client.get(f"/v1/jobs/{job_id}")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "0.5"
    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 200
    sim.burst_429(1)
    bare = await client.get(f"/v1/jobs/{job_id}")
    assert bare.status_code == 429
    assert "retry-after" not in bare.headers
    assert len(sim.poll_log[job_id]) == 4
    assert sim.request_count["job"] == 4


async def test_latency_makes_concurrency_measurable(
    sim: ScenarioSim, client: httpx.AsyncClient
) -> None:
    job_id = await _generate(client, UPSCALE_V3, "image", sim.add_asset())
    sim.latency = 0.1
    answers = await asyncio.gather(*(client.get(f"/v1/jobs/{job_id}") for _ in range(10)))
    assert all(a.status_code == 200 for a in answers)
    assert sim.max_in_flight >= 5
    assert sim.in_flight == 0
    assert len(sim.poll_log[job_id]) == 10


async def test_asset_from_data_uri(
    sim: ScenarioSim, client: httpx.AsyncClient, media: MediaSim
) -> None:
    image = (await client.get("/media/photo.webp?size=3000")).content
    data_uri = "data:image/webp;base64," + base64.b64encode(image).decode()
    created = await client.post("/v1/assets", json={"image": data_uri, "name": "photo.webp"})
    assert created.status_code == 200
    asset_id = created.json()["asset"]["id"]
    assert asset_id.startswith("asset_")
    assert sim.assets[asset_id].data == image
    assert sim.assets[asset_id].mime_type == "image/webp"
    url = (await client.get(f"/v1/assets/{asset_id}")).json()["asset"]["url"]
    assert (await client.get(url)).content == image

    for bad in ("not a uri", "data:image/png;base64,@@@", "data:image/png,abc"):
        refused = await client.post("/v1/assets", json={"image": bad, "name": "x"})
        assert refused.status_code == 400
        assert "error" in refused.json()
    sim.max_asset_bytes = 100
    too_big = await client.post("/v1/assets", json={"image": data_uri, "name": "big.webp"})
    assert too_big.status_code == 413
    assert "error" in too_big.json()


async def test_multipart_upload_flow(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    data = (await client.get(f"/media/clip.mp4?size={PART_SIZE + 1000}")).content
    created = await client.post(
        "/v1/uploads",
        json={"fileName": "clip.mp4", "contentType": "video/mp4", "fileSize": len(data)},
    )
    upload = created.json()["upload"]
    assert upload["id"].startswith("upload_")
    assert upload["status"] == "pending"
    assert [p["number"] for p in upload["parts"]] == [1, 2]
    action = f"/v1/uploads/{upload['id']}/action"

    async with httpx.AsyncClient() as storage:
        first = await storage.put(upload["parts"][0]["url"], content=data[:PART_SIZE])
        assert first.status_code == 200
        assert (
            first.headers["etag"]
            == f'"{hashlib.md5(data[:PART_SIZE], usedforsecurity=False).hexdigest()}"'
        )
        early = await client.post(action, json={"action": "complete"})
        assert early.status_code == 400
        assert early.json()["missingParts"] == [2]
        second = await storage.put(upload["parts"][1]["url"], content=data[PART_SIZE:])
        assert second.status_code == 200

    completed = (await client.post(action, json={"action": "complete"})).json()["upload"]
    assert completed["status"] in ("complete", "validating")
    final = (await _poll(client, completed["jobId"]))[-1]
    assert final["status"] == "success"
    asset_id = final["metadata"]["output"]["entityId"]
    assert asset_id.startswith("asset_")
    assert sim.assets[asset_id].data == data
    job_id = await _generate(client, SEEDVR, "video", asset_id)
    assert (await _poll(client, job_id))[-1]["status"] == "success"


async def test_upload_validation(sim: ScenarioSim, client: httpx.AsyncClient) -> None:
    for body in (
        {"contentType": "video/mp4", "fileSize": 10},
        {"fileName": "a.mp4", "contentType": "video/mp4", "fileSize": 0},
        {"fileName": "a.mp4", "contentType": "mp4", "fileSize": 10},
    ):
        assert (await client.post("/v1/uploads", json=body)).status_code == 400
    created = await client.post(
        "/v1/uploads",
        json={"fileName": "a.png", "contentType": "image/png", "fileSize": 10, "parts": 3},
    )
    upload = created.json()["upload"]
    assert len(upload["parts"]) == 3
    async with httpx.AsyncClient() as storage:
        for part in upload["parts"]:
            await storage.put(part["url"], content=b"abcd")
        assert (await storage.put(f"{sim.base_url}/upload-parts/upload_x/1")).status_code == 404
    mismatch = await client.post(f"/v1/uploads/{upload['id']}/action", json={"action": "complete"})
    assert mismatch.status_code == 400
    assert (await client.post("/v1/uploads/upload_x/action", json={})).status_code == 404


async def test_media_sim(client: httpx.AsyncClient, media: MediaSim) -> None:
    png = await client.get("/media/a.png")
    assert png.headers["content-type"] == "image/png"
    assert len(png.content) == 2048
    assert png.content == (await client.get("/media/a.png")).content
    video = await client.get("/media/dir/b.mov?size=10")
    assert (video.headers["content-type"], len(video.content)) == ("video/quicktime", 10)
    assert (await client.get("/media/c.jpg")).headers["content-type"] == "image/jpeg"
    assert (await client.get("/media/missing.png")).status_code == 404
    assert (await client.get("/media/a.png?size=x")).status_code == 400
    slow = await client.get("/media/slow.mp4?size=5")
    assert slow.headers["content-type"] == "video/mp4"
    assert media.requests[-1] == "slow.mp4"
