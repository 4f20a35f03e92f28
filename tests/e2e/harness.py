"""`upscale-relay serve` in a subprocess, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import httpx

EXE = str(Path(sys.executable).with_name("upscale-relay"))
TERMINAL = {"succeeded", "failed", "canceled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`upscale-relay serve` in a subprocess on a fixed port and database."""

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        log_level: str = "warning",
        log: IO[bytes] | None = None,
    ) -> None:
        self.env = env
        self.port = port
        self.log_level = log_level
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            EXE,
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            self.log_level,
            env=self.env,
            stdout=self.log or asyncio.subprocess.DEVNULL,
            stderr=self.log or asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not start"
                await asyncio.sleep(0.05)

    @property
    def database(self) -> Path:
        return Path(self.env["RELAY_DATABASE"])

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, limit: float = 20.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds from the signal until the process was gone)."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), limit)
        return code, time.monotonic() - sent

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@asynccontextmanager
async def service(
    tmp_path: Path, *, log_level: str = "warning", log: IO[bytes] | None = None, **env: str
) -> AsyncIterator[Service]:
    port = _free_port()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_", "SCENARIO_"))
    }
    base.update(
        {
            "RELAY_DATABASE": str(tmp_path / "relay.db"),
            "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RELAY_POLL_MIN": "0.2",
            "RELAY_POLL_MAX": "0.5",
            "RELAY_ALLOW_PRIVATE_TARGETS": "1",
            **env,
        }
    )
    svc = Service(base, port, log_level, log)
    try:
        yield svc
    finally:
        await svc.stop()


@asynccontextmanager
async def pg_service(
    database_url: str,
    *,
    log_level: str = "warning",
    log: IO[bytes] | None = None,
    **env: str,
) -> AsyncIterator[Service]:
    """`service` on a PostgreSQL database: each process its own port and public URL."""
    port = _free_port()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_", "SCENARIO_"))
    }
    base.update(
        {
            "RELAY_DATABASE": database_url,
            "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RELAY_POLL_MIN": "0.2",
            "RELAY_POLL_MAX": "0.5",
            "RELAY_ALLOW_PRIVATE_TARGETS": "1",
            **env,
        }
    )
    svc = Service(base, port, log_level, log)
    try:
        yield svc
    finally:
        await svc.stop()


async def follow_events(base_url: str, done: asyncio.Event, wait: int) -> list[int]:
    """Read /v1/events?after= from 0, moving the cursor to each page's last id, until `done`
    is set and a read past it comes back empty; every id received, in order received."""
    seen: list[int] = []
    cursor = "0"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        while True:
            finished = done.is_set()
            params: dict[str, Any] = {"after": cursor, "limit": 50}
            if wait:
                params["wait"] = wait
            page = await client.get("/v1/events", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            seen.extend(int(e["id"]) for e in body["data"])
            cursor = body["next_cursor"]
            if finished and not body["data"]:
                return seen


def stored_event_ids(url: str) -> list[int]:
    """Every event id in a PostgreSQL database, read directly."""
    import psycopg  # only the PostgreSQL tests need it

    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM events ORDER BY id").fetchall()]
