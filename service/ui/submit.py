"""The submit page: a form built from the models' parameters (GET /v1/models), with a dry run."""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service import catalog
from service.errors import ApiError, StorageUnavailable
from service.http import deps
from service.ui import render
from service.ui.paths import PREFIX
from service.ui.session import UiError, checked, json_field


def _model(value: str | None) -> catalog.Model:
    if not value:
        return next(iter(catalog.MODELS.values()))
    model = catalog.MODELS.get(value)
    if model is None:
        raise UiError(400, f"model: unknown value {value[:64]!r}")
    return model


def _context(model: catalog.Model, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Submit a job",
        "models": [m.describe() for m in catalog.MODELS.values()],
        "model": model.describe(),
        "values": {},
        "metadata": "",
        "webhook": "",
        "webhook_events": [],
        "webhook_event_names": catalog.WEBHOOK_EVENTS,
        "max_url": catalog.MAX_URL,
        "problems": [],
        "dry_run": None,
        # a repeat of the same form (a double click, a resent POST) never submits twice
        "idempotency_key": secrets.token_urlsafe(18),
        **extra,
    }


async def submit_page(request: Request) -> Response:
    """GET /ui/submit?model=: the chosen model's parameters, each with its type and bounds."""
    model = _model(request.query_params.get("model"))
    return render.page(request, "submit.html", _context(model))


def _value(param: catalog.Param, raw: str) -> Any:
    """A form field as the JSON value its parameter takes; the text as given when it is not
    one (validation then names the problem, as the API would)."""
    if param.type == "integer" and raw.lstrip("-").isdigit() and len(raw) < 20:
        return int(raw)
    if param.type == "number":
        try:
            number = float(raw)
        except ValueError:
            return raw
        return number if math.isfinite(number) else raw
    if param.type == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def _body(model: catalog.Model, form: dict[str, str]) -> dict[str, Any]:
    """The form as a POST /v1/jobs body; empty fields are left out (their defaults apply)."""
    values = {p.name: form.get(f"p:{p.name}", "").strip() for p in model.params}
    body: dict[str, Any] = {
        "model": model.id,
        "input": {p.name: _value(p, values[p.name]) for p in model.params if values[p.name]},
    }
    webhook = form.get("webhook", "").strip()
    if webhook:
        body["webhook"] = webhook
    # each event a checkbox of its own (`wev:completed`); none ticked: the default (all)
    wanted = [k.removeprefix("wev:") for k in form if k.startswith("wev:")]
    if wanted:
        body["webhook_events_filter"] = wanted
    metadata = json_field(form, "metadata", "metadata")
    if metadata is not None:
        body["metadata"] = metadata
    return body


async def submit(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/submit: a dry run (the validated input, and Scenario's cost) or the job."""
    relay = deps.relay_of(request)
    model = _model(form.get("model"))
    body = _body(model, form)
    dry_run = form.get("action") == "dry_run"
    key = form.get("idempotency_key") or None
    values = {p.name: form.get(f"p:{p.name}", "") for p in model.params}
    extra = {
        "values": values,
        "metadata": form.get("metadata", ""),
        "webhook": form.get("webhook", ""),
        "webhook_events": [k.removeprefix("wev:") for k in form if k.startswith("wev:")],
    }
    try:
        status, answer = await relay.submitter.submit(
            body, None if dry_run else key, request.state.token_scope, dry_run
        )
    except StorageUnavailable:
        raise
    except ApiError as exc:
        details = exc.details if isinstance(exc.details, list) else []
        problems = [d for d in details if isinstance(d, dict)] or [
            {"field": exc.code, "message": exc.message}
        ]
        context = _context(model, problems=problems, **extra)
        if key:
            context["idempotency_key"] = key
        return render.page(request, "submit.html", context, status=exc.status)
    if dry_run:
        shown = json.dumps(answer, indent=2, ensure_ascii=False, default=str)
        context = _context(model, dry_run={"answer": answer, "text": shown}, **extra)
        if key:
            context["idempotency_key"] = key
        return render.page(request, "submit.html", context, status=status)
    return RedirectResponse(f"{PREFIX}/jobs/{answer['id']}", status_code=303)


ROUTES = [
    Route("/submit", render.guarded(submit_page), methods=["GET"]),
    Route("/submit", render.guarded(checked(submit)), methods=["POST"]),
]
