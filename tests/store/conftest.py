"""The `store` fixture, once per engine: a second engine is one more parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.store import Store, open_store

ENGINES = ("sqlite", "postgresql")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test."""
    name: str = request.param
    return name


@pytest.fixture
def database(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of the engine under test, as RELAY_DATABASE names it."""
    if engine == "postgresql":
        # asked for only here: a run of the SQLite tests alone starts no server
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "contract.db")


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """An empty store, opened as the service opens it."""
    opened = await open_store(database)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def twin(database: str, store: Store) -> AsyncIterator[Store]:
    """A second store on the same database as `store`: another process sharing it."""
    opened = await open_store(database)
    try:
        yield opened
    finally:
        await opened.close()
