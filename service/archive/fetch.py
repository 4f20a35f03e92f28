"""Streaming an output from its provider URL: capped, type-checked, hashed on the way."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from service import netguard, outbound
from service.archive import media
from service.archive.backend import ArchiveError

CHUNK = 256 * 1024
# what a bucket answers when nobody set a type on the object
GENERIC = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(slots=True)
class Expect:
    """What an output must be: its media kind (`image`, `video`) and its largest size."""

    kind: str
    max_bytes: int
    declared: str | None = None  # the media type the provider gave for the output


@dataclass(slots=True)
class Tally:
    """What streaming found: bytes, SHA-256, the image's size from its first bytes."""

    content_type: str
    bytes: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    head: bytearray = field(default_factory=bytearray)

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of what went through."""
        return str(self.digest.hexdigest())

    def size(self) -> tuple[int, int] | None:
        """(width, height) of an image, from the bytes kept of its head."""
        if not self.content_type.startswith("image/"):
            return None
        return media.image_size(bytes(self.head))


def content_type_of(response: outbound.Response) -> str:
    """The answer's media type without parameters, lower-cased."""
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def check_head(response: outbound.Response, expect: Expect) -> str:
    """The content type of a 2xx answer, or ArchiveError: a 5xx, 408 or 429 may pass (retry);
    any other status, a wrong media kind or a declared size over the cap will not."""
    status = response.status_code
    if status >= 500 or status in (408, 429):
        raise ArchiveError(f"the provider's URL answered HTTP {status}", retry=True)
    if not response.is_success:
        raise ArchiveError(f"the provider's URL answered HTTP {status}", retry=False)
    content_type = content_type_of(response)
    if content_type in GENERIC and expect.declared:
        # buckets often answer a generic type: the provider's own word for it stands
        content_type = expect.declared
    if not content_type.startswith(expect.kind + "/"):
        raise ArchiveError(
            f"the output is {content_type or 'of no content type'}, not the {expect.kind}"
            " this model makes",
            retry=False,
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > expect.max_bytes:
        raise ArchiveError(_too_big(expect, int(declared)), retry=False)
    return content_type


def _too_big(expect: Expect, size: int | None) -> str:
    limit = f"the {expect.kind} cap of {expect.max_bytes} bytes"
    if size is None:
        return f"the output is larger than {limit}"
    return f"the output is {size} bytes, over {limit}"


async def counted(
    response: outbound.Response, expect: Expect, tally: Tally
) -> AsyncIterator[bytes]:
    """The body's chunks, counted, hashed and capped (ArchiveError past the cap)."""
    async for chunk in response.aiter_bytes(CHUNK):
        tally.bytes += len(chunk)
        if tally.bytes > expect.max_bytes:
            raise ArchiveError(_too_big(expect, None), retry=False)
        tally.digest.update(chunk)
        if len(tally.head) < media.HEAD_BYTES:
            tally.head += chunk[: media.HEAD_BYTES - len(tally.head)]
        yield chunk


def describe_error(exc: BaseException) -> ArchiveError:
    """A fetch's failure as an ArchiveError: network trouble may pass, a refused target not."""
    if isinstance(exc, ArchiveError):
        return exc
    if isinstance(exc, netguard.TargetRefused):
        return ArchiveError(f"the provider's URL was refused: {exc}", retry=False)
    if isinstance(exc, outbound.Refused):
        return ArchiveError(f"the provider's URL was refused: {exc}", retry=False)
    if isinstance(exc, outbound.UnsupportedProtocol):
        return ArchiveError("the provider's URL is not an http(s) URL", retry=False)
    if isinstance(exc, outbound.TransportError):
        return ArchiveError(f"fetching the output failed: {type(exc).__name__}", retry=True)
    return ArchiveError(f"fetching the output failed: {type(exc).__name__}", retry=True)
