"""``mg lint`` against the cases of squawk's rules where it flags or accepts differently than
a first reading suggests: through the real entry point, each migration file judged on its own
(``--all``), so a team coming from squawk sees the same findings for the same SQL."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from migretti_core.testing import Project

# (rule, SQL, whether the rule flags it, no-transaction migration)
CASES = [
    # IF NOT EXISTS needs an index name: an unnamed index cannot be written robustly.
    ("prefer-robust-stmts", 'CREATE INDEX CONCURRENTLY ON "t" ("c");', False, True),
    ("prefer-robust-stmts", 'CREATE INDEX CONCURRENTLY "t_c" ON "t" ("c");', True, True),
    # A temporary table dropped at commit is gone before the migration could run again.
    ("prefer-robust-stmts", "CREATE TEMP TABLE scratch (id bigint) ON COMMIT DROP;", False, True),
    ("prefer-robust-stmts", "CREATE TEMP TABLE scratch (id bigint);", True, True),
    # One DROP CONSTRAINT IF EXISTS makes one ADD CONSTRAINT of that name robust, not two.
    (
        "prefer-robust-stmts",
        "ALTER TABLE t DROP CONSTRAINT IF EXISTS u;\n"
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX u_idx;",
        False,
        True,
    ),
    (
        "prefer-robust-stmts",
        "ALTER TABLE t DROP CONSTRAINT IF EXISTS u;\n"
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX u_idx;\n"
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX u_idx;",
        True,
        True,
    ),
    # An unnamed constraint added again is a second constraint (or fails).
    ("prefer-robust-stmts", "ALTER TABLE t ADD CHECK (a > 0) NOT VALID;", True, True),
    # From PostgreSQL 12 a validated CHECK (col IS NOT NULL) spares SET NOT NULL its scan:
    # that column's, not another's.
    (
        "adding-not-nullable-field",
        "ALTER TABLE foo ADD CONSTRAINT baz_not_null CHECK (baz IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE foo VALIDATE CONSTRAINT baz_not_null;\n"
        "ALTER TABLE foo ALTER COLUMN bar SET NOT NULL;",
        True,
        True,
    ),
    (
        "adding-not-nullable-field",
        "ALTER TABLE foo ADD CONSTRAINT bar_not_null CHECK (bar IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE foo VALIDATE CONSTRAINT bar_not_null;\n"
        "ALTER TABLE foo ALTER COLUMN bar SET NOT NULL;",
        False,
        True,
    ),
    # Different fields or elements of one column are no duplicate; the whole column and a
    # field of it are, and so are the columns a view or a new table would get twice.
    ("ban-duplicate-column-assignments", "UPDATE k SET a.x = 1, a.y = 2;", False, False),
    ("ban-duplicate-column-assignments", "UPDATE k SET arr[1] = 1, arr[2] = 2;", False, False),
    ("ban-duplicate-column-assignments", "INSERT INTO k (a.x, a.y) VALUES (1, 2);", False, False),
    ("ban-duplicate-column-assignments", "UPDATE k SET a = row(1, 2), a.x = 1;", True, False),
    ("ban-duplicate-column-assignments", "UPDATE k SET (b, c) = (1, 2), b = 3;", True, False),
    (
        "ban-duplicate-column-assignments",
        "CREATE VIEW v AS SELECT x.a, y.a FROM x, y;",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "CREATE VIEW v AS SELECT x.a, y.b FROM x, y;",
        False,
        False,
    ),
    ("ban-duplicate-column-assignments", "CREATE TABLE t2 AS SELECT 1 AS a, 2 AS a;", True, False),
    ("ban-duplicate-column-assignments", "SELECT 1 AS a, 2 AS a INTO t3;", True, False),
    ("ban-duplicate-column-assignments", "SELECT 1 AS a, 2 AS a;", False, False),
    # The data-modifying queries of a WITH clause are checked too.
    (
        "ban-duplicate-column-assignments",
        "WITH u AS (UPDATE k SET a = 1, a = 2 RETURNING *) SELECT * FROM u;",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "WITH m AS (DELETE FROM a RETURNING *) INSERT INTO b (x, x) SELECT * FROM m;",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "WITH u AS (UPDATE k SET a = 1, b = 2 RETURNING *) DELETE FROM c;",
        False,
        False,
    ),
    # ON CONFLICT ... DO UPDATE SET is an UPDATE's SET list: PostgreSQL refuses a column twice.
    (
        "ban-duplicate-column-assignments",
        "INSERT INTO k (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1, b = 2;",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "INSERT INTO k (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET (b, c) = (1, 2), b = 3;",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "INSERT INTO k (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b.x = 1, b.y = 2;",
        False,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "CREATE MATERIALIZED VIEW mv (a, a) AS SELECT 1, 2;",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "MERGE INTO k USING s ON k.b = s.id WHEN NOT MATCHED THEN INSERT (b, b) VALUES (1, 2);",
        True,
        False,
    ),
    (
        "ban-duplicate-column-assignments",
        "CREATE FOREIGN TABLE f (a bigint, a text) SERVER s;",
        True,
        False,
    ),
    # ADD COLUMN ... REFERENCES is adding-foreign-key-constraint's finding alone (a column
    # constraint cannot be NOT VALID); ADD CONSTRAINT ... FOREIGN KEY is both rules'.
    (
        "constraint-missing-not-valid",
        "ALTER TABLE email ADD COLUMN user_id bigint REFERENCES app_user (id);",
        False,
        False,
    ),
    (
        "adding-foreign-key-constraint",
        "ALTER TABLE email ADD COLUMN user_id bigint REFERENCES app_user (id);",
        True,
        False,
    ),
    (
        "constraint-missing-not-valid",
        "ALTER TABLE email ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES app_user (id);",
        True,
        False,
    ),
    # An ignore comment above the line of an ALTER TABLE's action covers that action, as in
    # squawk; one between two statements still covers only the next.
    (
        "ban-drop-column",
        "ALTER TABLE users\n  -- squawk-ignore ban-drop-column\n  DROP COLUMN legacy;",
        False,
        False,
    ),
    (
        "unused-ignore",
        "ALTER TABLE users\n  -- squawk-ignore ban-drop-column\n  DROP COLUMN legacy;",
        False,
        False,
    ),
    (
        "ban-drop-column",
        "ALTER TABLE users DROP COLUMN a;\n-- squawk-ignore ban-drop-column\n\n"
        "ALTER TABLE users DROP COLUMN b;",
        True,
        False,
    ),
    # A table created in one schema makes a table of that name in another no newer.
    (
        "ban-drop-table",
        "CREATE TABLE audit.users (id bigint);\nDROP TABLE public.users;",
        True,
        False,
    ),
    (
        "require-concurrent-index-creation",
        "CREATE TABLE audit.users (id bigint);\nCREATE INDEX users_id ON public.users (id);",
        True,
        False,
    ),
    (
        "adding-required-field",
        "CREATE TABLE audit.users (id bigint);\n"
        "ALTER TABLE public.users ADD COLUMN c bigint NOT NULL;",
        True,
        False,
    ),
    # Without a schema on one side, the search_path may make them one table.
    (
        "require-concurrent-index-creation",
        "CREATE TABLE audit.users (id bigint);\nCREATE INDEX users_id ON users (id);",
        False,
        False,
    ),
    (
        "ban-drop-table",
        "CREATE TABLE users (id bigint);\nDROP TABLE public.users;",
        False,
        False,
    ),
    (
        "ban-drop-table",
        "CREATE TABLE public.users (id bigint);\nDROP TABLE public.users;",
        False,
        False,
    ),
    # A materialized view or a SELECT ... INTO table made earlier in the file is new too.
    (
        "require-concurrent-index-creation",
        "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS a;\nCREATE INDEX mv_a ON mv (a);",
        False,
        False,
    ),
    (
        "require-concurrent-index-creation",
        "SELECT 1 AS a INTO t3;\nCREATE INDEX t3_a ON t3 (a);",
        False,
        False,
    ),
    # A new table renamed is still new; dropping NOT NULL on it breaks no client.
    (
        "require-concurrent-index-creation",
        "CREATE TABLE t (a bigint);\nALTER TABLE t RENAME TO u;\nCREATE INDEX i ON u (a);",
        False,
        False,
    ),
    (
        "ban-drop-not-null",
        "CREATE TABLE t (a bigint NOT NULL);\nALTER TABLE t ALTER COLUMN a DROP NOT NULL;",
        False,
        False,
    ),
    ("ban-drop-not-null", "ALTER TABLE t ALTER COLUMN a DROP NOT NULL;", True, False),
    # COMMIT AND CHAIN opens the next transaction at once: it needs a COMMIT of its own.
    (
        "ban-uncommitted-transaction",
        "BEGIN;\nCREATE TABLE u (id bigint);\nCOMMIT AND CHAIN;\nCREATE TABLE v (id bigint);",
        True,
        True,
    ),
    (
        "ban-uncommitted-transaction",
        "BEGIN;\nCREATE TABLE u (id bigint);\nCOMMIT AND CHAIN;\nCREATE TABLE v (id bigint);\n"
        "COMMIT;",
        False,
        True,
    ),
    (
        "ban-concurrent-index-creation-in-transaction",
        "BEGIN;\nROLLBACK AND CHAIN;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);\nCOMMIT;",
        True,
        True,
    ),
    # REINDEX SYSTEM has no CONCURRENTLY to ask for.
    ("require-concurrent-reindex", "REINDEX SYSTEM;", False, True),
    ("require-concurrent-reindex", "REINDEX DATABASE app;", True, True),
    # NOT NULL is a domain constraint too (a DEFAULT is not).
    ("ban-create-domain-with-constraint", "CREATE DOMAIN d AS integer NOT NULL;", True, False),
    ("ban-create-domain-with-constraint", "CREATE DOMAIN d AS integer DEFAULT 1;", False, False),
    # A quoted identifier with escaped quotes over 63 bytes.
    ("identifier-too-long", 'CREATE TABLE "%s""b" (id bigint);' % ("a" * 63), True, False),
    ("identifier-too-long", 'CREATE TABLE "%s""b" (id bigint);' % ("a" * 61), False, False),
]

# With mg's own table_lock_timeout off: statements that wait for a lock on existing tables.
TIMEOUT_CASES = [
    ("LOCK TABLE t;", True),
    ("REFRESH MATERIALIZED VIEW mv;", True),
    ("CREATE POLICY p ON t USING (true);", True),
    ("ALTER POLICY p ON t USING (false);", True),
    ("CREATE RULE r AS ON INSERT TO t DO ALSO NOTIFY t;", True),
    ("VACUUM (FULL) t;", True),
    ("CREATE TABLE q (id bigint REFERENCES p (id));", True),
    ("CREATE TABLE q (id bigint, FOREIGN KEY (id) REFERENCES s.p (id));", True),
    (
        "CREATE TABLE p (id bigint PRIMARY KEY);\nCREATE TABLE q (id bigint REFERENCES p (id));",
        False,
    ),
    ("CREATE TABLE q (id bigint PRIMARY KEY, parent bigint REFERENCES q (id));", False),
    ("CREATE TABLE a.q (id bigint PRIMARY KEY, parent bigint REFERENCES b.q (id));", True),
    ("CREATE TABLE q (id bigint);", False),
    # The same migration made the table: its lock waits for no one. Another table it names
    # (a foreign key's, another schema's) is another matter.
    ("CREATE TABLE q (a bigint);\nALTER TABLE q ADD COLUMN c bigint;", False),
    ("CREATE TABLE q (a bigint);\nCREATE INDEX q_a ON q (a);", False),
    ("CREATE TABLE q (a bigint);\nLOCK TABLE q;\nDROP TABLE q;", False),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1 AS a;\nREFRESH MATERIALIZED VIEW mv;", False),
    ("CREATE TABLE q (a bigint);\nALTER TABLE q ADD FOREIGN KEY (a) REFERENCES p (id);", True),
    ("CREATE TABLE q (a bigint);\nTRUNCATE q, p;", True),
    ("CREATE TABLE audit.q (a bigint);\nALTER TABLE public.q ADD COLUMN c bigint;", True),
    ("VACUUM t;", False),
    ("SET lock_timeout = '1s';\nLOCK TABLE t;", False),
]


# Off by default: enabled for these cases. A temporary table has no schema to name.
SCHEMA_CASES = [
    ("CREATE TEMP TABLE scratch (id bigint) ON COMMIT DROP;", False),
    ("CREATE TEMPORARY TABLE scratch (id bigint);", False),
    ("CREATE TEMP TABLE scratch AS SELECT 1;", False),
    ("CREATE UNLOGGED TABLE scratch (id bigint);", True),
    ("CREATE TABLE scratch AS SELECT 1;", True),
    ("CREATE TABLE public.scratch AS SELECT 1;", False),
]


def lint_all(project: Project, *args: str) -> dict[str, list[str]]:
    done = project.mg("lint", "--all", "--format", "json", *args)
    assert done.returncode in (0, 3), done.stderr
    rules: dict[str, list[str]] = defaultdict(list)
    for finding in json.loads(done.stdout)["findings"]:
        rules[str(finding["migration"])].append(str(finding["rule"]))
    return rules


@pytest.fixture
def offline(tmp_path: Path) -> Project:
    """A project whose database cannot be reached: ``--all`` lints the files alone."""
    return Project(tmp_path / "off", "postgresql://nobody@127.0.0.1:9/none")


def test_rules_flag_and_accept_as_squawk_does(offline: Project) -> None:
    for number, (_, sql, _, no_transaction) in enumerate(CASES):
        offline.add(f"{number:03d}", "case", sql, no_transaction=no_transaction)
    found = lint_all(offline)
    wrong = [
        (rule, sql, found[f"{number:03d}"])
        for number, (rule, sql, flagged, _) in enumerate(CASES)
        if (rule in found[f"{number:03d}"]) != flagged
    ]
    assert not wrong


def test_require_timeout_settings_sees_every_statement_that_waits_for_a_table_lock(
    offline: Project,
) -> None:
    offline.configure(extra="table_lock_timeout: off\n")
    for number, (sql, _) in enumerate(TIMEOUT_CASES):
        offline.add(f"{number:03d}", "case", sql, no_transaction=sql.startswith("VACUUM"))
    found = lint_all(offline)
    wrong = [
        (sql, found[f"{number:03d}"])
        for number, (sql, flagged) in enumerate(TIMEOUT_CASES)
        if ("require-timeout-settings" in found[f"{number:03d}"]) != flagged
    ]
    assert not wrong


def test_require_table_schema_leaves_temporary_tables_alone(offline: Project) -> None:
    for number, (sql, _) in enumerate(SCHEMA_CASES):
        offline.add(f"{number:03d}", "case", sql)
    found = lint_all(offline, "--enable", "require-table-schema")
    wrong = [
        (sql, found[f"{number:03d}"])
        for number, (sql, flagged) in enumerate(SCHEMA_CASES)
        if ("require-table-schema" in found[f"{number:03d}"]) != flagged
    ]
    assert not wrong
