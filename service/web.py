"""HTTP plumbing shared by the routes: bounded bodies, JSON answers, the error envelope."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ApiError


class JSON(Response):
    """A compact JSON response."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> ApiError:
    """The 413 answer."""
    return ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body or raise the 400 answer."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


async def read_json(request: Request, limit: int) -> Any:
    """A bounded JSON body."""
    return parse_json(await read_body(request, limit))


async def api_error(request: Request, exc: Exception) -> Response:
    """Render an ApiError as the envelope."""
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Render Starlette's 404/405 as the envelope."""
    assert isinstance(exc, HTTPException)  # noqa: S101
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {
        "error": {
            "code": codes.get(exc.status_code, "http_error"),
            "message": exc.detail,
            "details": None,
        }
    }
    return JSON(body, status_code=exc.status_code, headers=exc.headers)
