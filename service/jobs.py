"""Job statuses, monotonic transitions and what providers report (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """A job's status in the relay."""

    SUBMITTING = "submitting"
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        """True for succeeded, failed and canceled."""
        return self in TERMINAL

    @property
    def rank(self) -> int:
        """Order along submitting -> queued -> processing -> terminal."""
        return _RANK[self]


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
_RANK = {
    Status.SUBMITTING: 0,
    Status.QUEUED: 1,
    Status.PROCESSING: 2,
    Status.SUCCEEDED: 3,
    Status.FAILED: 3,
    Status.CANCELED: 3,
}


def advance(old: Status, new: Status) -> bool:
    """True when moving from `old` to `new` goes forward: a late or duplicate report never does."""
    return not old.terminal and new.rank > old.rank


def meaningful_progress(old: float, new: float) -> bool:
    """True when progress moved enough to be worth an event (one per 10 points, and 100%)."""
    if new <= old:
        return False
    return int(new * 10) > int(old * 10) or (new >= 1.0 > old)


def clamp_progress(value: object) -> float | None:
    """A provider's progress as a number in [0, 1] (percentages above 1 are scaled down)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return 1.0 if value > 0 else 0.0
    if number != number:  # NaN
        return None
    if number > 1.0:
        number = number / 100.0
    return min(1.0, max(0.0, number))


@dataclass(frozen=True, slots=True)
class Report:
    """What a provider said about a job, by submission answer, callback or poll."""

    status: Status
    raw_status: str
    progress: float | None = None
    outputs: tuple[dict[str, str], ...] = ()
    error: str | None = None
    cost: float | None = None
    provider_job_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackReport:
    """What a provider's callback said, parsed by its adapter; raw values kept as received."""

    status: Status | None  # None when the status word is missing or unknown
    raw_status: Any = None
    request_id: Any = None
    progress: float | None = None
