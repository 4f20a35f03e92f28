"""The /v1 routes for subscriptions, the delivery log and the webhook secret."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import catalog, netguard, notify, outbox, web
from service.api import MAX_LIMIT, _int
from service.catalog import Problem
from service.errors import ApiError
from service.submit import invalid

if TYPE_CHECKING:
    from service.app import Relay

EVENT_NAMES = (*outbox.NOTIFY_TYPES, "job.*")
DELIVERY_STATUSES = ("pending", "succeeded", "failed", "canceled")
_FIELDS = {
    "url",
    "kind",
    "events",
    "filter",
    "template",
    "description",
    "paused",
    "rate_per_second",
    "max_in_flight",
}


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
    problems = [Problem(k, "unknown field") for k in body if k not in _FIELDS]
    out: dict[str, Any] = {}
    if creating:
        kind = body.get("kind", "webhook")
        if kind not in notify.KINDS:
            problems.append(Problem("kind", f"must be one of {', '.join(notify.KINDS)}"))
        out["kind"] = kind
        out["events"] = list(outbox.TERMINAL_TYPES)
        if "url" not in body:
            problems.append(Problem("url", "is required"))
    if "url" in body:
        url = body["url"]
        if not isinstance(url, str):
            problems.append(Problem("url", "must be a string"))
        else:
            try:
                await netguard.check_target(url, allow_private=allow_private, resolve=resolve)
                out["url"] = url
            except netguard.TargetRefused as exc:
                problems.append(Problem("url", str(exc)))
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events:
            problems.append(Problem("events", "must be a non-empty array"))
        else:
            bad = [e for e in events if e not in EVENT_NAMES]
            if bad:
                problems.append(
                    Problem("events", f"unknown {bad}; known: {', '.join(EVENT_NAMES)}")
                )
            out["events"] = list(dict.fromkeys(events))
    if "filter" in body:
        problems.extend(_check_filter(body["filter"]))
        out["filter"] = body["filter"]
    if "template" in body and body["template"] is not None:
        template = body["template"]
        if kind == "webhook":
            problems.append(Problem("template", "webhook bodies are fixed; templates are for chat"))
        elif not isinstance(template, str):
            problems.append(Problem("template", "must be a string"))
        else:
            problems.extend(Problem("template", p) for p in notify.validate_template(template))
        out["template"] = template
    elif "template" in body:
        out["template"] = None
    if "description" in body:
        text = body["description"]
        if text is not None and (not isinstance(text, str) or len(text) > 500):
            problems.append(Problem("description", "must be a string of at most 500 characters"))
        out["description"] = text
    if "paused" in body:
        if not isinstance(body["paused"], bool):
            problems.append(Problem("paused", "must be true or false"))
        out["paused"] = body["paused"]
    if "rate_per_second" in body:
        rate = body["rate_per_second"]
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1000
        ):
            problems.append(Problem("rate_per_second", "must be a number in (0, 1000], or null"))
        out["rate_per_second"] = rate
    if "max_in_flight" in body:
        cap = body["max_in_flight"]
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 64:
            problems.append(Problem("max_in_flight", "must be an integer from 1 to 64"))
        out["max_in_flight"] = cap
    return out, problems


def _check_filter(value: Any) -> list[Problem]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Problem("filter", "must be an object with `models` and/or `metadata`")]
    problems = [
        Problem(f"filter.{k}", "unknown field") for k in value if k not in ("models", "metadata")
    ]
    models = value.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            problems.append(Problem("filter.models", "must be an array of model ids"))
        else:
            problems.extend(
                Problem("filter.models", f"unknown model {m!r}")
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


async def list_all(request: Request) -> Response:
    """GET /v1/subscriptions?cursor=&limit=."""
    relay = _relay(request)
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
    before = _int(request, "cursor", 0, 0) or None

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


async def get_one(request: Request) -> Response:
    """GET /v1/subscriptions/{id}."""
    return web.JSON((await _get(_relay(request), request.path_params["id"])).public())


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


async def delete(request: Request) -> Response:
    """DELETE /v1/subscriptions/{id}: pending deliveries are canceled."""
    relay = _relay(request)
    sub_id = request.path_params["id"]
    now = time.time()
    if not await relay.store.write(lambda tx: outbox.delete_subscription(tx, sub_id, now)):
        raise ApiError(404, "subscription_not_found", f"no subscription {sub_id!r}")
    return Response(status_code=204)


async def send_test(request: Request) -> Response:
    """POST /v1/subscriptions/{id}/test: a sample job.test delivery to this one only."""
    relay = _relay(request)
    sub = await _get(relay, request.path_params["id"])
    now = time.time()
    delivery = await relay.store.write(lambda tx: outbox.send_test(tx, sub, now))
    return web.JSON(delivery.public(), status_code=202)


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


async def secret(request: Request) -> Response:
    """GET /v1/subscriptions/{id}/secret."""
    sub = await _get(_relay(request), request.path_params["id"])
    if sub.kind != "webhook":
        raise ApiError(409, "no_secret", f"{sub.kind} subscriptions are not signed")
    out = sub.public(with_secret=True)
    return web.JSON({k: out[k] for k in out if "secret" in k})


async def webhook_secret(request: Request) -> Response:
    """GET /v1/webhook-secret: signs per-job `webhook` deliveries."""
    return web.JSON({"secret": _relay(request).webhook_secret})


async def list_deliveries(request: Request) -> Response:
    """GET /v1/deliveries?subscription_id=&job_id=&status=&cursor=&limit=."""
    relay = _relay(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in DELIVERY_STATUSES:
        raise ApiError(400, "invalid_query", f"status must be one of {DELIVERY_STATUSES}")
    where: list[str] = []
    params: list[Any] = []
    for name in ("subscription_id", "job_id"):
        value = request.query_params.get(name)
        if value:
            where.append(f"{name} = ?")
            params.append(value)
    if status:
        where.append("status = ?")
        params.append(status)
    before = _int(request, "cursor", 0, 0) or None
    if before:
        where.append("seq < ?")
        params.append(before)
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
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
    Route("/deliveries", list_deliveries, methods=["GET"]),
    Route("/deliveries/{id}", get_delivery, methods=["GET"]),
    Route("/deliveries/{id}/retry", retry_delivery, methods=["POST"]),
]
