"""Retention and backups against the real service: RELAY_RETENTION_DAYS prunes old ended jobs
in the running relay, `prune` does it by hand (or only counts), `backup` copies a database
that a relay is writing, and a relay started on the copy serves its jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest

from service.sim.pixazo import PixazoSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.e2e.harness import EXE, TERMINAL, service

pytestmark = pytest.mark.e2e
DAY = 86400.0


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _submit(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {
            "model": "pixazo/seedvr-image",
            "input": {"image_url": f"https://x.example/{i}.png"},
        }
        answer = await client.post("/v1/jobs", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


async def _ended(client: httpx.AsyncClient, ids: list[str], limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    for job_id in ids:
        while (await client.get(f"/v1/jobs/{job_id}")).json()["status"] not in TERMINAL:
            assert time.monotonic() < deadline, job_id
            await asyncio.sleep(0.05)


async def _settled(client: httpx.AsyncClient) -> None:
    """Wait until every delivery is settled (none pending)."""
    deadline = time.monotonic() + 20
    while True:
        page = (await client.get("/v1/deliveries", params={"limit": 500})).json()["data"]
        if page and all(d["status"] != "pending" for d in page):
            return
        assert time.monotonic() < deadline, page
        await asyncio.sleep(0.1)


async def _reached(client: httpx.AsyncClient, job_ids: list[str], status: str) -> None:
    """Wait until every job of `job_ids` is in `status`."""
    deadline = time.monotonic() + 20
    for job_id in job_ids:
        while (await client.get(f"/v1/jobs/{job_id}")).json()["status"] != status:
            assert time.monotonic() < deadline, job_id
            await asyncio.sleep(0.05)


def _counts(database: Path, job_id: str) -> tuple[int, int, int]:
    """(events, deliveries, attempts) of a job, read from the file."""
    with sqlite3.connect(database) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events WHERE job_id = ?),"
            " (SELECT count(*) FROM deliveries WHERE job_id = ?),"
            " (SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.job_id = ?)",
            (job_id, job_id, job_id),
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def _age(database: Path, ids: list[str], days: float) -> None:
    """Make these jobs look `days` older (the jobs rows may change; events may not)."""
    with sqlite3.connect(database) as conn:
        for job_id in ids:
            conn.execute(
                "UPDATE jobs SET created_at = created_at - ?, updated_at = updated_at - ?,"
                " finished_at = finished_at - ? WHERE id = ?",
                (days * DAY, days * DAY, days * DAY, job_id),
            )


async def test_the_service_prunes_old_ended_jobs_and_keeps_everything_else(
    tmp_path: Path,
) -> None:
    pixazo = PixazoSim(queue_seconds=0.01, process_seconds=0.05)
    subscriber = Subscriber()
    async with (
        contextlib.aclosing(pixazo),
        serve(pixazo.app) as pixazo_url,
        serve(subscriber.app) as sub_url,
    ):
        pixazo.base_url = pixazo_url
        env = {"PIXAZO_API_KEY": pixazo.api_key, "PIXAZO_BASE_URL": pixazo_url}
        async with service(tmp_path, **env) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                created = await client.post(
                    "/v1/subscriptions", json={"url": f"{sub_url}/hook", "events": ["job.*"]}
                )
                subscriber.secrets = [created.json()["secret"]]
                old = await _submit(client, 3)
                recent = await _submit(client, 2)
                await _ended(client, old + recent)
                pixazo.process_seconds = 600  # these stay processing
                running = await _submit(client, 1)
                # its last event (and delivery) for the next 600 s: job.processing
                await _reached(client, running, "processing")
                await _settled(client)
                before = {j: (await client.get(f"/v1/jobs/{j}")).json() for j in old}
                cursor = (await client.get("/v1/events", params={"limit": 500})).json()
            await svc.stop()
        database = tmp_path / "relay.db"
        _age(database, old + running, 40)
        kept = {j: _counts(database, j) for j in old + recent + running}
        assert all(
            events and deliveries and attempts for events, deliveries, attempts in kept.values()
        )

        # by hand, counting only: nothing changes
        code, out, err = await _run(
            "prune", "--older-than", "30d", "--dry-run", "--database", str(database)
        )
        assert code == 0, err
        would = sum(kept[j][0] for j in old)
        assert f"would delete {would} events" in out, out
        assert {j: _counts(database, j) for j in kept} == kept

        async with service(tmp_path, RELAY_RETENTION_DAYS="30", **env) as svc:
            await svc.start()  # the first pass runs at start
            async with httpx.AsyncClient(base_url=svc.url) as client:
                deadline = time.monotonic() + 15
                while any(_counts(database, j) != (0, 0, 0) for j in old):
                    assert time.monotonic() < deadline, [_counts(database, j) for j in old]
                    await asyncio.sleep(0.1)
                for job_id in old:
                    job = (await client.get(f"/v1/jobs/{job_id}")).json()
                    assert job["status"] == "succeeded" and job["outputs"], job
                    assert job["outputs"] == before[job_id]["outputs"]
                    events = (await client.get(f"/v1/jobs/{job_id}/events")).json()["data"]
                    assert events == []
                    dlv = await client.get("/v1/deliveries", params={"job_id": job_id})
                    assert dlv.json()["data"] == []
                for job_id in recent + running:
                    assert _counts(database, job_id) == kept[job_id]
                # a follower's cursor stays valid: it reads on from where it was
                last = int(cursor["next_cursor"])
                await _submit(client, 1)
                page = (await client.get("/v1/events", params={"after": last})).json()
                assert page["data"] and all(int(e["id"]) > last for e in page["data"])
                # from 0, the surviving events, in order
                ids = [
                    int(e["id"])
                    for e in (await client.get("/v1/events", params={"limit": 500})).json()["data"]
                ]
                assert ids == sorted(ids)


async def test_prune_by_hand_says_what_it_removed(tmp_path: Path) -> None:
    pixazo = PixazoSim(queue_seconds=0.01, process_seconds=0.05)
    async with contextlib.aclosing(pixazo), serve(pixazo.app) as pixazo_url:
        pixazo.base_url = pixazo_url
        env = {"PIXAZO_API_KEY": pixazo.api_key, "PIXAZO_BASE_URL": pixazo_url}
        async with service(tmp_path, **env) as svc:
            await svc.start()
            async with httpx.AsyncClient(base_url=svc.url) as client:
                ids = await _submit(client, 3)
                await _ended(client, ids)
            database = svc.database
            _age(database, ids[:2], 2)  # two ended two days ago, one just now
            events = sum(_counts(database, j)[0] for j in ids[:2])
            # while the relay runs
            code, out, err = await _run("prune", "--older-than", "36h", "--database", str(database))
            assert code == 0, err
            assert f"deleted {events} events" in out and "rows of 2 jobs" in out, out
            assert [_counts(database, j)[0] for j in ids] == [0, 0, _counts(database, ids[2])[0]]
            assert _counts(database, ids[2])[0] > 0


@pytest.mark.parametrize("age", ["30", "thirty days", "0d", "-5d", "5y"])
async def test_a_bad_age_is_a_usage_error(tmp_path: Path, age: str) -> None:
    code, _, err = await _run(
        "prune", "--older-than", age, "--database", str(tmp_path / "relay.db")
    )
    assert code == 2
    assert "--older-than" in err
    assert not (tmp_path / "relay.db").exists()


async def test_prune_refuses_a_missing_database(tmp_path: Path) -> None:
    code, _, err = await _run(
        "prune", "--older-than", "1d", "--database", str(tmp_path / "none.db")
    )
    assert code == 1 and "no SQLite database" in err
    assert not (tmp_path / "none.db").exists()


async def test_a_bad_retention_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_DATABASE=str(tmp_path / "relay.db"), RELAY_RETENTION_DAYS="a month")
    code, _, err = await _run("serve", "--port", "1", env=env)
    assert code == 2
    assert "RELAY_RETENTION_DAYS" in err and "a month" in err


async def _writer(url: str, stop: asyncio.Event, acked: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        i = 0
        while not stop.is_set():
            i += 1
            body = {"model": "pixazo/seedvr-image", "input": {"image_url": f"https://x/{i}.png"}}
            answer = await client.post("/v1/jobs", json=body)
            assert answer.status_code == 202, answer.text
            acked.append(answer.json()["id"])


async def test_backup_while_the_relay_writes_restores_into_a_working_relay(
    tmp_path: Path,
) -> None:
    pixazo = PixazoSim(queue_seconds=0.01, process_seconds=0.05)
    target = tmp_path / "backup" / "relay-backup.db"
    target.parent.mkdir()
    async with contextlib.aclosing(pixazo), serve(pixazo.app) as pixazo_url:
        pixazo.base_url = pixazo_url
        env = {"PIXAZO_API_KEY": pixazo.api_key, "PIXAZO_BASE_URL": pixazo_url}
        async with service(tmp_path, **env) as svc:
            await svc.start()
            stop, acked = asyncio.Event(), list[str]()
            writer = asyncio.create_task(_writer(svc.url, stop, acked))
            while len(acked) < 50:
                await asyncio.sleep(0.02)
            before = list(acked)
            code, out, err = await _run("backup", str(target), "--database", str(svc.database))
            assert "backed up" in out
            during = len(acked) - len(before)
            code_again, _, err_again = await _run(
                "backup", str(target), "--database", str(svc.database)
            )
            code_forced, _, _ = await _run(
                "backup", str(target), "--force", "--database", str(svc.database)
            )
            stop.set()
            await writer
        assert code == 0, err
        assert during > 0  # the relay went on writing while the backup ran
        assert code_again == 1 and "--force" in err_again  # an existing file is not replaced
        assert code_forced == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert [p.name for p in target.parent.iterdir()] == [target.name]
        with sqlite3.connect(target) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {r[0] for r in conn.execute("SELECT id FROM jobs")}
        assert set(before) <= stored
        # restore: a relay started on the copy serves the jobs
        restored = dict(RELAY_DATABASE=str(target), **env)
        async with service(tmp_path, **restored) as again:
            await again.start()
            async with httpx.AsyncClient(base_url=again.url) as client:
                for job_id in before[:10]:
                    answer = await client.get(f"/v1/jobs/{job_id}")
                    assert answer.status_code == 200, answer.text
                events = (await client.get(f"/v1/jobs/{before[0]}/events")).json()["data"]
                assert events and events[0]["type"] == "job.created"


async def test_backup_of_postgresql_prints_pg_dump_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://relay:s3cr3t-pw@db.example:5432/relay?sslmode=require&password=x2"
    code, out, err = await _run("backup", str(tmp_path / "relay.dump"), "--database", url)
    assert code == 0, err
    assert "pg_dump --format=custom" in out and "relay@db.example:5432/relay" in out
    assert "sslmode=require" in out and "PGPASSWORD" in out
    assert "s3cr3t-pw" not in out + err and "x2" not in out + err
    assert not (tmp_path / "relay.dump").exists()


async def test_backup_refuses_a_missing_database(tmp_path: Path) -> None:
    code, _, err = await _run(
        "backup", str(tmp_path / "b.db"), "--database", str(tmp_path / "none.db")
    )
    assert code == 1 and "no SQLite database" in err
    assert not (tmp_path / "none.db").exists()
