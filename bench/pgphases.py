"""The measurements of bench/postgres.py: seeding, ingest, submit, latency and fan-out.

Each works on one set-up (an engine and its relay processes) and stores its figures in
`Setup.m`; with several processes the load alternates between them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.common import (
    CLIENT_CPU,
    MAX_AGE,
    SECRET,
    RawClient,
    Server,
    can_pin,
    connect,
    cpu_seconds,
    fmt_ms,
    insert_jobs,
    log,
    migrate,
    percentile,
    pixazo_job,
)
from bench.ingest import LUA, WrkResult, body_parts, ensure_wrk, lua_string, parse_wrk
from bench.latency import PixazoStatus, Receiver, callback_body
from bench.pgdrivers import _server_cpu
from tests.pgserver import PgServer

NAME = "9. PostgreSQL"
CONNECTIONS = 32  # wrk connections in all, split evenly over the processes
GENERATE = "/seedvr-upscale/v1/upscale-image/generate"


@dataclass
class Sizes:
    ingest_seconds: float
    ingest_jobs: int
    submit_seconds: float
    submit_tasks: int
    callbacks: int  # latency at RATES[0]; a fifth as many at RATES[1]
    subs: int


RATES = (100.0, 20.0)  # callbacks a second: bench 2's rate, and one well below saturation


@dataclass
class Setup:
    """One engine and process count, and what was measured on it."""

    label: str
    procs: int
    postgres: bool
    m: dict[str, Any] = field(default_factory=dict)


class Pixazo(PixazoStatus):
    """The lean status endpoint of bench.latency, plus generate answering 202 at once (no
    callbacks follow: the submission alone is measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.generated = 0

    async def __call__(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        if method == "POST" and path == GENERATE:
            self.generated += 1
            rid = f"seedvr-upscale_bench-{self.generated:012d}"
            answer = {"request_id": rid, "status": "QUEUED", "polling_url": f"/x/{rid}"}
            return 202, json.dumps(answer).encode()
        return await super().__call__(method, path, headers, body)


# -- databases -----------------------------------------------------------------------------


def seed_rows(sizes: Sizes) -> dict[str, list[tuple[Any, ...]]]:
    now = time.time()
    return {
        "ingest": [
            pixazo_job(i, "queued", now, now + 3600, "ing") for i in range(sizes.ingest_jobs)
        ],
        "latency": [
            pixazo_job(i, "processing", now, now + 3600, "lat")
            for i in range(20 + sizes.callbacks + sizes.callbacks // 5)
        ],
        "fanout": [pixazo_job(i, "processing", now, now + 3600, "fan") for i in range(2)],
    }


JOB_COLUMNS = (
    "id, model, provider, status, progress, input, metadata, provider_job_id,"
    " created_at, updated_at, next_poll_at, poll_attempt"
)


async def create(database: str) -> None:
    """The schema, by the relay's own migrations."""
    if database.startswith("postgresql://"):
        from service.store.postgres import PostgresStore

        store = await PostgresStore.open(database)
        await store.close()
    else:
        await migrate(Path(database))


def add_jobs(database: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert seeded jobs (in one transaction; beside a running relay too)."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database) as conn, conn.cursor() as cur:
            with cur.copy(f"COPY jobs ({JOB_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute("ANALYZE jobs")
        return
    conn = connect(Path(database))
    try:
        insert_jobs(conn, rows)
    finally:
        conn.close()


def scalar(database: str, sql: str) -> int:
    """One number from the database (SQLite file or PostgreSQL URL), read beside the relay."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database) as pg:
            row = pg.execute(sql).fetchone()
    else:
        conn = connect(Path(database))
        try:
            row = conn.execute(sql).fetchone()
        finally:
            conn.close()
    return int(row[0]) if row and row[0] is not None else 0


# -- the four measurements -----------------------------------------------------------------


async def wrk_one(wrk: str, port: int, script: Path, paths: Path, conns: int, secs: float) -> str:
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{secs:g}s", "--latency", "--timeout", "5s"]
    cmd += ["-s", str(script), f"http://127.0.0.1:{port}", "--", str(paths)]
    if can_pin():
        cmd = ["taskset", "-c", str(CLIENT_CPU), *cmd]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), secs + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()}")
    return out.decode()


def server_cpu(relays: list[Server], pg: PgServer | None) -> tuple[float, float]:
    """CPU seconds so far of the relay processes, and of every PostgreSQL process."""
    relay = sum(cpu_seconds(r.pid) for r in relays)
    return relay, _server_cpu(pg.postmaster_pid) if pg is not None else 0.0


async def ingest(
    s: Setup, relays: list[Server], pg: PgServer | None, lines: list[str], work: Path, secs: float
) -> None:
    """wrk: each process gets every other seeded job's signed callback URL, once each."""
    wrk = ensure_wrk()
    head, tail = body_parts()
    script = work / "callbacks.lua"
    script.write_text(LUA % (lua_string(head), lua_string(tail)))
    files = []
    for k in range(s.procs):
        files.append(work / f"paths-{s.procs}-{k}.txt")
        files[-1].write_text("\n".join(lines[k :: s.procs]) + "\n")
    cpu0, t0 = server_cpu(relays, pg), time.monotonic()
    outs = await asyncio.gather(
        *(
            wrk_one(wrk, r.port, script, f, CONNECTIONS // s.procs, secs)
            for r, f in zip(relays, files, strict=True)
        )
    )
    cpu1 = server_cpu(relays, pg)
    wall = time.monotonic() - t0
    results: list[WrkResult] = [parse_wrk(o) for o in outs]
    await asyncio.sleep(0.5)  # the answers wrk stopped waiting for are committed by now
    ok = sum(r.ok for r in results)
    s.m["ingest_rps"] = sum(r.rps for r in results)
    s.m["ingest_p50"] = max(r.p50 for r in results)
    s.m["ingest_p99"] = max(r.p99 for r in results)
    s.m["ingest_errors"] = sum(r.non2xx + r.socket_errors for r in results)
    # per 2xx answer, scaled from the whole wrk run (start-up included) to its measured time
    per = secs / wall / max(ok, 1) * 1e6
    s.m["ingest_cpu_us"] = ((cpu1[0] - cpu0[0]) * per, (cpu1[1] - cpu0[1]) * per)
    s.m["ingest_wrapped"] = any(r.requests > len(lines) // s.procs for r in results)
    s.m["ingest_diff"] = scalar(
        s.m["db"], "SELECT count(*) FROM events WHERE type = 'job.processing'"
    ) - sum(r.ok for r in results)
    log(f"{s.label}: ingest {s.m['ingest_rps']:,.0f} req/s, events - 2xx {s.m['ingest_diff']:+d}")


async def submit(
    s: Setup, clients: list[RawClient], pixazo_url: str, secs: float, tasks: int
) -> None:
    """POST /v1/jobs from `tasks` workers, each alternating between the processes."""
    body = json.dumps(
        {
            "model": "pixazo/seedvr-image",
            "input": {"image_url": f"{pixazo_url}/in/portrait.png", "upscale_factor": 2},
            "metadata": {"tenant": "submit-bench"},
        }
    ).encode()
    codes: dict[int, int] = {}
    took: list[float] = []
    deferred = 0
    deadline = time.monotonic() + secs

    async def worker(w: int) -> None:
        nonlocal deferred
        k = w
        while time.monotonic() < deadline:
            t = time.monotonic()
            code, answer = await clients[k % len(clients)].request("POST", "/v1/jobs", body)
            took.append(time.monotonic() - t)
            codes[code] = codes.get(code, 0) + 1
            deferred += code == 202 and bool(json.loads(answer).get("deferred"))
            k += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    wall = time.monotonic() - t0
    accepted = codes.get(202, 0)
    recorded = scalar(
        s.m["db"],
        "SELECT count(*) FROM jobs WHERE metadata LIKE '%submit-bench%'"
        " AND provider_job_id IS NOT NULL",
    )
    s.m.update(
        submit_rate=accepted / wall,
        submit_p50=percentile(took, 50),
        submit_p99=percentile(took, 99),
        submit_bad=sum(n for c, n in codes.items() if c != 202) + deferred,
        submit_diff=recorded - accepted,
    )
    log(f"{s.label}: submit {s.m['submit_rate']:,.0f} jobs/s, codes {codes}")


async def latency(
    s: Setup,
    relays: list[Server],
    pg: PgServer | None,
    clients: list[RawClient],
    receiver: Receiver,
    url: str,
) -> None:
    """bench.latency's method: paced COMPLETED callbacks, alternating between the processes."""
    from standardwebhooks.webhooks import Webhook

    from service.http.callbacks import PREFIX as HOOKS
    from service.tokens import Tokens

    tokens = Tokens(SECRET, MAX_AGE)
    api = [r.url for r in relays]
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            api[0] + "/v1/subscriptions",
            json={"url": url + f"/lat{s.procs}", "kind": "webhook", "events": ["job.succeeded"]},
        )
        answer.raise_for_status()
        sub = answer.json()
    jobs = [(r[0], r[7]) for r in s.m["rows"]]
    warmup, jobs = jobs[:20], jobs[20:]
    receiver.arrivals.clear()
    for k, (job_id, rid) in enumerate(warmup):
        await clients[k % len(clients)].request(
            "POST", HOOKS + tokens.make(job_id), callback_body(rid)
        )
    await receiver.wait_for(len(warmup), 10)
    await asyncio.sleep(0.5)
    receiver.arrivals.clear()
    hook = Webhook(sub["secret"])
    runs = ((RATES[0], jobs[: s.m["lat_high"]]), (RATES[1], jobs[s.m["lat_high"] :]))
    for rate, batch in runs:
        await paced(s, relays, pg, clients, receiver, hook, rate, batch)
        log(f"{s.label}: latency at {rate:g}/s: p50 {fmt_ms(s.m[f'lat{rate:g}'][0])}")
    async with httpx.AsyncClient() as http:  # fan-out next: this subscription steps aside
        (await http.delete(f"{api[0]}/v1/subscriptions/{sub['id']}")).raise_for_status()


async def paced(
    s: Setup,
    relays: list[Server],
    pg: PgServer | None,
    clients: list[RawClient],
    receiver: Receiver,
    hook: Any,
    rate: float,
    jobs: list[tuple[str, str]],
) -> None:
    """One COMPLETED callback every 1/rate s, alternating processes; stores its figures."""
    from service.http.callbacks import PREFIX as HOOKS
    from service.tokens import Tokens

    tokens = Tokens(SECRET, MAX_AGE)
    receiver.arrivals.clear()
    sent: dict[str, float] = {}
    statuses: list[int] = []

    async def send(k: int, job_id: str, rid: str) -> None:
        def stamp() -> None:
            sent[job_id] = time.monotonic()

        code, _ = await clients[k % len(clients)].request(
            "POST", HOOKS + tokens.make(job_id), callback_body(rid), on_send=stamp
        )
        statuses.append(code)

    loop = asyncio.get_running_loop()
    cpu0 = server_cpu(relays, pg)
    t0 = loop.time() + 0.05
    pending = []
    for k, (job_id, rid) in enumerate(jobs):
        delay = t0 + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(send(k, job_id, rid)))
    await asyncio.gather(*pending)
    await receiver.wait_for(len(jobs), 10)
    cpu1 = server_cpu(relays, pg)
    await asyncio.sleep(0.3)  # a duplicate would land here
    seen: dict[str, float] = {}
    dupes = invalid = 0
    for at, _, headers, raw in receiver.arrivals:
        try:
            hook.verify(raw, {k.decode(): v.decode() for k, v in headers})
        except Exception:
            invalid += 1
        job_id = json.loads(raw)["data"]["id"]
        if job_id in seen:
            dupes += 1
        elif job_id in sent:
            seen[job_id] = at - sent[job_id]
    values = list(seen.values())
    s.m[f"lat{rate:g}"] = (
        percentile(values, 50),
        percentile(values, 99),
        max(values, default=float("nan")),
        (sum(cpu1) - sum(cpu0)) / len(jobs) * 1e3,  # server CPU a job, ms
        len(jobs),
        (len(jobs) - len(values), dupes, invalid, sum(c != 200 for c in statuses)),
    )


async def fanout(
    s: Setup,
    clients: list[RawClient],
    api: list[str],
    receiver: Receiver,
    urls: list[str],
    subs: int,
) -> None:
    """bench.fanout's method: one job.succeeded to `subs` webhook subscriptions, twice."""
    from standardwebhooks.webhooks import Webhook

    from bench.fanout import trigger
    from service.http.callbacks import PREFIX as HOOKS
    from service.tokens import Tokens

    tokens = Tokens(SECRET, MAX_AGE)
    secrets: dict[str, str] = {}
    async with httpx.AsyncClient() as http:
        for i in range(subs):
            path = f"/fan{s.procs}{int(s.postgres)}/{i}"
            answer = await http.post(
                api[i % len(api)] + "/v1/subscriptions",
                json={
                    "url": urls[i % len(urls)] + path,
                    "kind": "webhook",
                    "events": ["job.succeeded"],
                },
            )
            answer.raise_for_status()
            secrets[path] = answer.json()["secret"]
    for n, (job_id, rid) in enumerate((r[0], r[7]) for r in s.m["fan_rows"]):
        receiver.arrivals.clear()
        client = clients[n % len(clients)]
        sent, code, complete = await trigger(
            client, receiver, HOOKS + tokens.make(job_id), callback_body(rid), subs, 30
        )
        await asyncio.sleep(0.3)  # late duplicates, if any, would land here
        seen: dict[str, int] = {}
        invalid = 0
        for _, path, headers, raw in receiver.arrivals:
            seen[path] = seen.get(path, 0) + 1
            try:
                Webhook(secrets[path]).verify(raw, {k.decode(): v.decode() for k, v in headers})
            except Exception:
                invalid += 1
        last = max((a[0] for a in receiver.arrivals), default=sent) - sent
        s.m[f"fan{n}"] = last if complete and code == 200 else float("inf")
        s.m[f"fan{n}_check"] = (subs - len(seen), sum(v - 1 for v in seen.values()), invalid)
        log(f"{s.label}: fan-out event {n + 1}: {fmt_ms(s.m[f'fan{n}'])}")
