"""The in-flight count each submission checks: kept in the same transactions (migration 008),
exact whatever statement changes a job, on every engine and across processes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg

from service import ledger
from service.jobs import Report, Status
from service.store import Store, open_store

NOW = 1_800_000_000.0
IN_FLIGHT = (
    "SELECT count(*) FROM jobs WHERE provider = 'pixazo' AND (status IN ('queued', 'processing')"
    " OR (status = 'submitting' AND deferred = 0))"
)


def counted(engine: str, database: str) -> int:
    """The count by a scan of the jobs rows, outside the store."""
    if engine == "postgresql":
        with psycopg.connect(database) as conn:
            row = conn.execute(IN_FLIGHT).fetchone()
    else:
        with sqlite3.connect(database) as conn:
            row = conn.execute(IN_FLIGHT).fetchone()
    return int(row[0]) if row else 0


async def kept(store: Store) -> int:
    return await store.write(lambda tx: ledger.in_flight(tx, "pixazo"))


async def _create(store: Store, job_id: str, cap: int = 1000) -> bool:
    """A new job; True when it was held back by the cap."""
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    created = await store.write(
        lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 60, (cap, 5.0))
    )
    assert created.job is not None
    return created.job.deferred


async def test_the_count_follows_every_way_a_job_enters_or_leaves_it(
    store: Store, engine: str, database: str
) -> None:
    for i in range(3):
        assert not await _create(store, f"job_{i}", cap=3)
    assert await _create(store, "job_held", cap=3)  # over the cap: held back, not counted
    assert await kept(store) == counted(engine, database) == 3
    queued = Report(Status.QUEUED, "QUEUED", provider_job_id="req_0")
    await store.write(lambda tx: ledger.record_submitted(tx, "job_0", queued, NOW, NOW + 5, None))
    running = {"status": "processing", "progress": 0.5}
    await store.write(lambda tx: tx.jobs.update("job_0", running))
    assert await kept(store) == 3  # submitting -> queued -> processing: still in flight
    await store.write(lambda tx: tx.jobs.update("job_0", {"status": "succeeded"}))
    await store.write(lambda tx: ledger.fail_job(tx, "job_1", "x", "no", "api", NOW))
    assert await kept(store) == counted(engine, database) == 1
    taken = await store.write(
        lambda tx: ledger.resume_deferred(tx, "job_held", NOW, 3, NOW + 5, NOW + 60)
    )
    assert taken is not None
    assert await kept(store) == counted(engine, database) == 2
    await store.write(lambda tx: tx.jobs.defer("job_held", NOW + 5))
    await store.write(lambda tx: tx.jobs.update("job_2", {"status": "canceled"}))
    assert await kept(store) == counted(engine, database) == 0


async def test_a_rolled_back_unit_leaves_the_count_as_it_was(store: Store) -> None:
    await _create(store, "job_a")

    async def fails(tx: object) -> None:
        await _create_in(tx, "job_b")
        raise RuntimeError("the unit fails after its insert")

    async def _create_in(tx: object, job_id: str) -> None:
        new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
        await ledger.create_job(tx, new, NOW, None, NOW + 60)  # type: ignore[arg-type]

    try:
        await store.write(fails)
    except RuntimeError:
        pass
    assert await kept(store) == 1


async def test_two_processes_writing_at_once_keep_one_exact_count(
    store: Store, twin: Store, engine: str, database: str
) -> None:
    async def create(on: Store, prefix: str) -> None:
        for i in range(20):
            await _create(on, f"job_{prefix}{i}")
            if i % 3 == 0:
                await on.write(
                    lambda tx, i=i: ledger.fail_job(tx, f"job_{prefix}{i}", "x", "no", "api", NOW)
                )

    await asyncio.gather(create(store, "a"), create(twin, "b"), create(store, "c"))
    assert await kept(store) == await kept(twin) == counted(engine, database) == 3 * 13


async def test_admissions_at_once_never_pass_the_cap(
    store: Store, twin: Store, engine: str, database: str
) -> None:
    """Submissions admitted at once, in two processes, each count the others' jobs: the cap
    holds exactly (on PostgreSQL without the admission lock, 5 of 24 got in where 3 may)."""
    held = await asyncio.gather(
        *(_create(store if i % 2 else twin, f"job_{i}", cap=3) for i in range(24))
    )
    assert held.count(False) == 3
    assert await kept(store) == counted(engine, database) == 3
    # deferred jobs resumed at once are admitted against the same cap: two slots free up
    admitted = [f"job_{i}" for i in range(24) if not held[i]]
    for job_id in admitted[:2]:
        await store.write(lambda tx, j=job_id: ledger.fail_job(tx, j, "x", "no", "api", NOW))
    waiting = [f"job_{i}" for i in range(24) if held[i]]
    taken = await asyncio.gather(
        *(
            (store if i % 2 else twin).write(
                lambda tx, j=job_id: ledger.resume_deferred(tx, j, NOW, 3, NOW + 5, NOW + 60)
            )
            for i, job_id in enumerate(waiting)
        )
    )
    assert sum(t is not None for t in taken) == 2
    assert await kept(store) == counted(engine, database) == 3


async def test_the_migration_counts_the_jobs_already_there(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    store = await open_store(path)
    await store.close()
    with sqlite3.connect(path) as conn:  # back to the schema before the count existed
        for name in ("jobs_in_flight_insert", "jobs_in_flight_delete", "jobs_in_flight_update"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE in_flight")
        conn.execute("DROP TABLE archives")  # and before 010's archiving
        conn.execute("DROP INDEX jobs_unpruned")  # and before 009's retention
        conn.execute("ALTER TABLE jobs DROP COLUMN pruned_at")
        conn.execute("PRAGMA user_version = 7")  # the version just before 008
        for i, status in enumerate(["queued", "processing", "succeeded", "submitting"]):
            conn.execute(
                "INSERT INTO jobs (id, model, provider, status, input, metadata, created_at,"
                " updated_at) VALUES (?, 'pixazo/seedvr-image', 'pixazo', ?, '{}', '{}', 0, 0)",
                (f"job_{i}", status),
            )
    store = await open_store(path)
    try:
        assert await kept(store) == 3
    finally:
        await store.close()
