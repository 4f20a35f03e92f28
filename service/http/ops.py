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
    """Prometheus text (OpenMetrics when asked): this process's counters, the database's gauges."""
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

    # one read of the database per scrape, whichever process answers it
    counts = await relay.store.counts()
    body, content_type = relay.metrics.render(
        counts, relay.clock(), request.headers.get("accept", "")
    )
    return Response(body, media_type=content_type)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
