"""The `store` fixture, once per engine: a second engine is one more parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service import outbox
from service.store import Store


async def _sqlite(folder: Path) -> Store:
    return await Store.open(str(folder / "contract.db"))


# engine name -> how to open an empty store of it in a test's own folder
ENGINES = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(ENGINES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store with the outbox's fan-out hooked in, as the service runs it."""
    opened = await ENGINES[request.param](tmp_path)
    opened.hooks.append(outbox.Fanout())
    try:
        yield opened
    finally:
        await opened.close()
