"""The event cursor on PostgreSQL: writers in several processes, followers that miss nothing."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from tests.e2e.harness import follow_events, pg_service, stored_event_ids

pytestmark = pytest.mark.e2e

WRITERS = 3  # OS processes
TASKS = 6  # concurrent transactions in each
WRITE_SECONDS = 5.0

# One writer process: TASKS loops, each appending events in transactions of its own that stay
# open a few random milliseconds after the insert, so transactions of every process overlap
# and ids taken from the sequence would commit out of order but for the event-order lock.
WRITER = """
import asyncio, os, random, sys, time
from service.outbox import append_event
from service.store import open_store

async def main() -> None:
    store = await open_store(os.environ["CURSOR_DB"])
    name, stop = sys.argv[1], time.monotonic() + float(sys.argv[2])
    written = 0

    async def loop(task: int) -> None:
        nonlocal written
        n = 0
        while time.monotonic() < stop:
            n += 1

            async def unit(tx, n=n):
                await append_event(tx, None, "test.cursor", "system", time.time(),
                                   {"writer": name, "task": task, "n": n})
                await asyncio.sleep(random.uniform(0, 0.004))

            await store.write(unit)
            written += 1

    await asyncio.gather(*(loop(t) for t in range(int(sys.argv[3]))))
    await store.close()
    print(written)

asyncio.run(main())
"""


async def test_followers_miss_no_event_while_three_processes_write_at_once(pg_url: str) -> None:
    async with pg_service(pg_url) as relay, pg_service(pg_url) as other:
        await asyncio.gather(relay.start(), other.start())
        env = {**os.environ, "CURSOR_DB": pg_url}
        done = asyncio.Event()
        followers = [
            asyncio.create_task(follow_events(relay.url, done, 0)),  # reads as fast as it can
            asyncio.create_task(follow_events(other.url, done, 1)),  # woken by NOTIFY on commits
        ]
        started = time.monotonic()
        writers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER,
                f"w{i}",
                f"{WRITE_SECONDS:g}",
                str(TASKS),
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            for i in range(WRITERS)
        ]
        outputs = [await w.communicate() for w in writers]
        assert [w.returncode for w in writers] == [0] * WRITERS
        written = sum(int(out.decode()) for out, _ in outputs)
        assert time.monotonic() - started < WRITE_SECONDS + 10
        done.set()
        seen = await asyncio.wait_for(asyncio.gather(*followers), 30)
    stored = stored_event_ids(pg_url)
    assert len(stored) == written > 500, (len(stored), written)
    for follower in seen:
        assert follower == sorted(follower)  # the cursor only moves forward
        missed = sorted(set(stored) - set(follower))
        assert not missed, f"{len(missed)} of {len(stored)} events missed: {missed[:20]}"
        assert len(follower) == len(stored)  # and none twice
