"""Submissions: POST /v1/jobs to the Pixazo simulator, which answers each one at once.

wrk (one thread, 32 connections) POSTs the same Pixazo image job over and over; the relay
(core 0) commits it as `submitting`, calls the simulator, records the answer and answers
202. The simulator runs in the bench process on core 1 beside wrk, and its jobs stay queued
(no callbacks during the run); polls are kept out by a long RELAY_CALLBACK_GRACE, the in-flight
cap by a large RELAY_MAX_IN_FLIGHT. Each round's database already holds 100,000 finished jobs.
Rounds alternate with a bare Starlette route parsing the same JSON (bench.bare), the ceiling
of the HTTP stack alone. `python -m bench submit`, or `python -m bench.submit`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

from bench.common import (
    CLIENT_CPU,
    SERVER_CPU,
    Outcome,
    Row,
    Server,
    bare_server,
    can_pin,
    client_core,
    connect,
    cpu_seconds,
    insert_jobs,
    log,
    median,
    migrate,
    pixazo_job,
    relay_server,
    tmpdir,
)
from bench.ingest import WrkResult, ensure_wrk, lua_string, parse_wrk

NAME = "10. Submissions"
CONNECTIONS = 32
TOKEN = "bench-api-token"
GOAL = 2000.0
# Jobs the provider had before the run, all finished: what a submission must not scan.
HISTORY = 100_000
BODY = json.dumps(
    {
        "model": "pixazo/seedvr-image",
        "input": {"image_url": "https://cdn.example.com/uploads/portrait.png", "upscale_factor": 2},
        "metadata": {"tenant": "bench", "batch": "submit"},
    },
    separators=(",", ":"),
)
LUA = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


async def run_wrk(wrk: str, url: str, script: Path, seconds: float, pin: bool) -> WrkResult:
    """wrk as a child process (the simulator shares this process's loop meanwhile)."""
    cmd = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "--timeout", "5s"]
    cmd += ["-s", str(script), url]
    if pin:
        cmd = ["taskset", "-c", str(CLIENT_CPU), *cmd]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()}\n{out.decode()}")
    return parse_wrk(out.decode())


def job_counts(path: Path) -> dict[str, int]:
    conn = connect(path)
    try:
        rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    finally:
        conn.close()
    return {str(s): int(n) for s, n in rows}


async def seed(path: Path) -> None:
    """A database holding HISTORY finished Pixazo jobs."""
    await migrate(path)
    now = time.time() - 86400
    conn = connect(path)
    try:
        insert_jobs(conn, [pixazo_job(i, "succeeded", now, None, "old") for i in range(HISTORY)])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _relay_round(
    wrk: str, work: Path, script: Path, sim_url: str, r: int, seconds: float, pin: bool
) -> tuple[WrkResult, float, dict[str, int]]:
    db = work / f"relay-{r}.db"
    shutil.copyfile(work / "seed.db", db)
    server: Server = relay_server(
        db,
        work,
        SERVER_CPU if pin else None,
        PIXAZO_API_KEY="sim-pixazo-key",
        PIXAZO_BASE_URL=sim_url,
        RELAY_API_TOKENS=TOKEN,
        RELAY_CALLBACK_GRACE="3600",
        RELAY_MAX_IN_FLIGHT="100000000",
    )
    try:
        server.start()
        await server.wait_ready()
        cpu0 = cpu_seconds(server.pid)
        result = await run_wrk(wrk, f"{server.url}/v1/jobs", script, seconds, pin)
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        await server.astop()
    counts = job_counts(db)
    db.unlink()
    return result, cpu, counts


async def run(quick: bool) -> Outcome:
    from service.sim.pixazo import PixazoSim
    from service.sim.server import serve

    pin = can_pin()
    wrk = ensure_wrk()
    rounds, seconds = (1, 3.0) if quick else (3, 6.0)
    bare: list[WrkResult] = []
    relay: list[WrkResult] = []
    per_job: list[float] = []
    checks: list[tuple[int, int, int]] = []  # (jobs queued, 2xx answers, new jobs not queued)
    with tmpdir("submit") as tmp, client_core():
        work = Path(tmp)
        script = work / "submit.lua"
        script.write_text(LUA % (lua_string(BODY), TOKEN))
        log(f"submit: seeding {HISTORY:,} finished Pixazo jobs")
        await seed(work / "seed.db")
        # Jobs stay queued for the whole run: the simulator sends no callback meanwhile.
        async with PixazoSim(queue_seconds=3600.0) as sim, serve(sim.app) as sim_url:
            for r in range(rounds):
                server = bare_server(work, SERVER_CPU if pin else None)
                try:
                    server.start()
                    await server.wait_ready()
                    base = await run_wrk(
                        wrk, f"{server.url}/hooks/pixazo/bench", script, seconds, pin
                    )
                finally:
                    await server.astop()
                bare.append(base)
                log(f"submit round {r + 1}/{rounds}: bare  {base.rps:9,.0f} req/s")
                result, cpu, counts = await _relay_round(
                    wrk, work, script, sim_url, r, seconds, pin
                )
                relay.append(result)
                per_job.append(cpu / max(result.ok, 1))
                queued = counts.get("queued", 0)
                checks.append((queued, result.ok, sum(counts.values()) - queued - HISTORY))
                log(
                    f"submit round {r + 1}/{rounds}: relay {result.rps:9,.0f} jobs/s, "
                    f"{result.ok:,} answered 2xx, {per_job[-1] * 1e6:.0f} µs CPU a job, "
                    f"jobs by status {counts}"
                )
    rate = median([x.rps for x in relay])
    rate_bare = median([x.rps for x in bare])
    errors = sum(x.non2xx + x.socket_errors for x in relay)
    diffs = [queued - ok for queued, ok, _ in checks]
    others = sum(o for _, _, o in checks)
    durable = all(0 <= d <= CONNECTIONS for d in diffs) and others <= CONNECTIONS * len(checks)
    rows = [
        Row(
            NAME,
            f"POST /v1/jobs answered 202 per second, median of {rounds}",
            f"{rate:,.0f}",
            f"{rate_bare:,.0f} (bare route, same JSON)",
            f"{rate / rate_bare:.0%}",
            f"≥ {GOAL:,.0f} jobs/s",
            Row.verdict(rate >= GOAL),
        ),
        Row(
            NAME,
            "relay CPU per job (all threads)",
            f"{median(per_job) * 1e6:,.0f} µs",
            "—",
            "—",
            "—",
            "info",
        ),
        Row(
            NAME,
            "p50 / p99 latency (32 connections)",
            f"{median([x.p50 for x in relay]) * 1e3:.1f} ms / "
            f"{median([x.p99 for x in relay]) * 1e3:.1f} ms",
            f"{median([x.p50 for x in bare]) * 1e3:.1f} ms / "
            f"{median([x.p99 for x in bare]) * 1e3:.1f} ms",
            "—",
            "—",
            "info",
        ),
        Row(
            NAME,
            "non-2xx answers + socket errors",
            f"{errors}",
            "—",
            "—",
            "0",
            Row.verdict(errors == 0),
        ),
        Row(
            NAME,
            "jobs queued - 202 answers, per round",
            ", ".join(f"{d:+d}" for d in diffs) + f" ({others} jobs in another state)",
            "—",
            "—",
            f"0 to +{CONNECTIONS} (in flight at stop)",
            Row.verdict(durable),
        ),
    ]
    placement = (
        "relay on core 0 (taskset -c 0); wrk and the simulator on core 1"
        if pin
        else "unpinned (--unpinned)"
    )
    notes = [
        f"{NAME}: wrk -t1 -c{CONNECTIONS} -d{seconds:g}s --latency POSTs one {len(BODY)}-byte "
        f"Pixazo image job with a bearer token to /v1/jobs, {rounds} rounds alternating with "
        "the bare route (bench.bare, the same body to its JSON route), medians; "
        f"{placement}; each round on a fresh copy of a SQLite database holding {HISTORY:,} "
        "finished Pixazo jobs (the history an in-flight count must not scan); "
        "service.sim.pixazo answers each "
        "submission at once (QUEUED, its jobs stay queued: no callback during the run); "
        "RELAY_CALLBACK_GRACE=3600 keeps polls out, RELAY_MAX_IN_FLIGHT=100000000 keeps every "
        "job from being held back. CPU per job is the relay process's user+system time over "
        "the run divided by the 202 answers. After a graceful stop every 202 must have its "
        "job queued in the database (up to 32 more may have been in flight at the stop).",
    ]
    return Outcome(rows, notes)


def main() -> int:
    outcome = asyncio.run(run("--quick" in sys.argv[1:]))
    for row in outcome.rows:
        print(f"{row.metric}: {row.value} (baseline {row.baseline}) {row.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
