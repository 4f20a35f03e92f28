"""Retention on every engine: a prune deletes what jobs that ended long ago left in the log,
in bounded batches, one process at a time; any other change of an event is still refused."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest

from service import ledger, retention
from service.store import Store, Tx
from service.store.records import NewDelivery, Pruned

NOW = 1_800_000_000.0
DAY = 86400.0
URL = "http://x"


def _raw(engine: str, database: str, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Run `sql` on a connection of its own, outside the store (committed if it succeeds)."""
    if engine == "postgresql":
        with psycopg.connect(database) as conn:
            cur = conn.execute(sql.replace("?", "%s").encode(), params or None)
            return list(cur.fetchall()) if cur.description else []
    with sqlite3.connect(database) as conn:
        return list(conn.execute(sql, params).fetchall())


async def _job(store: Store, job_id: str, ended: float | None, deliveries: int = 1) -> None:
    """A job with its events, `deliveries` delivered deliveries with an attempt each, ended
    (failed) at `ended`, or still queued when `ended` is None."""
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {}, {}, None, None)
    start = (ended or NOW) - 60

    async def unit(tx: Tx) -> None:
        await ledger.create_job(tx, new, start, None, start + 60)
        event = await tx.events.append(job_id, "job.progress", "callback", start, {"n": 1})
        assert event is not None
        for i in range(deliveries):
            delivery = f"dlv_{job_id}_{i}"
            await tx.deliveries.add(
                [
                    NewDelivery(
                        delivery,
                        None,
                        job_id,
                        event.id,
                        event.type,
                        "webhook",
                        "http://x",
                        False,
                        start,
                    )
                ]
            )
            await tx.deliveries.log_attempt(delivery, start, 200, 5.0, "ok", None)
            await tx.deliveries.settle(delivery, "delivered", None, False, 200, None, start)
        if ended is not None:
            await ledger.fail_job(tx, job_id, "x", "failed", "api", ended)

    await store.write(unit)


ROWS = (
    "SELECT (SELECT count(*) FROM events WHERE job_id = ?),"
    " (SELECT count(*) FROM deliveries WHERE job_id = ?),"
    " (SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
    " WHERE d.job_id = ?)"
)


def _rows(engine: str, database: str, job_id: str) -> tuple[int, int, int]:
    """(events, deliveries, attempts) stored for a job."""
    [row] = _raw(engine, database, ROWS, (job_id, job_id, job_id))
    return int(row[0]), int(row[1]), int(row[2])


async def test_prune_removes_the_rows_of_old_ended_jobs_and_keeps_the_jobs(
    store: Store, engine: str, database: str
) -> None:
    await _job(store, "job_old", NOW - 40 * DAY, deliveries=2)
    await _job(store, "job_recent", NOW - 1 * DAY)
    await _job(store, "job_running", None)
    await _job(store, "job_last", NOW - 40 * DAY)  # holds the log's newest event
    before = NOW - 30 * DAY
    old_rows = _rows(engine, database, "job_old")
    assert old_rows == (3, 2, 2)  # created, progress, failed; 2 deliveries
    preview = await store.prunable(before)
    assert preview == Pruned(jobs=2, events=3 + 2, deliveries=3, attempts=3)
    assert _rows(engine, database, "job_old") == old_rows  # the preview changed nothing

    in_flight = await store.write(lambda tx: tx.jobs.in_flight("pixazo"))
    done = await retention.prune(store, before, NOW)
    assert done == preview
    # jobs keep their state: the in-flight count (migration 008's triggers) is untouched
    assert await store.write(lambda tx: tx.jobs.in_flight("pixazo")) == in_flight == 1
    assert _rows(engine, database, "job_old") == (0, 0, 0)
    # the newest event of the whole log stays: SQLite's next id is the largest plus one
    assert _rows(engine, database, "job_last") == (1, 0, 0)
    assert _rows(engine, database, "job_recent") == (3, 1, 1)
    assert _rows(engine, database, "job_running") == (2, 1, 1)
    job = await store.get_job("job_old")
    assert job is not None and job.status.value == "failed" and job.error is not None
    assert job.error["code"] == "x"
    # done: a second pass finds nothing, and the ids go on growing past every id seen
    assert await retention.prune(store, before, NOW) == Pruned()
    last = max(e.id for e in await store.events(limit=1000))
    await store.write(lambda tx: tx.events.append(None, "test", "system", NOW, {}))
    assert max(e.id for e in await store.events(after=last)) > last


async def test_batches_are_bounded_and_pending_deliveries_hold_a_job_back(
    store: Store, engine: str, database: str
) -> None:
    for i in range(4):
        await _job(store, f"job_{i}", NOW - 40 * DAY, deliveries=3)
    await _job(store, "job_last", NOW - 1 * DAY)

    await store.write(lambda tx: tx.deliveries.retry("dlv_job_0_0", NOW))  # pending again
    first = await store.prune(NOW - 30 * DAY, NOW, 5)
    assert first is not None and first.rows == 5
    total = first + await retention.prune(store, NOW - 30 * DAY, NOW)
    assert total.jobs == 3
    assert _rows(engine, database, "job_0") == (3, 3, 3)  # a delivery pending: all kept
    assert _rows(engine, database, "job_1") == (0, 0, 0)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM events",
        "UPDATE events SET data = '{}'",
        "DELETE FROM events WHERE job_id = 'job_old'",
    ],
)
async def test_any_other_change_of_an_event_is_refused(
    store: Store, engine: str, database: str, sql: str
) -> None:
    await _job(store, "job_old", NOW - 40 * DAY)
    await _job(store, "job_last", NOW)
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        _raw(engine, database, sql)
    assert _rows(engine, database, "job_old")[0] == 3


async def test_a_prune_cannot_delete_events_of_jobs_that_ended_after_its_cutoff(
    store: Store, engine: str, database: str
) -> None:
    """The cutoff the prune declares (NOW less 30 days) bounds what the trigger lets through."""
    await _job(store, "job_recent", NOW - DAY)
    await _job(store, "job_last", NOW)
    if engine == "postgresql":
        sql = (
            "BEGIN; SELECT set_config('relay.prune_before', '1797408000.0', true);"
            " DELETE FROM events WHERE job_id = 'job_recent'; COMMIT"
        )
    else:
        sql = (
            "INSERT INTO meta VALUES ('prune_before', '1797408000.0');"
            " DELETE FROM events WHERE job_id = 'job_recent'"
        )
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        if engine == "postgresql":
            _raw(engine, database, sql)
        else:
            with sqlite3.connect(database) as conn:
                conn.executescript(sql)
    assert _rows(engine, database, "job_recent")[0] == 3


async def test_one_process_prunes_at_a_time(
    store: Store, twin: Store, engine: str, database: str
) -> None:
    """PostgreSQL: a batch holds a transaction-level advisory lock; another process's batch
    finds it taken and stops. SQLite: batches take the write lock one at a time anyway."""
    for i in range(3):
        await _job(store, f"job_{i}", NOW - 40 * DAY)
    await _job(store, "job_last", NOW)
    if engine != "postgresql":
        pytest.skip("SQLite's write lock serializes batches")
    import asyncio

    from service.store.postgres.retention import PRUNE_LOCK

    held = asyncio.Event()
    release = asyncio.Event()

    async def holder(tx: Tx) -> None:
        await tx.conn.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))  # type: ignore[attr-defined]
        held.set()
        await release.wait()

    task = asyncio.create_task(twin.write(holder))
    await held.wait()
    assert await store.prune(NOW - 30 * DAY, NOW, 500) is None
    release.set()
    await task
    assert (await store.prune(NOW - 30 * DAY, NOW, 500)) == Pruned(3, 9, 3, 3)
    assert _rows(engine, database, "job_last") == (3, 1, 1)
