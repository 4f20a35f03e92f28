"""The /v1 routes for subscriptions, the delivery log and the webhook secret."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import api, catalog, netguard, notify, outbox, web
from service.api import CURSOR, LIMIT
from service.catalog import Problem
from service.errors import ApiError
from service.submit import invalid

if TYPE_CHECKING:
    from service.app import Relay

EVENT_NAMES = (*outbox.NOTIFY_TYPES, "job.*")
DELIVERY_STATUSES = ("pending", "succeeded", "failed", "canceled")
MAX_URL = catalog.MAX_URL
MAX_EVENTS = 16
MAX_DESCRIPTION = 500


@dataclass(frozen=True, slots=True)
class Field:
    """A subscription field: its JSON Schema (checked here, shown in OpenAPI) and the problem."""

    schema: web.Schema
    problem: str


_FILTER = {
    "type": ["object", "null"],
    "description": "Deliver only jobs of these models and/or with this metadata.",
    "properties": {
        "models": {"type": "array", "items": {"type": "string", "enum": list(catalog.MODELS)}},
        "metadata": catalog.METADATA_SCHEMA,
    },
    "additionalProperties": False,
}
# One table: _check_fields validates with it and the OpenAPI document is generated from it.
FIELDS: dict[str, Field] = {
    "url": Field(
        {"type": "string", "maxLength": MAX_URL, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
        f"must be an http(s) URL of at most {MAX_URL} characters",
    ),
    "kind": Field(
        {"type": "string", "enum": list(notify.KINDS), "default": "webhook"},
        f"must be one of {', '.join(notify.KINDS)}",
    ),
    "events": Field(
        {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_EVENTS,
            "items": {"type": "string", "enum": list(EVENT_NAMES)},
            "default": list(outbox.TERMINAL_TYPES),
        },
        f"must be a non-empty array of at most {MAX_EVENTS} of {', '.join(EVENT_NAMES)}",
    ),
    "filter": Field(_FILTER, "must be an object with `models` and/or `metadata`"),
    "template": Field(
        {"type": ["string", "null"], "maxLength": notify.MAX_TEMPLATE_CHARS},
        f"must be a string of at most {notify.MAX_TEMPLATE_CHARS} characters, or null",
    ),
    "description": Field(
        {"type": ["string", "null"], "maxLength": MAX_DESCRIPTION},
        f"must be a string of at most {MAX_DESCRIPTION} characters",
    ),
    "paused": Field({"type": "boolean"}, "must be true or false"),
    "rate_per_second": Field(
        {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1000},
        "must be a number in (0, 1000], or null",
    ),
    "max_in_flight": Field(
        {"type": "integer", "minimum": 1, "maximum": 64}, "must be an integer from 1 to 64"
    ),
}


def body_schema(*, creating: bool) -> web.Schema:
    """The JSON Schema of a POST (creating) or PATCH subscription body."""
    fields = FIELDS if creating else {k: v for k, v in FIELDS.items() if k != "kind"}
    out: web.Schema = {
        "type": "object",
        "properties": {k: f.schema for k, f in fields.items()},
        "additionalProperties": False,
    }
    if creating:
        out["required"] = ["url"]
        out["examples"] = [{"url": "https://hooks.example/relay", "events": ["job.succeeded"]}]
    return out


DELIVERY_STATUS = web.Query(
    "status", "Only deliveries in this status.", "string", enum=DELIVERY_STATUSES
)
SUBSCRIPTION_ID = web.Query("subscription_id", "Only this subscription's deliveries.", "string")
JOB_ID = web.Query("job_id", "Only this job's deliveries.", "string")
_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}
SUBSCRIPTION_SCHEMA: web.Schema = {
    "type": "object",
    "required": [
        "id",
        "url",
        "kind",
        "events",
        "filter",
        "template",
        "description",
        "status",
        "paused_reason",
        "rate_per_second",
        "max_in_flight",
        "failing_since",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": _STR,
        **{k: f.schema for k, f in FIELDS.items() if k not in ("paused", "events")},
        "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_NAMES)}},
        "status": _STR,
        "paused_reason": _NULL_STR,
        "failing_since": _NULL_STR,
        "created_at": _STR,
        "updated_at": _STR,
        "secret": {"type": "string", "pattern": "^whsec_"},
        "previous_secret_expires_at": _STR,
    },
}
SECRET_SCHEMA: web.Schema = {
    "type": "object",
    "required": ["secret"],
    "properties": {
        "secret": {"type": "string", "pattern": "^whsec_"},
        "previous_secret_expires_at": _STR,
    },
}
_ATTEMPT = {
    "type": "object",
    "properties": {
        "at": _STR,
        "status_code": {"type": ["integer", "null"]},
        "latency_ms": {"type": "number"},
        "response": _NULL_STR,
        "error": _NULL_STR,
    },
}
DELIVERY_SCHEMA: web.Schema = {
    "type": "object",
    "required": ["id", "subscription_id", "job_id", "event_id", "event_type", "kind", "status"],
    "properties": {
        "id": _STR,
        "subscription_id": _NULL_STR,
        "job_id": _NULL_STR,
        "event_id": {"type": "integer"},
        "event_type": _STR,
        "kind": _STR,
        "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt_at": _NULL_STR,
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": _NULL_STR,
        "created_at": _STR,
        "updated_at": _STR,
        "delivered_at": _NULL_STR,
        "url": _STR,
        "attempt_log": {"type": "array", "items": _ATTEMPT},
    },
}
_TAGS = ("subscriptions",)


def _relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


async def _check_fields(
    body: Any,
    *,
    creating: bool,
    kind: str | None,
    allow_private: bool,
    resolve: netguard.Resolver | None = None,
) -> tuple[dict[str, Any], list[Problem]]:
    """Validate a subscription body (whole for POST, partial for PATCH)."""
    if not isinstance(body, dict):
        return {}, [Problem("body", "must be a JSON object")]
    problems = [Problem(k, "unknown field") for k in body if k not in FIELDS]
    out: dict[str, Any] = {}
    if creating:
        kind = body.get("kind", "webhook")
        out["kind"] = kind
        out["events"] = list(outbox.TERMINAL_TYPES)
        if "url" not in body:
            problems.append(Problem("url", "is required"))
    elif "kind" in body:
        # PATCH bodies have no `kind` (the route drops one equal to the subscription's own)
        problems.append(Problem("kind", "cannot be changed; create a new subscription"))
    for name, spec in FIELDS.items():
        if name not in body:
            continue
        value = body[name]
        if name == "template" and value is not None and kind == "webhook":
            problems.append(Problem(name, "webhook bodies are fixed; templates are for chat"))
        elif name == "template" and isinstance(value, str):
            out[name] = value  # validate_template checks its length first, then its syntax
        elif name == "filter" and not catalog.conforms(value, spec.schema):
            problems.extend(_check_filter(value) or [Problem(name, spec.problem)])
        elif name == "events" and isinstance(value, list) and 0 < len(value) <= MAX_EVENTS:
            bad = [e for e in value if e not in EVENT_NAMES]
            if bad:
                known = ", ".join(EVENT_NAMES)
                problems.append(Problem(name, f"unknown {str(bad)[:200]}; known: {known}"))
            else:
                out[name] = list(dict.fromkeys(value))
        elif not catalog.conforms(value, spec.schema):
            problems.append(Problem(name, spec.problem))
        else:
            out[name] = value
    if isinstance(out.get("url"), str):
        try:
            await netguard.check_target(out["url"], allow_private=allow_private, resolve=resolve)
        except netguard.TargetRefused as exc:
            problems.append(Problem("url", str(exc)))
    if isinstance(out.get("template"), str):
        problems.extend(Problem("template", p) for p in notify.validate_template(out["template"]))
    return out, problems


def _check_filter(value: Any) -> list[Problem]:
    """Named problems with a filter that does not conform (empty if none can be named)."""
    if not isinstance(value, dict):
        return []
    problems = [
        Problem(f"filter.{k}", "unknown field") for k in value if k not in ("models", "metadata")
    ]
    models = value.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            problems.append(Problem("filter.models", "must be an array of model ids"))
        else:
            problems.extend(
                Problem("filter.models", f"unknown model {m[:100]!r}")
                for m in models
                if m not in catalog.MODELS
            )
    metadata = value.get("metadata")
    if metadata is not None:
        problems.extend(
            Problem("filter." + p.field, p.message) for p in catalog.validate_metadata(metadata)
        )
    return problems


async def _get(relay: Relay, sub_id: str) -> outbox.Subscription:
    sub = await relay.store.read(lambda conn: outbox.get_subscription(conn, sub_id))
    if sub is None:
        raise ApiError(404, "subscription_not_found", f"no subscription {sub_id!r}")
    return sub


@web.operation(
    web.Operation(
        "Subscribe a URL to job events",
        {201: ("The subscription; a webhook's carries its secret", SUBSCRIPTION_SCHEMA)},
        body=lambda: body_schema(creating=True),
        errors=(413, 422),
        tags=_TAGS,
    )
)
async def create(request: Request) -> Response:
    """POST /v1/subscriptions."""
    relay = _relay(request)
    body = await web.read_json(request, relay.settings.max_body_bytes)
    kind = body.get("kind", "webhook") if isinstance(body, dict) else None
    fields, problems = await _check_fields(
        body,
        creating=True,
        kind=kind,
        allow_private=relay.settings.allow_private_targets,
        resolve=relay.resolve,
    )
    if problems:
        raise invalid(problems)
    now = time.time()
    sub = await relay.store.write(lambda tx: outbox.create_subscription(tx, fields, now))
    return web.JSON(
        sub.public(with_secret=True),
        status_code=201,
        headers={"Location": f"/v1/subscriptions/{sub.id}"},
    )


@web.operation(
    web.Operation(
        "The subscriptions, newest first",
        {200: ("A page of subscriptions", api.page_of(SUBSCRIPTION_SCHEMA))},
        query=(LIMIT, CURSOR),
        tags=_TAGS,
    )
)
async def list_all(request: Request) -> Response:
    """GET /v1/subscriptions?cursor=&limit=."""
    relay = _relay(request)
    limit = LIMIT.read(request)
    before = CURSOR.read(request) or None

    def q(conn: sqlite3.Connection) -> list[outbox.Subscription]:
        sql = "SELECT * FROM subscriptions"
        params: list[Any] = []
        if before:
            sql += " WHERE seq < ?"
            params.append(before)
        rows = conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [outbox.Subscription.from_row(r) for r in rows]

    subs = await relay.store.read(q)
    cursor = str(subs[-1].seq) if len(subs) == limit else None
    return web.JSON({"data": [s.public() for s in subs], "next_cursor": cursor})


@web.operation(
    web.Operation(
        "One subscription",
        {200: ("The subscription", SUBSCRIPTION_SCHEMA)},
        errors=(404,),
        tags=_TAGS,
    )
)
async def get_one(request: Request) -> Response:
    """GET /v1/subscriptions/{id}."""
    return web.JSON((await _get(_relay(request), request.path_params["id"])).public())


@web.operation(
    web.Operation(
        "Change a subscription: url, events, filter, template, paused, ...",
        {200: ("The subscription", SUBSCRIPTION_SCHEMA)},
        body=lambda: body_schema(creating=False),
        errors=(404, 413, 422),
        tags=_TAGS,
    )
)
async def patch(request: Request) -> Response:
    """PATCH /v1/subscriptions/{id}: url, events, filter, template, paused, ..."""
    relay = _relay(request)
    sub = await _get(relay, request.path_params["id"])
    body = await web.read_json(request, relay.settings.max_body_bytes)
    if isinstance(body, dict) and "kind" in body and body["kind"] != sub.kind:
        raise invalid([Problem("kind", "cannot be changed; create a new subscription")])
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "kind"}
    changes, problems = await _check_fields(
        body,
        creating=False,
        kind=sub.kind,
        allow_private=relay.settings.allow_private_targets,
        resolve=relay.resolve,
    )
    if problems:
        raise invalid(problems)
    now = time.time()
    updated = await relay.store.write(
        lambda tx: outbox.update_subscription(tx, sub.id, changes, now)
    )
    if updated is None:
        raise ApiError(404, "subscription_not_found", f"no subscription {sub.id!r}")
    return web.JSON(updated.public())


@web.operation(
    web.Operation(
        "Delete a subscription; its pending deliveries are canceled",
        {204: ("Deleted", None)},
        errors=(404,),
        tags=_TAGS,
    )
)
async def delete(request: Request) -> Response:
    """DELETE /v1/subscriptions/{id}: pending deliveries are canceled."""
    relay = _relay(request)
    sub_id = request.path_params["id"]
    now = time.time()
    if not await relay.store.write(lambda tx: outbox.delete_subscription(tx, sub_id, now)):
        raise ApiError(404, "subscription_not_found", f"no subscription {sub_id!r}")
    return Response(status_code=204)


@web.operation(
    web.Operation(
        "Send a sample job.test event to this subscription",
        {202: ("The delivery", DELIVERY_SCHEMA)},
        errors=(404,),
        tags=_TAGS,
    )
)
async def send_test(request: Request) -> Response:
    """POST /v1/subscriptions/{id}/test: a sample job.test delivery to this one only."""
    relay = _relay(request)
    sub = await _get(relay, request.path_params["id"])
    now = time.time()
    delivery = await relay.store.write(lambda tx: outbox.send_test(tx, sub, now))
    return web.JSON(delivery.public(), status_code=202)


@web.operation(
    web.Operation(
        "Rotate a webhook subscription's secret (the old one signs too for 24 hours)",
        {200: ("The subscription with its new secret", SUBSCRIPTION_SCHEMA)},
        errors=(404, 409),
        tags=_TAGS,
    )
)
async def rotate(request: Request) -> Response:
    """POST /v1/subscriptions/{id}/rotate-secret: the old secret signs too for 24 hours."""
    relay = _relay(request)
    sub = await _get(relay, request.path_params["id"])
    if sub.kind != "webhook":
        raise ApiError(409, "no_secret", f"{sub.kind} subscriptions are not signed")
    now = time.time()
    rotated = await relay.store.write(lambda tx: outbox.rotate_secret(tx, sub.id, now))
    assert rotated is not None  # noqa: S101
    return web.JSON(rotated.public(with_secret=True))


@web.operation(
    web.Operation(
        "A webhook subscription's signing secret",
        {200: ("The secret", SECRET_SCHEMA)},
        errors=(404, 409),
        tags=_TAGS,
    )
)
async def secret(request: Request) -> Response:
    """GET /v1/subscriptions/{id}/secret."""
    sub = await _get(_relay(request), request.path_params["id"])
    if sub.kind != "webhook":
        raise ApiError(409, "no_secret", f"{sub.kind} subscriptions are not signed")
    out = sub.public(with_secret=True)
    return web.JSON({k: out[k] for k in out if "secret" in k})


@web.operation(
    web.Operation(
        "The secret that signs per-job `webhook` deliveries",
        {200: ("The secret", SECRET_SCHEMA)},
        tags=_TAGS,
    )
)
async def webhook_secret(request: Request) -> Response:
    """GET /v1/webhook-secret: signs per-job `webhook` deliveries."""
    return web.JSON(_relay(request).webhook_secret.public())


@web.operation(
    web.Operation(
        "A new service-wide secret; the old one keeps signing beside it for 24 hours",
        {200: ("The new secret", SECRET_SCHEMA)},
        tags=_TAGS,
    )
)
async def rotate_webhook_secret(request: Request) -> Response:
    """POST /v1/webhook-secret/rotate."""
    relay = _relay(request)
    now = time.time()
    rotated = await relay.store.write(lambda tx: outbox.rotate_service_secret(tx, now))
    # The deliverer holds this same object: per-job webhooks are signed with both from now on.
    held = relay.webhook_secret
    held.current, held.previous, held.previous_until = (
        rotated.current,
        rotated.previous,
        rotated.previous_until,
    )
    return web.JSON(held.public())


@web.operation(
    web.Operation(
        "The delivery log, newest first, with each attempt",
        {200: ("A page of deliveries", api.page_of(DELIVERY_SCHEMA))},
        query=(SUBSCRIPTION_ID, JOB_ID, DELIVERY_STATUS, LIMIT, CURSOR),
        tags=("deliveries",),
    )
)
async def list_deliveries(request: Request) -> Response:
    """GET /v1/deliveries?subscription_id=&job_id=&status=&cursor=&limit=."""
    relay = _relay(request)
    status = DELIVERY_STATUS.read(request)
    where: list[str] = []
    params: list[Any] = []
    for name, query in (("subscription_id", SUBSCRIPTION_ID), ("job_id", JOB_ID)):
        value = query.read(request)
        if value:
            where.append(f"{name} = ?")
            params.append(value)
    if status:
        where.append("status = ?")
        params.append(status)
    before = CURSOR.read(request) or None
    if before:
        where.append("seq < ?")
        params.append(before)
    limit = LIMIT.read(request)
    sql = "SELECT * FROM deliveries"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"

    def q(conn: sqlite3.Connection) -> tuple[list[outbox.Delivery], dict[str, list[Any]]]:
        rows = [outbox.Delivery.from_row(r) for r in conn.execute(sql, (*params, limit))]
        return rows, outbox.attempt_log(conn, [d.id for d in rows])

    rows, log = await relay.store.read(q)
    cursor = str(rows[-1].seq) if len(rows) == limit else None
    return web.JSON({"data": [d.public(log[d.id]) for d in rows], "next_cursor": cursor})


@web.operation(
    web.Operation(
        "One delivery with its attempt log",
        {200: ("The delivery", DELIVERY_SCHEMA)},
        errors=(404,),
        tags=("deliveries",),
    )
)
async def get_delivery(request: Request) -> Response:
    """GET /v1/deliveries/{id} with its attempt log."""
    relay = _relay(request)
    delivery_id = request.path_params["id"]

    def q(conn: sqlite3.Connection) -> tuple[outbox.Delivery | None, dict[str, list[Any]]]:
        return outbox.get_delivery(conn, delivery_id), outbox.attempt_log(conn, [delivery_id])

    delivery, log = await relay.store.read(q)
    if delivery is None:
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r}")
    return web.JSON(delivery.public(log[delivery_id]))


@web.operation(
    web.Operation(
        "Deliver again now, with a fresh schedule",
        {202: ("The delivery", DELIVERY_SCHEMA)},
        errors=(404, 409),
        tags=("deliveries",),
    )
)
async def retry_delivery(request: Request) -> Response:
    """POST /v1/deliveries/{id}/retry: deliver again now, with a fresh schedule."""
    relay = _relay(request)
    delivery_id = request.path_params["id"]
    now = time.time()
    delivery = await relay.store.write(lambda tx: outbox.retry_now(tx, delivery_id, now))
    if delivery is None:
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r}")
    if delivery.status == "canceled":
        raise ApiError(409, "delivery_canceled", "its subscription was deleted")
    return web.JSON(delivery.public(), status_code=202)


ROUTES = [
    Route("/subscriptions", create, methods=["POST"]),
    Route("/subscriptions", list_all, methods=["GET"]),
    Route("/subscriptions/{id}", get_one, methods=["GET"]),
    Route("/subscriptions/{id}", patch, methods=["PATCH"]),
    Route("/subscriptions/{id}", delete, methods=["DELETE"]),
    Route("/subscriptions/{id}/test", send_test, methods=["POST"]),
    Route("/subscriptions/{id}/rotate-secret", rotate, methods=["POST"]),
    Route("/subscriptions/{id}/secret", secret, methods=["GET"]),
    Route("/webhook-secret", webhook_secret, methods=["GET"]),
    Route("/webhook-secret/rotate", rotate_webhook_secret, methods=["POST"]),
    Route("/deliveries", list_deliveries, methods=["GET"]),
    Route("/deliveries/{id}", get_delivery, methods=["GET"]),
    Route("/deliveries/{id}/retry", retry_delivery, methods=["POST"]),
]
