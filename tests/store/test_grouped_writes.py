"""Callbacks written set-based: the repositories' batch methods on both engines, and on SQLite
the group-commit batch writing a run of callbacks as one UPDATE and one INSERT, each callback
still kept or refused on its own."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from service import ledger, outbox, providers
from service.jobs import Status
from service.store import Store, body_hash
from service.store.sqlite.store import SqliteStore, on_connection
from tests.store.test_handoff import Taker, offered

NOW = 1_800_000_000.0


async def _queued(store: Store, job_id: str, provider_job_id: str | None = None) -> None:
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {"a": 1}, {}, None, None)
    await store.write(lambda tx: ledger.create_job(tx, new, NOW - 60, None, NOW + 60))
    sets: dict[str, Any] = {"status": str(Status.QUEUED), "progress": 0.3}
    if provider_job_id is not None:
        sets["provider_job_id"] = provider_job_id
    await store.write(lambda tx: tx.jobs.update(job_id, sets))


def _callback(job_id: str, request_id: str, status: str = "PROCESSING") -> Any:
    raw = json.dumps({"request_id": request_id, "status": status, "progress": 0.5})
    heard = providers.parse_callback("pixazo", json.loads(raw))
    return ledger.callback_unit(job_id, raw, heard, body_hash(raw.encode()), NOW)


async def _batch(store: Store, units: list[Any]) -> list[Any]:
    """The units written at once: queued together, so SQLite's writer takes them in one batch."""
    return await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)


# -- the repositories (both engines) -----------------------------------------------------------


async def test_apply_callbacks_changes_the_jobs_apply_callback_would(store: Store) -> None:
    await _queued(store, "job_a", "req-a")
    await _queued(store, "job_b", "req-b")
    await _queued(store, "job_c")  # no provider id yet: left alone
    await _queued(store, "job_d", "req-d")
    rows = [
        ("job_a", Status.PROCESSING, 0.6, "req-a", NOW),
        ("job_b", Status.PROCESSING, 0.1, None, NOW),  # progress only grows
        ("job_c", Status.PROCESSING, 0.6, None, NOW),
        ("job_d", Status.PROCESSING, 0.6, "req-other", NOW),  # another request: left alone
        ("job_none", Status.PROCESSING, 0.6, None, NOW),
    ]
    changed = await store.write(lambda tx: tx.jobs.apply_callbacks(rows))
    assert sorted(changed) == ["job_a", "job_b"]
    assert (changed["job_a"].status, changed["job_a"].progress) == (Status.PROCESSING, 0.6)
    assert (changed["job_b"].status, changed["job_b"].progress) == (Status.PROCESSING, 0.3)
    for job_id, job in changed.items():
        assert job == await store.write(lambda tx, j=job_id: tx.jobs.get(j))
    for job_id in ("job_c", "job_d"):
        left = await store.write(lambda tx, j=job_id: tx.jobs.get(j))
        assert left is not None and left.status is Status.QUEUED
    # a second time: the jobs are at that state already
    assert await store.write(lambda tx: tx.jobs.apply_callbacks(rows)) == {}


async def test_append_many_appends_in_order_and_skips_what_is_there(store: Store) -> None:
    await _queued(store, "job_a", "req-a")
    await _queued(store, "job_b", "req-b")
    rows = [
        ("job_b", "job.processing", "callback", NOW, {"n": 1}, "processing"),
        ("job_a", "job.created", "api", NOW, {"n": 2}, "created"),  # there already
        ("job_a", "job.processing", "callback", NOW, {"n": 3}, "processing"),
    ]
    got = await store.write(lambda tx: tx.events.append_many(rows))
    first, skipped, last = got
    assert skipped is None and first is not None and last is not None
    assert first.id < last.id
    assert [(e.job_id, e.type, e.data) for e in (first, last)] == [
        ("job_b", "job.processing", {"n": 1}),
        ("job_a", "job.processing", {"n": 3}),
    ]
    stored = await store.events(job_id="job_a")
    assert [(e.id, e.type, e.data) for e in stored][-1] == (last.id, "job.processing", {"n": 3})
    twice = [rows[0], rows[0]]
    with pytest.raises(ValueError):
        await store.write(lambda tx: tx.events.append_many(twice))


# -- a batch of callbacks (both engines: the outcomes never depend on the grouping) ------------


async def test_a_batch_of_callbacks_gets_the_answers_one_at_a_time_gets(store: Store) -> None:
    for name in ("a", "b", "c", "dup", "mis", "ended"):
        await _queued(store, f"job_{name}", f"req-{name}")
    await store.write(_callback("job_dup", "req-dup"))  # the same body again below
    await store.write(lambda tx: tx.jobs.update("job_ended", {"status": "succeeded"}))
    units = [
        _callback("job_a", "req-a"),
        _callback("job_dup", "req-dup"),
        _callback("job_b", "req-b"),
        _callback("job_mis", "req-other"),
        _callback("job_gone", "req-gone"),
        _callback("job_ended", "req-ended"),
        _callback("job_a", "req-a", "QUEUED"),  # its job's second callback of the batch
        _callback("job_c", "req-c"),
    ]
    answers = await _batch(store, units)
    assert [a[0] for a in answers] == [
        "applied",
        "duplicate",
        "applied",
        "mismatch",
        "ignored",
        "recorded",
        "duplicate",
        "applied",
    ]
    created, moved, heard = "job.created", "job.processing", "callback.received"
    expected = {
        "job_a": [created, moved, heard],
        "job_b": [created, moved],
        "job_c": [created, moved],
        "job_dup": [created, moved, heard],  # the first time, a body the job had reached
        "job_mis": [created, "callback.rejected"],
        "job_ended": [created, heard],
    }
    for job_id, types in expected.items():
        events = await store.events(job_id=job_id)
        assert [e.type for e in events] == types, job_id
        if job_id in ("job_a", "job_b", "job_c"):
            assert events[1].data["callback"]["request_id"] == job_id.replace("job_", "req-")
            job = await store.get_job(job_id)
            assert job is not None and job.status is Status.PROCESSING
    ids = [e.id for e in await store.events(limit=1000)]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


async def test_a_batch_fans_each_event_out_on_its_own_unit(store: Store) -> None:
    body = {"url": "https://hooks.example/relay", "kind": "webhook", "events": ["job.processing"]}
    await store.write(lambda tx: outbox.create_subscription(tx, body, NOW - 60))
    for name in ("a", "b", "c", "d"):
        await _queued(store, f"job_{name}", f"req-{name}")
    woken = store.waiter("deliveries")
    woken.clear()
    four = [_callback(f"job_{n}", f"req-{n}") for n in ("a", "b", "c", "d")]
    answers = await _batch(store, four)
    assert [a[0] for a in answers] == ["applied"] * 4
    assert woken.is_set()
    for name in ("a", "b", "c", "d"):
        sent = await store.list_deliveries(job_id=f"job_{name}")
        assert [d.delivery.event_type for d in sent] == ["job.processing"]


# -- SQLite: one statement for the batch, and one bad callback fails only itself ---------------


def _traced(store: Store, seen: list[str]) -> Any:
    """A unit that has the writer connection report every statement into `seen`."""

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(seen.append)

    return on_connection(trace)


async def test_sqlite_writes_a_batch_of_callbacks_with_one_update_and_one_insert(
    store: Store, engine: str
) -> None:
    if engine != "sqlite":
        pytest.skip("PostgreSQL runs each unit in a transaction of its own")
    assert isinstance(store, SqliteStore)
    for i in range(16):
        await _queued(store, f"job_{i}", f"req-{i}")
    seen: list[str] = []
    await store.write(_traced(store, seen))
    answers = await _batch(store, [_callback(f"job_{i}", f"req-{i}") for i in range(16)])
    await store.write(on_connection(lambda conn: conn.set_trace_callback(None)))
    assert [a[0] for a in answers] == ["applied"] * 16
    # distinct texts (values bound in): SQLite reports a statement again as each row's
    # trigger starts
    assert len({s for s in seen if s.startswith("UPDATE jobs")}) == 1
    assert len({s for s in seen if s.startswith("INSERT INTO events")}) == 1
    # no savepoint per callback: the one seen is the unit that turns the trace off
    assert seen.count("SAVEPOINT grouped") == 1 and seen.count("SAVEPOINT unit") == 1
    ids = [e.id for e in await store.events(limit=1000) if e.type == "job.processing"]
    assert len(ids) == 16 and ids == sorted(ids)
    # in the batch's order
    assert [e.job_id for e in await store.events(limit=1000) if e.id in ids] == [
        f"job_{i}" for i in range(16)
    ]


async def test_sqlite_one_failing_callback_of_a_batch_fails_alone(
    store: Store, engine: str
) -> None:
    if engine != "sqlite":
        pytest.skip("PostgreSQL runs each unit in a transaction of its own")
    for name in ("a", "bad", "b", "d", "c"):
        await _queued(store, f"job_{name}", f"req-{name}")

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.job_id = 'job_bad'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )

    await store.write(on_connection(boom))
    events = store.waiter("events")
    events.clear()
    answers = await _batch(
        store, [_callback(f"job_{n}", f"req-{n}") for n in ("a", "bad", "b", "d")]
    )
    assert [answers[0][0], answers[2][0], answers[3][0]] == ["applied"] * 3
    assert isinstance(answers[1], sqlite3.IntegrityError)
    assert events.is_set()
    bad = await store.get_job("job_bad")
    assert bad is not None and bad.status is Status.QUEUED  # its UPDATE went with its event
    assert [e.type for e in await store.events(job_id="job_bad")] == ["job.created"]
    for name in ("a", "b", "d"):
        job = await store.get_job(f"job_{name}")
        assert job is not None and job.status is Status.PROCESSING
        assert [e.type for e in await store.events(job_id=f"job_{name}")][-1] == "job.processing"
    # the failure left nothing behind: the next batch is grouped again
    again = [_callback(f"job_{n}", f"req-{n}") for n in ("c", "a", "b", "d")]
    assert [a[0] for a in await _batch(store, again)] == ["applied"] + ["duplicate"] * 3


async def test_sqlite_grouped_callbacks_hand_their_deliveries_over_only_once_kept(
    store: Store, engine: str
) -> None:
    if engine != "sqlite":
        pytest.skip("PostgreSQL runs each unit in a transaction of its own")
    body = {"url": "https://hooks.example/relay", "kind": "webhook", "events": ["job.processing"]}
    await store.write(lambda tx: outbox.create_subscription(tx, body, NOW - 60))
    for name in ("a", "bad", "b", "d"):
        await _queued(store, f"job_{name}", f"req-{name}")
    taker = Taker()
    await offered(store, taker)
    await store.write(
        on_connection(
            lambda conn: conn.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON deliveries WHEN NEW.job_id = 'job_bad'"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        )
    )
    answers = await _batch(
        store, [_callback(f"job_{n}", f"req-{n}") for n in ("a", "bad", "b", "d")]
    )
    assert [answers[0][0], answers[2][0], answers[3][0]] == ["applied"] * 3
    assert isinstance(answers[1], sqlite3.IntegrityError)
    # handed over after the commit, each with its own event; nothing of the failed one
    taken = sorted(event.job_id or "" for _, _, event in taker.taken)
    assert taken == ["job_a", "job_b", "job_d"]
    assert [e.type for e in await store.events(job_id="job_bad")] == ["job.created"]
