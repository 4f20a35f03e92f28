"""PostgreSQL's unit of work in few round trips, its event order and subscriptions version kept."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from service import ledger, outbox
from service.jobs import CallbackReport, Report, Status
from service.store import Store, Tx, open_store
from service.store.postgres.tx import EVENT_LOCK, PgTx

NOW = 1_800_000_000.0
HOOK = {"url": "https://hooks.example/relay", "kind": "webhook", "events": ["job.processing"]}


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Store]:
    """A PostgreSQL store."""
    store = await open_store(pg_url)
    try:
        yield store
    finally:
        await store.close()


def _round_trips(trace: str) -> int:
    """Times the client sent and then waited: runs of frontend lines in a libpq trace."""
    trips, previous = 0, ""
    for line in trace.splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] == "F" and previous != "F":
            trips += 1
        previous = fields[1]
    return trips


async def _queued(store: Store, job_id: str) -> None:
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {"a": 1}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW, None, NOW + 60))
    queued = Report(Status.QUEUED, "QUEUED", provider_job_id="req_" + job_id)
    await store.write(lambda tx: ledger.record_submitted(tx, job_id, queued, NOW, NOW + 5, None))


async def test_a_callback_with_a_delivery_takes_few_round_trips(pg: Store) -> None:
    await pg.write(lambda tx: outbox.create_subscription(tx, HOOK, NOW))
    await _queued(pg, "job_rt")
    heard = CallbackReport(Status.PROCESSING, "PROCESSING", "req_job_rt")
    with tempfile.TemporaryFile("w+") as out:

        async def unit(tx: Tx) -> Any:
            assert isinstance(tx, PgTx)
            pgconn = tx.conn.pgconn
            pgconn.trace(out.fileno())  # from the BEGIN (not sent yet) through the COMMIT
            tx.after_commit(pgconn.untrace)
            return await ledger.record_callback(tx, "job_rt", "{}", heard, "d1", NOW + 1)

        outcome, _ = await pg.write(unit)
        out.seek(0)
        trace = out.read()
    assert outcome == "applied"
    assert len(await pg.list_deliveries(job_id="job_rt")) == 1
    # BEGIN with the UPDATE of the job, the event (its order lock and the subscriptions
    # version inside), the delivery, NOTIFY with COMMIT: it was 9 (BEGIN, the lock, the
    # version and each NOTIFY apart)
    assert "BEGIN" in trace and "COMMIT" in trace
    assert _round_trips(trace) <= 4, trace


async def test_the_version_an_append_reads_is_the_newest_once_the_event_lock_is_held(
    pg: Store, pg_url: str
) -> None:
    """A unit waiting on the event lock reads a version changed while it waited."""
    before = await pg.write(lambda tx: tx.subscriptions.version())
    async with await psycopg.AsyncConnection.connect(pg_url) as holder:
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_LOCK,))

        async def append(tx: Tx) -> str:
            await tx.events.append(None, "test.order", "system", NOW, {})
            return await tx.subscriptions.version()

        waiting = asyncio.create_task(pg.write(append))
        for _ in range(200):  # until its statement waits on the lock (its snapshot taken)
            cur = await holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the append never waited on the event lock")
        await pg.write(lambda tx: tx.subscriptions.bump())  # committed while it waits
        await holder.commit()
    seen = await waiting
    assert seen != before
    assert seen == await pg.write(lambda tx: tx.subscriptions.version())


async def test_a_unit_that_runs_no_statement_commits_its_wake_ups(pg: Store) -> None:
    waiter = pg.waiter("poll")
    waiter.clear()

    async def unit(tx: Tx) -> int:
        tx.notify("poll")
        return 7

    assert await pg.write(unit) == 7
    assert waiter.is_set()
    assert await pg.write(lambda tx: tx.subscriptions.version()) == "0"  # the next unit runs


async def test_a_failed_first_statement_leaves_no_transaction_open(pg: Store) -> None:
    async def broken(tx: Tx) -> None:
        assert isinstance(tx, PgTx)
        await tx.conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(psycopg.errors.UndefinedTable):
        await pg.write(broken)
    for _ in range(3):  # every pooled connection is usable, each unit in its own transaction
        await _queued(pg, f"job_after_{_}")
    assert (await pg.counts()).jobs


async def test_a_bump_in_the_unit_is_read_back_after_an_append(pg: Store) -> None:
    async def unit(tx: Tx) -> tuple[str, str]:
        await tx.events.append(None, "test.order", "system", NOW, {})
        first = await tx.subscriptions.version()
        await tx.subscriptions.bump()
        return first, await tx.subscriptions.version()

    first, second = await pg.write(unit)
    assert first != second
