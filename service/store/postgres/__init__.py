"""The PostgreSQL adapter: several relay processes on several hosts sharing one database."""

from __future__ import annotations

from service.store.postgres.store import PostgresStore, storage_error

__all__ = ["PostgresStore", "storage_error"]
