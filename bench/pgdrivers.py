"""PostgreSQL drivers side by side: psycopg 3 (AsyncConnectionPool) and asyncpg (its pool).

A throwaway server (tests/pgserver.py: initdb in a temporary folder, fsync on) on the server
core; each driver in this process on the client core, with 1 and 16 tasks, for a fixed time
per measurement, each on a fresh database. `python -m bench.pgdrivers [--quick]` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.common import SERVER_CPU, Outcome, Row, can_pin, client_core, cpu_seconds, log
from tests.pgserver import PgServer

NAME = "8. PostgreSQL drivers"
ROWS = 10_000  # the claim table
CLAIM = 50

SCHEMA = (
    "CREATE TABLE items (id bigserial PRIMARY KEY, body text NOT NULL)",
    "CREATE TABLE work (id bigserial PRIMARY KEY, due double precision NOT NULL,"
    " owner text, lease_until double precision)",
    "CREATE INDEX work_due ON work (due)",
    f"INSERT INTO work (due) SELECT g FROM generate_series(1, {ROWS}) AS g",
    "ANALYZE",
)

# (a) the relay's usual unit: insert a row, read it back by key, commit
INSERT = "INSERT INTO items (body) VALUES ({p1}) RETURNING id"
SELECT = "SELECT id, body FROM items WHERE id = {p1}"
# (b) a worker claiming due work: the 50 earliest rows nobody holds, leased to this owner;
# `due` moves past every other row so the queue turns over and stays 10,000 rows long
CLAIMS = (
    "UPDATE work SET owner = {p1}, lease_until = {p2}, due = due + 1000000000"
    " WHERE id IN (SELECT id FROM work ORDER BY due LIMIT 50 FOR UPDATE SKIP LOCKED)"
    " RETURNING id"
)

Op = Callable[[], Awaitable[None]]


@dataclass
class Driver:
    """One driver: a pool of `size` connections, and its two workloads as callables."""

    name: str
    open: Callable[[str, int], contextlib.AbstractAsyncContextManager[tuple[Op, Op]]]


@contextlib.asynccontextmanager
async def _psycopg(url: str, size: int) -> AsyncIterator[tuple[Op, Op]]:
    """psycopg's pool: on return it only rolls back a transaction left open."""
    # autocommit, as asyncpg is: the claim is one round trip, the transaction says BEGIN itself
    pool = AsyncConnectionPool(
        url, min_size=size, max_size=size, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    insert, select = INSERT.format(p1="%s"), SELECT.format(p1="%s")
    claim = CLAIMS.format(p1="%s", p2="%s")

    async def txn() -> None:
        async with pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(insert, ("hello",))).fetchone()
            assert row is not None
            got = await (await conn.execute(select, (row[0],))).fetchone()
            assert got is not None

    async def claim_batch() -> None:
        async with pool.connection() as conn:
            rows = await (await conn.execute(claim, ("w", time.time() + 30))).fetchall()
            assert len(rows) == CLAIM

    try:
        yield txn, claim_batch
    finally:
        await pool.close()


async def _no_reset(conn: asyncpg.Connection) -> None:
    """asyncpg's pool otherwise sends RESET ALL, UNLISTEN * etc. on every release."""


@contextlib.asynccontextmanager
async def _asyncpg(url: str, size: int, reset: bool = True) -> AsyncIterator[tuple[Op, Op]]:
    extra = {} if reset else {"reset": _no_reset}
    pool = await asyncpg.create_pool(url, min_size=size, max_size=size, **extra)
    insert, select = INSERT.format(p1="$1"), SELECT.format(p1="$1")
    claim = CLAIMS.format(p1="$1", p2="$2")

    async def txn() -> None:
        async with pool.acquire() as conn, conn.transaction():
            new_id = await conn.fetchval(insert, "hello")
            got = await conn.fetchrow(select, new_id)
            assert got is not None

    async def claim_batch() -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(claim, "w", time.time() + 30)
            assert len(rows) == CLAIM

    try:
        yield txn, claim_batch
    finally:
        await pool.close()


def _asyncpg_no_reset(url: str, size: int) -> contextlib.AbstractAsyncContextManager[tuple[Op, Op]]:
    return _asyncpg(url, size, reset=False)


DRIVERS = (
    Driver("psycopg 3 AsyncConnectionPool", _psycopg),
    Driver("asyncpg pool (default reset on release)", _asyncpg),
    Driver("asyncpg pool, no reset query", _asyncpg_no_reset),
)
WORKLOADS = ("INSERT…RETURNING + SELECT by key + COMMIT", f"claim {CLAIM} (FOR UPDATE SKIP LOCKED)")


def _server_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (backends and helpers)."""
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == postmaster:
                    pids.append(int(entry.name))
    return pids


def _server_cpu(postmaster: int) -> float:
    total = 0.0
    for pid in _server_processes(postmaster):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


@dataclass
class Result:
    tps: float
    client_us: float  # this process's CPU per transaction
    server_us: float  # PostgreSQL's CPU per transaction (all its processes)
    count: int


async def _measure(op: Op, tasks: int, seconds: float, postmaster: int) -> Result:
    for _ in range(tasks * 5):  # warm: connections, prepared statements, caches
        await op()
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await op()
            done += 1

    server = _server_cpu(postmaster)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server = _server_cpu(postmaster) - server
    n = max(done, 1)
    return Result(done / wall, cpu / n * 1e6, server / n * 1e6, done)


def _pin_server(pg: PgServer) -> None:
    """Server core for the postmaster and what it already forked; new backends inherit it."""
    if can_pin():
        for pid in _server_processes(pg.postmaster_pid):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, {int(SERVER_CPU)})


async def _one(pg: PgServer, driver: Driver, workload: int, tasks: int, seconds: float) -> Result:
    with pg.database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        async with driver.open(url, tasks) as ops:
            return await _measure(ops[workload], tasks, seconds, pg.postmaster_pid)


async def run(quick: bool) -> Outcome:
    """Both drivers (asyncpg twice), both workloads, 1 and 16 tasks: 12 measurements."""
    seconds = 1.0 if quick else 3.0
    rows: list[Row] = []
    with PgServer() as pg:
        _pin_server(pg)
        with client_core():
            for workload, label in enumerate(WORKLOADS):
                for tasks in (1, 16):
                    results = {}
                    for driver in DRIVERS:
                        r = await _one(pg, driver, workload, tasks, seconds)
                        results[driver.name] = r
                        log(
                            f"{label}, {driver.name}, {tasks} tasks: {r.tps:.0f} tx/s, "
                            f"{r.client_us:.0f} µs client CPU/tx, {r.server_us:.0f} µs server"
                        )
                    base = results[DRIVERS[0].name]
                    for name, r in results.items():
                        rows.append(
                            Row(
                                NAME,
                                f"{label}, {name}, {tasks} task{'s' * (tasks > 1)}",
                                f"{r.tps:,.0f} tx/s; client CPU {r.client_us:.0f} µs/tx; "
                                f"server CPU {r.server_us:.0f} µs/tx",
                                f"{base.client_us:.0f} µs/tx client CPU (psycopg)",
                                f"{r.client_us / base.client_us:.2f}x",
                            )
                        )
    version = os.path.basename(str(pg.bindir.parent))
    note = (
        f"{NAME}: PostgreSQL {version} started by tests/pgserver.py on this machine (loopback "
        f"TCP, fsync and synchronous_commit on), a fresh database per measurement; each driver "
        f"in the bench process, {seconds:g} s per measurement after a warm-up, a pool as large "
        "as the task count, autocommit except the explicit transaction. Client CPU is the bench "
        "process's (time.process_time), server CPU the sum over the postmaster and its children "
        f"(/proc). The claim table holds {ROWS:,} rows; a claim updates {CLAIM} of them."
    )
    return Outcome(rows, [note])


def main() -> int:
    outcome = asyncio.run(run("--quick" in sys.argv[1:]))
    for row in outcome.rows:
        print(f"{row.metric}: {row.value} (client CPU ratio to psycopg {row.ratio})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
