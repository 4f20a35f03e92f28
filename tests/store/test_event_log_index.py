"""The event log's one index (migration 007): dedupe per job, and a job's events in order."""

from __future__ import annotations

from service.outbox import append_event
from service.store import Store

NOW = 1_800_000_000.0


async def test_dedupe_keys_refuse_repeats_and_events_without_one_are_all_kept(
    store: Store,
) -> None:
    async def add(job_id: str | None, type_: str, dedupe: str | None) -> bool:
        event = await store.write(
            lambda tx: append_event(tx, job_id, type_, "system", NOW, {"n": 1}, dedupe)
        )
        return event is not None

    assert await add("job_a", "poll.error", None)
    assert await add("job_a", "poll.error", None)  # no key: never refused
    assert await add("job_a", "callback.received", "cb:1")
    assert not await add("job_a", "callback.received", "cb:1")  # the same key: refused
    assert await add("job_b", "callback.received", "cb:1")  # another job's key
    assert await add(None, "subscription.paused", None)
    assert await add(None, "subscription.paused", None)
    assert await store.write(lambda tx: tx.events.exists("job_a", "cb:1"))
    assert not await store.write(lambda tx: tx.events.exists("job_b", "cb:2"))


async def test_a_jobs_events_come_oldest_first_from_a_cursor(store: Store) -> None:
    # keys out of id order: the listing follows ids, not the index's (job_id, dedupe) order
    for key in ("z", None, "a", "m", None):
        await store.write(
            lambda tx, k=key: append_event(tx, "job_c", "job.progress", "poll", NOW, {}, k)
        )
        await store.write(lambda tx: append_event(tx, "job_d", "job.progress", "poll", NOW, {}))
    events = await store.events(job_id="job_c")
    ids = [e.id for e in events]
    assert len(ids) == 5 and ids == sorted(ids)
    assert {e.job_id for e in events} == {"job_c"}
    later = await store.events(job_id="job_c", after=ids[1], limit=2)
    assert [e.id for e in later] == ids[2:4]


async def test_each_event_updates_one_index_besides_its_row(
    store: Store, engine: str, database: str
) -> None:
    # Two indexes keyed by the random job id dirtied two random pages per callback.
    if engine == "postgresql":
        import psycopg

        async with await psycopg.AsyncConnection.connect(database) as conn:
            cur = await conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'events'"
                " AND indexname != 'events_pkey'"
            )
            found = [str(r[0]) for r in await cur.fetchall()]
    else:
        import sqlite3

        conn = sqlite3.connect(database)
        try:
            rows = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
                " AND sql IS NOT NULL"
            ).fetchall()
        finally:
            conn.close()
        found = [str(r[0]) for r in rows]
    assert len(found) == 1, found
    assert "UNIQUE" in found[0] and "(job_id, dedupe)" in found[0]
    assert "WHERE" not in found[0]  # not partial: it also finds events without a key
