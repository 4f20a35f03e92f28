"""The store: what it holds (base) and the SQLite adapter that keeps it."""

from __future__ import annotations

from service import jobs
from service.store.base import (
    Event,
    EventHook,
    Fn,
    Idempotent,
    Job,
    Tx,
    _idem,
    body_hash,
    dumps,
    iso,
)
from service.store.sqlite import PROBE_BYTES, Store, _migrations, storage_error

__all__ = [
    "PROBE_BYTES",
    "Event",
    "EventHook",
    "Fn",
    "Idempotent",
    "Job",
    "Store",
    "Tx",
    "_idem",
    "_migrations",
    "body_hash",
    "dumps",
    "iso",
    "jobs",
    "storage_error",
]
