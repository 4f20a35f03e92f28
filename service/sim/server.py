"""Run an ASGI app on a loopback port inside the current event loop (tests and demo)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp


def bind(port: int = 0) -> socket.socket:
    """A socket bound to 127.0.0.1 (a free port by default), for a URL known before serving."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only then, and
    # without it every kept-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL of a bound loopback socket."""
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp,
    *,
    lifespan: Literal["auto", "on", "off"] = "off",
    sock: socket.socket | None = None,
) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (on `sock` if given, else a free port) and yield its base URL."""
    sock = sock or bind()
    config = uvicorn.Config(
        app, lifespan=lifespan, log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped while starting (see its log)")
        await asyncio.sleep(0.005)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
