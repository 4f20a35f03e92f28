"""The `store` fixture, once per engine: a second engine is one more parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from service import outbox
from service.store import Store


async def _sqlite(folder: Path) -> Store:
    return await Store.open(str(folder / "contract.db"))


# engine name -> how to open a store of it in a test's own folder: empty the first time, and
# the same database again when opened twice on one folder (two processes sharing it)
ENGINES: dict[str, Callable[[Path], Awaitable[Store]]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test."""
    name: str = request.param
    return name


async def _opened(engine: str, folder: Path) -> Store:
    opened = await ENGINES[engine](folder)
    opened.hooks.append(outbox.Fanout())
    return opened


@pytest.fixture
async def store(engine: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store with the outbox's fan-out hooked in, as the service runs it."""
    opened = await _opened(engine, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def twin(engine: str, tmp_path: Path, store: Store) -> AsyncIterator[Store]:
    """A second store on the same database as `store`: another process sharing it."""
    opened = await _opened(engine, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
