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
from typing import Any

from migretti_core import engine, hookimpl
from migretti_core.engine import display_path
from migretti_core.errors import SqlError
from migretti_core.types import (
    Direction,
    LockReport,
    Migration,
    MigrationResult,
    Plan,
    Session,
)

_ENDS_TRANSACTION = re.compile(
    r"(?is)(?:commit(?!\s+prepared\b)|end|abort|prepare\s+transaction"
    r"|rollback(?!\s+(?:(?:work|transaction)\s+)?to\b)(?!\s+prepared\b))\b"
)
_DEFERRED_NOTE = "raised by a deferred constraint when the migration's transaction commits"


def transaction_enders(session: Session, sql: str) -> list[tuple[int, str]]:
    """``(line, keyword)`` of each statement that would end the transaction it runs in."""
    found: list[tuple[int, str]] = []
    for statement in session.hooks.split_statements(sql):
        match = _ENDS_TRANSACTION.match(statement.text)
        if match is not None:
            found.append((statement.line, " ".join(match.group(0).upper().split())))
    return found


@hookimpl(trylast=True)
def mg_dry_run(session: Session, conn: Any, plan: Plan) -> list[MigrationResult] | None:
    hooks = session.hooks
    results: list[MigrationResult] = []
    stopped = False
    with hooks.transaction(session, conn, rollback=True):
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
            error=error,
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
    checking_deferred = False
    try:
        with hooks.transaction(session, conn):
            with hooks.lock_probe(session, conn) as probed:
                hooks.execute(session, conn, sql)
            checking_deferred = True
            with hooks.transaction(session, conn, rollback=True):
                hooks.execute(session, conn, "SET CONSTRAINTS ALL IMMEDIATE")
    except SqlError as exc:
        if checking_deferred:
            return result(
                engine.sql_failure(migration, exc, "", first_line, _DEFERRED_NOTE).message
            )
        return result(engine.sql_failure(migration, exc, sql, first_line).message)
    return result(None)
