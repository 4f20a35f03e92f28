"""Big log: read routes on a 10-million-event database against a 10-thousand-event one.

Both databases have the same shape: 10 events per job (created, queued, processing, five
progress steps, the callback as received, succeeded), interleaved across 1,000 jobs at a
time as a busy relay writes them, so /v1/jobs/{id}/events returns a job's 10 events at
either size. The 10M file is built once with sqlite3 executemany after the service's own
migrations and cached under bench/out/ (reused while its row count and the text of every
migration match); the 10k one is built fresh. Each database gets a relay of its own; routes are
timed one request at a time, alternating between the two relays (both running) and routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

from bench.common import (
    OUT,
    Outcome,
    Row,
    client_core,
    fmt_ms,
    job_id,
    log,
    median,
    migrate,
    percentile,
    relay_server,
    tmpdir,
)

EVENTS_PER_JOB = 10
BLOCK = 1000  # jobs whose events interleave
BIG, SMALL = 10_000_000, 10_000
MIN_FREE = 10 * 1024**3
REQUESTS = 500
WARMUP = 50
MARKER = "bench_biglog_events"
STEPS = (
    ("job.created", "api", "created", "submitting"),
    ("job.queued", "api", "queued", "queued"),
    ("job.processing", "callback", "processing", "processing"),
    ("job.progress", "poll", "progress:2", "processing"),
    ("job.progress", "poll", "progress:4", "processing"),
    ("job.progress", "poll", "progress:6", "processing"),
    ("job.progress", "poll", "progress:8", "processing"),
    ("job.progress", "poll", "progress:9", "processing"),
    ("callback.received", "callback", "cb:", "processing"),
    ("job.succeeded", "callback", "succeeded", "succeeded"),
)
MODELS = ("pixazo/seedvr-image", "pixazo/seedvr-video", "scenario/upscale-v3")


def schema_key(events: int) -> str:
    """What the cached file was built from: its size and the text of every migration."""
    from service.store.sqlite.store import _migrations

    digest = hashlib.sha256("\0".join(sql for _, sql in _migrations()).encode()).hexdigest()
    return f"{events}:{digest[:16]}"


def _cached_ok(path: Path, events: int) -> bool:
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (MARKER,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    # rebuilt whenever a migration changes (the schema may differ even at the same version)
    return row is not None and row[0] == schema_key(events)


async def build(path: Path, events: int) -> None:
    """The service's schema, then `events` events over events/10 jobs, fast and unsafely."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    await migrate(path)
    jobs = events // EVENTS_PER_JOB
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    # secondary indexes are dropped for the bulk insert and recreated from their own SQL
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    rng = random.Random(5)
    t0 = 1_790_000_000.0
    conn.execute("BEGIN")
    job_rows = []
    for j in range(jobs):
        model = MODELS[j % len(MODELS)]
        provider = model.split("/")[0]
        created = t0 + j * 0.5
        job_rows.append(
            (
                job_id(j, "big"),
                model,
                provider,
                "succeeded",
                1.0,
                json.dumps({"image_url": f"https://cdn.example.com/in/{j}.png"}),
                json.dumps({"tenant": f"t{j % 50}", "order": str(j)}),
                json.dumps(
                    [{"url": f"https://cdn.example.com/out/{j}.png", "media_type": "image/png"}]
                ),
                f"req-{j:012d}",
                created,
                created + 60,
                created + 60,
            )
        )
        if len(job_rows) == 50_000:
            _insert_jobs(conn, job_rows)
            job_rows = []
    _insert_jobs(conn, job_rows)
    conn.execute("COMMIT")
    written = 0
    batch: list[tuple[object, ...]] = []
    started = time.monotonic()
    for first in range(0, jobs, BLOCK):
        block = range(first, min(first + BLOCK, jobs))
        ids = [job_id(j, "big") for j in block]
        for step, (etype, source, dedupe, status) in enumerate(STEPS):
            for j, jid in zip(block, ids, strict=True):
                at = t0 + j * 0.5 + step * 6 + rng.random()
                progress = 1.0 if status == "succeeded" else step / 10
                data = (
                    f'{{"id":"{jid}","model":"{MODELS[j % 3]}","status":"{status}",'
                    f'"progress":{progress},"provider_job_id":"req-{j:012d}",'
                    f'"metadata":{{"tenant":"t{j % 50}"}},"updated_at":{at:.3f}}}'
                )
                batch.append(
                    (jid, etype, source, at, data, dedupe + str(j) if dedupe == "cb:" else dedupe)
                )
        if len(batch) >= 200_000:
            written += _insert_events(conn, batch)
            batch = []
            if written % 1_000_000 < 200_000:
                rate = written / (time.monotonic() - started)
                log(f"biglog: {written:,} events written ({rate:,.0f}/s)")
    written += _insert_events(conn, batch)
    if events >= 1_000_000:
        log("biglog: recreating the events indexes")
    for _, sql in indexes:
        conn.execute(sql)
    assert written == events, (written, events)
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (MARKER, schema_key(events))
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


def _insert_jobs(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO jobs (id, model, provider, status, progress, input, metadata, outputs,"
        " provider_job_id, created_at, updated_at, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _insert_events(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> int:
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (job_id, type, source, created_at, data, dedupe)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    return len(rows)


def warm_page_cache(path: Path) -> None:
    """Read the file once, as a long-running server would have its pages in memory."""
    with path.open("rb") as f:
        while f.read(16 * 1024 * 1024):
            pass


def _plan(events: int, rng: random.Random) -> list[tuple[str, str]]:
    jobs = events // EVENTS_PER_JOB
    plan = []
    for _ in range(WARMUP + REQUESTS):
        plan.append(("events", f"/v1/events?after={rng.randrange(0, events - 100)}&limit=100"))
        plan.append(("job", f"/v1/jobs/{job_id(rng.randrange(jobs), 'big')}"))
        plan.append(("job_events", f"/v1/jobs/{job_id(rng.randrange(jobs), 'big')}/events"))
    return plan


async def _timed(api: httpx.AsyncClient, kind: str, url: str) -> float:
    started = time.perf_counter()
    answer = await api.get(url)
    took = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url}: {answer.status_code} {answer.text[:200]}")
    if kind == "events" and len(answer.json()["data"]) != 100:
        raise RuntimeError(f"GET {url}: not a full page")
    return took


async def measure(dbs: dict[int, Path], work: Path) -> dict[int, dict[str, list[float]]]:
    """Both relays up at once; each request goes to one then the other (alternating which
    goes first), so drift in this VM's speed hits both sizes alike."""
    relays = {n: relay_server(path, work) for n, path in dbs.items()}
    timings: dict[int, dict[str, list[float]]] = {
        n: {"events": [], "job": [], "job_events": []} for n in dbs
    }
    try:
        for relay in relays.values():
            relay.start()
        for relay in relays.values():
            await relay.wait_ready(60)
        clients = {n: httpx.AsyncClient(base_url=r.url, timeout=30) for n, r in relays.items()}
        try:
            plans = {n: _plan(n, random.Random(n)) for n in dbs}
            order = list(dbs)
            for i in range(len(plans[order[0]])):
                for n in order if i % 2 else order[::-1]:
                    kind, url = plans[n][i]
                    took = await _timed(clients[n], kind, url)
                    if i >= WARMUP * 3:
                        timings[n][kind].append(took)
        finally:
            for client in clients.values():
                await client.aclose()
    finally:
        for relay in relays.values():
            await relay.astop()
    return timings


async def run(quick: bool) -> Outcome:
    big = 1_000_000 if quick else BIG
    name = "5. Big log"
    OUT.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(OUT).free
    cached = OUT / f"biglog-{big}.db"
    if free < MIN_FREE and not _cached_ok(cached, big):
        return Outcome(
            [
                Row(
                    name,
                    "skipped",
                    f"{free / 1024**3:.1f} GiB free",
                    goal="≥ 10 GB free",
                    result="SKIP",
                )
            ],
            [f"Big log: skipped, only {free / 1024**3:.1f} GiB free on {OUT} (needs 10 GB)."],
        )
    if _cached_ok(cached, big):
        log(f"biglog: reusing {cached.name}")
        built = "reused from bench/out/"
    else:
        log(f"biglog: building {cached.name} ({big:,} events; cached for later runs)")
        t0 = time.monotonic()
        await build(cached, big)
        built = f"built in {time.monotonic() - t0:.0f} s"
    size = sum(
        Path(f"{cached}{s}").stat().st_size for s in ("", "-wal") if Path(f"{cached}{s}").exists()
    )
    with tmpdir("biglog") as tmp, client_core():
        work = Path(tmp)
        small = work / "small.db"
        await build(small, SMALL)
        for path in (small, cached):
            await asyncio.to_thread(warm_page_cache, path)
        log(f"biglog: timing the routes on {SMALL:,} and {big:,} events, interleaved")
        results = await measure({SMALL: small, big: cached}, work)
    labels = {
        "events": "GET /v1/events?after=<random>&limit=100",
        "job": "GET /v1/jobs/{random id}",
        "job_events": "GET /v1/jobs/{random id}/events",
    }
    rows = []
    for kind, label in labels.items():
        at_small = median(results[SMALL][kind])
        at_big = median(results[big][kind])
        ratio = at_big / at_small
        rows.append(
            Row(
                name,
                f"{label}: median (p99) at {big / 1e6:g}M events",
                f"{fmt_ms(at_big)} ({fmt_ms(percentile(results[big][kind], 99))})",
                f"{fmt_ms(at_small)} ({fmt_ms(percentile(results[SMALL][kind], 99))}) at 10k",
                f"{ratio:.2f}x",
                "≤ 1.5x",
                Row.verdict(ratio <= 1.5),
            )
        )
    notes = [
        f"Big log: {big:,} events over {big // EVENTS_PER_JOB:,} jobs ({size / 1024**3:.1f} GiB, "
        f"{built}) against {SMALL:,} events over {SMALL // EVENTS_PER_JOB:,} jobs, same shape "
        f"(10 events a job, interleaved 1,000 jobs at a time). Each file is read once into the "
        f"page cache first (a running server has its pages in memory; this measures how the "
        f"queries scale, not the disk). Two relays (one per file, both on core 0) run at "
        f"once; {WARMUP} warm-up rounds, then {REQUESTS} requests per route and size, one at a "
        "time, alternating between the sizes and the routes, one keep-alive httpx client each.",
    ]
    return Outcome(rows, notes)
