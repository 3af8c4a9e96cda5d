"""Builtin ``baseline``: ``mg baseline ID`` adopts a database whose schema already exists.

Every migration up to and including ID is recorded as applied, with its current file
checksum, without running its SQL; each gets a ``BASELINE`` row in ``_migrations_log``.

Decisions:

- Refused (exit 3) when the history already has applied rows, unless ``--force``; with
  ``--force`` only the migrations without a row are recorded. A failed or running row among
  them is refused even with ``--force`` (``mg fix`` says what happened to it).
- The marker is a ``baseline`` boolean column on ``_migrations``, added in place (``ADD COLUMN
  IF NOT EXISTS``) the first time a baseline is recorded, as the history plugin adds its
  columns (its lock wait bounded by ``table_lock_timeout``, retried, nothing recorded when
  the lock is never granted); databases that never see a baseline never get the column,
  and migretti 0.10 reads the table as before. ``mg status`` and ``mg list`` show such rows
  as applied, marked ``baseline``. A baselined migration rolled back and applied again is an
  ordinary row.
- Like every change it takes the lock, recomputes under it, and asks for confirmation on a
  protected profile; ``--dry-run`` lists what would be recorded and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from migretti_core import hookimpl

if TYPE_CHECKING:
    from migretti_core.state import State
    from migretti_core.types import Migration, Session

__all__ = ["baseline"]

_HAS_COLUMN = """
SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('_migrations')
               AND attname = 'baseline' AND NOT attisdropped)
"""
_ADD_COLUMN = "ALTER TABLE _migrations ADD COLUMN IF NOT EXISTS baseline BOOLEAN"
_MARK = "UPDATE _migrations SET baseline = true WHERE id = ANY(%s)"


def _todo(state: State, upto: Migration, force: bool) -> list[Migration]:
    """The migrations to record, after the checks that may refuse them."""
    from migretti_core.errors import StateError
    from migretti_core.messages import printable
    from migretti_core.planning import fix_hint

    steps = [m for m in state.migrations if m.id <= upto.id]
    entries = state.entries
    blocked = [
        entries[m.id] for m in steps if m.id in entries and entries[m.id].status != "applied"
    ]
    if blocked:
        first = blocked[0]
        raise StateError(
            f"migration {first.id} ({printable(first.name)}) is {first.status}; a baseline "
            "cannot cover it",
            hint=fix_hint(first),
        )
    if state.applied and not force:
        count = len(state.applied)
        raise StateError(
            f"the history already has {count} applied migration{'s' if count != 1 else ''} "
            f"(head {state.applied[-1].id}); a baseline adopts a database without history",
            hint=f"pass --force to record the migrations up to {upto.id} that have no history row",
        )
    return [m for m in steps if m.id not in entries]


def baseline(session: Session, ident: str, *, force: bool = False) -> list[Migration]:
    """Record every migration up to ``ident`` as applied without running it; return them.

    With ``session.options.dry_run`` nothing is written.
    """
    from migretti_core import planning, reporting, running
    from migretti_core.resolve import resolve_migration
    from migretti_core.types import HistoryChange, Plan

    hooks = session.hooks
    migrations = planning.load_migrations(session)
    upto = resolve_migration(migrations, ident)
    with running.connected(session) as conn:
        todo = _todo(running.read_state(session, conn, migrations), upto, force)
        if not todo:
            reporting.report(
                session,
                "command.nothing",
                "info",
                f"nothing to record: every migration up to {upto.id} has a history row",
            )
            return []
        if session.options.dry_run:
            for m in todo:
                reporting.report(
                    session,
                    "baseline.planned",
                    "info",
                    f"would record {m.id} {m.name} as applied (baseline)",
                    migration_id=m.id,
                    migration_name=m.name,
                )
            return todo
        # Said in the question: the list reads like a plan of ups, but nothing of it runs.
        running.confirm(
            session,
            Plan("up", tuple(todo)),
            f"baseline up to {upto.id} (recorded as applied, their SQL is not run)",
        )
        with running.locked(session, conn):
            hooks.history_prepare(session, conn)
            todo = _todo(running.read_state(session, conn, migrations), upto, force)
            if not todo:
                return []
            recorded = todo
            # Adding the column takes an exclusive lock on _migrations: bounded by
            # table_lock_timeout and retried, as the history plugin's own columns are.
            adding = not hooks.query(session, conn, _HAS_COLUMN)[0][0]

            def record() -> None:
                for m in recorded:
                    hooks.history_write(
                        session,
                        conn,
                        HistoryChange(m.id, m.name, m.checksum, "BASELINE", "applied"),
                    )
                if adding:
                    hooks.query(session, conn, _ADD_COLUMN)
                hooks.query(session, conn, _MARK, ([m.id for m in recorded],))

            running.with_table_lock_timeout(
                session,
                conn,
                record,
                limited=adding,
                what="add the baseline column to _migrations",
                doing="adding the baseline column to _migrations",
                hint="end the session holding a lock on _migrations (an open transaction that "
                "read it) and run mg baseline again; table_lock_timeout and "
                "table_lock_retries set how long mg waits",
            )
    for m in todo:
        reporting.report(
            session,
            "migration.baselined",
            "info",
            f"baseline {m.id} {m.name}",
            migration_id=m.id,
            migration_name=m.name,
        )
    reporting.report(
        session,
        "baseline.finished",
        "info",
        f"recorded {len(todo)} migration{'s' if len(todo) != 1 else ''} as applied "
        f"without running {'them' if len(todo) != 1 else 'it'} (baseline up to {upto.id})",
        count=len(todo),
    )
    if todo:
        hooks.after_command(session, "baseline", (), {"recorded": [m.id for m in todo]})
    return todo


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(baseline_command)


def _complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from migretti_core.cli import complete_ids

    return complete_ids(ctx, param, incomplete)


@click.command("baseline")
@click.argument("ident", metavar="ID", shell_complete=_complete_ids)
@click.option("--force", is_flag=True, help="Record them even though the history has applied rows.")
@click.option("--dry-run", is_flag=True, help="List what would be recorded; change nothing.")
@click.option(
    "--lock-timeout",
    metavar="DURATION",
    help="How long to wait for the migration lock (e.g. 30s, 10m). Default: lock_timeout, 10m.",
)
@click.pass_context
def baseline_command(
    ctx: click.Context, ident: str, force: bool, dry_run: bool, lock_timeout: str | None
) -> Any:
    """Record every migration up to ID as applied, without running it (adopt a database).

    ID is an id, a unique id prefix, a name or a file name. Refused (exit 3) when the
    history already has applied migrations, unless --force.
    """
    from migretti_core.cli import app_of, parse_lock_timeout

    session = app_of(ctx).session(
        "baseline", dry_run=dry_run, lock_timeout=parse_lock_timeout(lock_timeout)
    )
    baseline(session, ident, force=force)
    return 0
