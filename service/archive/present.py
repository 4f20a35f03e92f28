"""Archived outputs as readers see them: GET /v1/jobs/{id} and the notifications, with a
fresh archive_url on each read (S3: presigned for RELAY_ARCHIVE_URL_TTL)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from service.archive.backend import Backend
from service.archive.units import Plan, output_url
from service.store import Event
from service.store.archives import Archive

# the events whose outputs may carry archive keys
ARCHIVED_TYPES = frozenset(("job.succeeded", "job.archived"))
STATES = {"pending": "pending", "done": "archived", "failed": "failed", "deleted": "deleted"}


class Presenter:
    """Adds the archive's facts to outputs, signing URLs where the backend does."""

    def __init__(self, backend: Backend, plan: Plan, ttl: int) -> None:
        self.backend = backend
        self.plan = plan
        self.ttl = ttl

    async def url(self, job_id: str, n: int, key: str) -> str | None:
        """Where a client GETs an archived output now."""
        if self.plan.served:
            return output_url(self.plan, job_id, n)
        return await self.backend.url(key, self.ttl)

    async def job_outputs(
        self, job_id: str, outputs: Sequence[Any], rows: Sequence[Archive]
    ) -> list[Any]:
        """A job's outputs with each one's archive state, and its copy's facts once copied."""
        by_n = {r.n: r for r in rows}
        shown: list[Any] = []
        for n, out in enumerate(outputs):
            row = by_n.get(n)
            if row is None or not isinstance(out, dict):
                shown.append(out)
                continue
            item = {**out, "archive_status": STATES.get(row.state, row.state)}
            if row.state == "done" and row.key is not None:
                item["archive_url"] = await self.url(job_id, n, row.key)
                item["sha256"] = row.sha256
                item["bytes"] = row.bytes
                item["content_type"] = row.content_type
                if row.width is not None and row.height is not None:
                    item["width"], item["height"] = row.width, row.height
            elif row.state == "failed":
                item["archive_error"] = row.error
            shown.append(item)
        return shown

    async def event(self, event: Event) -> Event:
        """An event as a notification carries it: outputs' archive keys turned into URLs."""
        outputs = event.data.get("outputs")
        if not isinstance(outputs, list) or not any(
            isinstance(o, dict) and "archive_key" in o for o in outputs
        ):
            return event
        fresh: list[Any] = []
        for n, out in enumerate(outputs):
            if isinstance(out, dict) and "archive_key" in out:
                item = {k: v for k, v in out.items() if k != "archive_key"}
                if event.job_id is not None:
                    item["archive_url"] = await self.url(event.job_id, n, out["archive_key"])
                out = item
            fresh.append(out)
        return dataclasses.replace(event, data={**event.data, "outputs": fresh})


def strip_keys(event: Event) -> Event:
    """An event without its outputs' archive keys (archiving off now, the rows still there)."""
    outputs = event.data.get("outputs")
    if not isinstance(outputs, list) or not any(
        isinstance(o, dict) and "archive_key" in o for o in outputs
    ):
        return event
    fresh = [
        {k: v for k, v in o.items() if k != "archive_key"} if isinstance(o, dict) else o
        for o in outputs
    ]
    return dataclasses.replace(event, data={**event.data, "outputs": fresh})
