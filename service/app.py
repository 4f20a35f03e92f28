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

from service import ledger, logs, netguard, outbox, owners, retention
from service.archive import open_backend
from service.archive import retention as archive_retention
from service.archive import units as archive_units
from service.archive.folder import FolderBackend
from service.archive.present import Presenter
from service.archive.worker import Archiver
from service.config import Settings
from service.delivery import Deliverer
from service.errors import ApiError, StorageUnavailable
from service.http import (
    callbacks,
    deliveries,
    deps,
    jobs,
    openapi,
    ops,
    outputs,
    stream,
    subscriptions,
)
from service.metrics import Metrics, install
from service.poller import Poller
from service.providers import build as build_providers
from service.state import Relay
from service.store import Tx, open_store
from service.submit import Submitter
from service.tokens import Tokens
from service.ui import entry as ui_entry

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Who holds a lease: host, process and a random suffix (a restarted process is new)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def start(
    settings: Settings,
    clock: Callable[[], float],
    resolve: netguard.Resolver = netguard.system_resolve,
    metrics: Metrics | None = None,
) -> Relay:
    """Open the store, resolve the secret, build providers and workers (not started)."""
    metrics = metrics or Metrics(streams=stream.open_streams)
    store = await open_store(settings.database, pool=settings.database_pool)
    secret = (
        str(settings.secret)
        if settings.secret is not None
        else await store.meta_get_or_set("relay_secret", lambda: secrets.token_urlsafe(32))
    )
    tokens = Tokens(secret, settings.callback_max_age)

    backend = open_backend(settings)
    plan = None
    if backend is not None:
        # a local folder is served by the relay (GET /v1/outputs); a bucket signs its URLs
        served = isinstance(backend, FolderBackend)
        plan = archive_units.Plan(settings.archive_mode, settings.public_url, served)

    async def first(tx: Tx) -> outbox.ServiceSecret:
        install(tx, metrics)  # the units that end jobs observe their duration
        archive_units.install(tx, plan)  # the units that end jobs add their outputs' copies
        return await outbox.service_secret(tx)

    webhook_secret = await store.write(first)
    if backend is None:
        # copies left pending by an archive since turned off: nothing may wait for them
        owner_, now_ = f"{owner_id()}:archive-off", clock()
        while await store.write(lambda tx: archive_units.abandon(tx, owner_, now_)):
            pass
    ssl_context = ssl.create_default_context()
    providers, clients = build_providers(settings, ssl_context, resolve, metrics.provider_calls)
    metrics.set_providers(providers)
    owner = owner_id()
    # registered before anything can take a lease in this process's name
    heartbeat = owners.Heartbeat(store, owner, clock)
    await heartbeat.register()
    submitter = Submitter(store, providers, settings, tokens, clock, resolve, owner=owner)
    poller = Poller(
        store, providers, settings, clock, owner, resume=submitter.resume, metrics=metrics
    )
    deliverer = Deliverer(
        store, settings, clock, owner, webhook_secret, resolve=resolve, metrics=metrics
    )
    archiver = presenter = None
    if backend is not None and plan is not None:
        archiver = Archiver(store, settings, backend, clock, owner, resolve=resolve)
        presenter = Presenter(backend, plan, settings.archive_url_ttl)
        deliverer.present = presenter.event
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
        metrics=metrics,
        archiver=archiver,
        presenter=presenter,
    )


def begin_drain(relay: Relay) -> None:
    """Claim no more work; what is under way has RELAY_SHUTDOWN_GRACE from now to finish."""
    if relay.drain_deadline is None:
        relay.drain_deadline = asyncio.get_running_loop().time() + relay.settings.shutdown_grace
    relay.poller.stop_claiming()
    relay.deliverer.stop_claiming()
    if relay.archiver is not None:
        relay.archiver.stop_claiming()
    relay.store.waiter("events").set()  # event streams see the drain now and end


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
    # the heartbeat beats to the end; a prune pass has nothing to finish (each batch commits)
    workers = [t for t in relay.tasks if t.get_name() not in ("heartbeat", "retention")]
    # the worker loops return as soon as their current claim is committed
    if workers:
        await asyncio.wait(workers, timeout=max(0.1, deadline - loop.time()))
    cancelled = await asyncio.gather(
        relay.poller.drain(deadline),
        relay.deliverer.drain(deadline),
    )
    if relay.archiver is not None:
        await relay.archiver.drain(deadline)
    for task in relay.tasks:
        task.cancel()
    for task in relay.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    owner, now = relay.heartbeat.owner if relay.heartbeat else "", relay.clock()

    async def release(tx: Tx) -> tuple[int, int]:
        jobs, deliveries = (
            await ledger.release(tx, owner, now),
            await outbox.release(tx, owner, now),
        )
        await tx.archives.release(owner, now)
        await owners.unregister(tx, owner)
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
    if relay.archiver is not None:
        await relay.archiver.aclose()
    for client in relay.clients:
        await client.aclose()


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

    # one registry per app: several apps in one interpreter (the tests) count apart
    metrics = Metrics(streams=stream.open_streams)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        logs.redact_access_log()
        relay = await start(settings, clock, resolve, metrics)
        app.state.relay = relay
        if relay.heartbeat is not None:
            relay.tasks.append(asyncio.create_task(relay.heartbeat.run_forever(), name="heartbeat"))
        if workers:
            relay.tasks.append(asyncio.create_task(relay.poller.run_forever(), name="poller"))
            relay.tasks.append(asyncio.create_task(relay.deliverer.run_forever(), name="deliverer"))
            if relay.archiver is not None:
                archiving = relay.archiver.run_forever()
                relay.tasks.append(asyncio.create_task(archiving, name="archiver"))
            archive = None
            if relay.archiver is not None and settings.archive_retention_days is not None:
                store, backend = relay.store, relay.archiver.backend
                archive = (
                    lambda before, now: archive_retention.expire(store, backend, before, now),
                    settings.archive_retention_days,
                )
            if settings.retention_days is not None or archive is not None:
                pruning = retention.run_forever(
                    relay.store, settings.retention_days, clock, archive
                )
                relay.tasks.append(asyncio.create_task(pruning, name="retention"))
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
                routes=jobs.ROUTES
                + stream.ROUTES
                + subscriptions.ROUTES
                + deliveries.ROUTES
                + outputs.ROUTES,
                middleware=[Middleware(jobs.BearerAuth, tokens=tokens)],
            ),
            ui_entry.mount(),  # the dashboard: its own session sign-in, never the API's bearer
        ],
        exception_handlers={
            ApiError: deps.api_error,
            StorageUnavailable: deps.api_error,  # 503 storage_unavailable, in the envelope
            HTTPException: deps.http_error,
        },
        lifespan=lifespan,
    )
    # Callbacks are the ingest hot path: served ahead of Starlette's middleware and router.
    application.add_middleware(callbacks.PixazoCallbacks, state=application.state, metrics=metrics)
    return application
