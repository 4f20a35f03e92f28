"""migrate-store carries the archives rows: copies made, and those still to make."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.archive import units
from service.store import open_store
from service.store.transfer import migrate
from tests.store.test_archives import COPIED, NOW, claim, settle, succeeded_job


async def test_archives_rows_move_to_postgresql(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "relay.db"
    sqlite = await open_store(str(source))
    try:
        await succeeded_job(sqlite, "before_notify")
        first, _ = await claim(sqlite, "a", NOW + 1)
        await settle(sqlite, first, "a", COPIED, NOW + 2)
        await sqlite.write(lambda tx: tx.owners.remove("a"))  # stopped: no live owner left
        before = await sqlite.archives("job_a")
    finally:
        await sqlite.close()
    report = await asyncio.to_thread(migrate, str(source), pg_url)
    assert report.counts["archives"] == 2
    target = await open_store(pg_url)
    try:
        assert await target.archives("job_a") == before
        # the copy still to make is taken over there, and the job then announced
        (pending,) = await claim(target, "b", NOW + 3)
        await settle(target, pending, "b", units.Failed("gone"), NOW + 4)
        assert [e.type for e in await target.events(job_id="job_a")][-1] == "job.succeeded"
    finally:
        await target.close()
