"""`upscale-relay demo`: the service and simulated providers on loopback, events shown live."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service import app, config
from service.sim.pixazo import PixazoSim
from service.sim.server import bind, serve, url_of

DEMO_JOBS: list[dict[str, Any]] = [
    {
        "model": "pixazo/seedvr-image",
        "input": {
            "image_url": "https://example.com/photo.jpg",
            "upscale_factor": 2,
            "output_format": "png",
        },
        "metadata": {"demo": "image"},
    },
    {
        "model": "pixazo/seedvr-video",
        "input": {"video_url": "https://example.com/clip.mp4", "upscale_factor": 2},
        "metadata": {"demo": "video"},
    },
]


def _line(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    detail = ""
    if event["type"].startswith("job.") and data.get("status"):
        detail = f"status={data['status']} progress={data.get('progress', 0):.2f}"
        if data.get("outputs"):
            detail += " outputs=" + ",".join(o["url"] for o in data["outputs"])
        if data.get("error"):
            detail += f" error={data['error'].get('message')}"
    elif event["type"] == "callback.received":
        detail = f"provider said {data.get('status')}"
    else:
        detail = json.dumps(data)[:120]
    return (
        f"  #{event['id']:<4} {event['job_id']}  {event['type']:<20} [{event['source']}] {detail}"
    )


async def run(limit: float = 30.0) -> int:
    """Run the demo; 0 when every job reached a terminal state in time."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="upscale-relay-demo-") as tmp:
        pixazo = PixazoSim(queue_seconds=0.3, process_seconds=1.0)
        async with contextlib.AsyncExitStack() as stack:
            pixazo_url = await stack.enter_async_context(serve(pixazo.app))
            pixazo.base_url = pixazo_url
            stack.push_async_callback(pixazo.aclose)
            relay_sock = bind()
            relay_url = url_of(relay_sock)
            settings = config.load(
                {
                    "RELAY_DATABASE": str(Path(tmp) / "relay.db"),
                    "RELAY_PUBLIC_URL": relay_url,
                    "PIXAZO_API_KEY": pixazo.api_key,
                    "PIXAZO_BASE_URL": pixazo_url,
                    "RELAY_POLL_MIN": "0.5",
                    "RELAY_POLL_MAX": "2",
                    "RELAY_CALLBACK_GRACE": "5",
                },
                env_file=None,
            )
            await stack.enter_async_context(
                serve(app.create_app(settings), lifespan="on", sock=relay_sock)
            )
            print(f"upscale-relay demo: relay {relay_url}, simulated Pixazo {pixazo_url}")
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=relay_url))
            pending: set[str] = set()
            for job in DEMO_JOBS:
                answer = await client.post("/v1/jobs", json=job)
                body = answer.json()
                if answer.status_code != 202:
                    print(f"submit {job['model']} failed: {answer.status_code} {body}")
                    return 1
                print(f"submitted {job['model']} -> {body['id']} ({body['status']})")
                pending.add(body["id"])
            cursor = "0"
            while pending:
                left = limit - (time.monotonic() - started)
                if left <= 0:
                    print(f"demo: timed out with {len(pending)} job(s) unfinished")
                    return 1
                wait = max(1, min(5, int(left)))
                page = (
                    await client.get(
                        "/v1/events", params={"after": cursor, "wait": wait}, timeout=wait + 5
                    )
                ).json()
                for event in page["data"]:
                    print(_line(event))
                    if event["type"] in ("job.succeeded", "job.failed", "job.canceled"):
                        pending.discard(event["job_id"])
                cursor = page["next_cursor"]
            elapsed = time.monotonic() - started
            print(f"demo: every job finished in {elapsed:.1f}s")
    return 0
