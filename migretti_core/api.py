"""Everything a plugin may use, in one place (also importable from ``migretti_core``).

Names here are the public, documented plugin API (docs/plugins/api.md): they keep working
across minor versions, and a change to them is announced first. Every other module of
``migretti_core`` and ``migretti_plugins`` is internal and may change without notice; reach
other plugins through hooks (``session.hooks``), not through their modules.
"""

from __future__ import annotations

from migretti_core import __version__, hookimpl
from migretti_core.application import Migretti
from migretti_core.cli import (
    app_of,
    dry_run_option,
    emit_result,
    format_option,
    lock_timeout_option,
    parse_lock_timeout,
)
from migretti_core.durations import parse_duration
from migretti_core.errors import (
    EXIT_ABORTED,
    EXIT_BLOCKED,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_LOCK_TIMEOUT,
    EXIT_USAGE,
    Aborted,
    ConfigError,
    DatabaseError,
    HookFailed,
    LockTimeout,
    MgError,
    MigrationFailed,
    MigrationFileError,
    PluginError,
    PluginFailed,
    SqlError,
    StateError,
    UsageError,
)
from migretti_core.hooks import Hooks
from migretti_core.planning import load_migrations
from migretti_core.reporting import display_path, report
from migretti_core.running import confirm, connected, locked, read_state
from migretti_core.settings import (
    FrozenDict,
    FrozenList,
    Key,
    Section,
    plugin_settings,
    top_level_setting,
)
from migretti_core.state import State
from migretti_core.types import (
    Config,
    ConfigRequest,
    Direction,
    Event,
    HistoryChange,
    HistoryEntry,
    Level,
    LintFinding,
    LintRequest,
    LockHolder,
    Migration,
    MigrationResult,
    Options,
    Plan,
    ScratchServer,
    Session,
    Statement,
    StatementBatch,
    StatementInfo,
    Target,
)
from migretti_core.views import current_state

__all__ = [
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
    "__version__",
    "app_of",
    "confirm",
    "connected",
    "current_state",
    "display_path",
    "dry_run_option",
    "emit_result",
    "format_option",
    "hookimpl",
    "load_migrations",
    "lock_timeout_option",
    "locked",
    "parse_duration",
    "parse_lock_timeout",
    "plugin_settings",
    "read_state",
    "report",
    "top_level_setting",
]
