"""What any store must meet for wake-ups: a committed unit's notify wakes waiters, in this
process at once and, where the engine reaches them, in every other process on the database;
a unit that fails wakes nobody."""

from __future__ import annotations

import asyncio

import pytest

from service.store import Store, Tx

# Engines whose notifications reach other processes (PostgreSQL: LISTEN/NOTIFY). SQLite's
# reach only its own process: another process sharing the file finds work on its next scan.
REACHES_OTHER_PROCESSES = {"postgresql"}


async def notify(tx: Tx, channel: str) -> None:
    tx.notify(channel)


async def test_a_committed_notify_wakes_this_processes_waiter(store: Store) -> None:
    waiter = store.waiter("deliveries")
    waiter.clear()
    other = store.waiter("poll")
    other.clear()
    await store.write(lambda tx: notify(tx, "deliveries"))
    assert waiter.is_set()  # at once: set before write() returns
    assert not other.is_set()  # only the channel named


async def test_a_failed_unit_wakes_nobody(store: Store, twin: Store, engine: str) -> None:
    waiter = store.waiter("deliveries")
    far = twin.waiter("deliveries")
    if engine in REACHES_OTHER_PROCESSES:
        # both listeners up (a listener that connects late wakes every waiter to rescan):
        # each has received the other's committed notify
        for writer, woken in ((store, far), (twin, waiter)):
            woken.clear()
            await writer.write(lambda tx: notify(tx, "deliveries"))
            await asyncio.wait_for(woken.wait(), 5.0)
    await asyncio.sleep(0.2)  # anything of before has landed
    waiter.clear()
    far.clear()

    async def broken(tx: Tx) -> None:
        tx.notify("deliveries")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.write(broken)
    await asyncio.sleep(0.3)
    assert not waiter.is_set()
    assert not far.is_set()


@pytest.mark.parametrize("engine", sorted(REACHES_OTHER_PROCESSES))
async def test_a_committed_notify_reaches_the_other_processes(store: Store, twin: Store) -> None:
    far = twin.waiter("poll")
    await asyncio.sleep(0.2)  # let the twin's listener start
    far.clear()
    await store.write(lambda tx: notify(tx, "poll"))
    await asyncio.wait_for(far.wait(), 2.0)
