"""create_app(settings) -> Starlette; the lifespan opens the store, clients and workers."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
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

from service import (
    api,
    hooks,
    ledger,
    logs,
    netguard,
    openapi,
    outbound,
    outbox,
    owners,
    subscriptions,
    web,
)
from service.config import Settings
from service.delivery import Deliverer
from service.errors import ApiError, StorageUnavailable
from service.poller import Poller
from service.providers.base import Provider
from service.providers.pixazo import Pixazo
from service.providers.scenario import Scenario
from service.store import Store, Tx
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
    webhook_secret: outbox.ServiceSecret
    providers: dict[str, Provider]
    clients: list[httpx.AsyncClient]
    # Every lookup of a user-chosen target goes through this (tests inject a fake):
    # `netguard.check_target(url, allow_private=..., resolve=relay.resolve)`.
    resolve: netguard.Resolver = netguard.system_resolve
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    heartbeat: owners.Heartbeat | None = None
    clock: Callable[[], float] = time.time
    # set when a drain begins (SIGTERM, or the lifespan's end): the loop time it must end by
    drain_deadline: float | None = None


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
    tokens = hooks.Tokens(secret, settings.callback_max_age)
    webhook_secret = await store.write(outbox.service_secret)
    store.hooks.append(outbox.Fanout())
    ssl_context = ssl.create_default_context()
    clients: list[httpx.AsyncClient] = []
    providers: dict[str, Provider] = {}
    if settings.pixazo_api_key is not None:
        client = outbound.provider_client(settings.provider_timeout, ssl_context)
        clients.append(client)
        providers["pixazo"] = Pixazo(client, settings.pixazo_base_url, str(settings.pixazo_api_key))
    if settings.scenario_api_key is not None and settings.scenario_api_secret is not None:
        client = outbound.provider_client(settings.provider_timeout, ssl_context)
        # Media URLs are the user's: fetched through the guarded client, never the provider's.
        media_client = outbound.guarded_client(
            settings.provider_timeout,
            ssl_context,
            allow_private=settings.allow_private_targets,
            resolve=resolve,
        )
        clients += [client, media_client]
        providers["scenario"] = Scenario(
            client,
            settings.scenario_base_url,
            str(settings.scenario_api_key),
            str(settings.scenario_api_secret),
            settings.scenario_project_id,
            media_client=media_client,
            allow_private_media=settings.allow_private_targets,
            resolve=resolve,
        )
    owner = owner_id()
    # registered before anything can take a lease in this process's name
    heartbeat = owners.Heartbeat(store, owner, clock)
    await heartbeat.register()
    submitter = Submitter(store, providers, settings, tokens, clock, resolve, owner=owner)
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
        heartbeat=heartbeat,
        clock=clock,
    )


def begin_drain(relay: Relay) -> None:
    """Claim no more work; what is under way has RELAY_SHUTDOWN_GRACE from now to finish."""
    if relay.drain_deadline is None:
        relay.drain_deadline = asyncio.get_running_loop().time() + relay.settings.shutdown_grace
    relay.poller.stop_claiming()
    relay.deliverer.stop_claiming()


def drain_soon(application: Starlette, loop: asyncio.AbstractEventLoop) -> None:
    """Begin the drain from a signal handler (SIGTERM) on the app's `loop`; the lifespan's
    end finishes it. Safe to call at any time, also before the lifespan has started."""

    def begin() -> None:
        relay: Relay | None = getattr(application.state, "relay", None)
        if relay is not None:
            begin_drain(relay)

    with contextlib.suppress(RuntimeError):  # the loop is closed already
        loop.call_soon_threadsafe(begin)


async def stop(relay: Relay) -> None:
    """Drain, then close: claim nothing more, let polls and deliveries under way finish
    within the grace, release what is left and remove this process's owner row (so the next
    process takes it at once), then close clients and the store."""
    loop = asyncio.get_running_loop()
    begin_drain(relay)
    deadline = relay.drain_deadline or loop.time()
    workers = [t for t in relay.tasks if t.get_name() != "heartbeat"]
    # the worker loops return as soon as their current claim is committed
    if workers:
        await asyncio.wait(workers, timeout=max(0.1, deadline - loop.time()))
    cancelled = await asyncio.gather(
        relay.poller.drain(deadline),
        relay.deliverer.drain(deadline),
    )
    for task in relay.tasks:
        task.cancel()
    for task in relay.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    owner, now = relay.heartbeat.owner if relay.heartbeat else "", relay.clock()

    def release(tx: Tx) -> tuple[int, int]:
        jobs, deliveries = ledger.release(tx, owner, now), outbox.release(tx, owner, now)
        owners.unregister(tx, owner)
        return jobs, deliveries

    try:
        released = await relay.store.write(release)
    except StorageUnavailable as exc:
        log.warning("leases not released (they free up when the heartbeat ages): %s", exc.reason)
    else:
        if any(released) or any(cancelled):
            log.info(
                "stopped: %d polls and %d deliveries cut short by RELAY_SHUTDOWN_GRACE; "
                "released %d job and %d delivery leases",
                *cancelled,
                *released,
            )
    # The store closes before the HTTP clients: a submission still waiting for its provider
    # must not record the closed client as the provider's failure. Its job stays released,
    # and the next process settles it as submit_interrupted.
    await relay.store.close()
    await relay.deliverer.aclose()
    for client in relay.clients:
        await client.aclose()


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return web.JSON({"status": "ok"})


READY_WRITE_TIMEOUT = 2.0


async def readyz(request: Request) -> Response:
    """Readiness: the database answers and takes a write, and the workers run."""
    relay: Relay | None = getattr(request.app.state, "relay", None)
    problems: list[str] = []
    if relay is None:
        problems.append("starting")
    else:
        try:
            await relay.store.read(lambda conn: conn.execute("SELECT 1").fetchone())
            # a probe write, committed: "ready" must mean that writes succeed now
            await asyncio.wait_for(relay.store.probe(), READY_WRITE_TIMEOUT)
        except StorageUnavailable as exc:
            problems.append(f"database: {exc.reason}")
        except TimeoutError:
            problems.append(f"database: a write took over {READY_WRITE_TIMEOUT:g} s")
        except Exception as exc:
            problems.append(f"database: {exc}")
        problems.extend(f"worker {t.get_name()} stopped" for t in relay.tasks if t.done())
    if problems:
        return web.JSON({"status": "unavailable", "problems": problems}, status_code=503)
    return web.JSON({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text: jobs, deliveries and subscriptions by status, and the event count."""
    relay: Relay = request.app.state.relay
    token = relay.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (
            scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), str(token).encode())
        ):
            raise ApiError(
                401,
                "unauthorized",
                "`Authorization: Bearer <RELAY_METRICS_TOKEN>` is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

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
        dropped = conn.execute("SELECT sum(callbacks_dropped) FROM jobs").fetchone()[0] or 0
        lines += [
            "# HELP relay_callbacks_dropped_total Callbacks counted but not stored (per-job cap).",
            "# TYPE relay_callbacks_dropped_total counter",
            f"relay_callbacks_dropped_total {dropped}",
        ]
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
        if relay.heartbeat is not None:
            relay.tasks.append(asyncio.create_task(relay.heartbeat.run_forever(), name="heartbeat"))
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
        exception_handlers={
            ApiError: web.api_error,
            StorageUnavailable: web.api_error,  # 503 storage_unavailable, in the envelope
            HTTPException: web.http_error,
        },
        lifespan=lifespan,
    )
    # Callbacks are the ingest hot path: served ahead of Starlette's middleware and router.
    application.add_middleware(hooks.PixazoCallbacks, state=application.state)
    return application
