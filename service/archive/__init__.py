"""Output archiving (RELAY_ARCHIVE): outputs copied to the team's own storage in time."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from service.archive.backend import ArchiveError, Backend
from service.config import Settings


def unavailable(settings: Settings) -> str | None:
    """Why RELAY_ARCHIVE cannot be used (checked before serving), or None."""
    url = settings.archive
    if url is None:
        return None
    if url.startswith("file://"):
        root = Path(url[len("file://") :])
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            return f"RELAY_ARCHIVE: cannot create the folder {root}: {exc.strerror}"
        if not os.access(root, os.W_OK | os.X_OK):
            return f"RELAY_ARCHIVE: the folder {root} is not writable by this user"
        return None
    try:
        importlib.import_module("service.archive.s3")
    except ImportError as exc:
        return f"RELAY_ARCHIVE: the S3 archive is not available ({exc})"
    return None


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
