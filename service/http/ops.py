"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import ApiError, StorageUnavailable
from service.http import deps

if TYPE_CHECKING:
    from service.state import Relay


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return deps.JSON({"status": "ok"})


READY_WRITE_TIMEOUT = 2.0


async def readyz(request: Request) -> Response:
    """Readiness: the database answers and takes a write, and the workers run."""
    relay: Relay | None = getattr(request.app.state, "relay", None)
    problems: list[str] = []
    if relay is None:
        problems.append("starting")
    else:
        try:
            await relay.store.ping()
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
        return deps.JSON({"status": "unavailable", "problems": problems}, status_code=503)
    return deps.JSON({"status": "ready"})


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

    counts = await relay.store.counts()
    lines = ["# HELP relay_jobs Jobs by provider and status.", "# TYPE relay_jobs gauge"]
    # sorted: the same text whatever order the engine grouped the rows in
    for (provider, status), n in sorted(counts.jobs.items()):
        lines.append(f'relay_jobs{{provider="{provider}",status="{status}"}} {n}')
    lines += ["# HELP relay_deliveries Deliveries by status.", "# TYPE relay_deliveries gauge"]
    for status, n in sorted(counts.deliveries.items()):
        lines.append(f'relay_deliveries{{status="{status}"}} {n}')
    lines += [
        "# HELP relay_subscriptions Subscriptions by status.",
        "# TYPE relay_subscriptions gauge",
    ]
    for status, n in sorted(counts.subscriptions.items()):
        lines.append(f'relay_subscriptions{{status="{status}"}} {n}')
    lines += [
        "# HELP relay_callbacks_dropped_total Callbacks counted but not stored (per-job cap).",
        "# TYPE relay_callbacks_dropped_total counter",
        f"relay_callbacks_dropped_total {counts.callbacks_dropped}",
        "# HELP relay_events_total Events recorded (the last cursor).",
        "# TYPE relay_events_total counter",
        f"relay_events_total {counts.last_event_id}",
    ]
    lines += relay.poller.stats.prometheus()
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
