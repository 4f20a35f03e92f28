"""The /v1 routes: thin — parse, call the core, answer JSON."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import catalog, web
from service.errors import ApiError
from service.jobs import Status

if TYPE_CHECKING:
    from service.app import Relay

MAX_LIMIT = 500


class BearerAuth:
    """Require `Authorization: Bearer <token>` from RELAY_API_TOKENS (open when none is set)."""

    def __init__(self, app: ASGIApp, tokens: tuple[str, ...]) -> None:
        self.app = app
        self.tokens = tuple(t.encode() for t in tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens:
            scope.setdefault("state", {})["token_scope"] = "open"  # noqa: S105
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and given:
            for token in self.tokens:
                if hmac.compare_digest(given.strip(), token):
                    fingerprint = hashlib.sha256(token).hexdigest()[:16]
                    scope.setdefault("state", {})["token_scope"] = fingerprint
                    await self.app(scope, receive, send)
                    return
        error = ApiError(
            401,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
        response = web.JSON(error.body(), status_code=401, headers=error.headers)
        await response(scope, receive, send)


def _relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


def _int(
    request: Request, name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        top = f" and <= {maximum}" if maximum is not None else ""
        raise ApiError(400, "invalid_query", f"{name} must be >= {minimum}{top}, got {value}")
    return value


async def list_models(request: Request) -> Response:
    """GET /v1/models."""
    return web.JSON({"data": [m.describe() for m in catalog.MODELS.values()]})


async def create_job(request: Request) -> Response:
    """POST /v1/jobs."""
    relay = _relay(request)
    body = await web.read_json(request, relay.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 255:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 characters")
    dry_run = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
    scope = request.state.token_scope
    status, answer = await relay.submitter.submit(body, key, scope, dry_run)
    headers = {}
    if status == 202 and "id" in answer:
        headers["Location"] = f"/v1/jobs/{answer['id']}"
    return web.JSON(answer, status_code=status, headers=headers)


async def list_jobs(request: Request) -> Response:
    """GET /v1/jobs?status=&model=&limit=&cursor=."""
    relay = _relay(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in {str(s) for s in Status}:
        raise ApiError(
            400,
            "invalid_query",
            f"unknown status {status!r}",
            details={"allowed": [str(s) for s in Status]},
        )
    model = request.query_params.get("model") or None
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
    cursor = _int(request, "cursor", 0, 0) or None
    jobs = await relay.store.list_jobs(status=status, model=model, before=cursor, limit=limit)
    next_cursor = str(jobs[-1].seq) if len(jobs) == limit else None
    return web.JSON({"data": [j.public() for j in jobs], "next_cursor": next_cursor})


async def get_job(request: Request) -> Response:
    """GET /v1/jobs/{id}."""
    job = await _relay(request).store.get_job(request.path_params["id"])
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {request.path_params['id']!r}")
    return web.JSON(job.public())


async def job_events(request: Request) -> Response:
    """GET /v1/jobs/{id}/events?after=&limit=."""
    relay = _relay(request)
    job_id = request.path_params["id"]
    after = _int(request, "after", 0)
    limit = _int(request, "limit", 100, 1, MAX_LIMIT)
    events = await relay.store.events(job_id=job_id, after=after, limit=limit)
    if not events and await relay.store.get_job(job_id) is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return _page(events, limit, after)


def _page(events: list[Any], limit: int, after: int) -> Response:
    cursor = events[-1].id if events else after
    return web.JSON(
        {
            "data": [e.public() for e in events],
            "next_cursor": str(cursor),
            "has_more": len(events) == limit,
        }
    )


async def all_events(request: Request) -> Response:
    """GET /v1/events?after=&limit=&wait= (wait: long-poll seconds for new events)."""
    relay = _relay(request)
    after = _int(request, "after", 0)
    limit = _int(request, "limit", 100, 1, MAX_LIMIT)
    wait = _int(request, "wait", 0, 0, 60)
    waiter = relay.store.waiter("events")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        waiter.clear()  # before reading, so a commit in between still wakes the wait below
        events = await relay.store.events(after=after, limit=limit)
        remaining = deadline - asyncio.get_running_loop().time()
        if events or remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout=remaining)
    return _page(events, limit, after)


ROUTES = [
    Route("/models", list_models, methods=["GET"]),
    Route("/jobs", create_job, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{id}", get_job, methods=["GET"]),
    Route("/jobs/{id}/events", job_events, methods=["GET"]),
    Route("/events", all_events, methods=["GET"]),
]
