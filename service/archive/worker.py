"""The archiver: claims due copies, streams each output into the archive, settles it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from service import catalog, netguard, outbound
from service.archive import fetch, media, units
from service.archive.backend import ArchiveError, Backend
from service.config import Settings
from service.errors import StorageUnavailable
from service.store import Store, Tx
from service.store.archives import Archive, Copied

log = logging.getLogger(__name__)

# A copy's lease: long enough for a 2 GB video on a slow link. A crashed owner's copies are
# taken over when its heartbeat goes stale (seconds), not when this runs out.
LEASE = 3600.0
CONCURRENCY = 4


class Archiver:
    """Copies outputs of succeeded jobs into the archive: durable work, leased, retried."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        backend: Backend,
        clock: Callable[[], float],
        owner: str,
        resolve: netguard.Resolver | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self.backend = backend
        self._clock = clock
        self._owner = owner
        # provider output URLs are fetched like any user-chosen target: the guard applies
        self._client = outbound.guarded_client(
            settings.provider_timeout,
            ssl.create_default_context(),
            allow_private=settings.allow_private_targets,
            resolve=resolve,
            connections=CONCURRENCY,
        )
        self._wake = store.waiter("archives")
        self._claiming = True
        self._tasks: set[asyncio.Task[None]] = set()

    def expect(self, row: Archive, model: str | None) -> fetch.Expect:
        """What an output must be: the model's media kind (else the output's) and its cap."""
        found = catalog.MODELS.get(model or "")
        kind = found.media_type if found else (row.media_type or "image/").split("/")[0]
        cap = self._settings.archive_max_video_bytes
        if kind == "image":
            cap = self._settings.archive_max_image_bytes
        declared = (row.media_type or "").lower() or None
        return fetch.Expect(kind, cap, declared)

    async def copy(self, row: Archive, expect: fetch.Expect, ended: float) -> Copied:
        """Stream one output into the archive (ArchiveError when it cannot be)."""
        try:
            async with self._client.stream("GET", row.url) as response:
                content_type = fetch.check_head(response, expect)
                tally = fetch.Tally(content_type)
                key = media.key(row.job_id, row.n, ended, content_type)
                stored = await self.backend.put(
                    key, fetch.counted(response, expect, tally), content_type
                )
        except ArchiveError:
            raise
        except Exception as exc:  # network trouble, a refused target
            raise fetch.describe_error(exc) from None
        size = tally.size()
        return Copied(
            stored.key,
            tally.sha256,
            tally.bytes,
            content_type,
            size[0] if size else None,
            size[1] if size else None,
        )

    def outcome(self, row: Archive, error: ArchiveError) -> units.Outcome:
        """A failed copy: tried again on the schedule while it may help, else given up."""
        schedule = self._settings.archive_retry_schedule
        tried = row.attempts + 1
        if error.retry and tried < len(schedule):
            return units.Retry(self._clock() + schedule[tried], error.reason)
        return units.Failed(error.reason)

    async def run_one(self, row: Archive) -> None:
        """Copy one claimed output and record what came of it."""
        job = await self._store.get_job(row.job_id)
        ended = (job.finished_at if job else None) or row.job_finished_at
        result: units.Outcome
        try:
            result = await self.copy(row, self.expect(row, job.model if job else None), ended)
        except ArchiveError as exc:
            result = self.outcome(row, exc)
            log.info("archive of %s output %d: %s", row.job_id, row.n, exc.reason)
        owner, now = self._owner, self._clock()

        async def unit(tx: Tx) -> None:
            await units.settle(tx, row, owner, result, now)

        await self._store.write(unit)

    async def _claim(self, limit: int) -> list[Archive]:
        owner, now = self._owner, self._clock()
        return await self._store.write(lambda tx: units.claim(tx, now, limit, owner, LEASE))

    def _spawn(self, row: Archive) -> None:
        task = asyncio.create_task(self._guarded(row), name=f"archive:{row.job_id}:{row.n}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # room for one more

    async def _guarded(self, row: Archive) -> None:
        try:
            await self.run_one(row)
        except StorageUnavailable as exc:
            log.warning("archive of %s output %d not recorded: %s", row.job_id, row.n, exc.reason)
        except Exception:
            log.exception("archive of %s output %d failed", row.job_id, row.n)

    async def run_once(self) -> int:
        """Claim what is due now and copy it; returns how many were copied."""
        rows = await self._claim(CONCURRENCY)
        await asyncio.gather(*(self.run_one(r) for r in rows))
        return len(rows)

    async def run_forever(self) -> None:
        """Copy as work is committed (woken at once), with a scan as the safety net."""
        while self._claiming:
            self._wake.clear()
            sleep_for = 5.0
            try:
                free = CONCURRENCY - len(self._tasks)
                if free > 0:
                    for row in await self._claim(free):
                        self._spawn(row)
                due = await self._store.write(_next_due)
                if due is not None:
                    sleep_for = min(sleep_for, max(0.05, due - self._clock()))
            except Exception:
                log.exception("archive loop failed; going on")
                sleep_for = 1.0
            if self._claiming:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=sleep_for)

    def stop_claiming(self) -> None:
        """Claim nothing more (a drain has begun); copies under way go on."""
        self._claiming = False
        self._wake.set()

    async def drain(self, deadline: float) -> int:
        """Let copies under way finish until `deadline` (loop time), then cancel the rest
        (their leases are released by the caller); returns how many were cancelled."""
        self.stop_claiming()
        late: set[asyncio.Task[None]] = set()
        if self._tasks:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    async def aclose(self) -> None:
        """Close the fetching client and the backend."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
        await self.backend.close()


async def _next_due(tx: Tx) -> float | None:
    return await tx.archives.next_due()
