"""Provider knowledge stays in providers/: the domain asks the adapter, never tests a name."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import service
from service import catalog

# Every provider the catalog knows, so a provider added later is covered without editing this.
PROVIDERS = sorted({model.provider for model in catalog.MODELS.values()})
SERVICE = Path(service.__file__).parent
# Where provider names belong: the adapters, the model table, the simulators, the settings.
ALLOWED = ("providers/", "catalog.py", "sim/", "config.py")
OLD_SUBMIT = '''
def send(model, settings, token):
    """Pixazo gets a callback URL."""
    callback = None
    if model.provider == "pixazo":
        callback = f"{settings.public_url}/hooks/pixazo/{token}"
    return callback
'''


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _named(text: str) -> bool:
    return any(name in text.lower() for name in PROVIDERS)


def names_in_code(source: str) -> list[str]:
    """Provider names in strings (docstrings aside), identifiers and imports of `source`."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        texts: list[str] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts = [] if id(node) in docstrings else [node.value]
        elif isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            texts = [node.name]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            texts = [module, *(alias.name for alias in node.names)]
        hits += [f"line {getattr(node, 'lineno', '?')}: {t!r}" for t in texts if _named(t)]
    return hits


def branches_on_a_name(source: str) -> list[str]:
    """Comparisons of anything with a string that names a provider (== "x", in ("x", ...))."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    if _named(part.value):
                        hits.append(f"line {node.lineno}: {ast.unparse(node)}")
    return hits


def test_the_scanners_see_the_old_branch_and_the_adapters() -> None:
    assert "pixazo" in PROVIDERS
    assert len(branches_on_a_name(OLD_SUBMIT)) == 1
    assert len(names_in_code(OLD_SUBMIT)) == 2  # the comparison and the URL, not the docstring
    assert names_in_code("status = jobs.map_pixazo(raw)")
    assert names_in_code("from service.providers.scenario import media")
    adapter = (SERVICE / "providers" / "pixazo.py").read_text(encoding="utf-8")
    assert names_in_code(adapter)


@pytest.mark.parametrize("module", ["service.submit", "service.ledger", "service.poller"])
def test_the_domain_names_no_provider(module: str) -> None:
    source = inspect.getsource(importlib.import_module(module))
    assert names_in_code(source) == []


def test_jobs_keeps_only_the_relays_own_states() -> None:
    jobs = importlib.import_module("service.jobs")
    assert names_in_code(inspect.getsource(jobs)) == []


def _outside_providers() -> list[Path]:
    files = []
    for path in sorted(SERVICE.rglob("*.py")):
        relative = path.relative_to(SERVICE).as_posix()
        if not relative.startswith(ALLOWED):
            files.append(path)
    assert len(files) > 20  # the scan covers the service, wherever its modules move
    return files


def test_no_module_branches_on_a_provider_name() -> None:
    found = {
        path.relative_to(SERVICE).as_posix(): hits
        for path in _outside_providers()
        if (hits := branches_on_a_name(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def _adapter_module(name: str) -> bool:
    """True for `service.providers.<x>...` where x is a module or package other than base."""
    parts = name.split(".")
    if parts[:2] != ["service", "providers"] or len(parts) < 3 or parts[2] == "base":
        return False
    folder = SERVICE / "providers"
    return (folder / f"{parts[2]}.py").exists() or (folder / parts[2]).is_dir()


def test_adapters_are_reached_through_the_package_and_the_protocol_only() -> None:
    """Outside providers/, only `service.providers` (build, callbacks) and its base are imported."""
    found = {}
    for path in _outside_providers():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for name in modules:
                if _adapter_module(name):
                    found[path.relative_to(SERVICE).as_posix()] = name
    assert found == {}
    assert not (SERVICE / "media.py").exists()  # Scenario's upload lives with its adapter
