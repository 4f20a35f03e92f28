"""Templates, filters and the error pages of the dashboard."""

from __future__ import annotations

import functools
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from service.errors import ApiError, StorageUnavailable
from service.ui.paths import PREFIX
from service.ui.session import UiError, csrf_token

log = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
# No inline script or style anywhere: scripts and styles come from /ui/static only; media
# (the jobs' inputs and outputs) may come from any http(s) host. No page may be framed.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' http: https: data:; media-src 'self' http: https:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # media hosts never learn the dashboard's URLs (job ids, filters)
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def when(ts: float | None) -> str:
    """Epoch seconds as `2026-11-30 06:56:31Z` ('' for none)."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def iso(ts: float | None) -> str:
    """Epoch seconds as ISO 8601 UTC, for <time datetime>."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def seconds(value: float | None) -> str:
    """A duration as people read it: 850 ms, 12.4 s, 3 min 5 s, 2 h 10 min."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def money(value: float | None) -> str:
    """A provider's cost ('' when it has none)."""
    return "" if value is None else f"{value:g}"


def is_http(value: Any) -> bool:
    """Whether a value is an http(s) URL (only those become links and media sources)."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def destination(url: str, kind: str) -> str:
    """Where a subscription sends, as the page shows it: a chat webhook's path is its secret
    (anyone holding it can post to the channel), so chat kinds show the host alone, and a
    webhook its path without the query."""
    parts = urllib.parse.urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if kind == "webhook":
        shown += parts.path
    else:
        shown += "/…"
    return shown[:120]


def pretty(value: Any) -> str:
    """JSON for people: indented, keys in order given."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


TEMPLATES.env.filters.update(
    when=when, iso=iso, seconds=seconds, money=money, pretty=pretty, destination=destination
)
TEMPLATES.env.tests["http"] = is_http


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with what every page needs (the CSRF token, the sign-out form)."""
    relay = request.app.state.relay
    full = {
        "prefix": PREFIX,
        "csrf": csrf_token(request),
        "signed_in": bool(relay.settings.api_tokens) and "fp" in request.session,
        "path": request.url.path,
        **context,
    }
    response = TEMPLATES.TemplateResponse(request, name, full, status_code=status)
    response.headers.update(HEADERS)
    return response


def guarded(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A page whose refusals (bad filters, unknown ids, forged forms) are pages, not 5xx."""

    @functools.wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except StorageUnavailable:
            raise  # the app's 503 envelope: the database, not the request, is at fault
        except UiError as exc:
            status, message = exc.status, exc.message
        except ApiError as exc:
            status, message = exc.status, exc.message
        context = {"title": f"Error {status}", "status": status, "message": message}
        return page(request, "error.html", context, status=status)

    return run
