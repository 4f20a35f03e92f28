"""create_app(settings) -> Starlette; the lifespan opens the store, clients and workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from service import logs, netguard, outbox
from service.config import Settings
from service.delivery import Deliverer
from service.errors import ApiError, StorageUnavailable
from service.http import callbacks, deliveries, deps, jobs, openapi, ops, subscriptions
from service.poller import Poller
from service.providers import build as build_providers
from service.state import Relay
from service.store import Store
from service.submit import Submitter
from service.tokens import Tokens

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Who holds a lease: host, process and a random suffix (a restarted process is new)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def start(
    settings: Settings,
    clock: Callable[[], float],
    resolve: netguard.Resolver = netguard.system_resolve,
) -> Relay:
    """Open the store, resolve the secret, build providers and workers (not started)."""
    store = await Store.open(settings.database)
    secret = (
        str(settings.secret)
        if settings.secret is not None
        else await store.meta_get_or_set("relay_secret", lambda: secrets.token_urlsafe(32))
    )
    tokens = Tokens(secret, settings.callback_max_age)
    webhook_secret = await store.write(outbox.service_secret)
    store.hooks.append(outbox.Fanout())
    ssl_context = ssl.create_default_context()
    providers, clients = build_providers(settings, ssl_context, resolve)
    owner = owner_id()
    submitter = Submitter(store, providers, settings, tokens, clock, resolve)
    poller = Poller(store, providers, settings, clock, owner, resume=submitter.resume)
    deliverer = Deliverer(store, settings, clock, owner, webhook_secret, resolve=resolve)
    return Relay(
        settings,
        store,
        tokens,
        submitter,
        poller,
        deliverer,
        webhook_secret,
        providers,
        clients,
        resolve,
    )


async def stop(relay: Relay) -> None:
    """Stop workers, close clients, then the store (which finishes queued writes)."""
    for task in relay.tasks:
        task.cancel()
    for task in relay.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await relay.deliverer.aclose()
    for client in relay.clients:
        await client.aclose()
    await relay.store.close()


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    workers: bool = True,
    resolve: netguard.Resolver = netguard.system_resolve,
) -> Starlette:
    """The ASGI app. With workers=False nothing polls or delivers (tests step them by hand).

    `resolve` answers every lookup of a user-chosen target (tests pass a fake DNS).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        logs.redact_access_log()
        relay = await start(settings, clock, resolve)
        app.state.relay = relay
        if workers:
            relay.tasks.append(asyncio.create_task(relay.poller.run_forever(), name="poller"))
            relay.tasks.append(asyncio.create_task(relay.deliverer.run_forever(), name="deliverer"))
        try:
            yield {}
        finally:
            await stop(relay)

    tokens = tuple(str(t) for t in settings.api_tokens)
    application = Starlette(
        routes=[
            *ops.ROUTES,
            Route("/openapi.json", openapi.serve, methods=["GET"]),
            Mount(
                "/v1",
                routes=jobs.ROUTES + subscriptions.ROUTES + deliveries.ROUTES,
                middleware=[Middleware(jobs.BearerAuth, tokens=tokens)],
            ),
        ],
        exception_handlers={
            ApiError: deps.api_error,
            StorageUnavailable: deps.api_error,  # 503 storage_unavailable, in the envelope
            HTTPException: deps.http_error,
        },
        lifespan=lifespan,
    )
    # Callbacks are the ingest hot path: served ahead of Starlette's middleware and router.
    application.add_middleware(callbacks.PixazoCallbacks, state=application.state)
    return application
