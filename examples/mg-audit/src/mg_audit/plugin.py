"""The hooks of mg-audit, loaded through the ``migretti`` entry point ``audit``.

Everything comes from the public plugin API (``migretti_core.api``). Only what ``mg --help``
needs is imported at module level; the database work happens inside the command.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from migretti_core.api import (
    Config,
    MigrationResult,
    Session,
    app_of,
    connected,
    emit_result,
    format_option,
    hookimpl,
    plugin_settings,
)

SECTION = "audit"
COLUMNS = ("performed_at", "action", "migration_id", "name", "performed_by")

_LOG_EXISTS = "SELECT to_regclass('_migrations_log') IS NOT NULL"
_LAST_ROWS = (
    "SELECT performed_at, action, migration_id, name, performed_by "
    "FROM _migrations_log ORDER BY performed_at DESC, id DESC LIMIT %s"
)


@hookimpl
def mg_config_sections() -> list[str]:
    return [SECTION]


@hookimpl
def mg_configure(config: Config) -> None:
    """Check the ``audit`` section once, so a typo fails before any migration runs."""
    audit_file(config)


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(audit)


@hookimpl
def mg_after_migration(session: Session, result: MigrationResult) -> None:
    path = audit_file(session.config)
    if path is None:
        return
    record = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "env": session.config.env,
        "command": session.options.command,
        "direction": result.direction,
        "migration_id": result.migration.id,
        "name": result.migration.name,
        "duration_ms": result.duration_ms,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def audit_file(config: Config) -> Path | None:
    """``audit.file`` from mg.yaml, relative to its directory; None when not configured."""
    if SECTION not in config.settings:
        return None
    section = plugin_settings(config, SECTION)
    section.check_keys(["file"])  # audit.fil: unknown key; did you mean 'file'?
    file = section.text("file")
    return config.root / file if file else None


def read_log(session: Session, conn: Any, limit: int) -> list[dict[str, Any]] | None:
    """The last ``limit`` log rows, newest first; None when there is no history table yet."""
    hooks = session.hooks
    if not hooks.query(session, conn, _LOG_EXISTS)[0][0]:
        return None
    rows = hooks.query(session, conn, _LAST_ROWS, (limit,))
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


@click.command()
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many log entries to show.",
)
@format_option
@click.pass_context
def audit(ctx: click.Context, limit: int, fmt: str) -> None:
    """Show the latest entries of the migration log (newest first)."""
    session = app_of(ctx).session("audit")
    with connected(session) as conn:
        rows = read_log(session, conn, limit)
    # Through mg's --format: while it writes JSON, what other plugins print goes to stderr.
    emit_result(ctx, "audit", rows if fmt == "text" else rows or [], fmt)


@hookimpl
def mg_format_result(kind: str, data: Any, fmt: str) -> str | None:
    """``mg audit``'s text (``json`` is mg's own rendering of the rows)."""
    if kind != "audit" or fmt != "text":
        return None
    if not data:
        return "no migration log yet" if data is None else "the migration log is empty"
    lines = []
    for row in data:
        when = row["performed_at"]
        stamp = when.isoformat(sep=" ", timespec="seconds") if isinstance(when, datetime) else when
        by = f"  by {row['performed_by']}" if row["performed_by"] else ""
        lines.append(f"{stamp}  {row['action']:<4}  {row['migration_id']}  {row['name']}{by}")
    return "\n".join(lines)
