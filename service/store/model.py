"""What the store holds for jobs: job rows, their heads, idempotency keys, JSON columns."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service import notification
from service.jobs import Status
from service.store.codec import dumps as dumps
from service.store.codec import iso as iso


def _loads(text: str | None, empty: Any = None) -> Any:
    """Decode a JSON column; the common empty values skip the decoder."""
    if text is None:
        return empty
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return json.loads(text)


# The columns a Job is made of, in the order `Job.from_values` reads them.
JOB_COLUMNS = (
    "seq, id, model, provider, status, progress, input, metadata, outputs, error,"
    " provider_job_id, cost, webhook, webhook_events, created_at, updated_at, finished_at,"
    " next_poll_at, poll_attempt, poll_errors, callback_status, deferred"
)
_STATUSES = {str(s): s for s in Status}


@dataclass(frozen=True, slots=True)
class Job:
    """A job row."""

    seq: int
    id: str
    model: str
    provider: str
    status: Status
    progress: float
    input: dict[str, Any]
    metadata: dict[str, Any]
    outputs: list[dict[str, Any]]
    error: dict[str, Any] | None
    provider_job_id: str | None
    cost: float | None
    webhook: str | None
    webhook_events: list[str] | None
    created_at: float
    updated_at: float
    finished_at: float | None
    next_poll_at: float | None
    poll_attempt: int
    poll_errors: int
    callback_status: str | None
    deferred: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """Decode a `SELECT * FROM jobs` row."""
        return cls(
            seq=row["seq"],
            id=row["id"],
            model=row["model"],
            provider=row["provider"],
            status=Status(row["status"]),
            progress=float(row["progress"]),
            input=_loads(row["input"]),
            metadata=_loads(row["metadata"]),
            outputs=_loads(row["outputs"]),
            error=_loads(row["error"]) if row["error"] else None,
            provider_job_id=row["provider_job_id"],
            cost=row["cost"],
            webhook=row["webhook"],
            webhook_events=_loads(row["webhook_events"]) if row["webhook_events"] else None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            next_poll_at=row["next_poll_at"],
            poll_attempt=row["poll_attempt"],
            poll_errors=row["poll_errors"],
            callback_status=row["callback_status"],
            deferred=bool(row["deferred"]),
        )

    @classmethod
    def from_values(cls, v: Sequence[Any]) -> Job:
        """Decode a row of JOB_COLUMNS by position (a third of the cost of by name)."""
        status = _STATUSES.get(v[4]) or Status(v[4])
        return cls(
            v[0],
            v[1],
            v[2],
            v[3],
            status,
            # SQLite's RETURNING gives a whole REAL as an int (0, 1): progress is always a float
            float(v[5]),
            _loads(v[6]),
            _loads(v[7]),
            _loads(v[8]),
            _loads(v[9]) if v[9] else None,
            v[10],
            v[11],
            v[12],
            _loads(v[13]) if v[13] else None,
            v[14],
            v[15],
            v[16],
            v[17],
            v[18],
            v[19],
            v[20],
            bool(v[21]),
        )

    def notification_data(self) -> dict[str, Any]:
        """The job as notifications carry it (SPEC: Outgoing notifications)."""
        data: notification.NotificationData = {
            "id": self.id,
            "model": self.model,
            "status": str(self.status),
            "progress": self.progress,
            "outputs": self.outputs,
            "error": self.error,
            "metadata": self.metadata,
            "provider": self.provider,
            "provider_job_id": self.provider_job_id,
            "cost": self.cost,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }
        return dict(data)

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        out = self.notification_data()
        if self.deferred:
            out["deferred"] = True
        out["input"] = self.input
        out["webhook"] = self.webhook
        out["webhook_events_filter"] = self.webhook_events
        out["finished_at"] = iso(self.finished_at)
        return out


@dataclass(frozen=True, slots=True)
class Head:
    """The columns a transition decides on (cheaper to read than the whole job)."""

    id: str
    status: Status
    progress: float
    cost: float | None
    provider_job_id: str | None
    callback_status: str | None
    next_poll_at: float | None


@dataclass(frozen=True, slots=True)
class Idempotent:
    """A stored Idempotency-Key and, once known, the answer it gave."""

    key: str
    request_hash: str
    job_id: str | None
    status_code: int | None
    response: dict[str, Any] | None


def _idem(row: Mapping[str, Any]) -> Idempotent:
    return Idempotent(
        row["key"],
        row["request_hash"],
        row["job_id"],
        row["status_code"],
        json.loads(row["response"]) if row["response"] else None,
    )
