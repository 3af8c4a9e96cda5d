"""Migretti core: hook specifications, plugin manager, engine and CLI.

Plugin authors import ``hookimpl`` from here to mark their implementations. Applications
import ``Migretti`` (docs/python-api.md), its result types and the errors it raises; those are
loaded on first use, so ``mg --help`` does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "1.0.0"

PROJECT_NAME = "migretti"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

if TYPE_CHECKING:
    from migretti_core.application import Migretti
    from migretti_core.errors import (
        Aborted,
        ConfigError,
        ConfirmationRequired,
        DatabaseError,
        HookFailed,
        LockTimeout,
        MgError,
        MigrationFailed,
        MigrationFileError,
        PluginError,
        SqlError,
        StateError,
        UsageError,
    )
    from migretti_core.results import (
        CheckResult,
        FixResult,
        HistoryRow,
        LintResult,
        MigrationOutcome,
        MigrationRow,
        Mismatch,
        MissingFile,
        RunResult,
        SeedResult,
        SeedRun,
        StatusResult,
        VerifyResult,
    )

_LAZY = {
    "Migretti": "migretti_core.application",
    **dict.fromkeys(
        (
            "Aborted",
            "CheckResult",
            "ConfigError",
            "ConfirmationRequired",
            "DatabaseError",
            "HookFailed",
            "LockTimeout",
            "MgError",
            "MigrationFailed",
            "MigrationFileError",
            "PluginError",
            "SqlError",
            "StateError",
            "UsageError",
        ),
        "migretti_core.errors",
    ),
    **dict.fromkeys(
        (
            "CheckResult",
            "FixResult",
            "HistoryRow",
            "LintResult",
            "MigrationOutcome",
            "MigrationRow",
            "Mismatch",
            "MissingFile",
            "RunResult",
            "SeedResult",
            "SeedRun",
            "StatusResult",
            "VerifyResult",
        ),
        "migretti_core.results",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PROJECT_NAME",
    "Aborted",
    "CheckResult",
    "ConfigError",
    "ConfirmationRequired",
    "DatabaseError",
    "FixResult",
    "HistoryRow",
    "HookFailed",
    "LintResult",
    "LockTimeout",
    "MgError",
    "MigrationFailed",
    "MigrationFileError",
    "MigrationOutcome",
    "MigrationRow",
    "Migretti",
    "Mismatch",
    "MissingFile",
    "PluginError",
    "RunResult",
    "SeedResult",
    "SeedRun",
    "SqlError",
    "StateError",
    "StatusResult",
    "UsageError",
    "VerifyResult",
    "__version__",
    "hookimpl",
    "hookspec",
]
