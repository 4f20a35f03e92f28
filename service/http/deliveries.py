"""The /v1 delivery log: every delivery with its attempts, and retries by hand."""

from __future__ import annotations

import time

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
    # read in this order: with several bad parameters, the first one is the one reported
    status = DELIVERY_STATUS.read(request) or None
    subscription_id = SUBSCRIPTION_ID.read(request) or None
    job_id = JOB_ID.read(request) or None
    before = CURSOR.read(request) or None
    limit = LIMIT.read(request)
    # one more than asked: a cursor only when another page really follows
    page = await relay.store.list_deliveries(
        subscription_id=subscription_id,
        job_id=job_id,
        status=status,
        before=before,
        limit=limit + 1,
    )
    page, more = page[:limit], len(page) > limit
    cursor = str(page[-1].delivery.seq) if more else None
    return deps.JSON({"data": [d.public() for d in page], "next_cursor": cursor})


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
    found = await relay.store.get_delivery(delivery_id)
    if found is None:
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r}")
    return deps.JSON(found.public())


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
