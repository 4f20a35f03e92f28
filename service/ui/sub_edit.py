"""Editing a subscription from the dashboard: the same checks as PATCH /v1/subscriptions."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service import catalog, notify
from service.http import deps
from service.http.subscriptions import EVENT_NAMES, MAX_DESCRIPTION, MAX_URL, check_fields
from service.outbox import update_subscription
from service.store.records import Subscription
from service.ui import render
from service.ui.paths import PREFIX
from service.ui.session import UiError, checked, json_field

MAX_ID = 128


async def _found(request: Request) -> Subscription:
    sub_id: str = request.path_params["id"]
    sub = None
    if len(sub_id) <= MAX_ID:
        sub = await deps.relay_of(request).store.get_subscription(sub_id)
    if sub is None:
        raise UiError(404, f"no subscription {sub_id[:MAX_ID]!r}")
    return sub


def _form_of(sub: Subscription) -> dict[str, str]:
    """The subscription as its edit form's fields (the URL left blank: it may hold a secret)."""
    form: dict[str, str] = {f"event:{e}": "on" for e in sub.events}
    wanted = sub.filter or {}
    form.update({f"model:{m}": "on" for m in wanted.get("models") or ()})
    if wanted.get("metadata"):
        form["metadata"] = json.dumps(wanted["metadata"], ensure_ascii=False)
    form["template"] = sub.template or ""
    form["description"] = sub.description or ""
    form["max_in_flight"] = str(sub.max_in_flight)
    rate = sub.rate_per_second
    form["rate_per_second"] = "" if rate is None else f"{rate:g}"
    return form


def _number(raw: str, integer: bool) -> Any:
    """A form field as a number when it is one; the text as typed otherwise (check_fields then
    names the problem, as the API would)."""
    try:
        value = int(raw) if integer and len(raw) < 20 else float(raw)
    except ValueError:
        return raw
    return value if isinstance(value, int) or math.isfinite(value) else raw


def _changes(sub: Subscription, form: dict[str, str]) -> dict[str, Any]:
    """The form as a PATCH /v1/subscriptions/{id} body: every field, the URL only when typed."""
    body: dict[str, Any] = {}
    url = form.get("url", "").strip()
    if url:
        body["url"] = url
    body["events"] = [k.removeprefix("event:") for k in form if k.startswith("event:")]
    wanted: dict[str, Any] = {}
    models = [k.removeprefix("model:") for k in form if k.startswith("model:")]
    if models:
        wanted["models"] = models
    metadata = json_field(form, "metadata", "metadata filter")
    if metadata is not None:
        wanted["metadata"] = metadata
    body["filter"] = wanted or None
    template = form.get("template", "").strip()
    if sub.kind != "webhook" or template:
        body["template"] = template or None
    body["description"] = form.get("description", "").strip() or None
    most = form.get("max_in_flight", "").strip()
    if most:
        body["max_in_flight"] = _number(most, integer=True)
    rate = form.get("rate_per_second", "").strip()
    body["rate_per_second"] = _number(rate, integer=False) if rate else None
    return body


def _page(
    request: Request, sub: Subscription, form: dict[str, str], problems: list[Any], status: int
) -> Response:
    context = {
        "title": f"Edit {sub.id}",
        "sub": sub,
        "form": form,
        "problems": problems,
        "event_names": EVENT_NAMES,
        "models": tuple(catalog.MODELS),
        "max_url": MAX_URL,
        "max_description": MAX_DESCRIPTION,
        "max_template": notify.MAX_TEMPLATE_CHARS,
    }
    return render.page(request, "subscription_edit.html", context, status=status)


async def edit_page(request: Request) -> Response:
    """GET /ui/subscriptions/{id}/edit: its fields in a form."""
    sub = await _found(request)
    return _page(request, sub, _form_of(sub), [], 200)


async def edit(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions/{id}/edit: checked as PATCH /v1/subscriptions/{id} checks it."""
    relay = deps.relay_of(request)
    sub = await _found(request)
    changes, problems = await check_fields(
        _changes(sub, form),
        creating=False,
        kind=sub.kind,
        allow_private=relay.settings.allow_private_targets,
        resolve=relay.resolve,
    )
    if problems:
        return _page(request, sub, form, problems, 422)
    now = time.time()
    updated = await relay.store.write(lambda tx: update_subscription(tx, sub.id, changes, now))
    if updated is None:
        raise UiError(404, f"no subscription {sub.id!r}")
    notice = urllib.parse.urlencode({"notice": f"Subscription {sub.id} is updated."})
    return RedirectResponse(f"{PREFIX}/subscriptions?{notice}", status_code=303)


ROUTES = [
    Route("/subscriptions/{id}/edit", render.guarded(edit_page), methods=["GET"]),
    Route("/subscriptions/{id}/edit", render.guarded(checked(edit)), methods=["POST"]),
]
