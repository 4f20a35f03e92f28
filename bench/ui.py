"""Dashboard: GET /ui/jobs on a database of 10,000 jobs, all created in the last 24 hours (all
of them in the page's 24-hour counts), each page fetched whole over HTTP, one at a time.

Also timed: the same page filtered by provider and by a metadata value (filters the store
applies, over the whole history) and one job's page. The relay runs with no RELAY_API_TOKENS, so the
dashboard is open (a signed-in session costs one cookie check more)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from bench.common import (
    Outcome,
    Row,
    client_core,
    connect,
    fmt_ms,
    insert_jobs,
    job_id,
    log,
    median,
    migrate,
    percentile,
    relay_server,
    request_id,
    tmpdir,
)

JOBS = 10_000
GOAL = 0.200
STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "processing", "queued")
MODELS = (("pixazo/seedvr-image", "pixazo"), ("scenario/upscale-v3", "scenario"))


def rows(now: float) -> list[tuple[object, ...]]:
    out = []
    for i in range(JOBS):
        model, provider = MODELS[i % len(MODELS)]
        created = now - 86_000 + i * 8.6  # spread over the last 24 hours, oldest first
        out.append(
            (
                job_id(i, "ui"),
                model,
                provider,
                STATUSES[i % len(STATUSES)],
                0.5,
                json.dumps({"image_url": f"https://cdn.example.com/in/{i}.png"}),
                json.dumps({"tenant": f"t{i % 7}"}),
                request_id(i, "ui"),
                created,
                created + 30,
                None,
                0,
            )
        )
    return out


def timed(client: httpx.Client, path: str, runs: int) -> list[float]:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.status_code)
    return took


async def run(quick: bool) -> Outcome:
    runs = 20 if quick else 100
    with tmpdir("bench-ui-") as tmp:
        work = Path(tmp)
        db = work / "relay.db"
        await migrate(db)
        conn = connect(db)
        insert_jobs(conn, rows(time.time()))
        conn.close()
        log(f"ui: {JOBS} jobs written; timing /ui/jobs, {runs} requests each")
        relay = relay_server(db, work)
        relay.start()
        try:
            await relay.wait_ready(30)
            with client_core(), httpx.Client(base_url=f"http://127.0.0.1:{relay.port}") as c:
                timed(c, "/ui/jobs", 5)  # warm-up: templates compiled, caches filled
                pages = {
                    "/ui/jobs": timed(c, "/ui/jobs", runs),
                    "/ui/jobs?provider=scenario": timed(c, "/ui/jobs?provider=scenario", runs),
                    "/ui/jobs?metadata=tenant=t3": timed(c, "/ui/jobs?metadata=tenant%3Dt3", runs),
                    f"/ui/jobs/{job_id(JOBS - 1, 'ui')}": timed(
                        c, f"/ui/jobs/{job_id(JOBS - 1, 'ui')}", runs
                    ),
                }
        finally:
            relay.stop()
    out = []
    for path, took in pages.items():
        ok = median(took) < GOAL
        value = f"median {fmt_ms(median(took))}, p95 {fmt_ms(percentile(took, 95))}"
        out.append(
            Row("11. Dashboard", f"GET {path[:40]}", value, goal="< 200 ms", result=Row.verdict(ok))
        )
    notes = [
        f"Dashboard: {JOBS} jobs inserted with sqlite3 after the service's migrations, all in the"
        f" last 24 hours; each page fetched {runs} times in a row after 5 warm-up requests,"
        " the relay pinned to one core and the client to the other; whole answers timed."
    ]
    return Outcome(out, notes)
