"""The archives rows (RELAY_ARCHIVE): one output of a succeeded job to copy, and what came of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# the columns an adapter inserts, in order (the rest start as the table's defaults)
INSERT_COLUMNS = (
    "job_id",
    "n",
    "url",
    "media_type",
    "hold",
    "next_attempt_at",
    "created_at",
    "job_finished_at",
)


@dataclass(frozen=True, slots=True)
class NewArchive:
    """An output to copy, due at once."""

    job_id: str
    n: int
    url: str
    media_type: str | None
    hold: bool  # before_notify: the job's job.succeeded waits for it
    now: float
    job_finished_at: float

    def values(self) -> tuple[Any, ...]:
        """The row's values in INSERT_COLUMNS order."""
        return (
            self.job_id,
            self.n,
            self.url,
            self.media_type,
            int(self.hold),
            self.now,
            self.now,
            self.job_finished_at,
        )


@dataclass(frozen=True, slots=True)
class Archive:
    """An archives row."""

    job_id: str
    n: int
    url: str
    media_type: str | None
    hold: bool
    state: str  # pending | done | failed | deleted
    attempts: int
    next_attempt_at: float | None
    lease_owner: str | None
    key: str | None
    sha256: str | None
    bytes: int | None
    content_type: str | None
    width: int | None
    height: int | None
    error: str | None
    created_at: float
    finished_at: float | None
    job_finished_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Archive:
        """Decode an archives row."""
        return cls(
            row["job_id"],
            int(row["n"]),
            row["url"],
            row["media_type"],
            bool(row["hold"]),
            row["state"],
            int(row["attempts"]),
            row["next_attempt_at"],
            row["lease_owner"],
            row["key"],
            row["sha256"],
            None if row["bytes"] is None else int(row["bytes"]),
            row["content_type"],
            row["width"],
            row["height"],
            row["error"],
            row["created_at"],
            row["finished_at"],
            row["job_finished_at"],
        )


@dataclass(frozen=True, slots=True)
class Copied:
    """What one copy wrote: where, and what it found on the way."""

    key: str
    sha256: str
    bytes: int
    content_type: str
    width: int | None = None
    height: int | None = None
