"""Imports run one way, in data-flow order: a package imports only itself, packages
earlier in the flow, and the shared modules at the bottom; nothing imports one above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "ragstore"

SHARED = {"errors", "types", "inputs", "config", "filters", "records", "terms"}
"""Top-level modules every layer may use; they import only each other."""

LAYERS = [
    "ingest",
    "embed",
    "store",
    "index",
    "search",
    "cache",
    "answer",
    "engine",
    "eval",
    "server",
    "client",
    "integrations",
]
"""Packages in data-flow order; each may import the ones before it."""

TOP = {"__init__", "__main__", "cli"}
"""The public face: may import anything, imported by no layer."""


def _unit(module: str) -> str:
    """``ragstore.store.sqlite.db`` -> ``store``; ``ragstore`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(unit: str) -> int:
    if unit in SHARED:
        return -1
    if unit in TOP:
        return len(LAYERS)
    return LAYERS.index(unit)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ragstore import in a file, lazy ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ragstore")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ragstore":  # from ragstore import terms
                found += [(node.lineno, f"ragstore.{a.name}") for a in node.names]
            elif node.module.startswith("ragstore."):
                found.append((node.lineno, node.module))
    return found


def _module_name(path: Path) -> str:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    return ".".join(relative.parts)


FILES = sorted(SOURCE.rglob("*.py"))


def test_every_unit_has_a_place() -> None:
    units = {_unit(_module_name(path)) for path in FILES}
    assert units <= SHARED | set(LAYERS) | TOP, units - SHARED - set(LAYERS) - TOP


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down_the_data_flow(path: Path) -> None:
    source = _unit(_module_name(path))
    wrong = []
    for line, module in _imports(path):
        target = _unit(module)
        if target == source:
            continue
        same_level = _rank(target) == _rank(source) and source in SHARED | TOP
        if not (_rank(target) < _rank(source) or same_level):
            wrong.append(f"line {line}: {module}")
    assert not wrong, f"{source} imports a layer above it: {wrong}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ragstore.server.app import create_app\n")
    assert _imports(bad) == [(2, "ragstore.server.app")]
    assert _rank(_unit("ragstore.server.app")) > _rank("store")
