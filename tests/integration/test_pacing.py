"""A subscription's pacing and in-flight cap hold across relay processes sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from service.sim.chat import ChatSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.conftest import IMAGE_JOB, Running, StartRelay
from tests.integration.helpers import FAST, run_job, settled

# Arrival times are taken by the sim after the relay's send: allow for scheduling noise.
SLACK = 0.02


class Concurrency:
    """ASGI wrapper: how many requests are inside the app at once, and the most ever."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.now = 0
        self.peak = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as exits:
        yield exits


async def two_relays(start_relay: StartRelay, tmp_path: Path) -> tuple[Running, Running]:
    """Two relays (two lease owners) on one database file."""
    database = str(tmp_path / "shared.db")
    first = await start_relay(RELAY_DATABASE=database, **FAST)
    second = await start_relay(RELAY_DATABASE=database, **FAST)
    assert first.relay.heartbeat and second.relay.heartbeat
    assert first.relay.heartbeat.owner != second.relay.heartbeat.owner
    return first, second


async def backlog(relay: Running, url: str, count: int, **fields: object) -> dict:
    """A paused subscription with `count` deliveries waiting for it, one per job."""
    answer = await relay.client.post(
        "/v1/subscriptions",
        json={"url": url, "events": ["job.succeeded"], "paused": True, **fields},
    )
    assert answer.status_code == 201, answer.text
    sub = answer.json()
    for _ in range(count):
        await run_job(relay, IMAGE_JOB)
    return sub


async def resume(relays: tuple[Running, Running], sub_id: str) -> None:
    """Unpause through both relays at once: each wakes its own deliverer (a process is not
    woken by another's commits), which then scans every 50 ms while deliveries wait."""
    answers = await asyncio.gather(
        *(r.client.patch(f"/v1/subscriptions/{sub_id}", json={"paused": False}) for r in relays)
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]


async def test_two_relays_keep_a_chat_channel_to_its_rate_and_order(
    start_relay: StartRelay, tmp_path: Path, stack: contextlib.AsyncExitStack
) -> None:
    first, second = await two_relays(start_relay, tmp_path)
    sim = ChatSim("slack")
    url = await stack.enter_async_context(serve(sim.app)) + "/services/T000/B000/XXXX"
    sub = await backlog(first, url, 8, kind="slack", rate_per_second=10)
    events = (await first.client.get("/v1/events", params={"limit": 500})).json()["data"]
    finished = [e["job_id"] for e in events if e["type"] == "job.succeeded"]
    await resume((first, second), sub["id"])
    await sim.wait_for(8, timeout=10)
    made = await settled(first, 8, subscription_id=sub["id"])
    assert all(d["status"] == "succeeded" for d in made)
    assert len(sim.received) == 8  # none twice
    # One message at a time, in order, whichever relay sent it.
    order = [next(j for j in finished if j in str(m)) for m in sim.received]
    assert order == finished
    gaps = [b - a for a, b in itertools.pairwise(sim.received_at)]
    assert min(gaps) >= 0.1 - SLACK, gaps


async def test_two_relays_keep_a_webhook_to_its_in_flight_cap(
    start_relay: StartRelay, tmp_path: Path, stack: contextlib.AsyncExitStack
) -> None:
    first, second = await two_relays(start_relay, tmp_path)
    subscriber = Subscriber()
    subscriber.hang_seconds = 0.3  # slow, under RELAY_DELIVERY_TIMEOUT=0.5: each one succeeds
    gauge = Concurrency(subscriber.app)
    url = await stack.enter_async_context(serve(gauge)) + "/hook"
    sub = await backlog(first, url, 8, max_in_flight=2)
    await resume((first, second), sub["id"])
    await subscriber.wait_for(8, timeout=10)
    made = await settled(second, 8, subscription_id=sub["id"])
    assert all(d["status"] == "succeeded" for d in made)
    assert gauge.peak == 2, gauge.peak  # two in flight, not two per relay
