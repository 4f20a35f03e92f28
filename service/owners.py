"""Lease owners: a row and a heartbeat per process, so a crashed process's leases free up fast."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable

from service.errors import StorageUnavailable
from service.store import Store, Tx

log = logging.getLogger(__name__)

# Each process writes its heartbeat every HEARTBEAT seconds. One silent for DEAD_AFTER is
# taken for dead: its leases are free to claim, as are those of an owner with no row (it
# stopped cleanly). DEAD_AFTER leaves three missed beats of slack (a busy writer, a slow
# disk), and a crash is taken over at most DEAD_AFTER after the last beat: within 5 s of a
# restart however fast the restart is. Hosts that share a database need clocks in step to
# well under a second (NTP), since heartbeats are compared across processes.
HEARTBEAT = 1.0
DEAD_AFTER = 4.0
# Wake-up channels of the workers (Poller, Deliverer), signalled when an owner is found dead.
CHANNELS = ("poll", "deliveries", "archives")


def alive_after(now: float) -> float:
    """Owners whose heartbeat is later than this are alive at `now`."""
    return now - DEAD_AFTER


async def register(tx: Tx, owner: str, host: str, pid: int, now: float) -> float | None:
    """Record this process as a live owner; returns what `beat` returns."""
    await tx.owners.upsert(owner, host, pid, now)
    return await _reap(tx, owner, now, await tx.owners.oldest_other(owner))


async def beat(tx: Tx, owner: str, host: str, pid: int, now: float) -> float | None:
    """Refresh this owner's heartbeat and drop owners found dead (waking the workers, whose
    claims then take their leases over); returns the oldest heartbeat of another owner."""
    found, oldest = await tx.owners.beat(owner, now)
    if not found:
        # Another process took this one for dead (no beat for DEAD_AFTER: a stalled loop or
        # disk) and may have taken its leases; from now on it is alive again.
        log.warning("this process's owner row was gone (taken for dead): registering again")
        return await register(tx, owner, host, pid, now)
    return await _reap(tx, owner, now, oldest)


async def _reap(tx: Tx, owner: str, now: float, oldest: float | None) -> float | None:
    if oldest is None or oldest > alive_after(now):
        return oldest
    if await tx.owners.drop_silent(owner, alive_after(now)):
        for channel in CHANNELS:
            tx.notify(channel)
    return await tx.owners.oldest_other(owner)


async def unregister(tx: Tx, owner: str) -> None:
    """Remove this owner's row: whatever lease it still holds is free at once."""
    await tx.owners.remove(owner)


class Heartbeat:
    """Keeps this process's owner row fresh, and notices at once when another owner dies."""

    def __init__(self, store: Store, owner: str, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self.owner = owner
        self.host = socket.gethostname()
        self.pid = os.getpid()

    async def register(self) -> None:
        """Record this process as a live owner (before it takes any lease)."""
        owner, host, pid, now = self.owner, self.host, self.pid, self._clock()
        await self._store.write(lambda tx: register(tx, owner, host, pid, now))

    async def run_forever(self) -> None:
        """Beat every HEARTBEAT seconds, and also when another owner's silence turns fatal."""
        owner, host, pid = self.owner, self.host, self.pid
        while True:
            now = self._clock()
            wait = HEARTBEAT
            try:
                unit = functools.partial(beat, owner=owner, host=host, pid=pid, now=now)
                oldest = await self._store.write(unit)
            except StorageUnavailable as exc:
                log.warning("heartbeat not stored: %s", exc.reason)
                oldest = None
            except Exception:
                log.exception("heartbeat failed; going on")
                oldest = None
            if oldest is not None:
                # wake just after the oldest other owner would be dead, to reap it then
                wait = min(wait, max(0.01, oldest + DEAD_AFTER - self._clock() + 0.01))
            await asyncio.sleep(wait)
