"""CPU per callback of the SQLite writer: callbacks one by one against set-based.

`python -m bench.grouped_writes [batch size] [batches]` seeds queued Pixazo jobs, then runs
batches of PROCESSING callbacks through the writer's own batch runner, once as plain units
(each alone in its savepoint) and once as `ledger.callback_unit` (a run of them written with
one UPDATE and one INSERT), alternating; prints the medians of the writer thread's CPU per
callback (time.thread_time_ns, COMMIT excluded: it is the same fsync either way). Not part
of `make bench`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import insert_jobs, job_id, migrate, pixazo_job, request_id
from bench.ingest import body_parts
from service import ledger, providers, store
from service.store.sqlite import store as sqlite_store
from service.store.sqlite.tx import SqliteTx


def _units(first: int, count: int, now: float, grouped: bool) -> list[Any]:
    head, tail = body_parts()
    out: list[Any] = []
    for i in range(first, first + count):
        raw = (head + request_id(i) + tail).encode()
        heard = providers.parse_callback("pixazo", json.loads(raw))
        args = (job_id(i), raw.decode(), heard, store.body_hash(raw), now)
        if grouped:
            out.append(ledger.callback_unit(*args))
        else:
            out.append(lambda tx, a=args: ledger.record_callback(tx, *a))
    return out


async def measure(size: int, batches: int) -> dict[str, float]:
    """Median µs of CPU per callback for each way, over `batches` batches of `size`."""
    path = Path(tempfile.mkdtemp()) / "grouped.db"
    await migrate(path)
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    insert_jobs(conn, [pixazo_job(i, "queued", now, now + 30) for i in range(size * batches)])
    conn.close()
    opened = await sqlite_store.SqliteStore.open(str(path))
    writer = opened._writer_conn  # the benchmark drives the writer's own batch runner
    memo: dict[str, Any] = {}  # the process's caches, kept across batches as the store keeps them
    spent: dict[str, list[float]] = {"one by one": [], "set-based": []}
    try:
        for n in range(batches):
            grouped = n % 2 == 1
            units = _units(n * size, size, now, grouped)
            batch = [(fn, SqliteTx(writer, memo)) for fn in units]
            writer.execute("BEGIN IMMEDIATE")
            started = time.thread_time_ns()
            results = sqlite_store._run_units(writer, batch)
            took = time.thread_time_ns() - started
            writer.execute("COMMIT")
            assert all(ok and value[0] == "applied" for ok, value in results)
            spent["set-based" if grouped else "one by one"].append(took / size / 1000)
    finally:
        await opened.close()
    return {way: statistics.median(values) for way, values in spent.items()}


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    for way, micros in asyncio.run(measure(size, batches)).items():
        print(f"batch of {size}: {way}: {micros:.1f} µs of CPU per callback (median)")
