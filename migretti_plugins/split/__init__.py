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
    and transaction control (BEGIN, COMMIT, ...) that would break the migration's atomicity;
    in a no-transaction migration, a BEGIN that nothing ends."""
    from migretti_plugins.split.lexer import find_transaction_problems, open_transaction_block

    problems: list[str] = []
    sections = [(migration.up_sql, migration.up_line)]
    if migration.down_sql:
        sections.append((migration.down_sql, migration.down_line or migration.up_line))
    if not migration.transactional:
        for sql, first_line in sections:
            opened = open_transaction_block(sql)
            if opened is not None:
                line, name = opened
                problems.append(
                    f"{display_path(migration.path)}:{first_line + line - 1}: {name} opens a "
                    "transaction block that the migration never ends, so its changes and its "
                    "history row would be rolled back when the session ends; add COMMIT"
                )
        return problems
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
