"""The outbound HTTP layer over loopback: error kinds, per-host pools, its own log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

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


# -- errors say whether a request may have been sent --------------------------------------------


async def test_a_refused_connect_is_a_connect_error_safe_to_resend() -> None:
    async with outbound.provider_client(2.0, CONTEXT) as client:
        with pytest.raises(outbound.ConnectError) as info:
            await client.post(f"{_closed_port()}/v1/generate?key=secret", json={})
    error = network_error("pixazo", info.value)
    assert (error.retryable, error.http_status) == (True, 502)
    assert "secret" not in str(info.value) and "/v1/generate" not in str(info.value)


async def test_a_read_timeout_is_a_504_not_safe_to_resend() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # until the client gives up and closes

    async with raw_server(hang) as url, outbound.provider_client(0.3, CONTEXT) as client:
        with pytest.raises(outbound.ReadTimeout) as info:
            await client.post(f"{url}/v1/generate", json={})
    error = network_error("pixazo", info.value)
    assert (error.retryable, error.http_status) == (False, 504)


async def test_a_disconnect_after_sending_is_not_safe_to_resend() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    async with raw_server(drop) as url, outbound.provider_client(2.0, CONTEXT) as client:
        with pytest.raises(outbound.RemoteProtocolError) as info:
            await client.post(f"{url}/v1/generate", json={})
    error = network_error("pixazo", info.value)
    assert (error.retryable, error.http_status) == (False, 502)


async def test_a_malformed_answer_is_a_transport_error_without_the_url() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        await writer.drain()

    async with raw_server(garbage) as url, outbound.provider_client(2.0, CONTEXT) as client:
        with pytest.raises(outbound.TransportError) as info:
            await client.get(f"{url}/path/secret-token")
    assert "secret-token" not in str(info.value)


# -- per-host pools are bounded ----------------------------------------------------------------


async def to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def test_three_hundred_hosts_never_keep_more_than_the_bound() -> None:
    made: list[outbound.Client] = []

    def make() -> outbound.Client:
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
    made: dict[str, outbound.Client] = {}

    def maker(name: str) -> Callable[[], outbound.Client]:
        def make() -> outbound.Client:
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


async def test_requests_are_logged_without_path_or_query_and_libraries_are_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(OK) as url, outbound.provider_client(2.0, CONTEXT) as client:
        ids = {"job": "job_1"}
        secret = f"{url}/services/T0AAA/B0BBB/xxxxsecretxxxx?key=sekrit-key&token=sekrit-token"
        assert (await client.get(secret, ids=ids)).status_code == 200
        with pytest.raises(outbound.ConnectError):
            await client.get(f"{_closed_port()}/hook?token=sekrit-token")
    lines = [r for r in caplog.records if r.name == "service.outbound"]
    assert len(lines) == 2
    host = url.removeprefix("http://")
    assert lines[0].getMessage().startswith(f"GET http://{host} 200 ")
    assert lines[0].getMessage().endswith(" ms job=job_1")
    assert lines[0].levelno == logging.DEBUG
    assert "failed (ConnectError: Cannot connect to host 127.0.0.1:" in lines[1].getMessage()
    assert lines[1].levelno == logging.INFO
    # the same facts as fields, for RELAY_LOG_FORMAT=json
    assert lines[0].job_id == "job_1" and lines[0].status == 200  # type: ignore[attr-defined]
    assert isinstance(lines[0].latency_ms, float)  # type: ignore[attr-defined]
    assert lines[1].status is None and not hasattr(lines[1], "job_id")  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.name.startswith(("httpx", "aiohttp"))]
    text = caplog.text
    for secret_part in ("services", "xxxxsecretxxxx", "sekrit", "/hook"):
        assert secret_part not in text


# -- the response shape the call sites use -------------------------------------------------------


async def _shapes(request: Request) -> Response:
    body = await request.body()
    path = request.url.path
    if path == "/cookie":
        answer = JSONResponse({"cookie": request.headers.get("cookie")})
        answer.set_cookie("session", "from-a-host")
        return answer
    if path == "/echo":
        return JSONResponse(
            {
                "length": request.headers.get("content-length"),
                "chunked": request.headers.get("transfer-encoding"),
                "size": len(body),
                "tail": body[-4:].decode(),
            }
        )
    if path == "/latin":
        return Response("café".encode("latin-1"), media_type="text/plain; charset=latin-1")
    return Response(status_code=302, headers={"location": "/elsewhere"})


SHAPES = Starlette(routes=[Route("/{path:path}", _shapes, methods=["GET", "POST", "PUT"])])


async def test_no_cookie_is_kept_from_one_answer_for_the_next_request() -> None:
    async with serve(SHAPES) as url, outbound.provider_client(2.0, CONTEXT) as client:
        first = await client.get(f"{url}/cookie")
        assert "session=from-a-host" in first.headers.get("set-cookie", "")
        second = await client.get(f"{url}/cookie")
    assert second.json() == {"cookie": None}


async def test_a_large_body_goes_in_chunks_with_its_length() -> None:
    data = b"x" * (3 * 1024 * 1024) + b"tail"
    async with serve(SHAPES) as url, outbound.provider_client(5.0, CONTEXT) as client:
        answer = await client.put(f"{url}/echo", content=data)
    assert answer.json() == {
        "length": str(len(data)),
        "chunked": None,
        "size": len(data),
        "tail": "tail",
    }


async def test_redirects_are_not_followed_and_text_follows_the_charset() -> None:
    async with serve(SHAPES) as url, outbound.provider_client(2.0, CONTEXT) as client:
        moved = await client.get(f"{url}/moved")
        assert (moved.status_code, moved.is_redirect, moved.is_success) == (302, True, False)
        assert moved.headers["Location"] == "/elsewhere"
        assert (await client.get(f"{url}/latin")).text == "café"
        for _ in range(3):  # a streamed answer left unread still frees its connection
            async with client.stream("POST", f"{url}/echo", content=b"{}") as streamed:
                assert streamed.status_code == 200
        async with client.stream("POST", f"{url}/echo", content=b"abcd") as streamed:
            chunks = [chunk async for chunk in streamed.aiter_bytes(4)]
        assert b"".join(chunks).endswith(b'"tail":"abcd"}')
