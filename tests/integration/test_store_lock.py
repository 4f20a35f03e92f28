"""Another process holding the database's write lock never stalls the relay's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.errors import StorageUnavailable
from service.sim.pixazo import PixazoSim
from service.store import Tx
from service.store.sqlite.store import SqliteStore as Store
from tests.conftest import StartRelay
from tests.integration.helpers import held_job

HOLD_SECONDS = 2.0
HEALTHZ_LIMIT = 0.050
CALLBACKS = 20
PERIOD = 0.02

# A second process: takes the write lock, says so, holds it, commits, says so. Each line
# carries the moment itself (CLOCK_MONOTONIC, shared by the processes of one machine), so a
# busy test process that reads the line late does not shift the window it checks.
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN IMMEDIATE")
print("locked", time.monotonic(), flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", time.monotonic(), flush=True)
"""


def _said(line: bytes, word: str) -> float:
    """The moment a HOLDER line reports, after checking its word."""
    said, at = line.decode().split()
    assert said == word, line
    return float(at)


async def _timed_post(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, int, dict]:
    answer = await client.post(
        url, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    return time.monotonic(), answer.status_code, answer.json()


async def test_healthz_and_callbacks_answer_while_another_process_holds_the_write_lock(
    start_relay: StartRelay, pixazo: PixazoSim
) -> None:
    relay = await start_relay()
    job, hook = await held_job(relay, pixazo)
    before = {e["id"] for e in await relay.events(job["id"])}
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        relay.settings.database,
        str(HOLD_SECONDS),
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    bodies = [
        {"status": "PROCESSING", "request_id": job["provider_job_id"], "n": n}
        for n in range(CALLBACKS)
    ]
    sent: list[asyncio.Future[tuple[float, int, dict]]] = []
    latencies: list[float] = []
    # A full collection of the test process's own heap (pytest and all it imported, far more
    # than the relay's) pauses every coroutine in it for tens of ms: keep that out of the window.
    gc.collect()
    gc.freeze()
    try:
        async with (
            httpx.AsyncClient(timeout=20) as hooks,
            httpx.AsyncClient(base_url=relay.url, timeout=20) as probe,
        ):
            await probe.get("/healthz")  # the probe's connection is open before the window
            locked_at = _said(await asyncio.wait_for(holder.stdout.readline(), 10), "locked")
            started = time.monotonic()  # the schedule starts when this process learns of it
            released = asyncio.ensure_future(holder.stdout.readline())
            # While the lock is held, a client asks /healthz every PERIOD and callbacks keep
            # coming. Latency counts from when the request was due, so a stalled loop shows
            # whether it stalls during a request or between two.
            while not released.done():
                due = started + len(latencies) * PERIOD
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if len(sent) < CALLBACKS:
                    sent.append(asyncio.ensure_future(_timed_post(hooks, hook, bodies[len(sent)])))
                answer = await probe.get("/healthz")
                latencies.append(time.monotonic() - due)
                assert answer.status_code == 200
            released_at = _said(await released, "released")
            # the callbacks' writes waited for the lock, and every one was then committed
            answers = await asyncio.wait_for(asyncio.gather(*sent), 10)
    finally:
        gc.unfreeze()
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
    held = released_at - locked_at
    assert held >= HOLD_SECONDS * 0.9, held
    assert max(latencies) <= HEALTHZ_LIMIT, (
        f"/healthz took up to {max(latencies) * 1000:.0f} ms while the lock was held "
        f"({len(latencies)} requests, {sum(x > HEALTHZ_LIMIT for x in latencies)} over 50 ms)"
    )
    assert len(latencies) >= (released_at - started) * 0.9 / PERIOD, latencies
    assert len(sent) == CALLBACKS, len(sent)
    for answered_at, status, body in answers:
        assert status == 200, body
        # answered once committed: after the lock was released, and shortly after
        assert locked_at + HOLD_SECONDS * 0.9 <= answered_at <= released_at + 2.0
    # none lost: each callback's body is in the job's log
    events = [e for e in await relay.events(job["id"]) if e["id"] not in before]
    assert {e["type"] for e in events} == {"callback.received"}, events
    kept = sorted(json.loads(e["data"]["body"])["n"] for e in events)
    assert kept == list(range(CALLBACKS)), events


async def test_a_write_that_outwaits_the_lock_wait_is_refused_and_the_next_one_goes_through(
    tmp_path: Path,
) -> None:
    store = await Store.open(str(tmp_path / "s.db"), lock_wait=0.3)

    async def put(tx: Tx) -> None:
        tx.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('k', 'v')")

    try:
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticking = asyncio.create_task(tick())
            with pytest.raises(StorageUnavailable) as refused:
                await store.write(put)
            waited = time.monotonic() - started
            ticking.cancel()
            assert refused.value.reason == "database is locked"
            assert store.refusing == "database is locked"
            assert 0.25 <= waited < 2.0, waited
            assert ticks >= waited / 0.01 * 0.5, (ticks, waited)  # the loop ran all along
            # reads go on while another connection holds the write lock
            kept = await store.read(
                lambda c: c.execute("SELECT count(*) FROM meta WHERE key = 'k'").fetchone()[0]
            )
            assert kept == 0
            holder.execute("COMMIT")
        await store.write(put)
        assert store.refusing is None
    finally:
        await store.close()
