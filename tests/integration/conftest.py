"""Fixtures of the integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.integration.helpers import ServeSubscriber
from tests.s3server import S3Server


@pytest.fixture
async def serve_subscriber() -> AsyncIterator[ServeSubscriber]:
    """Factory: a Subscriber on its own loopback port; returns it and its base URL."""
    async with contextlib.AsyncExitStack() as stack:

        async def start() -> tuple[Subscriber, str]:
            subscriber = Subscriber()
            url = await stack.enter_async_context(serve(subscriber.app))
            return subscriber, url

        yield start


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on loopback, with auth on and one bucket, for a module's tests."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
