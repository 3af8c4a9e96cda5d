"""Migretti core: hook specifications, plugin manager, engine and CLI.

Plugin authors import from ``migretti_core.api`` (every name of that public plugin API is
also an attribute of this package). Applications import ``Migretti`` (docs/python-api.md), its
result types and the errors it raises. All of them are loaded on first use, so ``mg --help``
does not pay for them. Everything else in ``migretti_core`` is internal.
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
        FleetFailed,
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
    from migretti_core.fleets import Fleet
    from migretti_core.results import (
        CheckResult,
        FixResult,
        FleetResult,
        HistoryRow,
        LintResult,
        MemberResult,
        MigrationCheckResult,
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
    "Fleet": "migretti_core.fleets",
    **dict.fromkeys(
        (
            "Aborted",
            "CheckResult",
            "ConfigError",
            "ConfirmationRequired",
            "DatabaseError",
            "FleetFailed",
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
            "FleetResult",
            "HistoryRow",
            "LintResult",
            "MemberResult",
            "MigrationCheckResult",
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

# The plugin API (migretti_core.api) besides hookimpl and __version__; a test keeps it in step.
_API_NAMES = frozenset(
    {
        "EXIT_ABORTED",
        "EXIT_BLOCKED",
        "EXIT_FAILURE",
        "EXIT_INTERRUPTED",
        "EXIT_LOCK_TIMEOUT",
        "EXIT_USAGE",
        "Aborted",
        "Config",
        "ConfigError",
        "ConfigRequest",
        "DatabaseError",
        "Direction",
        "Event",
        "FrozenDict",
        "FrozenList",
        "HistoryChange",
        "HistoryEntry",
        "HookFailed",
        "Hooks",
        "Key",
        "Level",
        "LintFinding",
        "LintRequest",
        "LockHolder",
        "LockTimeout",
        "MgError",
        "Migration",
        "MigrationFailed",
        "MigrationFileError",
        "MigrationResult",
        "Migretti",
        "Options",
        "Plan",
        "PluginError",
        "PluginFailed",
        "ScratchServer",
        "Section",
        "Session",
        "SqlError",
        "State",
        "StateError",
        "Statement",
        "StatementBatch",
        "StatementInfo",
        "Target",
        "UsageError",
        "app_of",
        "confirm",
        "connected",
        "current_state",
        "display_path",
        "dry_run_option",
        "emit_result",
        "format_option",
        "load_migrations",
        "lock_timeout_option",
        "locked",
        "parse_duration",
        "parse_lock_timeout",
        "plugin_settings",
        "read_state",
        "report",
        "top_level_setting",
    }
)

_LAZY.update({name: "migretti_core.api" for name in sorted(_API_NAMES) if name not in _LAZY})


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
    "Fleet",
    "FleetFailed",
    "FleetResult",
    "HistoryRow",
    "HookFailed",
    "LintResult",
    "LockTimeout",
    "MemberResult",
    "MgError",
    "MigrationCheckResult",
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
