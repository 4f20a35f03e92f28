"""Fixtures: simulated providers and the relay itself, all real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service import app, config
from service.sim.media import MediaSim
from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import bind, serve, url_of
from service.state import Relay


@dataclass
class Running:
    """A relay under test: its URL, an API client, its settings and its live state."""

    url: str
    client: httpx.AsyncClient
    settings: config.Settings
    app: Any

    @property
    def relay(self) -> Relay:
        relay: Relay = self.app.state.relay
        return relay

    async def submit(self, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await self.client.post("/v1/jobs", json=body, **kw)

    async def wait_status(self, job_id: str, statuses: set[str], limit: float = 10) -> dict:
        """Poll the API until the job is in one of `statuses`."""
        deadline = time.monotonic() + limit
        while True:
            job = (await self.client.get(f"/v1/jobs/{job_id}")).json()
            if job.get("status") in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"{job_id} stuck in {job.get('status')}: {job}")
            await asyncio.sleep(0.02)

    async def events(self, job_id: str) -> list[dict]:
        return (await self.client.get(f"/v1/jobs/{job_id}/events")).json()["data"]


@pytest.fixture
async def pixazo() -> AsyncIterator[PixazoSim]:
    sim = PixazoSim(queue_seconds=0.02, process_seconds=0.05)
    async with serve(sim.app) as url:
        sim.base_url = url
        yield sim
        await sim.aclose()


@pytest.fixture
async def scenario() -> AsyncIterator[ScenarioSim]:
    sim = ScenarioSim(queue_seconds=0.05, process_seconds=0.25)
    async with serve(sim.app) as url:
        sim.base_url = url
        yield sim
        await sim.aclose()


@pytest.fixture
async def media() -> AsyncIterator[str]:
    """Base URL of a loopback media server (GET /media/{name}?size=)."""
    async with serve(MediaSim().app) as url:
        yield url


StartRelay = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_relay(
    tmp_path: Path, pixazo: PixazoSim, scenario: ScenarioSim, request: pytest.FixtureRequest
) -> AsyncIterator[StartRelay]:
    """Factory: start a relay (env overrides as keyword arguments) against the simulators.

    Its database is a SQLite file, or with RELAY_TEST_ENGINE=postgresql an empty PostgreSQL
    database of the session's throwaway server (the whole suite runs on either engine)."""
    stack = contextlib.AsyncExitStack()
    count = 0
    on_postgres = os.environ.get("RELAY_TEST_ENGINE", "sqlite") == "postgresql"

    async def start(*, workers: bool = True, **env: str) -> Running:
        nonlocal count
        count += 1
        sock = bind()
        url = url_of(sock)
        if on_postgres:
            server = request.getfixturevalue("pg_server")
            database = stack.enter_context(server.database())
        else:
            database = str(tmp_path / f"relay{count}.db")
        values = {
            "RELAY_DATABASE": database,
            "RELAY_PUBLIC_URL": url,
            "PIXAZO_API_KEY": pixazo.api_key,
            "PIXAZO_BASE_URL": pixazo.base_url,
            "RELAY_POLL_MIN": "0.05",
            "RELAY_POLL_MAX": "0.2",
            "RELAY_CALLBACK_GRACE": "30",
            "SCENARIO_API_KEY": scenario.api_key,
            "SCENARIO_API_SECRET": scenario.api_secret,
            "SCENARIO_BASE_URL": scenario.base_url,
        }
        values.update(env)
        try:
            settings = config.load(values, env_file=None)
            application = app.create_app(settings, workers=workers)
            await stack.enter_async_context(serve(application, lifespan="on", sock=sock))
        except BaseException:
            sock.close()
            raise
        headers = {}
        if settings.api_tokens:
            headers["Authorization"] = f"Bearer {settings.api_tokens[0]}"
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, headers=headers, timeout=20)
        )
        return Running(url, client, settings, application)

    async with stack:
        yield start


@pytest.fixture
async def relay(start_relay: StartRelay) -> Running:
    return await start_relay()


# SPEC "Outgoing notifications": the keys of `data`, in order, copied here so that tests do
# not take their expected values from the code they check.
SPEC_DATA_KEYS = (
    "id",
    "model",
    "status",
    "progress",
    "outputs",
    "error",
    "metadata",
    "provider",
    "provider_job_id",
    "created_at",
    "updated_at",
)
IMAGE_JOB = {
    "model": "pixazo/seedvr-image",
    "input": {"image_url": "https://example.com/in.png", "upscale_factor": 2},
    "metadata": {"tenant": "acme"},
}
VIDEO_JOB = {
    "model": "pixazo/seedvr-video",
    "input": {"video_url": "https://example.com/in.mp4", "upscale_factor": 2},
}


# -- PostgreSQL: a throwaway server for the whole session, started only if a test asks --------

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.pgserver import PgServer


def _postgres_required() -> bool:
    """Under CI (or `make test`) a PostgreSQL that cannot start fails the tests, never skips."""
    import os

    return bool(os.environ.get("CI")) or os.environ.get("RELAY_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server on 127.0.0.1 (tests/pgserver.py), stopped at the end of the session."""
    import subprocess

    from tests.pgserver import PgServer, PgServerError  # psycopg only for sessions that use it

    try:
        server = PgServer()
        server.start()
    except (PgServerError, OSError, subprocess.SubprocessError) as exc:
        reason = f"PostgreSQL could not be started: {exc}"
        if _postgres_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh empty database (postgresql://relay:…@127.0.0.1:PORT/t_…), dropped after."""
    with pg_server.database() as url:
        yield url
