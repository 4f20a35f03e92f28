"""SIGKILL the service while it streams an output into the archive: the next process takes
the copy over, finishes it, and announces the job once."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx
import pytest

from service.sim.pixazo import PixazoSim
from service.sim.server import serve
from tests.e2e.harness import service

pytestmark = pytest.mark.e2e


async def test_sigkill_mid_archive_resumes_after_restart(tmp_path: Path) -> None:
    pixazo = PixazoSim(queue_seconds=0.05, process_seconds=0.1)
    pixazo.output_size = 3 * 1024 * 1024
    pixazo.output_delay = 0.05  # ~2.4 s for the whole output: the kill lands mid-stream
    archive = tmp_path / "archive"
    async with serve(pixazo.app) as pixazo_url:
        pixazo.base_url = pixazo_url
        async with service(
            tmp_path,
            PIXAZO_API_KEY=pixazo.api_key,
            PIXAZO_BASE_URL=pixazo_url,
            RELAY_ARCHIVE=f"file://{archive}",
            RELAY_ARCHIVE_RETRY_SCHEDULE="0,0.2,0.5",
        ) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                answer = await client.post(
                    "/v1/jobs",
                    json={
                        "model": "pixazo/seedvr-image",
                        "input": {"image_url": "https://x.example/in.png"},
                    },
                )
                assert answer.status_code == 202, answer.text
                job_id = answer.json()["id"]
                deadline = time.monotonic() + 10
                while not list(archive.rglob("*.part")) or pixazo.output_requests < 1:
                    assert time.monotonic() < deadline, "the copy never started"
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
            await svc.kill()  # mid-stream: a temporary file, no archived file
            assert not list(archive.rglob("*.png"))
            assert list(archive.rglob("*.part"))
            pixazo.output_delay = 0.0
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                deadline = time.monotonic() + 20
                while True:
                    events = (await client.get(f"/v1/jobs/{job_id}/events")).json()["data"]
                    types = [e["type"] for e in events]
                    if "job.succeeded" in types:
                        break
                    assert time.monotonic() < deadline, types
                    await asyncio.sleep(0.1)
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
        await pixazo.aclose()
    assert types.count("job.succeeded") == 1
    assert "job.archive_failed" not in types
    body = pixazo.output_bodies[job["provider_job_id"]]
    (stored,) = archive.rglob("*.png")
    assert stored.read_bytes() == body
    assert not list(archive.rglob("*.part"))  # the dead process's temporary file is gone
    (out,) = next(e for e in events if e["type"] == "job.succeeded")["data"]["outputs"]
    assert out["sha256"] == hashlib.sha256(body).hexdigest()
    assert job["outputs"][0]["archive_status"] == "archived"
    assert pixazo.output_requests == 2
