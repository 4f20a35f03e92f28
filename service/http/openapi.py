"""GET /openapi.json: an OpenAPI 3.1 document generated from the routes and what validates them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from service.http import callbacks, deps

ERROR_SCHEMA: deps.Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}
_ERRORS = {
    400: "The request is malformed: not strict JSON, or a bad query parameter",
    401: "A valid `Authorization: Bearer <token>` header is required",
    402: "The provider account has no balance left",
    403: "The callback token has expired",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is larger than RELAY_MAX_BODY_BYTES",
    422: "The body is JSON but not valid: every problem is named (the first 20)",
    429: "The provider is rate limiting the relay",
    502: "The provider failed or could not be reached",
    503: "A provider is not configured, or the storage refuses writes",
    504: "The provider did not answer in time",
}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
# Routes app.py serves itself; /v1 handlers declare theirs with deps.operation.
_BY_PATH: dict[tuple[str, str], deps.Operation] = {
    ("/healthz", "GET"): deps.Operation(
        "Liveness: the process answers", {200: ("Alive", _STATUS)}, auth=False, tags=("ops",)
    ),
    ("/readyz", "GET"): deps.Operation(
        "Readiness: the database answers and the workers run",
        {
            200: ("Ready", _STATUS),
            503: ("Not ready, with the problems", _STATUS),
        },
        auth=False,
        tags=("ops",),
    ),
    ("/metrics", "GET"): deps.Operation(
        "Prometheus metrics: this process's counters, the database's gauges",
        {200: ("Prometheus text (OpenMetrics when the Accept header asks for it)", None)},
        auth=False,
        tags=("ops",),
    ),
    ("/openapi.json", "GET"): deps.Operation(
        "This document", {200: ("OpenAPI 3.1", {"type": "object"})}, auth=False, tags=("ops",)
    ),
}
CALLBACK = deps.Operation(
    "A Pixazo callback; the signed token in the URL is its only credential",
    {
        200: (
            "Recorded before any fan-out",
            {
                "type": "object",
                "required": ["ok", "outcome"],
                "properties": {"ok": {"const": True}, "outcome": {"type": "string"}},
            },
        )
    },
    body=lambda: {"type": "object", "description": "Pixazo's status object"},
    errors=(403, 404, 409, 413),
    auth=False,
    tags=("callbacks",),
)


def routes(app_routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, method, endpoint) of every route, inside mounts too (HEAD left out)."""
    for route in app_routes:
        if isinstance(route, Mount):
            yield from routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield prefix + route.path, method, route.endpoint


# Routes whose success answer is not JSON.
_MEDIA = {
    "/metrics": "text/plain",
    "/v1/events/stream": "text/event-stream",
    "/v1/outputs/{job_id}/{n}": "application/octet-stream",
}


def _answer(description: str, schema: deps.Schema | None, media: str | None = None) -> deps.Schema:
    if schema is None:
        if media is None:
            return {"description": description}
        return {"description": description, "content": {media: {"schema": {}}}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(path: str, method: str, spec: deps.Operation) -> deps.Schema:
    out: deps.Schema = {"summary": spec.summary, "tags": list(spec.tags)}
    out["operationId"] = (
        f"{method.lower()}{path.replace('/', '_').replace('{', '').replace('}', '')}"
    )
    parameters: list[deps.Schema] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(path)
    ]
    parameters += [
        {"name": q.name, "in": "query", "description": q.description, "schema": q.schema()}
        for q in spec.query
    ]
    parameters += [
        {"name": name, "in": "header", "schema": schema} for name, schema in spec.headers.items()
    ]
    if parameters:
        out["parameters"] = parameters
    if spec.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": spec.body()}},
        }
    media = _MEDIA.get(path)
    answers = {str(k): _answer(d, s, media) for k, (d, s) in spec.answers.items()}
    errors = set(spec.errors)
    if spec.query or spec.body is not None or spec.headers:
        errors.add(400)
    if spec.body is not None:
        errors.add(413)
    if spec.auth:
        errors |= {401, 503}
        out["security"] = [{"bearer": []}]
    for status in sorted(errors):
        answers.setdefault(str(status), _answer(_ERRORS[status], ERROR_SCHEMA))
    out["responses"] = answers
    return out


def _path_names(path: str) -> list[str]:
    return [part[1:-1].partition(":")[0] for part in path.split("/") if part.startswith("{")]


def document(app_routes: list[BaseRoute]) -> deps.Schema:
    """The OpenAPI document of these routes and the Pixazo callback middleware."""
    paths: dict[str, dict[str, deps.Schema]] = {}
    for path, method, endpoint in routes(app_routes):
        spec = deps.OPERATIONS.get(endpoint) or _BY_PATH.get((path, method))
        if spec is not None:
            paths.setdefault(path, {})[method.lower()] = _operation(path, method, spec)
    callback = callbacks.PREFIX + "{token}"
    paths[callback] = {"post": _operation(callback, "POST", CALLBACK)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "upscale-relay",
            "version": "1",
            "description": (
                "Submit AI upscaling jobs, receive signed callbacks, record every event and"
                f" forward signed notifications. JSON bodies are strict: UTF-8, no NaN or"
                f" Infinity, no lone surrogates, at most {deps.MAX_DEPTH} levels deep."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


async def serve(request: Request) -> Response:
    """GET /openapi.json (built once per app)."""
    state = request.app.state
    built = getattr(state, "openapi", None)
    if built is None:
        built = document(request.app.routes)
        state.openapi = built
    return deps.JSON(built)
