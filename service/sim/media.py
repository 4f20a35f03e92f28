"""Loopback media host serving deterministic bytes, for tests of media URL fetching."""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import struct
import zlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
}
EXTENSIONS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
DEFAULT_SIZE = 2048
MAX_SIZE = 64 * 1024 * 1024

# Leading bytes of each format, so content sniffers see the type the header claims.
_MAGIC: dict[str, bytes] = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "video/mp4": b"\x00\x00\x00\x18ftypmp42",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  ",
}


def media_type_for(name: str) -> str:
    """Media type named by a file name's extension (application/octet-stream if unknown)."""
    ext = posixpath.splitext(name)[1].lstrip(".").lower()
    return MEDIA_TYPES.get(ext, "application/octet-stream")


def fake_bytes(media_type: str, size: int = DEFAULT_SIZE, seed: str = "") -> bytes:
    """Deterministic bytes of `size` that start like a file of `media_type`."""
    head = _MAGIC.get(media_type, b"")
    block = hashlib.sha256(f"{media_type}|{seed}".encode()).digest() * 128
    body = head + block * (size // len(block) + 1)
    return body[:size]


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_bytes(width: int, height: int, size: int = 0, seed: str = "") -> bytes:
    """A real PNG of `width` x `height` (grey, filtered rows of zeros), padded to at least
    `size` bytes with a private ancillary chunk (decoders skip it)."""
    raw = b"".join(b"\x00" + bytes(width) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
    tail = _chunk(b"IEND", b"")
    room = size - len(head) - len(tail) - 12
    if room > 0:
        block = hashlib.sha256(seed.encode()).digest() * 64
        pad = (block * (room // len(block) + 1))[:room]
        head += _chunk(b"prVt", pad)
    return head + tail


class MediaSim:
    """A media host: `GET /media/{name}?size=` serves bytes; `missing*` 404s; `slow*` waits."""

    def __init__(self, *, slow_seconds: float = 1.0) -> None:
        self.slow_seconds = slow_seconds
        self.requests: list[str] = []
        self._app = Starlette(routes=[Route("/media/{name:path}", self._media, methods=["GET"])])

    @property
    def app(self) -> Starlette:
        """The Starlette app to pass to `serve()`."""
        return self._app

    async def _media(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        self.requests.append(name)
        if name.startswith("missing"):
            return JSONResponse({"error": "Not Found"}, status_code=404)
        raw_size = request.query_params.get("size", str(DEFAULT_SIZE))
        try:
            size = int(raw_size)
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_SIZE:
            return JSONResponse({"error": "Bad size"}, status_code=400)
        if name.startswith("slow"):
            await asyncio.sleep(self.slow_seconds)
        media_type = media_type_for(name)
        return Response(fake_bytes(media_type, size, seed=name), media_type=media_type)
