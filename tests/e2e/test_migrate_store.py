"""migrate-store as a user runs it: a relay's SQLite file copied into PostgreSQL and served."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from service import app, config
from service.sim.chat import ChatSim
from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import bind, serve, url_of
from service.sim.subscriber import Subscriber
from service.store import open_store
from tests.conftest import IMAGE_JOB, VIDEO_JOB, Running, StartRelay
from tests.integration.helpers import FAST, run_job, settled, subscribe

pytestmark = pytest.mark.e2e
EXE = str(Path(sys.executable).with_name("upscale-relay"))
SECRET = "migrate-store-test-relay-secret-0123456789"
# The copied tables, as the command prints them.
TABLES = (
    "jobs",
    "archives",
    "events",
    "idempotency",
    "subscriptions",
    "deliveries",
    "attempts",
    "meta",
)


def scenario_job(scenario: ScenarioSim) -> dict[str, Any]:
    return {
        "model": "scenario/upscale-v3",
        "input": {"image": scenario.add_asset(b"x" * 100, "image/png")},
    }


def migrate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_"))}
    return subprocess.run(  # noqa: S603
        [EXE, "migrate-store", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def password_of(url: str) -> str:
    password = urlsplit(url).password
    assert password, url  # the fixture's URL has one: the test checks it is never printed
    return password


async def get(relay: Running, path: str, **params: Any) -> Any:
    answer = await relay.client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def everything(relay: Running) -> dict[str, Any]:
    """What a client sees of the installation: events, jobs, subscriptions, deliveries."""
    events = (await get(relay, "/v1/events", after=0, limit=500))["data"]
    jobs = (await get(relay, "/v1/jobs", limit=100))["data"]
    subs = (await get(relay, "/v1/subscriptions"))["data"]
    secrets = {
        s["id"]: await get(relay, f"/v1/subscriptions/{s['id']}/secret")
        for s in subs
        if s["kind"] == "webhook"
    }
    return {
        "events": events,
        "jobs": {j["id"]: await get(relay, f"/v1/jobs/{j['id']}") for j in jobs},
        "subscriptions": subs,
        "secrets": secrets,
        "webhook_secret": await get(relay, "/v1/webhook-secret"),
        "deliveries": (await get(relay, "/v1/deliveries", limit=500))["data"],
    }


@asynccontextmanager
async def relay_on(
    database: Path | str, pixazo: PixazoSim, scenario: ScenarioSim
) -> AsyncIterator[Running]:
    """A relay on `database` (as the start_relay fixture builds it), stopped on leaving."""
    sock = bind()
    url = url_of(sock)
    values = {
        "RELAY_DATABASE": str(database),
        "RELAY_SECRET": SECRET,
        "RELAY_PUBLIC_URL": url,
        "PIXAZO_API_KEY": pixazo.api_key,
        "PIXAZO_BASE_URL": pixazo.base_url,
        "RELAY_POLL_MIN": "0.05",
        "RELAY_POLL_MAX": "0.2",
        "SCENARIO_API_KEY": scenario.api_key,
        "SCENARIO_API_SECRET": scenario.api_secret,
        "SCENARIO_BASE_URL": scenario.base_url,
        **FAST,
    }
    settings = config.load(values, env_file=None)
    application = app.create_app(settings)
    async with (
        serve(application, lifespan="on", sock=sock),
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        yield Running(url, client, settings, application)


async def build_source(path: Path, pixazo: PixazoSim, scenario: ScenarioSim) -> dict[str, Any]:
    """A stopped relay's SQLite file with jobs, keys, subscriptions and deliveries in it."""
    subscriber = Subscriber()
    chat = ChatSim("slack")
    async with (
        serve(subscriber.app) as hook_base,
        serve(chat.app) as chat_base,
        relay_on(path, pixazo, scenario) as relay,
    ):
        hook = await subscribe(relay, f"{hook_base}/hook", description="billing")
        slack = await subscribe(relay, f"{chat_base}/services/T000/B000/XXXX", kind="slack")
        keyed = await relay.submit(IMAGE_JOB, headers={"Idempotency-Key": "order-42"})
        assert keyed.status_code == 202, keyed.text
        await relay.wait_status(keyed.json()["id"], {"succeeded"})
        await run_job(relay, VIDEO_JOB)
        await run_job(relay, scenario_job(scenario))
        # a per-job webhook: a delivery signed with the service-wide secret
        await run_job(relay, {**IMAGE_JOB, "webhook": f"{hook_base}/per-job"})
        await settled(relay, 4, subscription_id=hook["id"])
        await settled(relay, 4, subscription_id=slack["id"])
        await settled(relay, 9)
        seen = await everything(relay)
    assert len(seen["jobs"]) == 4 and len(seen["deliveries"]) == 9
    assert {d["status"] for d in seen["deliveries"]} == {"succeeded"}
    return seen


async def test_a_sqlite_installation_moves_to_postgresql_and_is_served_from_it(
    pg_url: str,
    start_relay: StartRelay,
    pixazo: PixazoSim,
    scenario: ScenarioSim,
    tmp_path: Path,
) -> None:
    source = tmp_path / "relay.db"
    before = await build_source(source, pixazo, scenario)
    with sqlite3.connect(source) as conn:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608

    done = await asyncio.to_thread(migrate, "--from", f"sqlite://{source}", "--to", pg_url)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert password_of(pg_url) not in out
    assert "***" in done.stdout  # the target is named, masked
    printed = {
        line.split()[0]: int(line.split()[1])
        for line in done.stdout.splitlines()
        if line.startswith("  ") and line.rstrip().endswith(("row", "rows"))
    }
    assert printed == rows
    last_id = before["events"][-1]["id"]
    assert f"last event id: {last_id}" in done.stdout
    assert SECRET not in out and "whsec_" not in out

    relay = await start_relay(RELAY_DATABASE=pg_url, RELAY_SECRET=SECRET, **FAST)
    after = await everything(relay)
    # same events under the same ids (cursors clients hold stay valid), same everything else
    assert after["events"] == before["events"]
    assert after["jobs"] == before["jobs"]
    assert after["subscriptions"] == before["subscriptions"]
    assert after["secrets"] == before["secrets"]
    assert all(s["secret"].startswith("whsec_") for s in after["secrets"].values())
    assert after["webhook_secret"] == before["webhook_secret"]
    assert after["deliveries"] == before["deliveries"]
    middle = before["events"][len(before["events"]) // 2]["id"]
    resumed = (await get(relay, "/v1/events", after=middle, limit=500))["data"]
    assert resumed == [e for e in before["events"] if e["id"] > middle]
    # the idempotency key still answers with the first job
    again = await relay.submit(IMAGE_JOB, headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 202 and again.json()["id"] in before["jobs"]
    # new writes take ids past the copied ones
    job = await run_job(relay, scenario_job(scenario))
    fresh = (await get(relay, "/v1/events", after=last_id, limit=500))["data"]
    assert fresh and fresh[0]["id"] == last_id + 1
    assert {e["job_id"] for e in fresh} >= {job["id"]}
    assert len((await get(relay, "/v1/jobs", limit=100))["data"]) == 5


async def test_a_target_holding_data_is_refused_and_left_as_it_was(
    tmp_path: Path, pg_url: str
) -> None:
    source = tmp_path / "relay.db"
    store = await open_store(str(source))  # the relay's schema, one event in it
    await store.close()
    with sqlite3.connect(source) as conn:
        # a column of a newer relay's schema: copied by name, the one the target lacks named
        conn.execute("ALTER TABLE events ADD COLUMN future_note TEXT")
        conn.execute(
            "INSERT INTO events (id, type, source, created_at, data, future_note)"
            " VALUES (7, 'relay.started', 'system', 1.0, '{}', 'x')"
        )
    # sqlite://relative names a file under the working directory
    first = await asyncio.to_thread(
        migrate, "--from", "sqlite://relay.db", "--to", pg_url, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert "last event id: 7" in first.stdout
    assert "left out (the target has no such column): events.future_note" in first.stdout
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO subscriptions (id, url, kind, events, created_at, updated_at)"
            " VALUES ('sub_x', 'https://example.com/h', 'webhook', '[]', 1, 1)"
        )
    with psycopg.connect(pg_url) as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()

    again = await asyncio.to_thread(migrate, "--from", f"sqlite://{source}", "--to", pg_url)

    assert again.returncode == 1
    assert "events has 1 row" in again.stderr and "subscriptions has 1 row" in again.stderr
    assert "nothing was copied" in again.stderr
    assert password_of(pg_url) not in again.stdout + again.stderr
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == before
        assert conn.execute("SELECT count(*) FROM subscriptions").fetchone() == (1,)


async def test_a_failure_halfway_leaves_the_target_empty(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "relay.db"
    store = await open_store(str(source))
    await store.close()
    with sqlite3.connect(source) as conn:
        conn.execute(
            "INSERT INTO jobs (id, model, provider, status, input, created_at, updated_at)"
            " VALUES ('job_1', 'pixazo/seedvr-image', 'pixazo', 'queued', '{}', 1.0, 1.0)"
        )
        # SQLite keeps text in a REAL column; PostgreSQL refuses it, after jobs went in
        conn.execute(
            "INSERT INTO events (type, source, created_at, data)"
            " VALUES ('job.created', 'api', 'soon', '{}')"
        )

    done = await asyncio.to_thread(migrate, "--from", str(source), "--to", pg_url)

    assert done.returncode == 1, done.stdout
    assert "nothing was kept" in done.stderr
    assert password_of(pg_url) not in done.stderr
    with psycopg.connect(pg_url) as conn:
        for table in TABLES[:-1]:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table  # noqa: S608


async def test_the_source_secrets_replace_those_a_relay_left_on_the_target(
    pg_url: str, start_relay: StartRelay, pixazo: PixazoSim, scenario: ScenarioSim, tmp_path: Path
) -> None:
    async with relay_on(tmp_path / "relay.db", pixazo, scenario) as relay:
        source_secret = await get(relay, "/v1/webhook-secret")
    # a relay was started on the target once: it made a secret of its own there
    async with relay_on(pg_url, pixazo, scenario) as relay:
        target_secret = await get(relay, "/v1/webhook-secret")
    assert target_secret != source_secret

    done = await asyncio.to_thread(migrate, "--from", str(tmp_path / "relay.db"), "--to", pg_url)

    assert done.returncode == 0, done.stderr
    relay = await start_relay(RELAY_DATABASE=pg_url, RELAY_SECRET=SECRET)
    assert await get(relay, "/v1/webhook-secret") == source_secret


def tables_of(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("content", [None, b"not a database, just some text" * 100])
def test_a_missing_or_foreign_source_is_refused_before_the_target_is_touched(
    tmp_path: Path, pg_url: str, content: bytes | None
) -> None:
    source = tmp_path / "nowhere.db"
    if content is not None:
        source.write_bytes(content)
    done = migrate("--from", f"sqlite://{source}", "--to", pg_url)  # sqlite:///abs
    assert done.returncode == 1
    assert f"cannot read the source: {source}: " in done.stderr
    if content is None:
        assert "no such file" in done.stderr
        assert not source.exists()  # read-only: nothing created
    assert tables_of(pg_url) == []
    assert password_of(pg_url) not in done.stderr


async def test_a_source_with_a_running_relay_is_refused(
    pg_url: str, pixazo: PixazoSim, scenario: ScenarioSim, tmp_path: Path
) -> None:
    source = tmp_path / "relay.db"
    async with relay_on(source, pixazo, scenario):
        done = await asyncio.to_thread(migrate, "--from", str(source), "--to", pg_url)
    assert done.returncode == 1
    assert "a relay is running on" in done.stderr and "stop it first" in done.stderr
    assert tables_of(pg_url) == []
    # stopped cleanly, it is gone from the owners table: the copy goes ahead
    again = await asyncio.to_thread(migrate, "--from", str(source), "--to", pg_url)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--from", "relay.db", "--to", "relay2.db"),
        ("--from", "relay.db", "--to", "mysql://u:hunter2@host/db"),
        ("--from", "postgresql://u:hunter2@host/db", "--to", "postgresql://u:hunter2@host/db"),
        ("--from", "relay.db"),
        ("--to", "postgresql://u:hunter2@host/db"),
        ("--from", "relay.db", "--to", "postgresql://"),
    ],
)
def test_bad_arguments_exit_2_with_usage(args: tuple[str, ...]) -> None:
    done = migrate(*args)
    assert done.returncode == 2
    assert "usage: upscale-relay migrate-store" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
