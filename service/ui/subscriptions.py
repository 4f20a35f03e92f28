"""The subscriptions page: create (the secret shown once), pause, resume, test, delete."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service import catalog, notify, outbox
from service.http import deps
from service.http.subscriptions import EVENT_NAMES, MAX_DESCRIPTION, MAX_URL, check_fields
from service.store import Tx
from service.store.records import Subscription
from service.ui import preview as preview_html
from service.ui import render
from service.ui.paths import PREFIX
from service.ui.session import UiError, checked, json_field

PAGE = 100
MAX_ID = 128
MAX_RETRY = 500


def _context(subs: list[Subscription], **extra: Any) -> dict[str, Any]:
    return {
        "title": "Subscriptions",
        "subscriptions": subs,
        "kinds": notify.KINDS,
        "event_names": EVENT_NAMES,
        "default_events": outbox.TERMINAL_TYPES,
        "models": tuple(catalog.MODELS),
        "max_url": MAX_URL,
        "max_description": MAX_DESCRIPTION,
        "max_template": notify.MAX_TEMPLATE_CHARS,
        "problems": [],
        "form": {},
        "created": None,
        **extra,
    }


async def subscriptions_page(request: Request) -> Response:
    """GET /ui/subscriptions: every subscription, newest first, and the form for a new one."""
    relay = deps.relay_of(request)
    subs = await relay.store.list_subscriptions(before=None, limit=PAGE)
    notice = request.query_params.get("notice", "")[:200]
    return render.page(request, "subscriptions.html", _context(subs, notice=notice))


def _body(form: dict[str, str], events: list[str], models: list[str]) -> dict[str, Any]:
    """The form as a POST /v1/subscriptions body."""
    body: dict[str, Any] = {"url": form.get("url", "").strip(), "kind": form.get("kind", "")}
    if events:
        body["events"] = events
    wanted: dict[str, Any] = {}
    if models:
        wanted["models"] = models
    metadata = json_field(form, "metadata", "metadata filter")
    if metadata is not None:
        wanted["metadata"] = metadata
    if wanted:
        body["filter"] = wanted
    for name in ("description", "template"):
        value = form.get(name, "").strip()
        if value:
            body[name] = value
    return body


async def create(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions: validated as POST /v1/subscriptions is; a webhook's secret is
    shown on the answer page, once."""
    relay = deps.relay_of(request)
    # each checkbox has a name of its own (`event:job.succeeded`): the form is a plain dict
    events = [k.removeprefix("event:") for k, v in form.items() if k.startswith("event:")]
    models = [k.removeprefix("model:") for k, v in form.items() if k.startswith("model:")]
    body = _body(form, events, models)
    fields, problems = await check_fields(
        body,
        creating=True,
        kind=body["kind"],
        allow_private=relay.settings.allow_private_targets,
        resolve=relay.resolve,
    )
    if problems:
        subs = await relay.store.list_subscriptions(before=None, limit=PAGE)
        context = _context(subs, problems=problems, form=form)
        return render.page(request, "subscriptions.html", context, status=422)
    now = time.time()
    sub = await relay.store.write(lambda tx: outbox.create_subscription(tx, fields, now))
    subs = await relay.store.list_subscriptions(before=None, limit=PAGE)
    created = sub.public(with_secret=True)
    return render.page(request, "subscriptions.html", _context(subs, created=created), status=201)


async def _found(request: Request) -> Subscription:
    sub_id: str = request.path_params["id"]
    sub = None
    if len(sub_id) <= MAX_ID:
        sub = await deps.relay_of(request).store.get_subscription(sub_id)
    if sub is None:
        raise UiError(404, f"no subscription {sub_id[:MAX_ID]!r}")
    return sub


def _back(message: str) -> Response:
    notice = urllib.parse.urlencode({"notice": message})
    return RedirectResponse(f"{PREFIX}/subscriptions?{notice}", status_code=303)


async def pause(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions/{id}/pause (`paused=1`) or resume (`paused=0`)."""
    sub = await _found(request)
    paused = form.get("paused") == "1"
    now = time.time()
    changes = {"paused": paused}
    updated = await deps.relay_of(request).store.write(
        lambda tx: outbox.update_subscription(tx, sub.id, changes, now)
    )
    if updated is None:
        raise UiError(404, f"no subscription {sub.id!r}")
    return _back(f"Subscription {sub.id} is {updated.status}.")


async def send_test(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions/{id}/test: a sample job.test delivery to this one only."""
    sub = await _found(request)
    now = time.time()
    delivery = await deps.relay_of(request).store.write(lambda tx: outbox.send_test(tx, sub, now))
    return _back(f"Test delivery {delivery.id} sent to {sub.id}.")


async def delete(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions/{id}/delete: its pending deliveries are canceled."""
    sub = await _found(request)
    now = time.time()
    if not await deps.relay_of(request).store.write(
        lambda tx: outbox.delete_subscription(tx, sub.id, now)
    ):
        raise UiError(404, f"no subscription {sub.id!r}")
    return _back(f"Subscription {sub.id} is deleted.")


async def rotate(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions/{id}/rotate: a new secret, shown once; the old one signs beside
    it for 24 hours."""
    relay = deps.relay_of(request)
    sub = await _found(request)
    if sub.kind != "webhook":
        raise UiError(409, f"{sub.kind} subscriptions are not signed")
    now = time.time()
    rotated = await relay.store.write(lambda tx: outbox.rotate_secret(tx, sub.id, now))
    if rotated is None:
        raise UiError(404, f"no subscription {sub.id!r}")
    subs = await relay.store.list_subscriptions(before=None, limit=PAGE)
    created = rotated.public(with_secret=True)
    context = _context(subs, created=created, rotated=True)
    return render.page(request, "subscriptions.html", context)


async def retry_failed(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/subscriptions/{id}/retry-failed: every failed delivery of it, sent again now
    (up to MAX_RETRY at a time, the newest first)."""
    relay = deps.relay_of(request)
    sub = await _found(request)
    failed = await relay.store.list_deliveries(
        subscription_id=sub.id, status="failed", limit=MAX_RETRY
    )
    ids = [d.delivery.id for d in failed]
    now = time.time()

    async def unit(tx: Tx) -> int:
        done = 0
        for delivery_id in ids:
            again = await outbox.retry_now(tx, delivery_id, now)
            done += again is not None and again.status == "pending"
        return done

    count = await relay.store.write(unit) if ids else 0
    return _back(f"{count} failed deliveries of {sub.id} are being retried.")


def sample_event(now: float) -> dict[str, Any]:
    """A job.succeeded notification like the ones a subscription will get (for the preview)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 42))
    return {
        "type": "job.succeeded",
        "timestamp": stamp,
        "data": {
            "id": "job_preview",
            "model": "pixazo/seedvr-image",
            "status": "succeeded",
            "progress": 1.0,
            "outputs": [{"url": "https://cdn.example.com/upscaled.png", "media_type": "image/png"}],
            "error": None,
            "metadata": {"customer": "acme"},
            "provider": "pixazo",
            "provider_job_id": "seedvr-upscale_preview",
            "cost": 0.02,
            "created_at": started,
            "updated_at": stamp,
        },
    }


async def preview(request: Request) -> Response:
    """GET /ui/subscriptions/preview?kind=&template=: the body a chat tool would be sent for a
    sample job.succeeded and the message it would show (HTML), or the template's problems
    (read-only: no form, no CSRF)."""
    kind = request.query_params.get("kind", "slack")
    if kind not in notify.KINDS:
        raise UiError(400, f"kind: unknown value {kind[:64]!r}")
    template = request.query_params.get("template", "").strip() or None
    if template is not None and len(template) > notify.MAX_TEMPLATE_CHARS:
        raise UiError(400, f"template: at most {notify.MAX_TEMPLATE_CHARS} characters")
    problems = notify.validate_template(template) if template is not None else []
    if kind == "webhook" and template is not None:
        problems = ["webhook bodies are fixed; templates are for chat", *problems]
    body = None if problems else notify.render(kind, sample_event(time.time()), template)
    # the look-alike is drawn from the very body sent, by the same code as the deliveries
    shown = "" if body is None else preview_html.fragment(kind, body)
    return deps.JSON({"kind": kind, "problems": problems, "body": body, "html": shown})


ROUTES = [
    Route("/subscriptions/preview", render.guarded(preview), methods=["GET"]),
    Route("/subscriptions", render.guarded(subscriptions_page), methods=["GET"]),
    Route("/subscriptions", render.guarded(checked(create)), methods=["POST"]),
    Route("/subscriptions/{id}/pause", render.guarded(checked(pause)), methods=["POST"]),
    Route("/subscriptions/{id}/test", render.guarded(checked(send_test)), methods=["POST"]),
    Route("/subscriptions/{id}/delete", render.guarded(checked(delete)), methods=["POST"]),
    Route("/subscriptions/{id}/rotate", render.guarded(checked(rotate)), methods=["POST"]),
    Route(
        "/subscriptions/{id}/retry-failed", render.guarded(checked(retry_failed)), methods=["POST"]
    ),
]
