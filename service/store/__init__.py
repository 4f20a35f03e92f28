"""The store: the seam every engine's adapter meets (base) and how a database is opened."""

from __future__ import annotations

from service.store.base import (
    Event,
    Grouped,
    Idempotent,
    Job,
    Store,
    Tx,
    Unit,
    body_hash,
    dumps,
    iso,
)
from service.store.codec import redacted
from service.store.model import _idem

LOCK_WAIT = 10.0

__all__ = [
    "Event",
    "Grouped",
    "Idempotent",
    "Job",
    "Store",
    "Tx",
    "Unit",
    "_idem",
    "body_hash",
    "check_store",
    "dumps",
    "engine_of",
    "iso",
    "open_store",
    "redacted",
]


def engine_of(database: str) -> str:
    """Which adapter keeps `database`: "postgresql" for a postgresql:// URL, else "sqlite"."""
    scheme = database.partition("://")[0].lower() if "://" in database else ""
    return "postgresql" if scheme in ("postgresql", "postgres") else "sqlite"


def _sqlite_path(database: str) -> str:
    """A path, or a sqlite:/// URL's path."""
    if database.lower().startswith("sqlite://"):
        return database[len("sqlite://") :] or ":memory:"
    return database


async def open_store(database: str, *, lock_wait: float = LOCK_WAIT, pool: int = 10) -> Store:
    """Open (creating and migrating as needed) the database named by `database`.

    A write waits up to `lock_wait` seconds for another connection's lock (SQLite) or for a
    pooled connection (PostgreSQL: `pool` connections per process).
    Raises StorageUnavailable when it cannot be opened or written."""
    if engine_of(database) == "postgresql":
        from service.store.postgres import PostgresStore

        return await PostgresStore.open(database, lock_wait=lock_wait, pool_size=pool)
    from service.store.sqlite import SqliteStore

    return await SqliteStore.open(_sqlite_path(database), lock_wait=lock_wait)


async def check_store(database: str) -> None:
    """Open the database and store a probe; StorageUnavailable says why not."""
    store = await open_store(database)
    try:
        await store.probe()
    finally:
        await store.close()
