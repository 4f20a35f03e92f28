"""Helpers shared by the subscription, delivery and chat tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from standardwebhooks.webhooks import Webhook

from service.sim.pixazo import PixazoSim
from service.sim.subscriber import Received, Subscriber
from tests.conftest import IMAGE_JOB, Running

TERMINAL = {"succeeded", "failed", "canceled"}
# Relay settings for delivery tests: loopback subscribers, retries in tenths of a second.
FAST = {
    "RELAY_ALLOW_PRIVATE_TARGETS": "1",
    "RELAY_RETRY_SCHEDULE": "0,0.1,0.2",
    "RELAY_DELIVERY_TIMEOUT": "0.5",
}

ServeSubscriber = Callable[[], Awaitable[tuple[Subscriber, str]]]


async def subscribe(relay: Running, url: str, **fields: Any) -> dict[str, Any]:
    answer = await relay.client.post("/v1/subscriptions", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def deliveries(relay: Running, **params: str) -> list[dict[str, Any]]:
    answer = await relay.client.get("/v1/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


async def settled(relay: Running, count: int, limit: float = 5.0, **params: str) -> list[dict]:
    """Wait until exactly `count` deliveries match `params` and none is pending."""
    deadline = time.monotonic() + limit
    while True:
        found = await deliveries(relay, **params)
        if len(found) == count and all(d["status"] != "pending" for d in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries {params} never settled at {count}: {found}")
        await asyncio.sleep(0.02)


async def until(check: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def run_job(relay: Running, body: dict[str, Any] = IMAGE_JOB) -> dict[str, Any]:
    answer = await relay.submit(body)
    assert answer.status_code == 202, answer.text
    return await relay.wait_status(answer.json()["id"], TERMINAL)


def verify(secret: str, received: Received) -> Any:
    """Verify with the standardwebhooks package (raises if the signature is wrong)."""
    return Webhook(secret).verify(received.body, received.headers)


async def held_job(relay: Running, pixazo: PixazoSim) -> tuple[dict, str]:
    """A submitted job whose provider lifecycle is frozen at PROCESSING; and its hook URL."""
    pixazo.lose_callbacks = True
    job = (await relay.submit(IMAGE_JOB)).json()
    pixazo.set_status(job["provider_job_id"], "PROCESSING")
    hook = pixazo.jobs[job["provider_job_id"]].webhook_url
    assert hook is not None
    await pixazo.send_callback(job["provider_job_id"])
    await relay.wait_status(job["id"], {"processing"})
    return job, hook
