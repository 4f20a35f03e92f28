"""The package's layout: no import circle, and the pure modules import no IO library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "service"
PURE = ["catalog", "jobs", "retry", "signing", "notification", "notify"]
IO_LIBRARIES = {"httpx", "aiohttp", "sqlite3", "aiosqlite", "starlette", "uvicorn", "psycopg"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported when the file runs (imports under `if TYPE_CHECKING:` are left out)."""
    tree = ast.parse(path.read_text("utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from service.notify import message` imports the submodule, not the package's
            # names: only names that are no module count as an import of the package.
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _is_module(sub) else node.module)
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").exists() or (ROOT / relative).is_dir()


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {
        name: {m for m in _runtime_imports(path) if m in files and m != name}
        for name, path in files.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    assert len(graph) > 30  # the walk really found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = _graph()
    graph["service.jobs"] = {*graph["service.jobs"], "service.app"}
    assert _cycle(graph) is not None


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io_library(name: str) -> None:
    paths = (
        [ROOT / f"{name}.py"] if (ROOT / f"{name}.py").exists() else [*(ROOT / name).glob("*.py")]
    )
    assert paths
    for path in paths:
        libraries = {m.split(".")[0] for m in _runtime_imports(path)}
        assert not libraries & IO_LIBRARIES, (path.name, libraries & IO_LIBRARIES)


# Modules that still run SQL on a transaction's connection: the next steps move their
# statements into the store, and each leaves this list as it does.
SQLITE_ALLOWED: set[str] = set()


def _sqlite_importers(graph_files: dict[str, Path]) -> set[str]:
    """Modules outside the store (and the allow-list) that import sqlite3."""
    return {
        name
        for name, path in graph_files.items()
        if not name.startswith("service.store")
        and name not in SQLITE_ALLOWED
        and "sqlite3" in {m.split(".")[0] for m in _all_imports(path)}
    }


def _all_imports(path: Path) -> set[str]:
    """Every module a file imports, under `if TYPE_CHECKING:` too: a type names a connection."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_store_imports_sqlite3() -> None:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    assert "service.http.deliveries" in files and "service.store.sqlite" in files
    assert _sqlite_importers(files) == set()


def test_the_sqlite3_check_finds_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "routes.py"
    planted.write_text("from __future__ import annotations\n\nimport sqlite3.dbapi2\n")
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    files["service.http.deliveries"] = planted
    assert _sqlite_importers(files) == {"service.http.deliveries"}
