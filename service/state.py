"""The lifespan state every route and worker receives: built once by `app.start`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service import netguard, outbound, outbox, owners
from service.archive.present import Presenter
from service.archive.worker import Archiver
from service.config import Settings
from service.delivery import Deliverer
from service.metrics import Metrics
from service.poller import Poller
from service.providers.base import Provider
from service.store import Store
from service.submit import Submitter
from service.tokens import Tokens


@dataclass(slots=True)
class Relay:
    """Everything a request handler or worker needs, built once by the lifespan."""

    settings: Settings
    store: Store
    tokens: Tokens
    submitter: Submitter
    poller: Poller
    deliverer: Deliverer
    webhook_secret: outbox.ServiceSecret
    providers: dict[str, Provider]
    clients: list[outbound.Client]
    # Every lookup of a user-chosen target goes through this (tests inject a fake):
    # `netguard.check_target(url, allow_private=..., resolve=relay.resolve)`.
    resolve: netguard.Resolver = netguard.system_resolve
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    heartbeat: owners.Heartbeat | None = None
    clock: Callable[[], float] = time.time
    # set when a drain begins (SIGTERM, or the lifespan's end): the loop time it must end by
    drain_deadline: float | None = None
    metrics: Metrics = field(default_factory=Metrics)
    # RELAY_ARCHIVE: copies outputs of succeeded jobs (None: archiving is off)
    archiver: Archiver | None = None
    presenter: Presenter | None = None
