"""GET /v1/outputs/{job_id}/{n}: an output archived in a local folder, with range requests."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service.archive.folder import FolderBackend, read_range
from service.errors import ApiError
from service.http import deps
from service.http.openapi import ERROR_SCHEMA

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_N = re.compile(r"\d{1,6}")


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(first, last) of a single `bytes=` range; None to send everything (no header, or one
    this does not handle: several ranges, another unit); False when it cannot be satisfied."""
    if not header:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or (not found.group(1) and not found.group(2)):
        return None
    first, last = found.group(1), found.group(2)
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored, as RFC 9110 says
    if start >= size:
        return False
    return start, min(end, size - 1)


def _not_found(job_id: str, n: str) -> ApiError:
    return ApiError(404, "output_not_found", f"no archived output {n!r} of job {job_id!r}")


@deps.operation(
    deps.Operation(
        "An archived output (RELAY_ARCHIVE=file://...), whole or a single byte range",
        {
            200: ("The file", None),
            206: ("The range asked for", None),
            416: ("The range is past the end of the file", ERROR_SCHEMA),
        },
        headers={"Range": {"type": "string"}},
        errors=(404,),
        tags=("jobs",),
    )
)
async def get_output(request: Request) -> Response:
    """GET /v1/outputs/{job_id}/{n}."""
    relay = deps.relay_of(request)
    job_id: str = request.path_params["job_id"]
    raw_n: str = request.path_params["n"]
    archiver = relay.archiver
    if (
        archiver is None
        or not isinstance(archiver.backend, FolderBackend)
        or not _N.fullmatch(raw_n)
    ):
        raise _not_found(job_id, raw_n)
    rows = await relay.store.archives(job_id)
    row = next((r for r in rows if r.n == int(raw_n) and r.state == "done"), None)
    if row is None or row.key is None or row.sha256 is None:
        raise _not_found(job_id, raw_n)
    assert isinstance(archiver.backend, FolderBackend)  # noqa: S101 - checked above
    path = archiver.backend.path(row.key)
    try:
        size = path.stat().st_size
    except OSError:
        raise _not_found(job_id, raw_n) from None
    etag = f'"{row.sha256}"'
    headers: dict[str, Any] = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    wanted = parse_range(request.headers.get("range"), size)
    if request.headers.get("if-range") not in (None, etag):
        wanted = None  # the client's copy is another one: the whole file
    media_type = row.content_type or "application/octet-stream"
    if wanted is False:
        error = ApiError(416, "range_not_satisfiable", f"the file has {size} bytes")
        headers["Content-Range"] = f"bytes */{size}"
        return deps.JSON(error.body(), status_code=416, headers=headers)
    start, end = (0, size - 1) if not isinstance(wanted, tuple) else wanted
    length = max(0, end - start + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if isinstance(wanted, tuple):
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        read_range(path, start, length), status_code=status, headers=headers, media_type=media_type
    )


ROUTES = [Route("/outputs/{job_id}/{n}", get_output, methods=["GET"])]
