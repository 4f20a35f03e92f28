"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

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


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
