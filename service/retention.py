"""Retention: prune the events, deliveries and attempts of jobs that ended long ago."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from service.errors import StorageUnavailable
from service.store import Store
from service.store.records import Pruned

log = logging.getLogger(__name__)

# Rows one batch deletes at most: one short transaction. SQLite runs it on the event loop's
# thread (as every unit): measured ~1.5 ms for 250 rows (bench/growth.py), so a callback
# waits at most about that long behind a batch.
BUDGET = 250
# Between two batches of the running service: callbacks and submissions take the writer.
PAUSE = 0.05
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s` or `2w` in seconds; ValueError for anything else (a number
    without a unit too: a forgotten unit must not prune far more than meant)."""
    found = _AGE.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"expected a number and a unit (s, m, h, d or w), e.g. 30d, got {text!r}")
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds <= 0:
        raise ValueError(f"the age must be more than zero, got {text!r}")
    return seconds


async def prune(store: Store, before: float, now: float, pause: float = 0.0) -> Pruned:
    """Prune every job ended before `before`, batch by batch; what was removed. Stops early
    when another process is pruning (it carries on) or a batch finds nothing more to do."""
    total = Pruned()
    while True:
        done = await store.prune(before, now, BUDGET)
        if done is None:
            return total
        total += done
        if not done.rows and not done.jobs:
            return total
        await asyncio.sleep(pause)  # yields to the event loop even when pause is 0


def interval(retention: float) -> float:
    """How often the service prunes: hourly, sooner for a short retention."""
    return min(3600.0, max(1.0, retention / 24))


async def run_forever(
    store: Store,
    days: float | None,
    clock: Callable[[], float],
    archive: tuple[Callable[[float, float], Awaitable[int]], float] | None = None,
) -> None:
    """Prune at start, then every `interval`, what ended more than `days` ago; with
    `archive` (expire, its days), also delete archived files older than its days."""
    retention = min(d * 86400.0 for d in (days, archive[1] if archive else None) if d)
    while True:
        now = clock()
        if archive is not None:
            expire, archive_days = archive
            try:
                gone = await expire(now - archive_days * 86400.0, now)
            except Exception:
                log.exception("retention: archived files not deleted; trying again later")
            else:
                if gone:
                    log.info(
                        "retention: deleted %d archived files over %g days old", gone, archive_days
                    )
        if days is None:
            await asyncio.sleep(interval(retention))
            continue
        try:
            done = await prune(store, now - days * 86400.0, now, PAUSE)
        except StorageUnavailable as exc:
            log.warning("retention: prune not done: %s", exc.reason)
        except Exception:
            log.exception("retention: prune failed; trying again later")
        else:
            if done.rows or done.jobs:
                log.info(
                    "retention: pruned %d jobs ended over %g days ago: %d events,"
                    " %d deliveries, %d attempts deleted",
                    done.jobs,
                    days,
                    done.events,
                    done.deliveries,
                    done.attempts,
                )
        await asyncio.sleep(interval(retention))
