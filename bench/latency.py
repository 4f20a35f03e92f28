"""End-to-end latency: a COMPLETED callback in, a signed job.succeeded webhook out.

The relay runs in its own process (core 0); in the bench process (core 1): a lean Pixazo
status endpoint that answers COMPLETED (the relay confirms every terminal callback with it),
a webhook receiver that stamps each arrival with time.monotonic(), and a paced sender that
POSTs one job's signed COMPLETED callback every 10 ms. Latency = arrival - send, both on
CLOCK_MONOTONIC (one clock for every process of the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    CLIENT_CPU,
    MAX_AGE,
    SECRET,
    SERVER_CPU,
    Outcome,
    RawClient,
    Row,
    client_core,
    connect,
    fmt_ms,
    insert_jobs,
    log,
    migrate,
    percentile,
    pixazo_job,
    relay_server,
    serving,
    tmpdir,
)

PIXAZO_KEY = "bench-pixazo-key"
PREFIX = "/v2/requests/status/"


def completed_body(rid: str) -> bytes:
    return json.dumps(
        {
            "request_id": rid,
            "status": "COMPLETED",
            "model_id": "seedvr-upscale",
            "error": None,
            "output": {
                "media_url": [f"https://cdn.example.com/out/{rid}/output.png"],
                "media_type": "image/png",
            },
            "created_at": "2026-11-21T10:00:00.000Z",
            "updated_at": "2026-11-21T10:00:09.000Z",
            "completed_at": "2026-11-21T10:00:09.000Z",
        }
    ).encode()


class PixazoStatus:
    """GET /v2/requests/status/{id} → COMPLETED with an output URL, for any id."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        if method != "GET" or not path.startswith(PREFIX):
            return 404, b'{"error": "Not Found"}'
        self.calls += 1
        return 200, completed_body(path[len(PREFIX) :])


class Receiver:
    """Accepts every POST; keeps (arrival monotonic time, path, headers, body)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, list[tuple[bytes, bytes]], bytes]] = []
        self.changed = asyncio.Event()

    async def __call__(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        self.arrivals.append((time.monotonic(), path, headers, body))
        self.changed.set()
        return 200, b'{"ok": true}'

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True


def seed_processing(path: Path, count: int, salt: str) -> list[tuple[str, str]]:
    """`count` Pixazo jobs in `processing` (no poll due for an hour); (job id, request id)."""
    now = time.time()
    rows = [pixazo_job(i, "processing", now, now + 3600, salt) for i in range(count)]
    conn = connect(path)
    try:
        insert_jobs(conn, rows)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return [(r[0], r[7]) for r in rows]


def callback_body(rid: str) -> bytes:
    return completed_body(rid)


async def measure(quick: bool, beside: bool) -> dict[str, Any]:
    """One paced run; `beside`: the load generator shares the relay's core."""
    from service.http.callbacks import PREFIX as HOOKS
    from service.tokens import Tokens

    rate = 100.0
    count = 200 if quick else 1000
    tokens = Tokens(SECRET, MAX_AGE)
    core = int(SERVER_CPU) if beside else CLIENT_CPU
    with tmpdir("latency") as tmp, client_core(core):
        work = Path(tmp)
        db = work / "relay.db"
        await migrate(db)
        jobs = seed_processing(db, count + 20, "lat")
        warmup, jobs = jobs[:20], jobs[20:]
        status = PixazoStatus()
        receiver = Receiver()
        async with serving(status) as pixazo_url, serving(receiver) as receiver_url:
            relay = relay_server(
                db,
                work,
                PIXAZO_API_KEY=PIXAZO_KEY,
                PIXAZO_BASE_URL=pixazo_url,
                RELAY_ALLOW_PRIVATE_TARGETS="1",
            )
            client = RawClient(0)
            try:
                relay.start()
                await relay.wait_ready()
                async with httpx.AsyncClient(base_url=relay.url) as api:
                    answer = await api.post(
                        "/v1/subscriptions",
                        json={
                            "url": receiver_url + "/hook",
                            "kind": "webhook",
                            "events": ["job.succeeded"],
                        },
                    )
                    answer.raise_for_status()
                    secret = answer.json()["secret"]
                client = RawClient(relay.port)
                # warm-up: connections, caches, the subscription list
                for job_id, rid in warmup:
                    await client.request("POST", HOOKS + tokens.make(job_id), callback_body(rid))
                await receiver.wait_for(len(warmup), 10)
                await asyncio.sleep(0.5)
                receiver.arrivals.clear()
                log(f"latency: {count} COMPLETED callbacks at {rate:g}/s")
                sent: dict[str, float] = {}
                statuses: list[int] = []
                prepared = [
                    (job_id, HOOKS + tokens.make(job_id), callback_body(rid))
                    for job_id, rid in jobs
                ]

                async def send(job_id: str, path: str, body: bytes) -> None:
                    def stamp() -> None:
                        sent[job_id] = time.monotonic()

                    code, _ = await client.request("POST", path, body, on_send=stamp)
                    statuses.append(code)

                loop = asyncio.get_running_loop()
                t0 = loop.time() + 0.05
                lag: list[float] = []
                tasks = []
                for i, (job_id, path, body) in enumerate(prepared):
                    due = t0 + i / rate
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    lag.append(loop.time() - due)
                    tasks.append(asyncio.create_task(send(job_id, path, body)))
                await asyncio.gather(*tasks)
                await receiver.wait_for(count, 10)
            finally:
                await client.aclose()
                await relay.astop()
    from standardwebhooks.webhooks import Webhook

    hook = Webhook(secret)
    latencies: dict[str, float] = {}
    duplicates = invalid = 0
    for at, _, headers, body in receiver.arrivals:
        data: Any = json.loads(body)
        job_id = data["data"]["id"]
        try:
            hook.verify(body, {k.decode(): v.decode() for k, v in headers})
        except Exception:
            invalid += 1
        if job_id in latencies:
            duplicates += 1
            continue
        if job_id in sent:
            latencies[job_id] = at - sent[job_id]
    values = list(latencies.values())
    return {
        "count": count,
        "rate": rate,
        "values": values,
        "missing": count - len(values),
        "duplicates": duplicates,
        "invalid": invalid,
        "non200": sum(1 for s in statuses if s != 200),
        "lag_p99": percentile(lag, 99),
        "confirmations": status.calls,
    }


def rows_for(m: dict[str, Any], where: str, p99_goal: float) -> list[Row]:
    """p50, p99, max and the correctness check of one run."""
    values = m["values"]
    p50, p99, worst = percentile(values, 50), percentile(values, 99), max(values, default=0)
    name = "2. End-to-end latency"
    return [
        Row(
            name,
            f"callback → webhook p50{where}",
            fmt_ms(p50),
            goal="≤ 10 ms" if not where else "—",
            result=Row.verdict(p50 <= 0.010) if not where else "info",
        ),
        Row(
            name,
            f"callback → webhook p99{where}",
            fmt_ms(p99),
            goal=f"≤ {p99_goal * 1000:.0f} ms",
            result=Row.verdict(p99 <= p99_goal),
        ),
        Row(name, f"max{where}", fmt_ms(worst), result="info"),
        Row(
            name,
            f"missing of {m['count']} (duplicates, bad signatures, non-200 callbacks){where}",
            f"{m['missing']} ({m['duplicates']}, {m['invalid']}, {m['non200']})",
            goal="0",
            result=Row.verdict(m["missing"] == 0 and m["invalid"] == 0 and m["non200"] == 0),
        ),
    ]


async def run(quick: bool) -> Outcome:
    quiet = await measure(quick, beside=False)
    beside = await measure(quick, beside=True)
    rows = rows_for(quiet, "", 0.025) + rows_for(
        beside, ", load generator on the relay's core", 0.050
    )
    notes = [
        f"End-to-end latency: {quiet['count']} jobs seeded in `processing`; their signed "
        f"COMPLETED callbacks sent at {quiet['rate']:g}/s (sender lag p99 "
        f"{fmt_ms(quiet['lag_p99'])}; {fmt_ms(beside['lag_p99'])} beside) over keep-alive "
        "connections; the relay confirms each with the bench's Pixazo status endpoint "
        f"({quiet['confirmations']} confirmations), records job.succeeded and delivers it to "
        "one webhook subscription; latency = receiver arrival - callback send, CLOCK_MONOTONIC. "
        "Quiet core: the relay on core 0; sender, status endpoint and receiver (uvicorn in the "
        "bench process) on core 1. Then the same run on a fresh database with the bench process "
        "on core 0 beside the relay (the issue's 'load generator beside it' case). 20 warm-up "
        "callbacks are not counted.",
    ]
    return Outcome(rows, notes)
