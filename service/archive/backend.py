"""The seam between the archiver and where archived files live (a local folder, an S3 bucket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class ArchiveError(Exception):
    """The backend refused or failed a write; `retry` says whether trying again may help."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True, slots=True)
class Stored:
    """What a backend wrote: its key and size."""

    key: str
    bytes: int


class Backend(Protocol):
    """Where archived outputs go. Keys are `{prefix}/{yyyy}/{mm}/{dd}/{job_id}/{n}.{ext}`
    without the backend's own prefix; the backend adds it."""

    def describe(self) -> str:
        """A printable name with no credential (`file:///var/lib/...`, `s3://bucket/prefix`)."""
        ...

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        """Stream `chunks` into `key`, replacing what is there; all or nothing (a failed put
        leaves no object under `key`). Memory stays bounded by the chunk size and a part."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        ...

    async def url(self, key: str, ttl: int) -> str | None:
        """A URL a client can GET the object at for `ttl` seconds (S3: presigned), or None
        when the relay serves it itself (a local folder: GET /v1/outputs/{job_id}/{n})."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
