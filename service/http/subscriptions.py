"""The /v1 routes for subscriptions, the delivery log and the webhook secret."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import catalog, netguard, notify, outbox
from service.catalog import Problem
from service.errors import ApiError
from service.http import deliveries, deps, jobs
from service.http.jobs import CURSOR, LIMIT
from service.submit import invalid

if TYPE_CHECKING:
    from service.state import Relay

EVENT_NAMES = (*outbox.NOTIFY_TYPES, *outbox.ARCHIVE_TYPES, "job.*")
MAX_URL = catalog.MAX_URL
MAX_EVENTS = 16
MAX_DESCRIPTION = 500


@dataclass(frozen=True, slots=True)
class Field:
    """A subscription field: its JSON Schema (checked here, shown in OpenAPI) and the problem."""

    schema: deps.Schema
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
# One table: check_fields validates with it and the OpenAPI document is generated from it.
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


def body_schema(*, creating: bool) -> deps.Schema:
    """The JSON Schema of a POST (creating) or PATCH subscription body."""
    fields = FIELDS if creating else {k: v for k, v in FIELDS.items() if k != "kind"}
    out: deps.Schema = {
        "type": "object",
        "properties": {k: f.schema for k, f in fields.items()},
        "additionalProperties": False,
    }
    if creating:
        out["required"] = ["url"]
        out["examples"] = [{"url": "https://hooks.example/relay", "events": ["job.succeeded"]}]
    return out


_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}
SUBSCRIPTION_SCHEMA: deps.Schema = {
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
SECRET_SCHEMA: deps.Schema = {
    "type": "object",
    "required": ["secret"],
    "properties": {
        "secret": {"type": "string", "pattern": "^whsec_"},
        "previous_secret_expires_at": _STR,
    },
}
_TAGS = ("subscriptions",)


async def check_fields(
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
    sub = await relay.store.get_subscription(sub_id)
    if sub is None:
        raise ApiError(404, "subscription_not_found", f"no subscription {sub_id!r}")
    return sub


@deps.operation(
    deps.Operation(
        "Subscribe a URL to job events",
        {201: ("The subscription; a webhook's carries its secret", SUBSCRIPTION_SCHEMA)},
        body=lambda: body_schema(creating=True),
        errors=(413, 422),
        tags=_TAGS,
    )
)
async def create(request: Request) -> Response:
    """POST /v1/subscriptions."""
    relay = deps.relay_of(request)
    body = await deps.read_json(request, relay.settings.max_body_bytes)
    kind = body.get("kind", "webhook") if isinstance(body, dict) else None
    fields, problems = await check_fields(
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
    return deps.JSON(
        sub.public(with_secret=True),
        status_code=201,
        headers={"Location": f"/v1/subscriptions/{sub.id}"},
    )


@deps.operation(
    deps.Operation(
        "The subscriptions, newest first",
        {200: ("A page of subscriptions", jobs.page_of(SUBSCRIPTION_SCHEMA))},
        query=(LIMIT, CURSOR),
        tags=_TAGS,
    )
)
async def list_all(request: Request) -> Response:
    """GET /v1/subscriptions?cursor=&limit=."""
    relay = deps.relay_of(request)
    limit = LIMIT.read(request)
    before = CURSOR.read(request) or None

    # one more than asked: a cursor only when another page really follows
    subs = await relay.store.list_subscriptions(before=before, limit=limit + 1)
    subs, more = subs[:limit], len(subs) > limit
    cursor = str(subs[-1].seq) if more else None
    return deps.JSON({"data": [s.public() for s in subs], "next_cursor": cursor})


@deps.operation(
    deps.Operation(
        "One subscription",
        {200: ("The subscription", SUBSCRIPTION_SCHEMA)},
        errors=(404,),
        tags=_TAGS,
    )
)
async def get_one(request: Request) -> Response:
    """GET /v1/subscriptions/{id}."""
    return deps.JSON((await _get(deps.relay_of(request), request.path_params["id"])).public())


@deps.operation(
    deps.Operation(
        "Change a subscription: url, events, filter, template, paused, ...",
        {200: ("The subscription", SUBSCRIPTION_SCHEMA)},
        body=lambda: body_schema(creating=False),
        errors=(404, 413, 422),
        tags=_TAGS,
    )
)
async def patch(request: Request) -> Response:
    """PATCH /v1/subscriptions/{id}: url, events, filter, template, paused, ..."""
    relay = deps.relay_of(request)
    sub = await _get(relay, request.path_params["id"])
    body = await deps.read_json(request, relay.settings.max_body_bytes)
    if isinstance(body, dict) and "kind" in body and body["kind"] != sub.kind:
        raise invalid([Problem("kind", "cannot be changed; create a new subscription")])
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "kind"}
    changes, problems = await check_fields(
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
    return deps.JSON(updated.public())


@deps.operation(
    deps.Operation(
        "Delete a subscription; its pending deliveries are canceled",
        {204: ("Deleted", None)},
        errors=(404,),
        tags=_TAGS,
    )
)
async def delete(request: Request) -> Response:
    """DELETE /v1/subscriptions/{id}: pending deliveries are canceled."""
    relay = deps.relay_of(request)
    sub_id = request.path_params["id"]
    now = time.time()
    if not await relay.store.write(lambda tx: outbox.delete_subscription(tx, sub_id, now)):
        raise ApiError(404, "subscription_not_found", f"no subscription {sub_id!r}")
    return Response(status_code=204)


@deps.operation(
    deps.Operation(
        "Send a sample job.test event to this subscription",
        {202: ("The delivery", deliveries.DELIVERY_SCHEMA)},
        errors=(404,),
        tags=_TAGS,
    )
)
async def send_test(request: Request) -> Response:
    """POST /v1/subscriptions/{id}/test: a sample job.test delivery to this one only."""
    relay = deps.relay_of(request)
    sub = await _get(relay, request.path_params["id"])
    now = time.time()
    delivery = await relay.store.write(lambda tx: outbox.send_test(tx, sub, now))
    return deps.JSON(delivery.public(), status_code=202)


@deps.operation(
    deps.Operation(
        "Rotate a webhook subscription's secret (the old one signs too for 24 hours)",
        {200: ("The subscription with its new secret", SUBSCRIPTION_SCHEMA)},
        errors=(404, 409),
        tags=_TAGS,
    )
)
async def rotate(request: Request) -> Response:
    """POST /v1/subscriptions/{id}/rotate-secret: the old secret signs too for 24 hours."""
    relay = deps.relay_of(request)
    sub = await _get(relay, request.path_params["id"])
    if sub.kind != "webhook":
        raise ApiError(409, "no_secret", f"{sub.kind} subscriptions are not signed")
    now = time.time()
    rotated = await relay.store.write(lambda tx: outbox.rotate_secret(tx, sub.id, now))
    assert rotated is not None  # noqa: S101
    return deps.JSON(rotated.public(with_secret=True))


@deps.operation(
    deps.Operation(
        "A webhook subscription's signing secret",
        {200: ("The secret", SECRET_SCHEMA)},
        errors=(404, 409),
        tags=_TAGS,
    )
)
async def secret(request: Request) -> Response:
    """GET /v1/subscriptions/{id}/secret."""
    sub = await _get(deps.relay_of(request), request.path_params["id"])
    if sub.kind != "webhook":
        raise ApiError(409, "no_secret", f"{sub.kind} subscriptions are not signed")
    out = sub.public(with_secret=True)
    return deps.JSON({k: out[k] for k in out if "secret" in k})


@deps.operation(
    deps.Operation(
        "The secret that signs per-job `webhook` deliveries",
        {200: ("The secret", SECRET_SCHEMA)},
        tags=_TAGS,
    )
)
async def webhook_secret(request: Request) -> Response:
    """GET /v1/webhook-secret: signs per-job `webhook` deliveries."""
    return deps.JSON(deps.relay_of(request).webhook_secret.public())


@deps.operation(
    deps.Operation(
        "A new service-wide secret; the old one keeps signing beside it for 24 hours",
        {200: ("The new secret", SECRET_SCHEMA)},
        tags=_TAGS,
    )
)
async def rotate_webhook_secret(request: Request) -> Response:
    """POST /v1/webhook-secret/rotate."""
    relay = deps.relay_of(request)
    now = time.time()
    rotated = await relay.store.write(lambda tx: outbox.rotate_service_secret(tx, now))
    # The deliverer holds this same object: per-job webhooks are signed with both from now on.
    held = relay.webhook_secret
    held.current, held.previous, held.previous_until = (
        rotated.current,
        rotated.previous,
        rotated.previous_until,
    )
    return deps.JSON(held.public())


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
]
