"""The outbound HTTP layer over loopback: error kinds, per-host pools, its own log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import outbound
from service.providers.base import network_error
from service.sim.server import serve

CONTEXT = ssl.create_default_context()


async def _ok(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("wait", "0")))
    return JSONResponse({"ok": True})


OK = Starlette(routes=[Route("/{path:path}", _ok, methods=["GET", "POST"])])


@contextlib.asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server on loopback that misbehaves as `handle` says; every socket closed after."""
    writers: list[asyncio.StreamWriter] = []

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            await handle(reader, writer)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def _closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- errors keep httpx's meaning (httpx-aiohttp alone turns most into ConnectTimeout) --------


async def test_a_refused_connect_is_a_connect_error_safe_to_resend() -> None:
    async with outbound.provider_client(2.0, CONTEXT) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.post(f"{_closed_port()}/v1/generate?key=secret", json={})
    error = network_error("pixazo", info.value)
    assert (error.retryable, error.http_status) == (True, 502)
    assert "secret" not in str(info.value) and "/v1/generate" not in str(info.value)


async def test_a_read_timeout_is_a_504_not_safe_to_resend() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # until the client gives up and closes

    async with raw_server(hang) as url, outbound.provider_client(0.3, CONTEXT) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.post(f"{url}/v1/generate", json={})
    error = network_error("pixazo", info.value)
    assert (error.retryable, error.http_status) == (False, 504)


async def test_a_disconnect_after_sending_is_not_safe_to_resend() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    async with raw_server(drop) as url, outbound.provider_client(2.0, CONTEXT) as client:
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await client.post(f"{url}/v1/generate", json={})
    error = network_error("pixazo", info.value)
    assert (error.retryable, error.http_status) == (False, 502)


async def test_a_malformed_answer_is_an_httpx_error_without_the_url() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        await writer.drain()

    async with raw_server(garbage) as url, outbound.provider_client(2.0, CONTEXT) as client:
        with pytest.raises(httpx.TransportError) as info:
            await client.get(f"{url}/path/secret-token")
    assert "secret-token" not in str(info.value)


# -- per-host pools are bounded ----------------------------------------------------------------


async def to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def test_three_hundred_hosts_never_keep_more_than_the_bound() -> None:
    made: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        client = outbound.guarded_client(
            2.0, CONTEXT, allow_private=True, resolve=to_loopback, connections=2
        )
        made.append(client)
        return client

    pool = outbound.HostClients(make, per_host=2)
    async with serve(OK) as url:
        port = url.rsplit(":", 1)[1]
        for i in range(300):
            base = f"http://h{i}.example:{port}"
            async with pool.use(base) as (client, gate), gate:
                assert (await client.get(f"{base}/hook")).status_code == 200
            assert len(pool) <= outbound.MAX_HOSTS
        await asyncio.sleep(0.05)  # evicted clients close in the background
        assert len(pool) == outbound.MAX_HOSTS == 256
        assert len(made) == 300
        assert all(c.is_closed for c in made[:44])
        assert not any(c.is_closed for c in made[44:])
        await pool.aclose()
    assert all(c.is_closed for c in made)


async def test_an_evicted_client_is_closed_only_when_its_last_request_ends() -> None:
    made: dict[str, httpx.AsyncClient] = {}

    def maker(name: str) -> Callable[[], httpx.AsyncClient]:
        def make() -> httpx.AsyncClient:
            made[name] = outbound.guarded_client(
                2.0, CONTEXT, allow_private=True, resolve=to_loopback
            )
            return made[name]

        return make

    async with serve(OK) as url:
        port = url.rsplit(":", 1)[1]
        first = f"http://a.example:{port}"
        pool = outbound.HostClients(maker("a"), per_host=2, bound=1)
        async with pool.use(first) as (client, _):
            slow = asyncio.create_task(client.get(f"{first}/hook", params={"wait": "0.2"}))
            await asyncio.sleep(0.05)
            pool.make = maker("b")
            async with pool.use(f"http://b.example:{port}") as (other, _):
                await other.get(f"http://b.example:{port}/hook")
            assert len(pool) == 1
            assert not made["a"].is_closed  # evicted, but a request is still using it
            assert (await slow).status_code == 200
        await asyncio.sleep(0.05)
        assert made["a"].is_closed
        await pool.aclose()
        assert made["b"].is_closed


# -- our own request log lines -----------------------------------------------------------------


async def test_requests_are_logged_without_path_or_query_and_httpx_is_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(OK) as url, outbound.provider_client(2.0, CONTEXT) as client:
        ids = {outbound.IDS: {"job": "job_1"}}
        secret = f"{url}/services/T0AAA/B0BBB/xxxxsecretxxxx?key=sekrit-key&token=sekrit-token"
        assert (await client.get(secret, extensions=ids)).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{_closed_port()}/hook?token=sekrit-token")
    lines = [r for r in caplog.records if r.name == "service.outbound"]
    assert len(lines) == 2
    host = url.removeprefix("http://")
    assert lines[0].getMessage().startswith(f"GET http://{host} 200 ")
    assert lines[0].getMessage().endswith(" ms job=job_1")
    assert lines[0].levelno == logging.DEBUG
    assert "failed (ConnectError: Cannot connect to host 127.0.0.1:" in lines[1].getMessage()
    assert lines[1].levelno == logging.INFO
    assert not [r for r in caplog.records if r.name.startswith("httpx")]
    text = caplog.text
    for secret_part in ("services", "xxxxsecretxxxx", "sekrit", "/hook"):
        assert secret_part not in text
