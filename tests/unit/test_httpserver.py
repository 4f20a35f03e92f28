"""The relay's uvicorn protocol: the access log is built only when it would print."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from service import httpserver


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def root_handler() -> Iterator[logging.Logger]:
    """A handler on the root logger, as `serve` sets one up (uvicorn's loggers propagate)."""
    root = logging.getLogger()
    access = logging.getLogger("uvicorn.access")
    handler = logging.NullHandler()
    saved = (root.level, access.level, access.propagate, access.disabled)
    root.addHandler(handler)
    # as `serve` leaves it (log_config=None), whatever servers earlier tests ran did to it
    access.setLevel(logging.NOTSET)
    access.propagate, access.disabled = True, False
    try:
        yield root
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        access.setLevel(saved[1])
        access.propagate, access.disabled = saved[2], saved[3]


async def _access_log(level: int) -> bool:
    """Whether a connection's protocol would log each request, its logger at `level`."""
    logging.getLogger("uvicorn.access").setLevel(level)
    config = uvicorn.Config(_app, log_config=None)
    state = ServerState()
    cls = httpserver.protocol(10.0, 32 * 1024)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(config=config, server_state=state, app_state={}),  # type: ignore[call-arg]
        "127.0.0.1",
        0,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 204")
        (protocol,) = state.connections
        writer.close()
        await writer.wait_closed()
        return bool(protocol.access_log)  # type: ignore[attr-defined]
    finally:
        server.close()
        await server.wait_closed()


async def test_access_log_off_when_its_level_hides_it(root_handler: logging.Logger) -> None:
    assert await _access_log(logging.WARNING) is False


async def test_access_log_on_when_it_prints(root_handler: logging.Logger) -> None:
    assert await _access_log(logging.INFO) is True
