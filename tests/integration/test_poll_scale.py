"""Polling at scale: 10,000 Scenario jobs in flight, capped concurrency, never early."""

from __future__ import annotations

import asyncio
import itertools
import time

from service.sim.scenario import ScenarioSim
from service.store import Tx
from service.store.postgres.tx import PgTx
from service.store.sqlite.tx import SqliteTx
from tests.conftest import Running

JOBS = 10_000
CAP = 50
POLL_MIN, POLL_MAX, JITTER = 1.0, 4.0, 0.2


async def _seed(tx: Tx, provider_ids: list[str], now: float) -> None:
    rows = [
        (
            f"job_scale{i:05d}",
            "scenario/upscale-v3",
            "scenario",
            "processing",
            "{}",
            "{}",
            pid,
            now,
            now,
            now,
        )
        for i, pid in enumerate(provider_ids)
    ]
    sql = (
        "INSERT INTO jobs (id, model, provider, status, input, metadata, provider_job_id,"
        " created_at, updated_at, next_poll_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    # seeded in bulk with the engine's own driver: 10,000 jobs through the API would take long
    if isinstance(tx, PgTx):
        async with tx.conn.cursor() as cur:
            await cur.executemany(sql.replace("?", "%s"), rows)
    else:
        assert isinstance(tx, SqliteTx)
        tx.conn.executemany(sql, rows)
    tx.notify("poll")


async def test_ten_thousand_jobs_polled_within_the_cap_and_never_early(
    start_relay, scenario: ScenarioSim
) -> None:
    scenario.process_seconds = 3600  # everything stays in flight for the whole test
    scenario.latency = 0.002  # so that concurrent polls overlap and the cap is measurable
    asset = scenario.add_asset(b"x", "image/png")
    sim_jobs = [
        scenario._new_job("custom", "model_upscale-v3", {"image": asset}, "success", 5, [asset])
        for _ in range(JOBS)
    ]
    relay: Running = await start_relay(
        RELAY_POLL_MIN=str(POLL_MIN),
        RELAY_POLL_MAX=str(POLL_MAX),
        RELAY_POLL_CONCURRENCY=str(CAP),
    )
    started = time.time()
    await relay.relay.store.write(lambda tx: _seed(tx, [j.job_id for j in sim_jobs], started))
    deadline = time.monotonic() + 60
    while len(scenario.poll_log) < JOBS:
        assert time.monotonic() < deadline, f"only {len(scenario.poll_log)} jobs polled"
        await asyncio.sleep(0.2)
    await asyncio.sleep(2 * POLL_MIN)  # let second and third polls happen
    assert scenario.max_in_flight <= CAP
    assert scenario.max_in_flight >= CAP // 2  # the cap was actually reached, not idle
    early = []
    repolled = 0
    for stamps in scenario.poll_log.values():
        repolled += len(stamps) > 1
        for attempt, (a, b) in enumerate(itertools.pairwise(stamps)):
            floor = min(POLL_MIN * 2**attempt, POLL_MAX) * (1 - JITTER)
            if b - a < floor - 0.01:
                early.append((attempt, b - a, floor))
    assert early == []
    assert repolled > 0
    # progress is not an event per poll: at most one progress event per job so far
    events = (await relay.client.get("/v1/events", params={"limit": 500})).json()["data"]
    assert len(events) < 500 or events[-1]["type"] != "job.progress"
