"""The jobs page and one job's page."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service import catalog, outbox
from service.http import deps
from service.jobs import Status
from service.store import Job, jobquery
from service.ui import render
from service.ui.paths import PREFIX
from service.ui.session import UiError

PAGE = 50
DAY = 86_400
PROVIDERS = ("pixazo", "scenario")
STATUSES = tuple(str(s) for s in Status)
TERMINAL = ("succeeded", "failed", "canceled")
# The events that carry a job as notifications do: the pages update their rows from them.
LIVE_TYPES = ("job.created", *outbox.NOTIFY_TYPES)
# Every event type a job's timeline may gain (an EventSource hears only names it listens to).
TIMELINE_TYPES = (
    *LIVE_TYPES,
    "job.submitted",
    "job.progress",
    "job.archived",
    "job.archive_failed",
    "callback.received",
    "callback.rejected",
    "callback.dropped",
    "poll.error",
)
MAX_EVENTS = 500


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in allowed:
        raise UiError(400, f"{name}: unknown value {value[:64]!r}")
    return value


def _metadata_filter(request: Request) -> tuple[str, str | None] | None:
    """`key` or `key=value`: jobs whose metadata has the key (with that value, as text)."""
    raw = request.query_params.get("metadata", "").strip()
    if not raw:
        return None
    if len(raw) > 200:
        raise UiError(400, "metadata: at most 200 characters")
    key, eq, value = raw.partition("=")
    try:
        return jobquery.check_meta((key.strip(), value.strip() if eq else None))
    except ValueError as exc:
        raise UiError(400, str(exc)) from None


def row(job: Job, now: float) -> dict[str, Any]:
    """What a jobs table row shows of a job."""
    end = job.finished_at if job.finished_at is not None else now
    return {
        "id": job.id,
        "model": job.model,
        "provider": job.provider,
        "status": str(job.status),
        "progress": job.progress,
        "cost": job.cost,
        "created_at": job.created_at,
        "duration": max(0.0, end - job.created_at),
        "running": job.finished_at is None,
        "metadata": job.metadata,
    }


async def jobs_page(request: Request) -> Response:
    """GET /ui/jobs?status=&model=&provider=&metadata=&before=: newest first, live."""
    relay = deps.relay_of(request)
    status = _choice(request, "status", STATUSES)
    model = _choice(request, "model", tuple(catalog.MODELS))
    provider = _choice(request, "provider", PROVIDERS)
    meta = _metadata_filter(request)
    before = deps.Query("before", "A job's seq: only older jobs.", default=0).read(request) or None
    now = time.time()
    # one more than a page says whether an older page follows; the store applies every filter
    found = await relay.store.list_jobs(
        status=status, model=model, provider=provider, metadata=meta, before=before, limit=PAGE + 1
    )
    older = found[PAGE - 1].seq if len(found) > PAGE else None
    counts = await relay.store.counts_since(now - DAY)
    last_event = (await relay.store.counts()).last_event_id
    filters = {"status": status, "model": model, "provider": provider}
    context = {
        "title": "Jobs",
        "rows": [row(j, now) for j in found[:PAGE]],
        "older": older,
        "filters": filters,
        "metadata": request.query_params.get("metadata", ""),
        # new jobs appear live on the first page without filters only
        "filtered": any(filters.values()) or meta is not None or before is not None,
        "statuses": STATUSES,
        "models": tuple(catalog.MODELS),
        "providers": PROVIDERS,
        "counts": [(s, counts.get(s, 0)) for s in STATUSES],
        "last_event": last_event,
        "live_types": ",".join(LIVE_TYPES),
    }
    return render.page(request, "jobs.html", context)


def curl_command(job: Job, base_url: str, with_token: bool) -> str:
    """The job's submission as a `curl` command (the token read from $RELAY_API_TOKEN)."""
    body: dict[str, Any] = {"model": job.model, "input": job.input}
    if job.metadata:
        body["metadata"] = job.metadata
    if job.webhook:
        body["webhook"] = job.webhook
    if job.webhook_events:
        body["webhook_events_filter"] = job.webhook_events
    parts = [f"curl -sS -X POST {shlex.quote(base_url + '/v1/jobs')}"]
    if with_token:
        parts.append('-H "Authorization: Bearer $RELAY_API_TOKEN"')
    parts.append("-H 'Content-Type: application/json'")
    parts.append(f"-d {shlex.quote(json.dumps(body, ensure_ascii=False))}")
    return " \\\n  ".join(parts)


async def job_page(request: Request) -> Response:
    """GET /ui/jobs/{id}: timeline, before and after, deliveries, provider ids and timings."""
    relay = deps.relay_of(request)
    job_id: str = request.path_params["id"]
    job = await relay.store.get_job(job_id) if len(job_id) <= 128 else None
    if job is None:
        raise UiError(404, f"no job {job_id[:128]!r}")
    events = await relay.store.events(job_id=job.id, limit=MAX_EVENTS)
    sent = await relay.store.list_deliveries(job_id=job.id, limit=100)
    spec = catalog.MODELS.get(job.model)
    media_type = spec.media_type if spec is not None else "image"
    source = job.input.get(spec.media_param) if spec is not None else None
    outputs = [o for o in job.outputs if isinstance(o, dict)]
    archived: list[dict[str, Any]] = []
    if relay.presenter is not None and outputs:
        # RELAY_ARCHIVE: each output's copy; a folder archive's file is served to the session
        rows = await relay.store.archives(job.id)
        shown = await relay.presenter.job_outputs(job.id, job.outputs, rows)
        for n, out in enumerate(shown):
            if isinstance(out, dict) and "archive_status" in out:
                view = out.get("archive_url")
                if view and relay.presenter.plan.served:
                    view = f"{PREFIX}/outputs/{job.id}/{n}"
                archived.append({**out, "n": n, "view": view})
    first = next((e.created_at for e in events if e.type == "job.queued"), None)
    timings = [
        ("Created", job.created_at),
        ("Queued at the provider", first),
        ("Finished", job.finished_at),
        ("Last change", job.updated_at),
    ]
    end = job.finished_at if job.finished_at is not None else time.time()
    context = {
        "title": f"Job {job.id}",
        "job": job,
        "status": str(job.status),
        "media_type": media_type,
        "source": source,
        "outputs": outputs,
        "archived": archived,
        "after": outputs[0]["url"] if outputs and render.is_http(outputs[0].get("url")) else None,
        "events": events,
        "last_event": events[-1].id if events else 0,
        "more_events": len(events) == MAX_EVENTS,
        "deliveries": sent,
        "timings": timings,
        "duration": max(0.0, end - job.created_at),
        "terminal": str(job.status) in TERMINAL,
        "curl": curl_command(job, relay.settings.public_url, bool(relay.settings.api_tokens)),
        "live_types": ",".join(TIMELINE_TYPES),
    }
    return render.page(request, "job.html", context)
