"""The SQLite adapter: the embedded default (one file, one writer, group commit)."""

from __future__ import annotations

from service.store.sqlite.store import PROBE_BYTES, SqliteStore, storage_error

__all__ = ["PROBE_BYTES", "SqliteStore", "storage_error"]
