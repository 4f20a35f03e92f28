"""Retry schedules, Retry-After parsing and backoff: pure arithmetic, no IO and no sleeping."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_SCHEDULE_TEXT = "0,5,300,1800,7200,18000,36000,36000"


def parse_schedule(text: str) -> tuple[float, ...]:
    """Parse ``"0,5,300"`` into the delays in seconds before each attempt; ValueError if invalid."""
    if not text.strip():
        raise ValueError(
            "retry schedule is empty: expected comma-separated seconds, e.g. '0,5,300'"
        )
    delays: list[float] = []
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            raise ValueError(f"retry schedule {text!r}: item {position} is empty")
        try:
            delay = float(item)
        except ValueError:
            raise ValueError(
                f"retry schedule {text!r}: item {position} ({item!r}) is not a number of seconds"
            ) from None
        if not math.isfinite(delay):
            raise ValueError(f"retry schedule {text!r}: item {position} ({item!r}) is not finite")
        if delay < 0:
            raise ValueError(f"retry schedule {text!r}: item {position} ({item!r}) is negative")
        delays.append(delay)
    return tuple(delays)


DEFAULT_SCHEDULE = parse_schedule(DEFAULT_SCHEDULE_TEXT)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for, or None if absent or unparseable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # RFC 9110 delta-seconds: 1*DIGIT. Hundreds of digits overflow to inf: garbage, not a wait.
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # parsedate_to_datetime returns a naive datetime for "-0000"; HTTP-dates are always GMT.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _jittered(delay: float, jitter: float, rand: Callable[[], float]) -> float:
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
    return delay * (1.0 - jitter + 2.0 * jitter * rand())


def next_delay(
    schedule: Sequence[float],
    attempt: int,
    retry_after: float | None,
    rand: Callable[[], float],
    jitter: float = 0.2,
    max_retry_after: float = 3600.0,
) -> float | None:
    """Return the seconds to wait before attempt ``attempt`` (0-based), or None once spent."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if attempt >= len(schedule):
        return None
    delay = _jittered(schedule[attempt], jitter, rand)
    if retry_after is not None and retry_after > 0:
        # A subscriber's Retry-After may lengthen the wait, never shorten it, and is capped so
        # a hostile or broken header cannot park a delivery for days.
        delay = max(delay, min(retry_after, max_retry_after))
    return delay


def backoff(
    attempt: int,
    minimum: float,
    maximum: float,
    rand: Callable[[], float],
    factor: float = 2.0,
    jitter: float = 0.2,
) -> float:
    """Return the exponential polling delay ``minimum * factor**attempt``, jittered and capped."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if not 0.0 <= minimum <= maximum:
        raise ValueError(f"need 0 <= minimum <= maximum, got {minimum} and {maximum}")
    if factor < 1.0:
        raise ValueError(f"factor must be >= 1, got {factor}")
    try:
        base = min(minimum * factor**attempt, maximum)
    except OverflowError:
        base = maximum
    delay = _jittered(base, jitter, rand)
    return min(max(delay, minimum * (1.0 - jitter)), maximum)
