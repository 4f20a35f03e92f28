"""The /v1 delivery log: every delivery with its attempts, and retries by hand."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import outbox
from service.errors import ApiError
from service.http import deps, jobs
from service.http.jobs import CURSOR, LIMIT

DELIVERY_STATUSES = ("pending", "succeeded", "failed", "canceled")
_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}
DELIVERY_STATUS = deps.Query(
    "status", "Only deliveries in this status.", "string", enum=DELIVERY_STATUSES
)
SUBSCRIPTION_ID = deps.Query("subscription_id", "Only this subscription's deliveries.", "string")
JOB_ID = deps.Query("job_id", "Only this job's deliveries.", "string")
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
DELIVERY_SCHEMA: deps.Schema = {
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


@deps.operation(
    deps.Operation(
        "The delivery log, newest first, with each attempt",
        {200: ("A page of deliveries", jobs.page_of(DELIVERY_SCHEMA))},
        query=(SUBSCRIPTION_ID, JOB_ID, DELIVERY_STATUS, LIMIT, CURSOR),
        tags=("deliveries",),
    )
)
async def list_deliveries(request: Request) -> Response:
    """GET /v1/deliveries?subscription_id=&job_id=&status=&cursor=&limit=."""
    relay = deps.relay_of(request)
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
    return deps.JSON({"data": [d.public(log[d.id]) for d in rows], "next_cursor": cursor})


@deps.operation(
    deps.Operation(
        "One delivery with its attempt log",
        {200: ("The delivery", DELIVERY_SCHEMA)},
        errors=(404,),
        tags=("deliveries",),
    )
)
async def get_delivery(request: Request) -> Response:
    """GET /v1/deliveries/{id} with its attempt log."""
    relay = deps.relay_of(request)
    delivery_id = request.path_params["id"]

    def q(conn: sqlite3.Connection) -> tuple[outbox.Delivery | None, dict[str, list[Any]]]:
        return outbox.get_delivery(conn, delivery_id), outbox.attempt_log(conn, [delivery_id])

    delivery, log = await relay.store.read(q)
    if delivery is None:
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r}")
    return deps.JSON(delivery.public(log[delivery_id]))


@deps.operation(
    deps.Operation(
        "Deliver again now, with a fresh schedule",
        {202: ("The delivery", DELIVERY_SCHEMA)},
        errors=(404, 409),
        tags=("deliveries",),
    )
)
async def retry_delivery(request: Request) -> Response:
    """POST /v1/deliveries/{id}/retry: deliver again now, with a fresh schedule."""
    relay = deps.relay_of(request)
    delivery_id = request.path_params["id"]
    now = time.time()
    delivery = await relay.store.write(lambda tx: outbox.retry_now(tx, delivery_id, now))
    if delivery is None:
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r}")
    if delivery.status == "canceled":
        raise ApiError(409, "delivery_canceled", "its subscription was deleted")
    return deps.JSON(delivery.public(), status_code=202)


ROUTES = [
    Route("/deliveries", list_deliveries, methods=["GET"]),
    Route("/deliveries/{id}", get_delivery, methods=["GET"]),
    Route("/deliveries/{id}/retry", retry_delivery, methods=["POST"]),
]
