"""RELAY_ARCHIVE_RETENTION_DAYS: archived files of jobs that ended long ago are deleted."""

from __future__ import annotations

from service.archive.backend import ArchiveError, Backend
from service.store import Store, Tx
from service.store.archives import Archive

BATCH = 100


async def expire(store: Store, backend: Backend, before: float, now: float) -> int:
    """Delete the archived files of jobs ended before `before`, marking each row deleted (its
    archive_url disappears); returns how many were deleted."""
    deleted = 0
    while True:
        rows = await store.write(lambda tx: _expired(tx, before))
        gone: list[Archive] = []
        for row in rows:
            if row.key is None:
                continue
            try:
                await backend.delete(row.key)
            except ArchiveError:
                continue  # tried again on the next pass
            gone.append(row)

        async def mark(tx: Tx, gone: list[Archive] = gone) -> None:
            for row in gone:
                await tx.archives.deleted(row.job_id, row.n, now)

        if gone:
            await store.write(mark)
        deleted += len(gone)
        if len(rows) < BATCH or not gone:
            return deleted


async def _expired(tx: Tx, before: float) -> list[Archive]:
    return await tx.archives.expired(before, BATCH)
