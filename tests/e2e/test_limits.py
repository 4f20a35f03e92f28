"""HTTP limits of the real `serve`: slow or silent headers time out, huge headers are refused."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
EXE = str(Path(sys.executable).with_name("upscale-relay"))
TIMEOUT = 1.0  # RELAY_HEADER_TIMEOUT for these tests (default 10 s)
SLACK = 1.5  # scheduling on a shared 2-core machine


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("limits")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_"))}
    env.update({"RELAY_DATABASE": str(folder / "relay.db"), "RELAY_HEADER_TIMEOUT": str(TIMEOUT)})
    proc = subprocess.Popen(  # noqa: S603
        [EXE, "serve", "--port", str(number), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=folder,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{number}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.05)
        yield number
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def _closed_after(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it said before."""
    started = time.monotonic()
    said = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT + 10):
            said += chunk
    except ConnectionError:
        pass  # reset, or our last write found the connection closed
    return time.monotonic() - started, said


async def test_silent_connections_are_closed_after_the_header_timeout(port: int) -> None:
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
    try:
        results = await asyncio.gather(*(_closed_after(reader) for reader, _ in streams))
    finally:
        for _, writer in streams:
            writer.close()
    for waited, said in results:
        assert waited < TIMEOUT + SLACK
        assert said.startswith(b"HTTP/1.1 408 "), said
        assert b'"code": "request_timeout"' in said


async def test_a_trickling_request_is_closed_after_the_header_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    try:
        for byte in request:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
            if time.monotonic() - started > TIMEOUT + SLACK:
                raise AssertionError("the trickling request was never cut off")
    except ConnectionError:
        pass
    _, said = await _closed_after(reader)
    writer.close()
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert said == b"" or said.startswith(b"HTTP/1.1 408 "), said


def _raw(port: int, data: bytes) -> bytes:
    """Send `data`, return all the server answers before it closes (b"" if it reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused before we finished sending
        said = b""
        try:
            while chunk := sock.recv(65536):
                said += chunk
        except ConnectionResetError:
            pass
        return said


def test_a_one_mebibyte_header_is_refused(port: int) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    said = _raw(port, big)
    assert said == b"" or said.startswith(b"HTTP/1.1 431 "), said[:200]
    assert b"200 OK" not in said
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_headers_under_the_limit_and_large_bodies_still_pass(port: int) -> None:
    fine = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 16_000 + b"\r\n\r\n")
    assert fine.startswith(b"HTTP/1.1 200 "), fine[:200]
    # a body in the same packets as the headers is not counted as header bytes
    body = b'{"pad": "' + b"x" * 300_000 + b'"}'
    head = b"POST /hooks/pixazo/not-a-token HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    answer = _raw(port, head % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]


async def test_a_kept_alive_connection_may_idle_between_requests(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.sleep(TIMEOUT + 0.5)  # past the header timeout, within keep-alive (5 s)
        assert (await client.get("/healthz")).status_code == 200
