"""HTTP clients side by side: CPU per request of httpx, httpx over httpx-aiohttp, and aiohttp.

One loopback server (uvicorn, bench.bare's /healthz) in its own process on the server core;
the three clients take turns in this process on the client core, so only the client's own
CPU is counted (time.process_time). `python -m bench.httpclients [--quick]` runs it alone.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from bench.common import Outcome, Row, bare_server, client_core, log, tmpdir
from service import outbound

NAME = "7. HTTP clients"
DEADLINE = 30.0  # seconds per measurement, whatever the count

Get = Callable[[], Awaitable[None]]


async def _measure(get: Get, count: int, in_flight: int) -> tuple[float, int]:
    """CPU seconds per request over `count` GETs with `in_flight` at a time (or the deadline)."""
    for _ in range(in_flight * 2):  # warm the pool: connections are not what is measured
        await get()
    done = 0
    deadline = time.monotonic() + DEADLINE

    async def worker() -> None:
        nonlocal done
        while done < count and time.monotonic() < deadline:
            done += 1
            await get()

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (time.process_time() - cpu) / max(done, 1), done


async def _httpx(url: str, count: int, in_flight: int) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def get() -> None:
            (await client.get(url)).raise_for_status()

        return await _measure(get, count, in_flight)


async def _shim(url: str, count: int, in_flight: int) -> tuple[float, int]:
    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight))

    transport = AiohttpTransport(client=session)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:

        async def get() -> None:
            (await client.get(url)).raise_for_status()

        return await _measure(get, count, in_flight)


async def _relay(url: str, count: int, in_flight: int) -> tuple[float, int]:
    # The relay's own provider client (service.outbound.Client: aiohttp, its errors, its log).
    context = ssl.create_default_context()
    async with outbound.provider_client(10.0, context, connections=in_flight) as client:

        async def get() -> None:
            (await client.get(url)).raise_for_status()

        return await _measure(get, count, in_flight)


async def _aiohttp(url: str, count: int, in_flight: int) -> tuple[float, int]:
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get() -> None:
            async with session.get(url) as response:
                response.raise_for_status()
                await response.read()

        return await _measure(get, count, in_flight)


CLIENTS = {
    "httpx.AsyncClient (httpcore pool)": _httpx,
    "httpx over httpx-aiohttp, bare transport": _shim,
    "service.outbound.Client (the relay's own, over aiohttp)": _relay,
    "aiohttp.ClientSession": _aiohttp,
}


async def run(quick: bool) -> Outcome:
    """Each client at 32 and 4 in flight against the same server, in one run."""
    count = 600 if quick else 4000
    rows: list[Row] = []
    with tmpdir("bench-httpclients-") as work:
        server = bare_server(Path(work))
        server.start()
        try:
            await server.wait_ready()
            url = f"{server.url}/healthz"
            with client_core():
                for in_flight in (32, 4):
                    results = {}
                    for label, bench in CLIENTS.items():
                        per, done = await bench(url, count, in_flight)
                        results[label] = per
                        log(f"{label}, {in_flight} in flight: {per * 1e6:.0f} µs ({done} GETs)")
                    base = results["httpx.AsyncClient (httpcore pool)"]
                    for label, per in results.items():
                        rows.append(
                            Row(
                                NAME,
                                f"CPU per request, {label}, {in_flight} in flight",
                                f"{per * 1e6:.0f} µs",
                                f"{base * 1e6:.0f} µs (httpx)",
                                f"{per / base:.2f}x",
                            )
                        )
        finally:
            await server.astop()
    note = (
        f"{NAME}: {count} GETs of /healthz per client and concurrency (or {DEADLINE:g} s), "
        "one uvicorn server on the server core, each client in the bench process on the "
        "client core; CPU is the bench process's own (time.process_time), pool warmed first."
    )
    return Outcome(rows, [note])


def main() -> int:
    outcome = asyncio.run(run("--quick" in sys.argv[1:]))
    for row in outcome.rows:
        print(f"{row.metric}: {row.value} (ratio to httpx {row.ratio})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
