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
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from service import api, hooks, openapi, outbox, signing, subscriptions, web
from service.config import Settings
from service.delivery import Deliverer
from service.errors import ApiError
from service.poller import Poller
from service.providers.base import Provider
from service.providers.pixazo import Pixazo
from service.providers.scenario import Scenario
from service.store import Store
from service.submit import Submitter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Relay:
    """Everything a request handler or worker needs, built once by the lifespan."""

    settings: Settings
    store: Store
    tokens: hooks.Tokens
    submitter: Submitter
    poller: Poller
    deliverer: Deliverer
    webhook_secret: str
    providers: dict[str, Provider]
    clients: list[httpx.AsyncClient]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def owner_id() -> str:
    """Who holds a lease: host, process and a random suffix (a restarted process is new)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class PooledClient(httpx.AsyncClient):
    """An AsyncClient that sends through several inner clients in turn.

    PERF-NOTES: one httpx client collapses under concurrency (~300 requests/s at 64 in
    flight) from connection-pool bookkeeping; a few clients with modest pools do not.
    """

    def __init__(self, size: int, per_client: int, **options: Any) -> None:
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        super().__init__(limits=limits, **options)
        self._inner = [httpx.AsyncClient(limits=limits, **options) for _ in range(size)]
        self._busy = [0] * size
        self._per_client = per_client

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        # Fill the first client with room before the next: at a steady, light load one small
        # pool does the work (httpcore checks each idle connection on every request), and
        # no request ever waits inside a pool (its bookkeeping grows with the queue squared).
        index = next(
            (i for i, n in enumerate(self._busy) if n < self._per_client),
            min(range(len(self._busy)), key=self._busy.__getitem__),
        )
        self._busy[index] += 1
        try:
            return await self._inner[index].send(request, **kwargs)
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        for client in self._inner:
            await client.aclose()
        await super().aclose()


def provider_client(timeout: float, ssl_context: ssl.SSLContext) -> httpx.AsyncClient:
    """An HTTP client for calling a provider: pooled, bounded, no redirects."""
    return PooledClient(
        8,
        4,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        verify=ssl_context,
        headers={"User-Agent": "upscale-relay"},
    )


async def start(settings: Settings, clock: Callable[[], float]) -> Relay:
    """Open the store, resolve the secret, build providers and workers (not started)."""
    store = await Store.open(settings.database)
    secret = (
        str(settings.secret)
        if settings.secret is not None
        else await store.meta_get_or_set("relay_secret", lambda: secrets.token_urlsafe(32))
    )
    tokens = hooks.Tokens(secret, settings.callback_max_age)
    webhook_secret = await store.meta_get_or_set("webhook_secret", signing.new_secret)
    store.hooks.append(outbox.Fanout())
    ssl_context = ssl.create_default_context()
    clients: list[httpx.AsyncClient] = []
    providers: dict[str, Provider] = {}
    if settings.pixazo_api_key is not None:
        client = provider_client(settings.provider_timeout, ssl_context)
        clients.append(client)
        providers["pixazo"] = Pixazo(client, settings.pixazo_base_url, str(settings.pixazo_api_key))
    if settings.scenario_api_key is not None and settings.scenario_api_secret is not None:
        client = provider_client(settings.provider_timeout, ssl_context)
        clients.append(client)
        providers["scenario"] = Scenario(
            client,
            settings.scenario_base_url,
            str(settings.scenario_api_key),
            str(settings.scenario_api_secret),
            settings.scenario_project_id,
            allow_private_media=settings.allow_private_targets,
        )
    owner = owner_id()
    submitter = Submitter(store, providers, settings, tokens, clock)
    poller = Poller(store, providers, settings, clock, owner, resume=submitter.resume)
    deliverer = Deliverer(store, settings, clock, owner, webhook_secret)
    return Relay(
        settings, store, tokens, submitter, poller, deliverer, webhook_secret, providers, clients
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


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return web.JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the database answers and the workers run."""
    relay: Relay | None = getattr(request.app.state, "relay", None)
    problems: list[str] = []
    if relay is None:
        problems.append("starting")
    else:
        try:
            await relay.store.read(lambda conn: conn.execute("SELECT 1").fetchone())
        except Exception as exc:
            problems.append(f"database: {exc}")
        problems.extend(f"worker {t.get_name()} stopped" for t in relay.tasks if t.done())
    if problems:
        return web.JSON({"status": "unavailable", "problems": problems}, status_code=503)
    return web.JSON({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text: jobs, deliveries and subscriptions by status, and the event count."""
    relay: Relay = request.app.state.relay

    def q(conn: Any) -> list[str]:
        lines = [
            "# HELP relay_jobs Jobs by provider and status.",
            "# TYPE relay_jobs gauge",
        ]
        for row in conn.execute("SELECT provider, status, count(*) FROM jobs GROUP BY 1, 2"):
            lines.append(f'relay_jobs{{provider="{row[0]}",status="{row[1]}"}} {row[2]}')
        lines += ["# HELP relay_deliveries Deliveries by status.", "# TYPE relay_deliveries gauge"]
        for row in conn.execute("SELECT status, count(*) FROM deliveries GROUP BY 1"):
            lines.append(f'relay_deliveries{{status="{row[0]}"}} {row[1]}')
        lines += [
            "# HELP relay_subscriptions Subscriptions by status.",
            "# TYPE relay_subscriptions gauge",
        ]
        for row in conn.execute("SELECT status, count(*) FROM subscriptions GROUP BY 1"):
            lines.append(f'relay_subscriptions{{status="{row[0]}"}} {row[1]}')
        last = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
        lines += [
            "# HELP relay_events_total Events recorded (the last cursor).",
            "# TYPE relay_events_total counter",
            f"relay_events_total {last}",
        ]
        return lines

    lines = await relay.store.read(q) + relay.poller.stats.prometheus()
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def create_app(
    settings: Settings, *, clock: Callable[[], float] = time.time, workers: bool = True
) -> Starlette:
    """The ASGI app. With workers=False nothing polls or delivers (tests step them by hand)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        relay = await start(settings, clock)
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
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi.serve, methods=["GET"]),
            Mount(
                "/v1",
                routes=api.ROUTES + subscriptions.ROUTES,
                middleware=[Middleware(api.BearerAuth, tokens=tokens)],
            ),
        ],
        exception_handlers={ApiError: web.api_error, HTTPException: web.http_error},
        lifespan=lifespan,
    )
    # Callbacks are the ingest hot path: served ahead of Starlette's middleware and router.
    application.add_middleware(hooks.PixazoCallbacks, state=application.state)
    return application
