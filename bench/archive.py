"""Archiving: a 2 GB video streamed from a loopback server into a folder archive while the
relay's RSS is sampled; its peak growth over the idle relay must stay a few MiB."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route

from bench.common import Outcome, Row, RssSampler, log, memory_kib, relay_server, tmpdir
from service.sim.pixazo import PixazoSim
from service.sim.server import serve

FULL = 2_000_000_000
QUICK = 200_000_000
BLOCK = 1024 * 1024
GOAL_MIB = 8.0


def _block() -> bytes:
    head = b"\x00\x00\x00\x18ftypmp42"
    seed = hashlib.sha256(b"archive-bench").digest() * (BLOCK // 32)
    return head + seed[len(head) :]


def media_app(size: int) -> Starlette:
    """GET /outputs/{id}/{name}: `size` bytes of video, made as they are sent (no copy held)."""
    block = _block()

    async def video(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            left = size
            while left > 0:
                part = block if left >= BLOCK else block[:left]
                left -= len(part)
                yield part

        headers = {"content-length": str(size)}
        return StreamingResponse(body(), media_type="video/mp4", headers=headers)

    return Starlette(routes=[Route("/outputs/{id}/{name}", video, methods=["GET"])])


def expected_sha256(size: int) -> str:
    block, digest, left = _block(), hashlib.sha256(), size
    while left > 0:
        part = block if left >= BLOCK else block[:left]
        digest.update(part)
        left -= len(part)
    return digest.hexdigest()


async def run(quick: bool) -> Outcome:
    size = QUICK if quick else FULL
    pixazo = PixazoSim(queue_seconds=0.05, process_seconds=0.1)
    with tmpdir("archive") as tmp:
        work = Path(tmp)
        archive = work / "archive"
        async with serve(Starlette(routes=[Mount("/", media_app(size))])) as media_url:
            async with serve(pixazo.app) as pixazo_url:
                # the provider's outputs are URLs on the media server
                pixazo.base_url = media_url
                relay = relay_server(
                    work / "relay.db",
                    work,
                    cpu=None,
                    PIXAZO_API_KEY=pixazo.api_key,
                    PIXAZO_BASE_URL=pixazo_url,
                    RELAY_ARCHIVE=f"file://{archive}",
                    RELAY_ALLOW_PRIVATE_TARGETS="1",
                    RELAY_POLL_MIN="0.1",
                    RELAY_POLL_MAX="0.2",
                )
                relay.start()
                try:
                    await relay.wait_ready(30)
                    await asyncio.sleep(1.0)  # settle: imports, the first writes
                    idle_kib = memory_kib(relay.pid)["VmRSS"]
                    sampler = RssSampler(relay.pid, interval=0.005)
                    sampler.start()
                    started = time.monotonic()
                    async with httpx.AsyncClient(base_url=relay.url, timeout=30) as client:
                        answer = await client.post(
                            "/v1/jobs",
                            json={
                                "model": "pixazo/seedvr-video",
                                "input": {"video_url": "https://example.com/in.mp4"},
                            },
                        )
                        answer.raise_for_status()
                        job_id = answer.json()["id"]
                        while True:
                            events = (await client.get(f"/v1/jobs/{job_id}/events")).json()
                            types = [e["type"] for e in events["data"]]
                            if "job.succeeded" in types:
                                break
                            if time.monotonic() - started > 1200:
                                raise TimeoutError(f"no job.succeeded: {types}")
                            await asyncio.sleep(0.2)
                        job = (await client.get(f"/v1/jobs/{job_id}")).json()
                    took = time.monotonic() - started
                    await sampler.stop()
                finally:
                    await relay.astop()
                    await pixazo.aclose()
        out = job["outputs"][0]
        stored = list(archive.rglob("*.mp4"))
        if out.get("archive_status") != "archived" or len(stored) != 1:
            raise RuntimeError(f"the video was not archived: {out}")
        if out["bytes"] != size or stored[0].stat().st_size != size:
            raise RuntimeError(f"archived {out['bytes']} bytes of {size}")
        if out["sha256"] != expected_sha256(size):
            raise RuntimeError("the archived video's SHA-256 is wrong")
    growth_mib = (sampler.peak_kib - idle_kib) / 1024
    rate = size / took / 1e6
    log(
        f"archive: {size / 1e6:.0f} MB in {took:.1f} s ({rate:.0f} MB/s), RSS idle"
        f" {idle_kib / 1024:.1f} MiB, peak {sampler.peak_kib / 1024:.1f} MiB"
        f" ({sampler.samples} samples)"
    )
    name = "12. Archiving"
    rows = [
        Row(
            name,
            f"relay RSS growth while a {size / 1e9:g} GB video streams into a folder archive",
            f"{growth_mib:.1f} MiB (idle {idle_kib / 1024:.0f} MiB)",
            goal=f"≤ {GOAL_MIB:g} MiB",
            result=Row.verdict(growth_mib <= GOAL_MIB),
        ),
        Row(
            name,
            "submit to job.succeeded with the video archived (fetch, SHA-256, fsync)",
            f"{took:.1f} s ({rate:.0f} MB/s)",
        ),
    ]
    notes = [
        f"Archiving: one pixazo/seedvr-video job whose output is {size / 1e9:g} GB of video"
        " made on the fly by a loopback server; RELAY_ARCHIVE a folder in /tmp; the relay's"
        " VmRSS sampled every 5 ms from submit to job.succeeded (before_notify), against its"
        " RSS idle 1 s after start. The copy is checked: size and SHA-256.",
    ]
    return Outcome(rows, notes)
