"""`python -m bench.growth [--jobs N]`: the bytes a job adds to a SQLite database, and how long
a prune batch holds the writer.

A real relay (`serve`, PostgreSQL not involved) against the simulators: N Pixazo jobs (signed
callbacks), N Scenario jobs (polled), one subscription to job.succeeded (one delivery and one
attempt per job). Bytes come from SQLite's dbstat table (pages used by each table and its
indexes, free space inside pages left out), divided by the jobs; then every job is pruned and
the rows that stay are measured again."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import relay_server
from service import retention as policy
from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from service.store.sqlite import retention

TABLES = ("jobs", "events", "deliveries", "attempts", "idempotency")


def usage(path: Path) -> dict[str, int]:
    """Bytes used (payload and page headers, not free space) per table, its indexes included."""
    with sqlite3.connect(path) as conn:
        owner = {r[0]: r[1] for r in conn.execute("SELECT name, tbl_name FROM sqlite_master")}
        used: dict[str, int] = {}
        for name, size, unused in conn.execute(
            "SELECT name, sum(pgsize), sum(unused) FROM dbstat GROUP BY name"
        ):
            table = owner.get(name, name)
            used[table] = used.get(table, 0) + int(size) - int(unused)
    return used


async def run_jobs(path: Path, n: int, provider: str) -> None:
    pixazo, scenario = (
        PixazoSim(queue_seconds=0.2, process_seconds=1.0),
        ScenarioSim(queue_seconds=0.2, process_seconds=1.0),
    )
    subscriber = Subscriber()
    async with (
        serve(pixazo.app) as pixazo_url,
        serve(scenario.app) as scenario_url,
        serve(subscriber.app) as sub_url,
    ):
        pixazo.base_url, scenario.base_url = pixazo_url, scenario_url
        asset = scenario.add_asset(b"x" * 64, "image/png")
        server = relay_server(
            path,
            path.parent,
            cpu=None,
            PIXAZO_API_KEY=pixazo.api_key,
            PIXAZO_BASE_URL=pixazo_url,
            SCENARIO_API_KEY=scenario.api_key,
            SCENARIO_API_SECRET=scenario.api_secret,
            SCENARIO_BASE_URL=scenario_url,
            RELAY_ALLOW_PRIVATE_TARGETS="1",
            RELAY_POLL_MIN="0.25",
            RELAY_POLL_MAX="1",
        )
        server.start()
        try:
            await server.wait_ready()
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                created = await client.post(
                    "/v1/subscriptions", json={"url": f"{sub_url}/h", "events": ["job.succeeded"]}
                )
                subscriber.secrets = [created.json()["secret"]]
                for i in range(n):
                    body: dict[str, object] = (
                        {"model": "pixazo/seedvr-image", "input": {"image_url": f"https://x/{i}"}}
                        if provider == "pixazo"
                        else {"model": "scenario/upscale-v3", "input": {"image": asset}}
                    )
                    answer = await client.post("/v1/jobs", json=body)
                    assert answer.status_code == 202, answer.text
                deadline = time.monotonic() + 120
                while True:
                    page = (await client.get("/v1/deliveries", params={"limit": 500})).json()
                    done = [d for d in page["data"] if d["status"] != "pending"]
                    if len(done) >= n:
                        break
                    assert time.monotonic() < deadline, len(done)
                    await asyncio.sleep(0.2)
        finally:
            await server.astop()
        await pixazo.aclose()
        await scenario.aclose()


def batch_times(path: Path) -> list[float]:
    """Seconds each prune batch spends in SQL (what holds the event loop; COMMIT is elsewhere)."""
    times = []
    with sqlite3.connect(path, isolation_level=None) as conn:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            start = time.perf_counter()
            done = retention.batch(conn, time.time() + 1, time.time(), policy.BUDGET)
            times.append(time.perf_counter() - start)
            conn.execute("COMMIT")
            if not done.rows and not done.jobs:
                return times[:-1] or times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    n = parser.parse_args().jobs
    for provider in ("pixazo", "scenario"):
        with tempfile.TemporaryDirectory(prefix="growth-") as tmp:
            path = Path(tmp) / "relay.db"
            await run_jobs(path, n, provider)
            with sqlite3.connect(path) as conn:
                events = conn.execute("SELECT count(*) FROM events WHERE job_id IS NOT NULL")
                per_job_events = events.fetchone()[0] / n
            before = usage(path)
            times = batch_times(path)
            after = usage(path)
            row = {t: before.get(t, 0) / n for t in TABLES}
            kept = after.get("jobs", 0) / n
            print(f"{provider}: {n} jobs, {per_job_events:.1f} events a job")
            print("  bytes a job: " + ", ".join(f"{t} {v:.0f}" for t, v in row.items()))
            print(f"  in all {sum(row.values()):.0f} bytes a job; pruned, the job keeps {kept:.0f}")
            print(
                f"  prune batches: {len(times)}, median {statistics.median(times) * 1000:.2f} ms,"
                f" max {max(times) * 1000:.2f} ms"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
