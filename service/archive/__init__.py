"""Output archiving (RELAY_ARCHIVE): outputs copied to the team's own storage in time."""

from __future__ import annotations

from service.archive.backend import ArchiveError, Backend
from service.config import Settings


def open_backend(settings: Settings) -> Backend | None:
    """The backend RELAY_ARCHIVE names, or None when archiving is off."""
    url = settings.archive
    if url is None:
        return None
    if url.startswith("file://"):
        from service.archive.folder import FolderBackend

        return FolderBackend(url[len("file://") :])
    if url.startswith("s3://"):
        # imported only when used: the S3 client's dependencies load with it
        from service.archive.s3 import S3Backend  # type: ignore[import-not-found,unused-ignore]

        backend: Backend = S3Backend.from_url(
            url, settings.archive_endpoint, settings.archive_region
        )
        return backend
    scheme = url.split(":", 1)[0]
    raise ArchiveError(f"RELAY_ARCHIVE: unsupported scheme {scheme!r}", retry=False)
