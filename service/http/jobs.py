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

from service import catalog, notification
from service.errors import ApiError
from service.http import deps
from service.jobs import Status

if TYPE_CHECKING:
    pass

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
        response = deps.JSON(error.body(), status_code=401, headers=error.headers)
        await response(scope, receive, send)


LIMIT = deps.Query("limit", "How many items to return.", default=50, minimum=1, maximum=MAX_LIMIT)
EVENT_LIMIT = deps.Query(
    "limit", "How many events to return.", default=100, minimum=1, maximum=MAX_LIMIT
)
CURSOR = deps.Query("cursor", "The `next_cursor` of the previous page; items before it.", default=0)
AFTER = deps.Query("after", "An event id: only events after it are returned.", default=0)
WAIT = deps.Query(
    "wait", "Seconds to wait for a new event when there is none yet.", default=0, maximum=60
)
STATUS = deps.Query("status", "Only jobs in this status.", "string", enum=tuple(map(str, Status)))
MODEL = deps.Query("model", "Only jobs of this model.", "string")
DRY_RUN = deps.Query(
    "dry_run", "Validate (and ask the provider's cost) without creating a job.", "boolean"
)

IDEMPOTENCY_KEY: deps.Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": "A repeat with the same key returns the first answer and never submits twice.",
}
_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}
_TIME = {"type": "string", "description": "ISO 8601 UTC time, like 2026-11-21T10:00:00Z"}
_NULL_TIME = {"type": ["string", "null"], "description": _TIME["description"]}
JOB_SCHEMA: deps.Schema = {
    "type": "object",
    "required": [
        *notification.DATA_KEYS,
        "input",
        "webhook",
        "webhook_events_filter",
        "finished_at",
    ],
    "properties": {
        **notification.DATA_PROPERTIES,
        "model": {"type": "string", "enum": list(catalog.MODELS)},
        "status": {"type": "string", "enum": [str(s) for s in Status]},
        "provider": {"type": "string", "enum": ["pixazo", "scenario"]},
        "finished_at": _NULL_TIME,
        "input": {"type": "object"},
        "webhook": _NULL_STR,
        "webhook_events_filter": {"type": ["array", "null"], "items": _STR},
        "deferred": {"type": "boolean", "description": "held back by the in-flight cap"},
    },
}
EVENT_SCHEMA: deps.Schema = {
    "type": "object",
    "required": ["id", "job_id", "type", "source", "created_at", "data"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "job_id": _NULL_STR,
        "type": _STR,
        "source": _STR,
        "created_at": _TIME,
        "data": {"type": "object"},
    },
}
EVENT_PAGE: deps.Schema = {
    "type": "object",
    "required": ["data", "next_cursor", "has_more"],
    "properties": {
        "data": {"type": "array", "items": EVENT_SCHEMA},
        "next_cursor": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "Pass it as `after` next time (the last event's id, or `after`).",
        },
        "has_more": {
            "type": "boolean",
            "description": "More events follow this page already: ask again without waiting.",
        },
    },
}


def page_of(item: deps.Schema) -> deps.Schema:
    """A cursor page of `item`s: `next_cursor` is null on the last page."""
    return {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"], "pattern": "^[0-9]+$"},
        },
    }


DRY_RUN_SCHEMA: deps.Schema = {
    "type": "object",
    "required": ["dry_run", "model", "provider", "input", "cost"],
    "properties": {
        "dry_run": {"const": True},
        "model": _STR,
        "provider": _STR,
        "input": {"type": "object"},
        "cost": {},
        "provider_answer": {},
    },
}


@deps.operation(
    deps.Operation(
        "The models and their parameters",
        {200: ("The models", {"type": "object", "properties": {"data": {"type": "array"}}})},
        tags=("jobs",),
    )
)
async def list_models(request: Request) -> Response:
    """GET /v1/models."""
    return deps.JSON({"data": [m.describe() for m in catalog.MODELS.values()]})


@deps.operation(
    deps.Operation(
        "Submit a job",
        {
            202: ("The job, created (or the first answer to this Idempotency-Key)", JOB_SCHEMA),
            200: ("With dry_run: the validated input and the provider's cost", DRY_RUN_SCHEMA),
        },
        query=(DRY_RUN,),
        body=catalog.request_schema,
        errors=(402, 409, 413, 422, 429, 502, 503, 504),
        headers={"Idempotency-Key": IDEMPOTENCY_KEY},
        tags=("jobs",),
    )
)
async def create_job(request: Request) -> Response:
    """POST /v1/jobs."""
    relay = deps.relay_of(request)
    body = await deps.read_json(request, relay.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    if key is not None and not catalog.conforms(key, IDEMPOTENCY_KEY):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 characters")
    dry_run = bool(DRY_RUN.read(request))
    scope = request.state.token_scope
    status, answer = await relay.submitter.submit(body, key, scope, dry_run)
    headers = {}
    if status == 202 and "id" in answer:
        headers["Location"] = f"/v1/jobs/{answer['id']}"
    return deps.JSON(answer, status_code=status, headers=headers)


@deps.operation(
    deps.Operation(
        "The jobs, newest first",
        {200: ("A page of jobs", page_of(JOB_SCHEMA))},
        query=(STATUS, MODEL, LIMIT, CURSOR),
        tags=("jobs",),
    )
)
async def list_jobs(request: Request) -> Response:
    """GET /v1/jobs?status=&model=&limit=&cursor=."""
    relay = deps.relay_of(request)
    status = STATUS.read(request)
    model = MODEL.read(request)
    limit = LIMIT.read(request)
    cursor = CURSOR.read(request) or None
    # one more than asked: a cursor only when another page really follows
    jobs = await relay.store.list_jobs(status=status, model=model, before=cursor, limit=limit + 1)
    jobs, more = jobs[:limit], len(jobs) > limit
    next_cursor = str(jobs[-1].seq) if more else None
    return deps.JSON({"data": [j.public() for j in jobs], "next_cursor": next_cursor})


@deps.operation(
    deps.Operation("One job", {200: ("The job", JOB_SCHEMA)}, errors=(404,), tags=("jobs",))
)
async def get_job(request: Request) -> Response:
    """GET /v1/jobs/{id}."""
    relay = deps.relay_of(request)
    job = await relay.store.get_job(request.path_params["id"])
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {request.path_params['id']!r}")
    shown = job.public()
    if relay.presenter is not None and job.status is Status.SUCCEEDED and job.outputs:
        # archived outputs: their state, and a fresh archive_url (S3: signed now)
        rows = await relay.store.archives(job.id)
        shown["outputs"] = await relay.presenter.job_outputs(job.id, job.outputs, rows)
    return deps.JSON(shown)


@deps.operation(
    deps.Operation(
        "One job's events, oldest first",
        {200: ("A page of events", EVENT_PAGE)},
        query=(AFTER, EVENT_LIMIT),
        errors=(404,),
        tags=("events",),
    )
)
async def job_events(request: Request) -> Response:
    """GET /v1/jobs/{id}/events?after=&limit=."""
    relay = deps.relay_of(request)
    job_id = request.path_params["id"]
    after = AFTER.read(request)
    limit = EVENT_LIMIT.read(request)
    events = await relay.store.events(job_id=job_id, after=after, limit=limit + 1)
    if not events and await relay.store.get_job(job_id) is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return _page(events, limit, after)


def _page(events: list[Any], limit: int, after: int) -> Response:
    """A page of at most `limit` of `events` (read with one more, so `has_more` is exact)."""
    more = len(events) > limit
    events = events[:limit]
    cursor = events[-1].id if events else after
    return deps.JSON(
        {
            "data": [e.public() for e in events],
            "next_cursor": str(cursor),
            "has_more": more,
        }
    )


@deps.operation(
    deps.Operation(
        "The global event log, a cursor for consumers that pull",
        {200: ("A page of events", EVENT_PAGE)},
        query=(AFTER, EVENT_LIMIT, WAIT),
        tags=("events",),
    )
)
async def all_events(request: Request) -> Response:
    """GET /v1/events?after=&limit=&wait= (wait: long-poll seconds for new events)."""
    relay = deps.relay_of(request)
    after = AFTER.read(request)
    limit = EVENT_LIMIT.read(request)
    wait = WAIT.read(request)
    waiter = relay.store.waiter("events")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        waiter.clear()  # before reading, so a commit in between still wakes the wait below
        events = await relay.store.events(after=after, limit=limit + 1)
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
