"""An older release refuses a database that a newer one migrated (no downgrade), on both
engines, and `upscale-relay serve` says why instead of starting."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from service.errors import StorageUnavailable
from service.store import open_store
from service.store.schema import migrations
from tests.e2e.harness import _free_port

EXE = str(Path(sys.executable).with_name("upscale-relay"))


def _latest(engine: str) -> int:
    package = "service.store.postgres" if engine == "postgresql" else "service.store.sqlite"
    return migrations(package)[-1][0]


async def _as_if_migrated_by_a_newer_release(engine: str, database: str, version: int) -> None:
    if engine == "postgresql":
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (version,))
    else:
        with sqlite3.connect(database) as conn:
            conn.execute(f"PRAGMA user_version = {version:d}")


async def test_a_database_from_a_newer_release_is_refused(engine: str, database: str) -> None:
    store = await open_store(database)
    await store.close()
    latest = _latest(engine)
    await _as_if_migrated_by_a_newer_release(engine, database, latest + 1)
    with pytest.raises(StorageUnavailable) as refused:
        await open_store(database)
    reason = refused.value.reason
    assert f"version {latest + 1}, newer than this upscale-relay knows ({latest})" in reason
    assert "downgrades are not supported" in reason


async def test_the_current_version_opens_again(engine: str, database: str) -> None:
    for _ in range(2):
        store = await open_store(database)
        await store.close()


@pytest.mark.e2e
def test_serve_refuses_to_start_on_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {_latest('sqlite') + 5:d}")
    env = {"RELAY_DATABASE": str(path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(  # noqa: S603 (this virtualenv's upscale-relay, fixed arguments)
        [EXE, "serve", "--port", str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "downgrades are not supported" in done.stderr
    assert "Traceback" not in done.stderr
