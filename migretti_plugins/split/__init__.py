"""Builtin ``split``: statement splitting and the no-transaction pre-flight check.

Splitting uses a fast lexer that understands quoting, dollar quotes, comments and
``BEGIN ATOMIC`` bodies (see docs/performance.md for why not sqlparse alone).
"""

from __future__ import annotations

from migretti_core import hookimpl
from migretti_core.reporting import display_path
from migretti_core.types import Migration, Statement


@hookimpl(trylast=True)
def mg_split_statements(sql: str) -> list[Statement]:
    from migretti_plugins.split.lexer import split_sql

    return split_sql(sql)


@hookimpl
def mg_validate_migration(migration: Migration) -> list[str]:
    """Reject, before anything runs, statements PostgreSQL refuses inside a transaction block
    and transaction control (BEGIN, COMMIT, ...) that would break the migration's atomicity."""
    if not migration.transactional:
        return []
    from migretti_plugins.split.lexer import find_transaction_problems

    problems: list[str] = []
    sections = [(migration.up_sql, migration.up_line)]
    if migration.down_sql:
        sections.append((migration.down_sql, migration.down_line or migration.up_line))
    for sql, first_line in sections:
        for line, name, kind in find_transaction_problems(sql):
            where = f"{display_path(migration.path)}:{first_line + line - 1}"
            if kind == "refused":
                problems.append(
                    f"{where}: {name} cannot run inside a transaction block; "
                    "add `-- migrate: no-transaction` to the header"
                )
            else:
                problems.append(
                    f"{where}: {name} would end or nest the transaction mg runs this migration "
                    "in (with its history row); remove it, or add `-- migrate: no-transaction`"
                )
    return problems
