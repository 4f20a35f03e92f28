"""The bare baseline: a Starlette route that only parses the same JSON body."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def callback(request: Request) -> Response:
    body = json.loads(await request.body())
    return Response(
        b'{"ok":true,"status":"%s"}' % str(body.get("status")).encode(),
        media_type="application/json",
    )


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/hooks/pixazo/{token}", callback, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
