"""The builtins' boundaries: each is its own module, owns its keys, and imports no other.

A builtin reaches another only through hooks, so a plugin that replaces one (``-p``, or
``-p no:NAME`` and a package of its own) is used by every other builtin too.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from migretti_core.plugins import BUILTINS

PACKAGE = Path(importlib.import_module("migretti_plugins").__file__ or "").parent


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
    declared = set(declare()) if declare is not None else set()
    assert declared - {name} == set(keys)
