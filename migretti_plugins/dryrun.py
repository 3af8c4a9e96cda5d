"""Smart dry run: run the plan in one transaction that is always rolled back.

Each transactional migration runs in its own savepoint, so a failure is reported and the
ones after it still run (seeing every change before it, except the failed one's). At the end
of each savepoint the deferred constraints are checked in a nested savepoint that is rolled
back, so a violation that ``COMMIT`` would raise is reported without changing when the
following migrations' constraints fire. The first no-transaction migration and everything
after it are not executed. A migration with a statement that would end the surrounding
transaction (COMMIT, ROLLBACK, END, ABORT, PREPARE TRANSACTION) is not executed and
reported as failed: running it would keep changes in a dry run.

Only ``session.hooks.transaction``, ``execute`` and ``split_statements`` are used, so any
connection plugin works. The history tables are never touched.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from typing import Any

from migretti_core import hookimpl
from migretti_core.errors import SqlError
from migretti_core.messages import printable
from migretti_core.reporting import display_path, report
from migretti_core.types import (
    Direction,
    LockReport,
    Migration,
    MigrationResult,
    Plan,
    Session,
)

# Compiled on first use (re's cache), not at every start of mg.
_ENDS_TRANSACTION = (
    r"(?is)(?:commit(?!\s+prepared\b)|end|abort|prepare\s+transaction"
    r"|rollback(?!\s+(?:(?:work|transaction)\s+)?to\b)(?!\s+prepared\b))\b"
)
_DEFERRED_NOTE = "raised by a deferred constraint when the migration's transaction commits"


def transaction_enders(session: Session, sql: str) -> list[tuple[int, str]]:
    """``(line, keyword)`` of each statement that would end the transaction it runs in."""
    found: list[tuple[int, str]] = []
    for statement in session.hooks.split_statements(sql):
        match = re.match(_ENDS_TRANSACTION, statement.text)
        if match is not None:
            found.append((statement.line, " ".join(match.group(0).upper().split())))
    return found


@hookimpl(trylast=True)
def mg_dry_run(session: Session, conn: Any, plan: Plan) -> list[MigrationResult] | None:
    as_json = session.options.output_format == "json"
    if not as_json:
        _show_sql(session, plan)
    results = _try_plan(session, conn, plan)
    if as_json:
        data = {"migrations": [dry_run_dict(result) for result in results]}
        from migretti_core.formats import result_stream

        out = result_stream()
        print(session.hooks.format_result(session.options, "dryrun", data, "json"), file=out)
        out.flush()
    else:
        _show_results(session, results)
    return results


def _show_sql(session: Session, plan: Plan) -> None:
    """Each migration's SQL as an event, not a print: the output plugin shows it on stdout,
    and code using the Python API gets it in its log instead of on its terminal."""
    for migration in plan.steps:
        sql, _ = migration.section(plan.direction)
        header = f"-- {plan.direction} {migration.id} {migration.name} ({migration.filename})"
        if not migration.transactional:
            header += " [no-transaction]"
        shown = sql.strip(chr(10))
        if plan.direction == "down" and not migration.has_down:
            # only with --allow-missing-down: the real run's line says the same
            shown = "-- no down section: only its history row would be removed"
        report(
            session,
            "dryrun.sql",
            "info",
            f"{header}\n{shown}\n",
            migration_id=migration.id,
            migration_name=migration.name,
            direction=plan.direction,
        )


def _show_results(session: Session, results: list[MigrationResult]) -> None:
    for result in results:
        m = result.migration
        fields = {
            "migration_id": m.id,
            "migration_name": m.name,
            "direction": result.direction,
            "duration_ms": result.duration_ms,
        }
        if not result.executed:
            report(session, "dryrun.skipped", "info", f"not executed: {m.id} {m.name}", **fields)
        elif result.ok:
            report(session, "dryrun.ok", "info", f"ok: {m.id} {m.name}", **fields)
            if result.locks is not None:
                report(
                    session,
                    "dryrun.locks",
                    "info",
                    lock_report_line(m, result.locks),
                    locks=[list(lock) for lock in result.locks.locks],
                    rewrites=list(result.locks.rewrites),
                    **fields,
                )
        else:
            report(
                session,
                "dryrun.failed",
                "error",
                f"failed: {m.id} {m.name}: {result.error}",
                error=result.error,
                **fields,
            )


def _try_plan(session: Session, conn: Any, plan: Plan) -> list[MigrationResult]:
    hooks = session.hooks
    results: list[MigrationResult] = []
    if not plan.steps:  # nothing to try (an empty plan's document): no transaction either
        return results
    stopped = False
    with hooks.transaction(session, conn, rollback=True):
        _set_timeouts(session, conn)
        for migration in plan.steps:
            if stopped or not migration.transactional:
                stopped = True
                results.append(
                    MigrationResult(
                        migration,
                        plan.direction,
                        ok=True,
                        duration_ms=0,
                        dry_run=True,
                        executed=False,
                    )
                )
                continue
            results.append(_try_one(session, conn, migration, plan.direction))
    return results


def _set_timeouts(session: Session, conn: Any) -> None:
    """``table_lock_timeout`` and ``statement_timeout`` for the whole dry run, as the real
    run sets them per migration: a dry run on a busy database must not queue the traffic on
    a table behind its wait for a lock. A migration that runs out of time is reported as
    failed (no retry: a dry run only measures)."""
    from migretti_core.running import table_lock_settings

    lock_wait, _, statement_wait = table_lock_settings(session)
    settings = session.hooks.timeout_sql(session, lock_wait, statement_wait, True)
    if settings:
        session.hooks.execute(session, conn, settings)


def _try_one(
    session: Session, conn: Any, migration: Migration, direction: Direction
) -> MigrationResult:
    hooks = session.hooks
    sql, first_line = migration.section(direction)
    started = time.perf_counter()

    probed: list[LockReport] = []

    def result(error: str | None) -> MigrationResult:
        duration = int((time.perf_counter() - started) * 1000)
        return MigrationResult(
            migration,
            direction,
            ok=error is None,
            duration_ms=duration,
            # masked here, once: it is printed, written as JSON and returned by the API
            error=hooks.redact(error) if error is not None else None,
            dry_run=True,
            locks=probed[0] if probed and error is None else None,
        )

    if not sql.strip():
        return result(None)
    enders = transaction_enders(session, sql)
    if enders:
        line, keyword = enders[0]
        return result(
            f"{display_path(migration.path)}:{first_line + line - 1}: {keyword} would end the "
            "transaction the migration runs in, so it was not executed in the dry run"
        )
    from migretti_core.running import table_lock_settings

    lock_wait = table_lock_settings(session)[0]
    watch = hooks.lock_blockers(session, conn, lock_wait / 2) if lock_wait > 0 else nullcontext([])
    checking_deferred = False
    blockers: list[Any] = []
    tried = time.perf_counter()
    try:
        with hooks.transaction(session, conn):
            with watch as blockers, hooks.lock_probe(session, conn) as probed:
                hooks.execute(session, conn, sql)
            checking_deferred = True
            with hooks.transaction(session, conn, rollback=True):
                hooks.execute(session, conn, "SET CONSTRAINTS ALL IMMEDIATE")
    except SqlError as exc:
        from migretti_core.running import lock_kind, sql_failure

        if checking_deferred:
            return result(sql_failure(migration, exc, "", first_line, _DEFERRED_NOTE).message)
        note = None
        if exc.sqlstate == "55P03" and lock_wait > 0:
            note = _lock_note(
                session, lock_wait, time.perf_counter() - tried, blockers, lock_kind(exc)
            )
        return result(sql_failure(migration, exc, sql, first_line, note).message)
    return result(None)


def _lock_note(
    session: Session,
    lock_wait: float,
    took: float,
    blockers: list[Any],
    kind: str = "table lock",
) -> str:
    """Why a migration of the dry run failed with 55P03, and who held the lock when the
    probe asked (halfway through the wait)."""
    wait = f"{lock_wait * 1000:.0f}ms" if lock_wait < 1 else f"{lock_wait:g}s"
    if took < lock_wait:  # not table_lock_timeout: it cannot have fired yet
        text = f"no {kind} (the migration's own lock_timeout or NOWAIT)"
    else:
        text = f"no {kind} within {wait} (table_lock_timeout; a dry run does not retry)"
    if blockers:
        describe = session.hooks.describe_lock_holder
        text += "; blocked by " + ", ".join(describe(h) for h in blockers)
    return text


def _human_rows(rows: int | None) -> str:
    if rows is None:
        return "rows unknown"
    for limit, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if rows >= limit:
            return f"~{rows / limit:.1f}{unit} rows".replace(".0", "")
    return f"~{rows} rows"


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


def lock_report_line(migration: Migration, locks: LockReport) -> str:
    """``01J... add_email: AccessExclusiveLock on public.users (~1.2M rows, 181 MB);
    rewrites public.users`` (the strongest lock per relation). A relation's name from the
    catalog is escaped (a line break in it would start a line of its own)."""
    sizes = {relation: (rows, size) for relation, rows, size in locks.tables}
    strongest: dict[str, str] = {}
    for relation, mode in locks.locks:
        strongest[relation] = mode  # sorted weakest first per relation
    parts = []
    for relation, mode in strongest.items():
        rows, size = sizes.get(relation, (None, 0))
        parts.append(f"{mode} on {printable(relation)} ({_human_rows(rows)}, {_human_bytes(size)})")
    text = ", ".join(parts) if parts else "no locks on existing relations"
    if locks.rewrites:
        text += "; rewrites " + ", ".join(printable(r) for r in locks.rewrites)
    return f"{migration.id} {migration.name}: {text}"


def dry_run_dict(result: MigrationResult) -> dict[str, Any]:
    from migretti_core.results import lock_report_fields

    locks = result.locks or LockReport()
    return {
        "id": result.migration.id,
        "name": result.migration.name,
        "ok": result.ok,
        "error": result.error,
        "executed": result.executed,
        **lock_report_fields(locks.locks, locks.rewrites, locks.tables),
    }
