"""`upscale-relay demo`: the service, simulated providers and subscribers on loopback."""

from __future__ import annotations

import contextlib
import html
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service import app, config
from service.sim.chat import ChatSim
from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import bind, serve, url_of
from service.sim.subscriber import Subscriber

TERMINAL = ("job.succeeded", "job.failed", "job.canceled")


def demo_jobs(scenario: ScenarioSim) -> list[dict[str, Any]]:
    """One job per model: Pixazo takes URLs, Scenario asset ids."""
    video = scenario.add_asset(b"\x00" * 2048, "video/mp4", name="clip.mp4")
    image = scenario.add_asset(b"\x89PNG" + b"\x00" * 2044, "image/png", name="photo.png")
    return [
        {
            "model": "pixazo/seedvr-image",
            "input": {
                "image_url": "https://example.com/photo.jpg",
                "upscale_factor": 2,
                "output_format": "png",
            },
            "metadata": {"demo": "pixazo-image"},
        },
        {
            "model": "pixazo/seedvr-video",
            "input": {"video_url": "https://example.com/clip.mp4", "upscale_factor": 2},
            "metadata": {"demo": "pixazo-video"},
        },
        {
            "model": "scenario/seedvr2-video",
            "input": {"video": video, "upscaleFactor": 2},
            "metadata": {"demo": "scenario-seedvr2"},
        },
        {
            "model": "scenario/magnific-video-creative",
            "input": {"video": video, "creativity": 30, "resolution": "2k"},
            "metadata": {"demo": "scenario-magnific"},
        },
        {
            "model": "scenario/upscale-v3",
            "input": {"image": image, "upscaleFactor": 2},
            "metadata": {"demo": "scenario-upscale-v3"},
        },
    ]


def _line(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    if event["type"].startswith("job.") and data.get("status"):
        detail = (
            f"{data.get('model')} status={data['status']} progress={data.get('progress', 0):.2f}"
        )
        if data.get("outputs"):
            detail += " -> " + data["outputs"][0]["url"][:60]
        if data.get("error"):
            detail += f" error={data['error'].get('message')}"
    elif event["type"] == "callback.received":
        detail = f"Pixazo called back: {data.get('status')}"
    else:
        detail = json.dumps(data)[:100]
    return f"  #{event['id']:<3} {event['type']:<17} [{event['source']:<8}] {detail}"


async def run(limit: float = 30.0) -> int:
    """Run the demo; 0 when every job finished and every notification arrived in time."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="upscale-relay-demo-") as tmp:
        pixazo = PixazoSim(queue_seconds=0.3, process_seconds=1.0)
        scenario = ScenarioSim(queue_seconds=0.3, process_seconds=1.5)
        subscriber = Subscriber()
        slack = ChatSim("slack")
        async with contextlib.AsyncExitStack() as stack:
            pixazo.base_url = await stack.enter_async_context(serve(pixazo.app))
            scenario.base_url = await stack.enter_async_context(serve(scenario.app))
            stack.push_async_callback(pixazo.aclose)
            stack.push_async_callback(scenario.aclose)
            subscriber_url = await stack.enter_async_context(serve(subscriber.app))
            slack_url = await stack.enter_async_context(serve(slack.app))
            relay_sock = bind()
            relay_url = url_of(relay_sock)
            settings = config.load(
                {
                    "RELAY_DATABASE": str(Path(tmp) / "relay.db"),
                    "RELAY_PUBLIC_URL": relay_url,
                    "PIXAZO_API_KEY": pixazo.api_key,
                    "PIXAZO_BASE_URL": pixazo.base_url,
                    "SCENARIO_API_KEY": scenario.api_key,
                    "SCENARIO_API_SECRET": scenario.api_secret,
                    "SCENARIO_BASE_URL": scenario.base_url,
                    "RELAY_POLL_MIN": "0.3",
                    "RELAY_POLL_MAX": "1",
                    "RELAY_CALLBACK_GRACE": "5",
                    # the demo's subscribers listen on loopback
                    "RELAY_ALLOW_PRIVATE_TARGETS": "1",
                },
                env_file=None,
            )
            await stack.enter_async_context(
                serve(app.create_app(settings), lifespan="on", sock=relay_sock)
            )
            print(
                f"relay {relay_url} | simulated Pixazo {pixazo.base_url} | "
                f"simulated Scenario {scenario.base_url}"
            )
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=relay_url))
            hook = (
                await client.post("/v1/subscriptions", json={"url": f"{subscriber_url}/hook"})
            ).json()
            subscriber.secrets = [hook["secret"]]
            await client.post(
                "/v1/subscriptions",
                json={
                    "url": f"{slack_url}/services/T000/B000/XXXX",
                    "kind": "slack",
                    "template": "{status_emoji} {data.model} finished: {output_urls}",
                },
            )
            print(
                f"subscribed: webhook {subscriber_url}/hook (secret {hook['secret'][:12]}…) "
                f"and a Slack channel\n"
            )
            jobs = demo_jobs(scenario)
            pending: set[str] = set()
            for job in jobs:
                answer = await client.post("/v1/jobs", json=job)
                body = answer.json()
                if answer.status_code != 202:
                    print(f"submit {job['model']} failed: {answer.status_code} {body}")
                    return 1
                print(f"submitted {job['model']:<33} -> {body['id']} ({body['status']})")
                pending.add(body["id"])
            print("\nevents, as they are committed:")
            cursor = "0"
            shown = 0
            while pending or len(subscriber.received) < len(jobs):
                left = limit - (time.monotonic() - started)
                if left <= 0:
                    print(
                        f"demo: timed out ({len(pending)} job(s) unfinished, "
                        f"{len(subscriber.received)}/{len(jobs)} notifications)"
                    )
                    return 1
                wait = max(1, min(2, int(left)))
                page = (
                    await client.get(
                        "/v1/events", params={"after": cursor, "wait": wait}, timeout=wait + 5
                    )
                ).json()
                for event in page["data"]:
                    print(_line(event))
                    if event["type"] in TERMINAL:
                        pending.discard(event["job_id"])
                cursor = page["next_cursor"]
                for note in subscriber.received[shown:]:
                    mark = "signature verified" if note.verified else "SIGNATURE INVALID"
                    print(
                        f"  >> webhook {note.json['type']} for {note.json['data']['id']} "
                        f"({note.headers['webhook-id']}): {mark}"
                    )
                shown = len(subscriber.received)
            await slack.wait_for(len(jobs), timeout=max(1.0, limit - (time.monotonic() - started)))
            print("\nSlack channel received:")
            for message in slack.received:
                # as Slack shows it: the text sent escapes &, < and > as HTML entities
                print(f"  {html.unescape(message['text'])}")
            bad = [n for n in subscriber.received if not n.verified]
            elapsed = time.monotonic() - started
            if bad:
                print(f"demo: {len(bad)} notification(s) failed signature verification")
                return 1
            print(
                f"\ndemo: {len(jobs)} jobs finished, {len(subscriber.received)} signed "
                f"notifications verified, in {elapsed:.1f}s"
            )
    return 0
