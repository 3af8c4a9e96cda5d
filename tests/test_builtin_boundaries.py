"""The builtins' boundaries: each is its own module, owns its keys, and imports no other.

A builtin reaches another only through hooks, so a plugin that replaces one (``-p``, or
``-p no:NAME`` and a package of its own) is used by every other builtin too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from migretti_core.plugins import BUILTINS

PACKAGE = Path(importlib.import_module("migretti_plugins").__file__ or "").parent


def _files_of(module_name: str) -> list[Path]:
    """The source files of a builtin: its module, or every module of its package."""
    module = importlib.import_module(module_name)
    path = Path(module.__file__ or "")
    return sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]


def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            # ``from migretti_plugins import seeds`` imports the module migretti_plugins.seeds
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _owner(module: str) -> str | None:
    """The builtin a module belongs to (``migretti_plugins.check.scratch``: ``check``)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "migretti_plugins":
        return None
    names = {builtin.name for builtin in BUILTINS}
    return parts[1] if parts[1] in names else None


@pytest.mark.parametrize("builtin", BUILTINS, ids=lambda b: b.name)
def test_no_builtin_imports_another_builtins_module(builtin: object) -> None:
    name, module_name, _keys = builtin  # type: ignore[misc]
    problems = []
    for path in _files_of(module_name):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        package = ".".join(relative.parts[:-1] if path.name != "__init__.py" else relative.parts)
        for line, imported in _imported_modules(path, package):
            owner = _owner(imported)
            if owner is not None and owner != name:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert problems == [], f"builtin {name!r} reaches into other builtins (use a hook): {problems}"


def test_every_builtin_is_its_own_module_or_package() -> None:
    for name, module_name, _keys in BUILTINS:
        assert module_name == f"migretti_plugins.{name}", name
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.parent.name for p in PACKAGE.glob("*/__init__.py")
    }
    assert modules - {"__init__"} == {b.name for b in BUILTINS}


@pytest.mark.parametrize("builtin", BUILTINS, ids=lambda b: b.name)
def test_keys_named_for_a_blocked_builtin_are_the_keys_it_declares(builtin: object) -> None:
    # A blocked builtin cannot be asked for its mg_config_sections, so BUILTINS names the
    # keys not named after the plugin; they must be exactly what the plugin declares.
    name, module_name, keys = builtin  # type: ignore[misc]
    module = importlib.import_module(module_name)
    declare = getattr(module, "mg_config_sections", None)
    declared = {getattr(item, "name", item) for item in declare()} if declare else set()
    assert declared - {name} == set(keys)
