"""When the storage refuses writes: 503 storage_unavailable everywhere, not ready, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.errors import StorageUnavailable
from service.sim.pixazo import PixazoSim
from service.store import Tx
from service.store.sqlite.store import SqliteStore as Store
from service.store.sqlite.store import on_connection
from tests.conftest import IMAGE_JOB, Running, StartRelay

TERMINAL = {"succeeded", "failed", "canceled"}


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"]["code"] == "storage_unavailable"


async def _finished_job_and_hook(relay: Running, pixazo: PixazoSim) -> tuple[str, str]:
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 202, answer.text
    job = await relay.wait_status(answer.json()["id"], TERMINAL)
    hook = pixazo.jobs[job["provider_job_id"]].webhook_url
    assert hook is not None
    return job["id"], hook


def _padded_job(n: int, keys: int) -> dict:
    """A job with `keys` metadata values of 490 characters (about 0.5 KB each)."""
    return {**IMAGE_JOB, "metadata": {"n": n} | {f"pad{i}": "x" * 490 for i in range(keys)}}


async def _callback(hook: str, size: int, n: int) -> httpx.Response:
    body = json.dumps({"status": "PROCESSING", "n": n, "pad": "y" * size}).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(hook, content=body, headers={"content-type": "application/json"})


async def _ready(relay: Running) -> httpx.Response:
    return await relay.client.get("/readyz")


async def test_full_database_answers_503_on_every_route_and_loses_nothing(
    start_relay: StartRelay, pixazo: PixazoSim
) -> None:
    # callbacks refused while full are made up by polls after the grace
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1", RELAY_CALLBACK_GRACE="1")
    job_id, hook = await _finished_job_and_hook(relay, pixazo)
    assert (await _ready(relay)).status_code == 200
    acknowledged = [job_id]
    await relay.relay.store.limit_size(0)  # no room beyond what the file holds now
    refused_at = None
    for n in range(200):
        answer = await relay.submit(_padded_job(n, 30))
        if answer.status_code == 202:
            acknowledged.append(answer.json()["id"])
            continue
        _refused(answer)
        refused_at = n
        break
    assert refused_at is not None, "the database never filled up"
    ready = await _ready(relay)
    assert ready.status_code == 503
    assert "database or disk is full" in json.dumps(ready.json())
    for n in range(500):
        sub = {"url": f"http://127.0.0.1:9/hook/{n}", "description": "d" * 500}
        answer = await relay.client.post("/v1/subscriptions", json=sub)
        if answer.status_code != 201:
            _refused(answer)
            break
    else:
        raise AssertionError("subscriptions were never refused")
    _refused(await _callback(hook, 100_000, 1))
    # reads still work, and every answer was JSON
    assert (await relay.client.get(f"/v1/jobs/{job_id}")).status_code == 200

    await relay.relay.store.limit_size(None)
    assert (await _ready(relay)).status_code == 200
    again = await relay.submit(_padded_job(-1, 1))
    assert again.status_code == 202, again.text
    acknowledged.append(again.json()["id"])
    assert (await _callback(hook, 100_000, 1)).status_code == 200
    for acked in acknowledged:
        assert (await relay.client.get(f"/v1/jobs/{acked}")).status_code == 200
        await relay.wait_status(acked, TERMINAL)


@contextlib.contextmanager
def _immutable(*paths: Path) -> Iterator[None]:
    """chattr +i: unwritable even for root (skip where the file system has no such flag)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(  # noqa: S603
        ["chattr", "+i", *map(str, paths)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)  # noqa: S603, S607


async def test_unwritable_file_answers_503_then_recovers(
    start_relay: StartRelay, pixazo: PixazoSim, tmp_path: Path
) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1")
    job_id, hook = await _finished_job_and_hook(relay, pixazo)
    before = await relay.events(job_id)
    db = Path(relay.settings.database)
    # the -shm file stays writable: SQLite maps it into memory
    with _immutable(db, db.with_name(db.name + "-wal")):
        _refused(await relay.submit(_padded_job(0, 1)))
        sub = {"url": "http://127.0.0.1:9/hook"}
        _refused(await relay.client.post("/v1/subscriptions", json=sub))
        _refused(await _callback(hook, 10, 2))
        ready = await _ready(relay)
        assert ready.status_code == 503
        assert "disk I/O error" in json.dumps(ready.json())
    assert (await _ready(relay)).status_code == 200
    assert await relay.events(job_id) == before  # the refused callback left nothing behind
    assert (await relay.submit(_padded_job(1, 1))).status_code == 202
    assert (await _callback(hook, 10, 2)).status_code == 200


# -- the store itself --------------------------------------------------------------------------


async def test_a_unit_that_does_not_fit_keeps_nothing_and_no_batch_mate_is_lost(
    tmp_path: Path,
) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        await store.write(
            on_connection(lambda conn: conn.execute("INSERT INTO meta VALUES ('mate', '')"))
        )
        await store.limit_size(0)

        async def too_big(tx: Tx) -> None:
            tx.conn.execute("INSERT INTO meta (key, value) VALUES ('small', 'x')")
            tx.conn.execute("INSERT INTO meta (key, value) VALUES ('big', zeroblob(1000000))")

        async def mate(tx: Tx) -> None:
            tx.conn.execute("UPDATE meta SET value = 'kept' WHERE key = 'mate'")

        # one batch: SQLite may drop the whole transaction on a full disk, and then the
        # batch-mate must be told so, never answered as if committed
        results = await asyncio.gather(
            store.write(too_big), store.write(mate), return_exceptions=True
        )
        assert isinstance(results[0], StorageUnavailable)
        assert results[0].reason == "database or disk is full"
        assert store.refusing == "database or disk is full"
        rows = dict(await store.read(lambda c: c.execute("SELECT key, value FROM meta").fetchall()))
        assert "small" not in rows and "big" not in rows
        if results[1] is None:
            assert rows["mate"] == "kept"
        else:
            assert isinstance(results[1], StorageUnavailable) and rows["mate"] == ""
        await store.write(mate)  # a write that fits goes through on its own
        with pytest.raises(StorageUnavailable):
            await store.probe()
        await store.limit_size(None)
        await store.probe()
        assert store.refusing is None
    finally:
        await store.close()


async def test_database_file_and_the_folders_it_creates_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "inner" / "relay.db"
    store = await Store.open(str(path))
    try:
        await store.write(
            on_connection(lambda conn: conn.execute("INSERT INTO meta VALUES ('k', 'v')"))
        )
        files = [path, path.with_name("relay.db-wal"), path.with_name("relay.db-shm")]
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        for folder in (path.parent, path.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    finally:
        await store.close()


@pytest.mark.parametrize("case", ["not_a_database", "directory", "inside_a_file"])
async def test_open_failure_is_storage_unavailable_and_leaves_no_thread(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "relay.db"
    if case == "not_a_database":
        path.write_bytes(b"this is no SQLite file " * 300)
    elif case == "directory":
        path.mkdir()
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "relay.db"
    before = set(threading.enumerate())
    with pytest.raises(StorageUnavailable) as caught:
        await Store.open(str(path))
    assert caught.value.reason in {
        "file is not a database",
        "unable to open database file",
        "Not a directory",
    }
    # a connection thread left behind kept `serve` alive
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=2)
        assert not thread.is_alive(), thread


def test_storage_errors_are_told_apart_from_other_database_errors() -> None:
    from service.store.sqlite import storage_error

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as integrity:
        conn.execute("INSERT INTO t VALUES (1)")
    assert storage_error(integrity.value) is None
    conn.execute("PRAGMA query_only = 1")
    with pytest.raises(sqlite3.OperationalError) as readonly:
        conn.execute("INSERT INTO t VALUES (2)")
    failure = storage_error(readonly.value)
    assert failure is not None and failure.status == 503
    assert failure.reason == "attempt to write a readonly database"
