"""Compatibility names: the engine is split into ``planning``, ``running``, ``views`` and
``reporting`` (docs/design.md). Import from those modules; this one goes away.

Its names are looked up on first use: a plugin that imports ``engine`` at module level does not
make ``mg --help`` import the running machinery (psycopg's callers, the state and the plan).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migretti_core.planning import (
        CHECKSUM_HINT as CHECKSUM_HINT,
    )
    from migretti_core.planning import (
        FIX_HINT as FIX_HINT,
    )
    from migretti_core.planning import (
        ApplyRequest as ApplyRequest,
    )
    from migretti_core.planning import (
        RollbackRequest as RollbackRequest,
    )
    from migretti_core.planning import (
        _prefix_dir as _prefix_dir,
    )
    from migretti_core.planning import (
        _read_file as _read_file,
    )
    from migretti_core.planning import (
        ensure_checksums as ensure_checksums,
    )
    from migretti_core.planning import (
        ensure_not_blocked as ensure_not_blocked,
    )
    from migretti_core.planning import (
        load_migrations as load_migrations,
    )
    from migretti_core.planning import (
        nul_problem as nul_problem,
    )
    from migretti_core.planning import (
        plan_apply as plan_apply,
    )
    from migretti_core.planning import (
        plan_rollback as plan_rollback,
    )
    from migretti_core.planning import (
        rollback_shortfall as rollback_shortfall,
    )
    from migretti_core.planning import (
        tampering_of as tampering_of,
    )
    from migretti_core.planning import (
        validate as validate,
    )
    from migretti_core.reporting import (
        display_path as display_path,
    )
    from migretti_core.reporting import (
        finding_line as finding_line,
    )
    from migretti_core.reporting import (
        report as report,
    )
    from migretti_core.running import (
        _AT_OR_NEAR as _AT_OR_NEAR,
    )
    from migretti_core.running import (
        LOCK_NOT_AVAILABLE as LOCK_NOT_AVAILABLE,
    )
    from migretti_core.running import (
        MigrationQuery as MigrationQuery,
    )
    from migretti_core.running import (
        _age as _age,
    )
    from migretti_core.running import (
        _blank as _blank,
    )
    from migretti_core.running import (
        _cut_short as _cut_short,
    )
    from migretti_core.running import (
        _dry_run as _dry_run,
    )
    from migretti_core.running import (
        _execute_plan as _execute_plan,
    )
    from migretti_core.running import (
        _format_wait as _format_wait,
    )
    from migretti_core.running import (
        _gave_up as _gave_up,
    )
    from migretti_core.running import (
        _gave_up_note as _gave_up_note,
    )
    from migretti_core.running import (
        _holder_dict as _holder_dict,
    )
    from migretti_core.running import (
        _human_bytes as _human_bytes,
    )
    from migretti_core.running import (
        _human_rows as _human_rows,
    )
    from migretti_core.running import (
        _line_of as _line_of,
    )
    from migretti_core.running import (
        _lock_retry as _lock_retry,
    )
    from migretti_core.running import (
        _lock_timed_out as _lock_timed_out,
    )
    from migretti_core.running import (
        _query_failure as _query_failure,
    )
    from migretti_core.running import (
        _recorded_as_applied as _recorded_as_applied,
    )
    from migretti_core.running import (
        _run as _run,
    )
    from migretti_core.running import (
        _run_statements as _run_statements,
    )
    from migretti_core.running import (
        _start_no_transaction as _start_no_transaction,
    )
    from migretti_core.running import (
        _statements as _statements,
    )
    from migretti_core.running import (
        _warn_missing as _warn_missing,
    )
    from migretti_core.running import (
        _warn_tampered as _warn_tampered,
    )
    from migretti_core.running import (
        _watch as _watch,
    )
    from migretti_core.running import (
        apply as apply,
    )
    from migretti_core.running import (
        confirm as confirm,
    )
    from migretti_core.running import (
        connected as connected,
    )
    from migretti_core.running import (
        dry_run_dict as dry_run_dict,
    )
    from migretti_core.running import (
        fix as fix,
    )
    from migretti_core.running import (
        lint_plan as lint_plan,
    )
    from migretti_core.running import (
        lock_report_line as lock_report_line,
    )
    from migretti_core.running import (
        lock_retry_pause as lock_retry_pause,
    )
    from migretti_core.running import (
        locked as locked,
    )
    from migretti_core.running import (
        one_line_quote as one_line_quote,
    )
    from migretti_core.running import (
        read_state as read_state,
    )
    from migretti_core.running import (
        rollback as rollback,
    )
    from migretti_core.running import (
        run_migration as run_migration,
    )
    from migretti_core.running import (
        run_plan as run_plan,
    )
    from migretti_core.running import (
        sql_failure as sql_failure,
    )
    from migretti_core.running import (
        table_lock_settings as table_lock_settings,
    )
    from migretti_core.views import (
        current_state as current_state,
    )
    from migretti_core.views import (
        current_status as current_status,
    )
    from migretti_core.views import (
        entry_dict as entry_dict,
    )
    from migretti_core.views import (
        problems_of as problems_of,
    )
    from migretti_core.views import (
        status_data as status_data,
    )
    from migretti_core.views import (
        status_ok as status_ok,
    )
    from migretti_core.views import (
        verify_data as verify_data,
    )

_HOME = {
    "ApplyRequest": "planning",
    "CHECKSUM_HINT": "planning",
    "FIX_HINT": "planning",
    "RollbackRequest": "planning",
    "_prefix_dir": "planning",
    "_read_file": "planning",
    "ensure_checksums": "planning",
    "ensure_not_blocked": "planning",
    "load_migrations": "planning",
    "nul_problem": "planning",
    "plan_apply": "planning",
    "plan_rollback": "planning",
    "rollback_shortfall": "planning",
    "tampering_of": "planning",
    "validate": "planning",
    "display_path": "reporting",
    "finding_line": "reporting",
    "report": "reporting",
    "LOCK_NOT_AVAILABLE": "running",
    "MigrationQuery": "running",
    "_AT_OR_NEAR": "running",
    "_age": "running",
    "_blank": "running",
    "_cut_short": "running",
    "_dry_run": "running",
    "_execute_plan": "running",
    "_format_wait": "running",
    "_gave_up": "running",
    "_gave_up_note": "running",
    "_holder_dict": "running",
    "_human_bytes": "running",
    "_human_rows": "running",
    "_line_of": "running",
    "_lock_retry": "running",
    "_lock_timed_out": "running",
    "_query_failure": "running",
    "_recorded_as_applied": "running",
    "_run": "running",
    "_run_statements": "running",
    "_start_no_transaction": "running",
    "_statements": "running",
    "_warn_missing": "running",
    "_warn_tampered": "running",
    "_watch": "running",
    "apply": "running",
    "confirm": "running",
    "connected": "running",
    "dry_run_dict": "running",
    "fix": "running",
    "lint_plan": "running",
    "lock_report_line": "running",
    "lock_retry_pause": "running",
    "locked": "running",
    "one_line_quote": "running",
    "read_state": "running",
    "rollback": "running",
    "run_migration": "running",
    "run_plan": "running",
    "sql_failure": "running",
    "table_lock_settings": "running",
    "current_state": "views",
    "current_status": "views",
    "entry_dict": "views",
    "problems_of": "views",
    "status_data": "views",
    "status_ok": "views",
    "verify_data": "views",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"migretti_core.{module}"), name)
    globals()[name] = value
    return value
