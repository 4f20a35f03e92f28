"""The /ui mount: the dashboard is imported on its first request."""

from __future__ import annotations

from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from service.ui.paths import PREFIX


class _Dashboard:
    """The dashboard, imported on its first request: a relay nobody browses never loads
    Jinja2 and the templates (~25 ms of every process's start-up)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            from service.ui import routes

            self.app = routes.build()
        await self.app(scope, receive, send)


def mount() -> Mount:
    """The /ui mount the app adds to its routes."""
    return Mount(PREFIX, app=_Dashboard())
