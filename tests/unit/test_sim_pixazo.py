"""The Pixazo simulator over real loopback HTTP: lifecycle, callbacks, failure injection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.sim.pixazo import PixazoSim
from service.sim.server import serve
from tests.unit.conftest import Swap

KEY = {"Ocp-Apim-Subscription-Key": "sim-pixazo-key"}
pytestmark = pytest.mark.asyncio(loop_scope="module")

IMAGE = "/seedvr-upscale/v1/upscale-image/generate"
VIDEO = "/seedvr-upscale/v1/upscale-video/generate"


class Receiver:
    """A webhook receiver that records each JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self.url = ""

    async def _hook(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        return Response(status_code=200)

    async def wait_for(self, count: int, within: float = 2.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(within):
            while len(self.bodies) < count:
                await asyncio.sleep(0.005)
        return self.bodies


def _with_receiver(app: ASGIApp, receiver: Receiver) -> ASGIApp:
    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        target = receiver.app if scope.get("path", "").startswith("/hook") else app
        await target(scope, receive, send)

    return route


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest_asyncio.fixture(loop_scope="module")
async def sim(server: Swap, receiver: Receiver) -> AsyncIterator[PixazoSim]:
    pixazo = PixazoSim(queue_seconds=0.02, process_seconds=0.05, base_url=server.url)
    receiver.url = f"{server.url}/hook"
    server.app = _with_receiver(pixazo.app, receiver)
    try:
        yield pixazo
    finally:
        await pixazo.aclose()
        server.app = None


@pytest_asyncio.fixture(loop_scope="module")
async def client(sim: PixazoSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, headers=KEY) as http:
        yield http


async def _submit(
    client: httpx.AsyncClient, receiver: Receiver | None, media_url: str, path: str = IMAGE
) -> str:
    headers = {"X-Webhook-URL": receiver.url} if receiver else {}
    key = "image_url" if path == IMAGE else "video_url"
    response = await client.post(path, json={key: media_url, "upscale_factor": 2}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


async def _wait_status(client: httpx.AsyncClient, request_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(2):
        while True:
            body: dict[str, Any] = (await client.get(f"/v2/requests/status/{request_id}")).json()
            if body["status"] == status:
                return body
            await asyncio.sleep(0.01)


async def test_lifecycle_reaches_completed_through_callbacks(
    sim: PixazoSim, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        IMAGE, json={"image_url": "https://x.test/a.png"}, headers={"X-Webhook-URL": receiver.url}
    )
    assert response.status_code == 202
    answer = response.json()
    request_id = answer["request_id"]
    assert request_id.startswith("seedvr-upscale_")
    assert answer["status"] == "QUEUED"
    assert answer["polling_url"] == f"{sim.base_url}/v2/requests/status/{request_id}"
    queued = (await client.get(f"/v2/requests/status/{request_id}")).json()
    assert queued["status"] == "QUEUED"
    assert queued["output"] is None

    bodies = await receiver.wait_for(2)
    assert [b["status"] for b in bodies] == ["PROCESSING", "COMPLETED"]
    final = (await client.get(answer["polling_url"])).json()
    assert bodies[1] == final
    assert final["model_id"] == "seedvr-upscale"
    assert final["error"] is None
    assert final["completed_at"] is not None
    assert final["output"] == {
        "media_url": [f"{sim.base_url}/outputs/{request_id}/output.png"],
        "media_type": "image/png",
    }
    output = await client.get(final["output"]["media_url"][0])
    assert output.status_code == 200
    assert output.headers["content-type"] == "image/png"
    assert output.content.startswith(b"\x89PNG")

    assert [(c.status, c.http_status) for c in sim.callbacks_sent] == [
        ("PROCESSING", 200),
        ("COMPLETED", 200),
    ]
    generate = next(r for r in sim.requests if r.path == IMAGE)
    assert generate.json == {"image_url": "https://x.test/a.png"}
    assert generate.headers["x-webhook-url"] == receiver.url
    assert sim.jobs[request_id].webhook_url == receiver.url


async def test_video_output_and_prediction_endpoint(
    sim: PixazoSim, client: httpx.AsyncClient
) -> None:
    request_id = await _submit(client, None, "https://x.test/clip.mp4", VIDEO)
    prediction = await client.post(
        "/seedvr-upscale/v1/upscale-video/prediction", json={"prediction_id": request_id}
    )
    body = prediction.json()
    assert body["success"] is True
    assert body["id"] == request_id
    assert body["status"] in ("queued", "processing")
    assert body["input"] == {"video_url": "https://x.test/clip.mp4", "upscale_factor": 2}
    final = await _wait_status(client, request_id, "COMPLETED")
    assert final["output"]["media_type"] == "video/mp4"
    assert final["output"]["media_url"][0].endswith("/output.mp4")
    done = await client.post(
        "/seedvr-upscale/v1/upscale-video/prediction", json={"prediction_id": request_id}
    )
    assert done.json()["status"] == "completed"
    missing = await client.post(
        "/seedvr-upscale/v1/upscale-video/prediction", json={"prediction_id": "nope"}
    )
    assert missing.status_code == 404


async def test_auth_and_bad_requests(sim: PixazoSim, client: httpx.AsyncClient) -> None:
    for headers in ({"Ocp-Apim-Subscription-Key": "wrong"}, {}):
        async with httpx.AsyncClient(base_url=sim.base_url, headers=headers) as anon:
            denied = await anon.post(IMAGE, json={"image_url": "https://x.test/a.png"})
            assert denied.status_code == 401
            assert denied.json()["error"] == "Unauthorized"
            assert (await anon.get("/v2/requests/status/x")).status_code == 401
    not_json = await client.post(IMAGE, content=b"{nope")
    assert not_json.status_code == 400
    assert not_json.json()["error"] == "Bad Request"
    no_media = await client.post(VIDEO, json={"image_url": "https://x.test/a.png"})
    assert no_media.status_code == 400
    assert "video_url" in no_media.json()["message"]
    unknown = await client.get("/v2/requests/status/seedvr-upscale_nope")
    assert unknown.status_code == 404
    assert (await client.get("/outputs/seedvr-upscale_nope/output.png")).status_code == 404
    assert sim.jobs == {}


async def test_fail_next_injects_documented_errors(
    sim: PixazoSim, client: httpx.AsyncClient
) -> None:
    sim.fail_next(402)
    sim.fail_next(429, count=2, retry_after=0.5)
    sim.fail_next(429)
    sim.fail_next(500)
    body = {"image_url": "https://x.test/a.png"}
    balance = await client.post(IMAGE, json=body)
    assert balance.status_code == 402
    assert balance.json() == {
        "error": "Insufficient Balance",
        "message": "Your wallet does not have enough balance.",
    }
    for _ in range(2):
        limited = await client.post(IMAGE, json=body)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "0.5"
    bare = await client.post(IMAGE, json=body)
    assert bare.status_code == 429
    assert "retry-after" not in bare.headers
    broken = await client.post(IMAGE, json=body)
    assert broken.status_code == 500
    assert broken.json() == {"error": "Internal Server Error"}
    assert (await client.post(IMAGE, json=body)).status_code == 202
    assert len(sim.jobs) == 1


@pytest.mark.parametrize(("marker", "status"), [("sim=fail", "FAILED"), ("sim=error", "ERROR")])
async def test_failure_outcomes_from_media_url(
    sim: PixazoSim, receiver: Receiver, client: httpx.AsyncClient, marker: str, status: str
) -> None:
    request_id = await _submit(client, receiver, f"https://x.test/a.png?{marker}")
    bodies = await receiver.wait_for(2)
    assert bodies[-1]["status"] == status
    assert bodies[-1]["output"] is None
    assert bodies[-1]["error"]
    assert bodies[-1] == (await client.get(f"/v2/requests/status/{request_id}")).json()


async def test_lost_callbacks_leave_the_status_endpoint_truthful(
    sim: PixazoSim, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    sim.lose_callbacks = True
    request_id = await _submit(client, receiver, "https://x.test/a.png")
    await _wait_status(client, request_id, "COMPLETED")
    await asyncio.sleep(0.02)
    assert receiver.bodies == []
    assert sim.callbacks_sent == []
    assert sim.callbacks_lost == 2


async def test_duplicate_and_delayed_callbacks_keep_order(
    sim: PixazoSim, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    sim.duplicate_callbacks = True
    sim.callback_delay = 0.03
    await _submit(client, receiver, "https://x.test/a.png")
    bodies = await receiver.wait_for(4)
    assert [b["status"] for b in bodies] == ["PROCESSING", "PROCESSING", "COMPLETED", "COMPLETED"]


async def test_callback_before_answer(
    sim: PixazoSim, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    sim.callback_before_answer = True
    request_id = await _submit(client, receiver, "https://x.test/a.png")
    # Both callbacks reached the receiver before the 202 reached us.
    assert [b["status"] for b in receiver.bodies] == ["PROCESSING", "COMPLETED"]
    assert receiver.bodies[1]["request_id"] == request_id


async def test_status_override_and_hand_made_callback(
    sim: PixazoSim, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    sim.lose_callbacks = True
    request_id = await _submit(client, receiver, "https://x.test/a.png")
    sim.status_override[request_id] = "PROCESSING"
    await asyncio.sleep(0.1)
    assert sim.jobs[request_id].status == "COMPLETED"
    observed = (await client.get(f"/v2/requests/status/{request_id}")).json()
    assert observed["status"] == "PROCESSING"
    assert observed["output"] is None
    assert observed["completed_at"] is None

    forged = {"request_id": request_id, "status": "COMPLETED", "output": {"media_url": ["x"]}}
    attempt = await sim.send_callback(request_id, forged)
    assert attempt.http_status == 200
    assert receiver.bodies == [forged]
    await sim.send_callback(request_id)
    assert receiver.bodies[1] == sim.status_body(request_id)


async def test_set_status_stops_the_lifecycle(sim: PixazoSim, client: httpx.AsyncClient) -> None:
    request_id = await _submit(client, None, "https://x.test/a.png")
    sim.set_status(request_id, "FAILED", error="out of memory")
    await asyncio.sleep(0.1)
    body = (await client.get(f"/v2/requests/status/{request_id}")).json()
    assert (body["status"], body["error"], body["output"]) == ("FAILED", "out of memory", None)
    sim.set_status(request_id, "COMPLETED")
    assert sim.status_body(request_id)["output"]["media_type"] == "image/png"
    with pytest.raises(ValueError, match="X-Webhook-URL"):
        await sim.send_callback(request_id)


async def test_unreachable_callback_is_recorded(sim: PixazoSim, client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    response = await client.post(
        IMAGE, json={"image_url": "https://x.test/a.png"}, headers={"X-Webhook-URL": url}
    )
    assert response.status_code == 202
    async with asyncio.timeout(2):
        while len(sim.callbacks_sent) < 2:
            await asyncio.sleep(0.01)
    assert all(c.http_status is None and c.error for c in sim.callbacks_sent)
    assert sim.callbacks_sent[0].url == url


async def test_aclose_cancels_pending_lifecycles() -> None:
    pixazo = PixazoSim(queue_seconds=10)
    async with serve(pixazo.app) as url, httpx.AsyncClient(base_url=url, headers=KEY) as http:
        await _submit(http, None, "https://x.test/a.png")
        async with pixazo:
            pass
    assert next(iter(pixazo.jobs.values())).status == "QUEUED"
