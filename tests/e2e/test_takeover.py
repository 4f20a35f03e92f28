"""Real signals on the console script: SIGKILL is taken over within seconds, SIGTERM drains."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.e2e.harness import service

pytestmark = pytest.mark.e2e

TAKEOVER = 5.0  # seconds from the restart (issue 10)
SCENARIO_JOB = {"model": "scenario/upscale-v3", "input": {}}
PIXAZO_JOB = {"model": "pixazo/seedvr-image", "input": {"image_url": "https://x.example/a.png"}}


class HeldSubmissions:
    """Pixazo's API with each submission's answer held back while `hold` is set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.hold = True
        self.held = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.hold:
            self.held += 1
            while self.hold:
                await asyncio.sleep(0.05)
        await self.app(scope, receive, send)


class Overlaps:
    """Scenario's API, noting any job polled by two requests at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight: dict[str, int] = {}
        self.overlaps: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or "/jobs/" not in path:
            await self.app(scope, receive, send)
            return
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        if self.in_flight[path] > 1:
            self.overlaps.append(path)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[path] -= 1


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the relay's database as another process would (WAL: never in its way)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def leases(db: Path) -> dict[str, list[str]]:
    """Ids of the jobs and deliveries that hold a lease now."""
    return {
        "jobs": [r[0] for r in query(db, "SELECT id FROM jobs WHERE lease_owner IS NOT NULL")],
        "deliveries": [
            r[0] for r in query(db, "SELECT id FROM deliveries WHERE lease_owner IS NOT NULL")
        ],
    }


async def until(check: Callable[[], Awaitable[Any] | Any], limit: float, what: str) -> Any:
    """Wait for `check()` to be truthy (awaiting it if need be); its value."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {limit:g} s ({value!r})"
        await asyncio.sleep(0.02)


async def subscribe(client: httpx.AsyncClient, url: str, subscriber: Subscriber) -> str:
    created = await client.post("/v1/subscriptions", json={"url": url, "events": ["job.*"]})
    assert created.status_code == 201, created.text
    subscriber.secrets = [created.json()["secret"]]
    return str(created.json()["id"])


async def test_sigkill_then_restart_takes_over_polls_deliveries_and_submissions_within_5s(
    tmp_path: Path,
) -> None:
    scenario = ScenarioSim(queue_seconds=0.1, process_seconds=60, latency=60)  # polls hang
    pixazo = PixazoSim()
    held = HeldSubmissions(pixazo.app)
    subscriber = Subscriber()
    subscriber.hang_seconds = 60  # deliveries hang
    async with (
        serve(scenario.app) as scenario_url,
        serve(held) as pixazo_url,
        serve(subscriber.app) as sub_url,
    ):
        scenario.base_url, pixazo.base_url = scenario_url, pixazo_url
        asset = scenario.add_asset(b"x", "image/png")
        async with service(
            tmp_path,
            SCENARIO_API_KEY=scenario.api_key,
            SCENARIO_API_SECRET=scenario.api_secret,
            SCENARIO_BASE_URL=scenario_url,
            PIXAZO_API_KEY=pixazo.api_key,
            PIXAZO_BASE_URL=pixazo_url,
            RELAY_DELIVERY_TIMEOUT="30",
        ) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
                await subscribe(client, f"{sub_url}/hook", subscriber)
                polled = [
                    await client.post("/v1/jobs", json={**SCENARIO_JOB, "input": {"image": asset}})
                    for _ in range(2)
                ]
                assert all(p.status_code == 202 for p in polled), polled
                provider_ids = [p.json()["provider_job_id"] for p in polled]
                submitting = asyncio.create_task(client.post("/v1/jobs", json=PIXAZO_JOB))
                await until(lambda: held.held, 5, "the submission reaches Pixazo")
                await until(
                    lambda: all(p in scenario.poll_log for p in provider_ids), 5, "polls are sent"
                )
                [interrupted] = (await client.get("/v1/jobs?status=submitting")).json()["data"]
            leased = await until(
                lambda: (lambda held_now: len(held_now["deliveries"]) >= 2 and held_now)(
                    leases(svc.database)
                ),
                5,
                "deliveries are leased",
            )
            assert {interrupted["id"], *(p.json()["id"] for p in polled)} <= set(leased["jobs"])
            await svc.kill()
            submitting.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await submitting
            # the providers and the subscriber answer at once from now on
            scenario.latency, subscriber.hang_seconds, held.hold = 0, 0, False
            restarted = time.monotonic()
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:

                async def interrupted_job() -> dict[str, Any] | None:
                    job = (await client.get(f"/v1/jobs/{interrupted['id']}")).json()
                    return job if job["status"] != "submitting" else None

                job = await until(interrupted_job, TAKEOVER + 1, "the submission is taken over")
                failed_by = time.monotonic()  # at the latest
                await until(
                    lambda: (
                        all(any(t > restarted for t in scenario.poll_log[p]) for p in provider_ids)
                        and set(leased["deliveries"])
                        <= {r.headers["webhook-id"] for r in subscriber.received}
                    ),
                    TAKEOVER + 1,
                    "the poll and the deliveries are taken over",
                )
        polls = [min(t for t in scenario.poll_log[p] if t > restarted) for p in provider_ids]
        received: dict[str, float] = {}
        for r in subscriber.received:
            received.setdefault(r.headers["webhook-id"], r.at)
        assert (job["status"], job["error"]["code"]) == ("failed", "submit_interrupted")
        # each within 5 s of the restart (their leases ran for a minute and more)
        assert failed_by - restarted < TAKEOVER, failed_by - restarted
        assert max(polls) - restarted < TAKEOVER, [t - restarted for t in polls]
        for delivery in leased["deliveries"]:
            assert received[delivery] - restarted < TAKEOVER, received[delivery] - restarted
    await pixazo.aclose()


async def test_sigterm_lets_polls_and_deliveries_finish_then_exits_0_holding_nothing(
    tmp_path: Path,
) -> None:
    scenario = ScenarioSim(queue_seconds=0.1, process_seconds=60, latency=1.5)
    subscriber = Subscriber()
    subscriber.hang_seconds = 1.5
    grace = 6.0
    async with serve(scenario.app) as scenario_url, serve(subscriber.app) as sub_url:
        scenario.base_url = scenario_url
        asset = scenario.add_asset(b"x", "image/png")
        async with service(
            tmp_path,
            SCENARIO_API_KEY=scenario.api_key,
            SCENARIO_API_SECRET=scenario.api_secret,
            SCENARIO_BASE_URL=scenario_url,
            RELAY_SHUTDOWN_GRACE=f"{grace:g}",
        ) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                await subscribe(client, f"{sub_url}/hook", subscriber)
                answers = [
                    await client.post("/v1/jobs", json={**SCENARIO_JOB, "input": {"image": asset}})
                    for _ in range(2)
                ]
            provider_ids = [a.json()["provider_job_id"] for a in answers]
            leased = await until(
                lambda: (lambda now: len(now["jobs"]) == 2 and len(now["deliveries"]) >= 2 and now)(
                    leases(svc.database)
                ),
                5,
                "polls and deliveries under way",
            )
            code, took = await svc.terminate()
        assert code == 0
        assert took < grace, took
        assert took >= 0.5  # it did wait for the work under way (1.5 s each)
        assert leases(svc.database) == {"jobs": [], "deliveries": []}
        assert query(svc.database, "SELECT count(*) FROM owners") == [(0,)]
        # every poll that reached the provider was recorded, the ones in flight included
        for provider_id in provider_ids:
            [(recorded,)] = query(
                svc.database,
                "SELECT poll_attempt FROM jobs WHERE provider_job_id = ?",
                (provider_id,),
            )
            assert recorded == len(scenario.poll_log[provider_id]) >= 1
        # the deliveries under way were received, each once, and recorded as delivered
        received = [r.headers["webhook-id"] for r in subscriber.received]
        assert set(leased["deliveries"]) <= set(received)
        assert len(received) == len(set(received))
        statuses = dict(query(svc.database, "SELECT id, status FROM deliveries"))
        assert all(statuses[d] == "succeeded" for d in leased["deliveries"])


async def test_sigterm_past_the_grace_releases_the_delivery_for_the_next_process(
    tmp_path: Path,
) -> None:
    subscriber = Subscriber()
    subscriber.hang_seconds = 30
    grace = 2.0
    async with serve(subscriber.app) as sub_url:
        async with service(
            tmp_path, RELAY_SHUTDOWN_GRACE=f"{grace:g}", RELAY_DELIVERY_TIMEOUT="30"
        ) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                sub_id = await subscribe(client, f"{sub_url}/hook", subscriber)
                assert (await client.post(f"/v1/subscriptions/{sub_id}/test")).status_code < 300
            [delivery] = await until(
                lambda: leases(svc.database)["deliveries"], 5, "the send is under way"
            )
            code, took = await svc.terminate()
            assert code == 0
            assert took < grace + 1.0, took
            assert leases(svc.database)["deliveries"] == []
            assert subscriber.received == []  # cut short: not delivered
            subscriber.hang_seconds = 0
            await svc.start()
            ready = time.monotonic()
            [arrived] = await subscriber.wait_for(1, timeout=5)
        assert arrived.headers["webhook-id"] == delivery
        assert arrived.at - ready < 1.0, arrived.at - ready  # at once, not after a lease


async def test_two_processes_on_one_database_never_poll_one_job_at_once(tmp_path: Path) -> None:
    scenario = ScenarioSim(queue_seconds=0.1, process_seconds=60, latency=1.0)
    watch = Overlaps(scenario.app)
    async with serve(watch) as scenario_url:
        scenario.base_url = scenario_url
        asset = scenario.add_asset(b"x", "image/png")
        env = {
            "SCENARIO_API_KEY": scenario.api_key,
            "SCENARIO_API_SECRET": scenario.api_secret,
            "SCENARIO_BASE_URL": scenario_url,
        }
        async with service(tmp_path, **env) as first, service(tmp_path, **env) as second:
            assert first.database == second.database
            await asyncio.gather(first.start(), second.start())
            for i in range(16):
                async with httpx.AsyncClient(base_url=(first, second)[i % 2].url) as client:
                    body = {**SCENARIO_JOB, "input": {"image": asset}}
                    assert (await client.post("/v1/jobs", json=body)).status_code == 202
            await asyncio.sleep(3)  # every job is polled a few times, by either process
            assert watch.overlaps == []
            polled_by = []
            for relay in (first, second):
                async with httpx.AsyncClient(base_url=relay.url) as client:
                    text = (await client.get("/metrics")).text
                count = [ln for ln in text.splitlines() if ln.startswith("relay_poll_lateness_s")]
                polled_by.append(float(next(ln for ln in count if "_count" in ln).split()[-1]))
            assert all(n > 0 for n in polled_by), polled_by  # both took a share
            # the first dies with polls under way: the second takes them over within 5 s
            assert first.proc is not None
            [(dead,)] = query(
                first.database, "SELECT id FROM owners WHERE pid = ?", (first.proc.pid,)
            )
            held = [
                r[0]
                for r in query(
                    first.database,
                    "SELECT provider_job_id FROM jobs WHERE lease_owner = ?",
                    (dead,),
                )
            ]
            assert held
            await first.kill()
            killed = time.monotonic()
            await until(
                lambda: all(any(t > killed for t in scenario.poll_log[p]) for p in held),
                TAKEOVER + 1,
                "the dead process's polls are taken over",
            )
            taken = [min(t for t in scenario.poll_log[p] if t > killed) - killed for p in held]
            assert max(taken) < TAKEOVER, taken
            assert watch.overlaps == []


async def test_sigterm_with_a_submission_under_way_hands_it_over_within_the_grace(
    tmp_path: Path,
) -> None:
    pixazo = PixazoSim()
    held = HeldSubmissions(pixazo.app)
    grace = 2.0
    async with serve(held) as pixazo_url:
        pixazo.base_url = pixazo_url
        async with service(
            tmp_path,
            PIXAZO_API_KEY=pixazo.api_key,
            PIXAZO_BASE_URL=pixazo_url,
            RELAY_SHUTDOWN_GRACE=f"{grace:g}",
        ) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
                submitting = asyncio.create_task(client.post("/v1/jobs", json=PIXAZO_JOB))
                await until(lambda: held.held, 5, "the submission reaches Pixazo")
                # uvicorn waits for the request no longer than the grace, counted from the signal
                code, took = await svc.terminate()
                with contextlib.suppress(httpx.HTTPError):
                    await submitting
            assert code == 0
            assert took < grace + 1.0, took
            [(job_id, owner)] = query(svc.database, "SELECT id, lease_owner FROM jobs")
            assert owner is None  # released: no need to wait for a heartbeat to age
            held.hold = False
            await svc.start()
            ready = time.monotonic()
            async with httpx.AsyncClient(base_url=svc.url) as client:

                async def ended() -> dict[str, Any] | None:
                    job = (await client.get(f"/v1/jobs/{job_id}")).json()
                    return job if job["status"] != "submitting" else None

                job = await until(ended, 5, "the interrupted submission is settled")
            assert time.monotonic() - ready < 1.0
            assert job["error"]["code"] == "submit_interrupted"
    await pixazo.aclose()
