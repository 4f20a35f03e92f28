"""The deliveries page: failed ones first, every attempt, a retry button."""

from __future__ import annotations

import time
import urllib.parse

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service import outbox
from service.http import deps
from service.http.deliveries import DELIVERY_STATUSES
from service.store.records import DeliveryLog
from service.ui import render
from service.ui.paths import PREFIX
from service.ui.session import UiError, checked

PAGE = 100
RESPONSE_START = 200  # characters of each attempt's answer shown


async def _shown(request: Request) -> tuple[list[DeliveryLog], str | None, str | None, int]:
    """The deliveries a page shows: failed first (or one status), newest first."""
    relay = deps.relay_of(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in DELIVERY_STATUSES:
        raise UiError(400, f"status: unknown value {status[:64]!r}")
    sub_id = request.query_params.get("subscription_id") or None
    if sub_id is not None and len(sub_id) > 128:
        raise UiError(400, "subscription_id: at most 128 characters")
    before = deps.Query("before", "A delivery's seq: only older ones.", default=0).read(request)
    store = relay.store
    if status is not None or before:
        shown = await store.list_deliveries(
            subscription_id=sub_id, status=status, before=before or None, limit=PAGE
        )
    else:
        failed = await store.list_deliveries(subscription_id=sub_id, status="failed", limit=PAGE)
        rest = await store.list_deliveries(subscription_id=sub_id, limit=PAGE)
        shown = failed + [d for d in rest if d.delivery.status != "failed"][: PAGE - len(failed)]
    return shown, status, sub_id, before


async def deliveries_page(request: Request) -> Response:
    """GET /ui/deliveries?status=&subscription_id=: the failed ones first, then the rest."""
    shown, status, sub_id, before = await _shown(request)
    query = urllib.parse.urlencode(
        {k: v for k, v in (("status", status), ("subscription_id", sub_id)) if v}
    )
    context = {
        "title": "Deliveries",
        "deliveries": shown,
        "statuses": DELIVERY_STATUSES,
        "status": status,
        "subscription_id": sub_id or "",
        "response_start": RESPONSE_START,
        "notice": request.query_params.get("notice", "")[:200],
        # pages go on newest first; the failed-first view is one page (filter by status for more)
        "older": shown[-1].delivery.seq if len(shown) == PAGE and (status or before) else None,
        # the first page follows new deliveries and attempts (an older page stays as it was)
        "live": not before,
        "rows_url": f"{PREFIX}/deliveries/rows" + (f"?{query}" if query else ""),
    }
    return render.page(request, "deliveries.html", context)


async def delivery_rows(request: Request) -> Response:
    """GET /ui/deliveries/rows?status=&subscription_id=: the page's rows alone, for its poll."""
    shown, _, _, _ = await _shown(request)
    context = {"deliveries": shown, "response_start": RESPONSE_START}
    return render.page(request, "_delivery_rows.html", context)


async def retry(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/deliveries/{id}/retry: deliver again now, as POST /v1/deliveries/{id}/retry."""
    relay = deps.relay_of(request)
    delivery_id: str = request.path_params["id"]
    if len(delivery_id) > 128:
        raise UiError(404, "no such delivery")
    now = time.time()
    delivery = await relay.store.write(lambda tx: outbox.retry_now(tx, delivery_id, now))
    if delivery is None:
        raise UiError(404, f"no delivery {delivery_id!r}")
    if delivery.status == "canceled":
        raise UiError(409, "its subscription was deleted: it has nowhere to go")
    back = form.get("back", "")
    if not back.startswith(f"{PREFIX}/") or back.startswith("//"):
        back = f"{PREFIX}/deliveries"
    sep = "&" if "?" in back else "?"
    notice = urllib.parse.urlencode({"notice": f"Delivery {delivery_id} is being retried."})
    return RedirectResponse(f"{back}{sep}{notice}", status_code=303)


ROUTES = [
    Route("/deliveries", render.guarded(deliveries_page), methods=["GET"]),
    Route("/deliveries/rows", render.guarded(delivery_rows), methods=["GET"]),
    Route("/deliveries/{id}/retry", render.guarded(checked(retry)), methods=["POST"]),
]
