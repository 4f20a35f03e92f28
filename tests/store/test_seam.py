"""Outside the store, only the modules still on the allow-list reach a connection."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_layout import SQLITE_ALLOWED

ROOT = Path(__file__).resolve().parents[2] / "service"
# what running SQL on a unit of work looks like: its connection, its raw-query helper
SQL_REACH = {"conn", "one", "execute", "executemany", "executescript"}


def _reaching(files: dict[str, Path]) -> set[str]:
    """Modules outside the store (and the allow-list) that touch a connection or run SQL."""
    found = set()
    for name, path in files.items():
        if name.startswith("service.store") or name in SQLITE_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in SQL_REACH:
                found.add(name)
    return found


def _files() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(ROOT.parent).with_suffix("").parts): p for p in ROOT.rglob("*.py")
    }


def test_owners_ledger_and_every_module_outside_the_store_run_no_sql() -> None:
    files = _files()
    assert "service.owners" in files and "service.store.sqlite.owners" in files
    assert "service.ledger" in files and "service.store.sqlite.jobs" in files
    assert "service.outbox" in files and "service.store.sqlite.outbox" in files
    assert not {"service.owners", "service.ledger", "service.outbox"} & SQLITE_ALLOWED
    assert _reaching(files) == set()


def test_the_check_finds_a_planted_query(tmp_path: Path) -> None:
    planted = tmp_path / "owners.py"
    planted.write_text(
        "from __future__ import annotations\n\n"
        "def unregister(tx, owner):\n"
        "    tx.conn.execute('DELETE FROM owners WHERE id = ?', (owner,))\n"
    )
    files = {**_files(), "service.owners": planted}
    assert _reaching(files) == {"service.owners"}


ENGINE_LIBRARIES = {"sqlite3", "aiosqlite", "psycopg", "psycopg_pool", "asyncpg"}


def _engine_importers(files: dict[str, Path]) -> set[str]:
    """Modules of the store's engine-neutral part that import an engine's library."""
    found = set()
    for name, path in files.items():
        if not name.startswith("service.store") or name.startswith(
            ("service.store.sqlite", "service.store.postgres")
        ):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            if roots & ENGINE_LIBRARIES:
                found.add(name)
    return found


def test_the_seam_itself_imports_no_engine() -> None:
    files = _files()
    assert {"service.store.base", "service.store.model", "service.store.__init__"} <= set(files)
    assert _engine_importers(files) == set()


def test_the_engine_check_finds_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "base.py"
    planted.write_text("from __future__ import annotations\n\nimport sqlite3\n")
    files = {**_files(), "service.store.base": planted}
    assert _engine_importers(files) == {"service.store.base"}
