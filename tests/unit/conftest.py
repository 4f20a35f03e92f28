"""Fixtures of the unit tests: one shared loopback server per simulator test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from starlette.types import ASGIApp, Receive, Scope, Send

from service.sim.server import serve


class Swap:
    """The module's one server hands each request to the current test's app.

    Each uvicorn shutdown costs 0.1-0.2 s, so the tests share one server and loop.
    """

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[Swap]:
    swap = Swap()
    async with serve(swap) as url:
        swap.url = url
        yield swap
