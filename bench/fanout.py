"""Fan-out: one job.succeeded to 1,000 webhook subscriptions spread over 20 receivers.

The relay runs on core 0. The 20 receivers are uvicorn servers in the bench process, on
core 1: they only stamp and keep each request (signatures are verified afterwards), so
the relay never waits on them and never shares its core with them.
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
    MAX_AGE,
    SECRET,
    Outcome,
    RawClient,
    Row,
    RssSampler,
    client_core,
    cpu_seconds,
    fmt_ms,
    log,
    memory_kib,
    migrate,
    relay_server,
    serving,
    tmpdir,
)
from bench.latency import PIXAZO_KEY, PixazoStatus, Receiver, callback_body, seed_processing

RECEIVERS = 20


async def trigger(
    client: RawClient, receiver: Receiver, path: str, body: bytes, count: int, timeout: float
) -> tuple[float, int, bool]:
    """POST one COMPLETED callback; (send time, its status, all `count` arrived in time)."""
    sent = 0.0

    def stamp() -> None:
        nonlocal sent
        sent = time.monotonic()

    code, _ = await client.request("POST", path, body, on_send=stamp)
    return sent, code, await receiver.wait_for(count, timeout)


async def run(quick: bool) -> Outcome:
    from standardwebhooks.webhooks import Webhook

    from service.http.callbacks import PREFIX as HOOKS
    from service.tokens import Tokens

    subs = 200 if quick else 1000
    tokens = Tokens(SECRET, MAX_AGE)
    receiver = Receiver()  # one recorder behind every receiving server
    secrets: dict[str, str] = {}
    results: list[tuple[str, float, int, list[Any], float, float]] = []
    with tmpdir("fanout") as tmp, client_core():
        async with contextlib.AsyncExitStack() as stack:
            work = Path(tmp)
            db = work / "relay.db"
            await migrate(db)
            jobs = seed_processing(db, 2, "fan")
            status = PixazoStatus()
            pixazo_url = await stack.enter_async_context(serving(status))
            urls = [await stack.enter_async_context(serving(receiver)) for _ in range(RECEIVERS)]
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
                log(f"fan-out: creating {subs} webhook subscriptions on {RECEIVERS} receivers")
                async with httpx.AsyncClient(base_url=relay.url) as api:
                    for i in range(subs):
                        path = f"/s/{i}"
                        answer = await api.post(
                            "/v1/subscriptions",
                            json={
                                "url": urls[i % RECEIVERS] + path,
                                "kind": "webhook",
                                "events": ["job.succeeded"],
                            },
                        )
                        answer.raise_for_status()
                        secrets[path] = answer.json()["secret"]
                client = RawClient(relay.port)
                idle_kib = memory_kib(relay.pid)["VmRSS"]
                peak = idle_kib
                for label, (job_id, rid) in zip(("first event", "second event"), jobs, strict=True):
                    receiver.arrivals.clear()
                    sampler = RssSampler(relay.pid)
                    sampler.start()
                    cpu0 = cpu_seconds(relay.pid)
                    sent, code, complete = await trigger(
                        client, receiver, HOOKS + tokens.make(job_id), callback_body(rid), subs, 30
                    )
                    cpu = cpu_seconds(relay.pid) - cpu0
                    await asyncio.sleep(0.3)  # late duplicates, if any, would land here
                    await sampler.stop()
                    arrivals = list(receiver.arrivals)
                    took = arrivals[subs - 1][0] - sent if complete else float("inf")
                    results.append((label, took, code, arrivals, sent, cpu))
                    log(f"fan-out {label}: {subs} deliveries in {fmt_ms(took)}")
                    peak = max(peak, sampler.peak_kib)
                hwm_kib = memory_kib(relay.pid)["VmHWM"]
            finally:
                await client.aclose()
                await relay.astop()
    name = "3. Fan-out"
    rows: list[Row] = []
    for label, took, code, arrivals, sent, cpu in results:
        invalid = 0
        seen: dict[str, int] = {}
        for _, path, headers, body in arrivals:
            seen[path] = seen.get(path, 0) + 1
            try:
                Webhook(secrets[path]).verify(body, {k.decode(): v.decode() for k, v in headers})
                assert json.loads(body)["type"] == "job.succeeded"
            except Exception:
                invalid += 1
        missing = subs - len(seen)
        dupes = sum(n - 1 for n in seen.values())
        rows.append(
            Row(
                name,
                f"{subs} deliveries of one event, {label}"
                + (" (cold connections)" if label == "first event" else ""),
                fmt_ms(took) if took != float("inf") else "timed out (30 s)",
                goal="≤ 2 s",
                result=Row.verdict(took <= 2.0 and code == 200),
            )
        )
        times = sorted(a[0] - sent for a in arrivals)
        if times:
            rows.append(
                Row(
                    name,
                    f"{label}: 1st / 500th / last arrival; relay CPU during it",
                    f"{fmt_ms(times[0])} / {fmt_ms(times[len(times) // 2])} / "
                    f"{fmt_ms(times[-1])}; {cpu:.2f} s",
                    result="info",
                )
            )
        rows.append(
            Row(
                name,
                f"{label}: invalid signatures (missing, duplicates)",
                f"{invalid} ({missing}, {dupes})",
                goal="0",
                result=Row.verdict(invalid == 0 and missing == 0),
            )
        )
    rows.append(
        Row(
            name,
            "relay RSS: idle → peak during fan-out (VmHWM)",
            f"{idle_kib / 1024:.0f} → {peak / 1024:.0f} MiB ({hwm_kib / 1024:.0f} MiB)",
            result="info",
        )
    )
    notes = [
        f"Fan-out: {subs} webhook subscriptions (each with its own secret from POST "
        f"/v1/subscriptions) spread over {RECEIVERS} uvicorn receivers in the bench process "
        "(core 1; they only record, signatures are verified with standardwebhooks afterwards); "
        "the relay (core 0) gets one real job event: a signed COMPLETED callback, confirmed "
        "with the status endpoint, then job.succeeded. Time = last arrival - callback send. "
        "The first event opens the connections; the second reuses them. RSS sampled every 10 ms "
        "from /proc/<pid>/status.",
    ]
    return Outcome(rows, notes)
