"""Fixtures of the integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.integration.helpers import ServeSubscriber


@pytest.fixture
async def serve_subscriber() -> AsyncIterator[ServeSubscriber]:
    """Factory: a Subscriber on its own loopback port; returns it and its base URL."""
    async with contextlib.AsyncExitStack() as stack:

        async def start() -> tuple[Subscriber, str]:
            subscriber = Subscriber()
            url = await stack.enter_async_context(serve(subscriber.app))
            return subscriber, url

        yield start
