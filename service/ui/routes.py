"""The dashboard's routes: sign-in and sign-out here, the pages in their own modules."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from service.http import deps, outputs, stream
from service.ui import (
    deliveries,
    pages,
    render,
    session,
    sub_edit,
    submit,
    subscriptions,
)
from service.ui.paths import PREFIX


async def signin_form(request: Request) -> Response:
    """GET /ui/signin: the token form (straight on to the jobs when no token is needed)."""
    if not deps.relay_of(request).settings.api_tokens:
        return RedirectResponse(f"{PREFIX}/jobs", status_code=303)
    nxt = session.safe_next(request.query_params.get("next"))
    return render.page(request, "signin.html", {"next": nxt, "title": "Sign in"})


async def signin(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/signin: open a session for a valid API token."""
    nxt = session.safe_next(form.get("next"))
    if not deps.relay_of(request).settings.api_tokens:
        return RedirectResponse(nxt, status_code=303)
    if not session.sign_in(request, form.get("token", "")):
        context = {"next": nxt, "title": "Sign in", "error": "That token is not valid."}
        return render.page(request, "signin.html", context, status=401)
    return RedirectResponse(nxt, status_code=303)


async def signout(request: Request, form: dict[str, str]) -> Response:
    """POST /ui/signout: end the session."""
    request.session.clear()
    return RedirectResponse(f"{PREFIX}/signin", status_code=303)


async def events(request: Request) -> Response:
    """GET /ui/events/stream: /v1/events/stream with the session instead of a bearer header
    (EventSource cannot send one); the same handler, parameters and hub."""
    return await stream.event_stream(request)


async def output(request: Request) -> Response:
    """GET /ui/outputs/{job_id}/{n}: an output of a folder archive, with the session instead
    of a bearer header (an <img> or <video> cannot send one); the API's handler."""
    return await outputs.get_output(request)


def build() -> ASGIApp:
    """The dashboard's app: its routes behind the session and the sign-in gate."""
    routes: list[BaseRoute] = [
        Route("/", render.guarded(pages.jobs_page), methods=["GET"]),
        Route("/jobs", render.guarded(pages.jobs_page), methods=["GET"]),
        Route("/jobs/{id}", render.guarded(pages.job_page), methods=["GET"]),
        Route("/events/stream", render.guarded(events), methods=["GET"]),
        Route("/outputs/{job_id}/{n}", render.guarded(output), methods=["GET"]),
        Route("/signin", render.guarded(signin_form), methods=["GET"]),
        Route("/signin", render.guarded(session.checked(signin)), methods=["POST"]),
        Route("/signout", render.guarded(session.checked(signout)), methods=["POST"]),
        *deliveries.ROUTES,
        *subscriptions.ROUTES,
        *sub_edit.ROUTES,
        *submit.ROUTES,
        Mount("/static", app=StaticFiles(directory=Path(__file__).with_name("static"))),
    ]
    return session.Sessions(session.Gate(Router(routes)))
