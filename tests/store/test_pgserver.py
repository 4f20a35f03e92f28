"""The throwaway PostgreSQL of the test suite: reachable, loopback only, not root, cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[2]


def _owner_uid(pid: int) -> int:
    """The real uid of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_roundtrip_on_loopback_not_as_root(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, body text NOT NULL)")
        (new_id,) = conn.execute("INSERT INTO t (body) VALUES ('hello') RETURNING id").fetchone()
        conn.commit()
        assert conn.execute("SELECT body FROM t WHERE id = %s", (new_id,)).fetchone() == ("hello",)
        (listen,) = conn.execute("SELECT current_setting('listen_addresses')").fetchone()
        assert listen == "127.0.0.1"
        (conns,) = conn.execute("SELECT current_setting('max_connections')").fetchone()
        assert int(conns) >= 200
    assert _owner_uid(pg_server.postmaster_pid) != 0


def test_each_test_gets_an_empty_database_dropped_after(pg_server: PgServer, pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (name,)
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
    with pg_server.database() as url:
        inner = url.rsplit("/", 1)[1]
        assert inner != name
        psycopg.connect(url).close()  # left open by a careless test: the drop still works
        left_open = psycopg.connect(url)
    with pg_server.admin() as admin:
        rows = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (inner,)).fetchall()
    assert rows == []
    left_open.close()


def test_tcp_needs_the_password(pg_server: PgServer, pg_url: str) -> None:
    without = pg_url.replace(f":{pg_server.password}@", "@")
    assert without != pg_url
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(without, connect_timeout=5).close()


def test_stop_ends_the_server_and_removes_its_folder() -> None:
    server = PgServer()
    server.start()
    folder, pid = server.folder, server.postmaster_pid
    assert folder is not None and Path(f"/proc/{pid}").exists()
    server.stop()
    assert not folder.exists()
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped, not a zombie left behind
    server.stop()  # twice is harmless


def _run_inner(**env: str) -> str:
    """Run the round-trip test in a child pytest with PostgreSQL's binaries made unfindable."""
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "RELAY_REQUIRE_POSTGRES")}
    environ.update(RELAY_TEST_PG_BINDIR="/nonexistent/postgresql/bin", **env)
    test = f"{Path(__file__).relative_to(ROOT)}::test_roundtrip_on_loopback_not_as_root"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsf", test],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


@pytest.mark.e2e
def test_missing_postgres_skips_locally_but_fails_under_ci() -> None:
    assert "1 skipped" in (local := _run_inner()), local
    assert "PostgreSQL could not be started: no initdb in /nonexistent" in local
    for env in ({"CI": "true"}, {"RELAY_REQUIRE_POSTGRES": "1"}):
        out = _run_inner(**env)
        assert "1 failed" in out or "1 error" in out, out
        assert "PostgreSQL could not be started" in out, out
