"""The dashboard's session: a signed cookie scoped to /ui, the sign-in gate and CSRF checks."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ApiError
from service.http import deps
from service.ui.paths import PREFIX

COOKIE = "relay_ui"
MAX_AGE = 12 * 60 * 60  # a working day: the cookie and its signature both expire then
MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 100
# Paths open without a session: the sign-in form itself and the stylesheet it needs.
OPEN_PATHS = (f"{PREFIX}/signin", f"{PREFIX}/static/")
SESSION_SALT = b"upscale-relay/ui-session"


class UiError(Exception):
    """A refusal the dashboard shows as a page with this status (always 4xx for bad input)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def session_key(secret: str) -> str:
    """The session cookie's signing key: derived from RELAY_SECRET for this purpose only, so
    a session cookie and a callback token can never be mistaken for each other."""
    return hmac.new(secret.encode(), SESSION_SALT, hashlib.sha256).hexdigest()


def fingerprint(token: str) -> str:
    """What the session keeps of the API token it was opened with (never the token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Sessions:
    """Starlette's SessionMiddleware, built on the first request: RELAY_SECRET may live in the
    database (generated on first start), known only once the lifespan has opened it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inner: SessionMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.inner is None:
            relay = scope["app"].state.relay
            settings = relay.settings
            secret = (
                str(settings.secret)
                if settings.secret is not None
                else await relay.store.meta_get_or_set(
                    "relay_secret", lambda: secrets.token_urlsafe(32)
                )
            )
            self.inner = SessionMiddleware(
                self.app,
                secret_key=session_key(secret),
                session_cookie=COOKIE,
                max_age=MAX_AGE,
                path=PREFIX,
                same_site="strict",
                https_only=settings.public_url.startswith("https://"),
            )
        await self.inner(scope, receive, send)


class Gate:
    """Nothing under /ui without a session opened with a current API token (when
    RELAY_API_TOKENS is set; without it the dashboard is open, as the API is)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tokens: tuple[str, ...] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tokens is None:
            self.tokens = tuple(
                fingerprint(str(t)) for t in scope["app"].state.relay.settings.api_tokens
            )
        state = scope.setdefault("state", {})
        if not self.tokens:
            state["token_scope"] = "open"  # noqa: S105 - a scope name, not a secret
            await self.app(scope, receive, send)
            return
        held = scope["session"].get("fp")
        # a session outlives nothing: a token removed from RELAY_API_TOKENS ends its sessions
        if isinstance(held, str) and any(hmac.compare_digest(held, fp) for fp in self.tokens):
            state["token_scope"] = held
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        query = urllib.parse.urlencode({"next": path}) if scope["method"] == "GET" else ""
        target = f"{PREFIX}/signin" + (f"?{query}" if query else "")
        await RedirectResponse(target, status_code=303)(scope, receive, send)


def sign_in(request: Request, token: str) -> bool:
    """Open a session for `token` if it is one of RELAY_API_TOKENS (compared in constant time)."""
    settings = deps.relay_of(request).settings
    given = token.strip().encode()
    matched = False
    for configured in settings.api_tokens:
        # every token compared, whatever matched: the time taken does not tell which one
        matched |= bool(given) and hmac.compare_digest(given, str(configured).encode())
    if not matched:
        return False
    request.session.clear()  # a fresh session: nothing from before the sign-in carries over
    request.session["fp"] = fingerprint(token.strip())
    request.session["csrf"] = secrets.token_urlsafe(32)
    return True


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use; every form carries it in a hidden field."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body, bounded; 415/413/400 for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise UiError(415, "forms are sent as application/x-www-form-urlencoded")
    try:
        raw = await deps.read_body(request, MAX_FORM_BYTES)
    except ApiError as exc:
        raise UiError(exc.status, exc.message) from None
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise UiError(400, "the form could not be read") from None
    return dict(pairs)


# The most characters a JSON field of a form (metadata, a metadata filter) may hold
MAX_JSON_FIELD = 4096


def json_field(form: dict[str, str], name: str, label: str) -> Any | None:
    """A form field holding JSON, parsed strictly as the API parses bodies; None when empty."""
    raw = form.get(name, "").strip()
    if not raw:
        return None
    if len(raw) > MAX_JSON_FIELD:
        raise UiError(413, f"{label}: at most {MAX_JSON_FIELD} characters")
    try:
        return deps.parse_json(raw.encode())
    except ApiError:
        raise UiError(400, f"{label}: not JSON") from None


Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


def checked(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST endpoint that reads the form and refuses it (403) without this session's CSRF
    token: every form of the dashboard goes through it."""

    async def endpoint(request: Request) -> Response:
        form = await read_form(request)
        expected = request.session.get("csrf")
        given = form.get("csrf", "")
        if not isinstance(expected, str) or not hmac.compare_digest(
            given.encode(), expected.encode()
        ):
            raise UiError(403, "the form is stale or forged (no valid CSRF token): reload the page")
        return await handler(request, form)

    return endpoint


def safe_next(value: Any) -> str:
    """Where to go after signing in: a path under /ui only (never another site)."""
    if (
        isinstance(value, str)
        and value.startswith(f"{PREFIX}/")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) < 512
    ):
        return value
    return f"{PREFIX}/jobs"
