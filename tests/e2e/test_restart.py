"""SIGKILL the real service mid-flight, start it again on the same database: nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.e2e.harness import TERMINAL, service

pytestmark = pytest.mark.e2e


async def test_sigkill_with_jobs_in_flight_then_every_job_finishes(tmp_path: Path) -> None:
    pixazo = PixazoSim(queue_seconds=0.3, process_seconds=1.5)
    scenario = ScenarioSim(queue_seconds=0.3, process_seconds=1.5)
    async with serve(pixazo.app) as pixazo_url, serve(scenario.app) as scenario_url:
        pixazo.base_url, scenario.base_url = pixazo_url, scenario_url
        asset = scenario.add_asset(b"x", "image/png")
        async with service(
            tmp_path,
            PIXAZO_API_KEY=pixazo.api_key,
            PIXAZO_BASE_URL=pixazo_url,
            SCENARIO_API_KEY=scenario.api_key,
            SCENARIO_API_SECRET=scenario.api_secret,
            SCENARIO_BASE_URL=scenario_url,
            RELAY_CALLBACK_GRACE="1",
        ) as svc:
            await svc.start()
            ids = []
            async with httpx.AsyncClient(base_url=svc.url) as client:
                for i in range(10):
                    body = (
                        {
                            "model": "pixazo/seedvr-image",
                            "input": {"image_url": f"https://x.example/{i}.png"},
                        }
                        if i % 2
                        else {"model": "scenario/upscale-v3", "input": {"image": asset}}
                    )
                    answer = await client.post("/v1/jobs", json=body)
                    assert answer.status_code == 202, answer.text
                    ids.append(answer.json()["id"])
            await svc.kill()  # with every job still queued or processing
            await asyncio.sleep(2.5)  # the providers finish; Pixazo's callbacks hit nothing
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                deadline = time.monotonic() + 20
                for job_id in ids:
                    while True:
                        job = (await client.get(f"/v1/jobs/{job_id}")).json()
                        if job["status"] in TERMINAL:
                            break
                        assert time.monotonic() < deadline, job
                        await asyncio.sleep(0.1)
                    assert job["status"] == "succeeded", job
                    events = (await client.get(f"/v1/jobs/{job_id}/events")).json()["data"]
                    assert [e["type"] for e in events].count("job.succeeded") == 1
        await pixazo.aclose()
        await scenario.aclose()


async def test_sigkill_during_a_burst_of_deliveries_loses_none(tmp_path: Path) -> None:
    pixazo = PixazoSim(queue_seconds=0.01, process_seconds=0.05)
    subscriber = Subscriber()
    subscriber.hang_seconds = 0.2  # keep deliveries in flight when the process dies
    async with serve(pixazo.app) as pixazo_url, serve(subscriber.app) as sub_url:
        pixazo.base_url = pixazo_url
        async with service(
            tmp_path,
            PIXAZO_API_KEY=pixazo.api_key,
            PIXAZO_BASE_URL=pixazo_url,
            RELAY_CALLBACK_GRACE="1",
            RELAY_RETRY_SCHEDULE="0,0.2,0.5,1,1,1",
            RELAY_DELIVERY_TIMEOUT="1",
        ) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                created = await client.post(
                    "/v1/subscriptions", json={"url": f"{sub_url}/hook", "events": ["job.*"]}
                )
                subscriber.secrets = [created.json()["secret"]]
                for i in range(30):
                    body = {
                        "model": "pixazo/seedvr-image",
                        "input": {"image_url": f"https://x.example/{i}.png"},
                    }
                    assert (await client.post("/v1/jobs", json=body)).status_code == 202
            await asyncio.sleep(0.5)
            await svc.kill()
            received_before = len(subscriber.received)
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                deadline = time.monotonic() + 30
                while True:
                    page = (await client.get("/v1/deliveries", params={"limit": 500})).json()
                    deliveries = page["data"]
                    succeeded = [d for d in deliveries if d["status"] == "succeeded"]
                    if len(deliveries) == 90 and len(succeeded) == 90:
                        break
                    assert time.monotonic() < deadline, (len(deliveries), len(succeeded))
                    await asyncio.sleep(0.2)
        received = subscriber.received
        assert received_before < 90  # the kill really interrupted the burst
        assert all(r.verified for r in received)
        by_id: dict[str, set[bytes]] = {}
        for r in received:
            by_id.setdefault(r.headers["webhook-id"], set()).add(r.body)
        assert set(by_id) == {d["id"] for d in deliveries}  # every one arrived at least once
        assert all(len(bodies) == 1 for bodies in by_id.values())  # a resend is the same message
        await pixazo.aclose()
