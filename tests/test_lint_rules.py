"""Every lint rule: a migration its documentation flags, and the safe rewrite it accepts.

The examples follow the rule pages (squawk's, and docs/lint.md). The linter runs through the
``mg_lint`` hook with the builtin ``lint`` and ``split`` plugins, as ``mg lint`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migretti_core.testing import make_config, make_hooks, make_migration, make_session
from migretti_core.types import LintFinding, LintRequest, Migration
from migretti_plugins.lint.catalogue import RULES


@dataclass(frozen=True)
class Case:
    rule: str
    flagged: str
    clean: str
    transactional: bool = True
    clean_transactional: bool | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    server_version: int | None = None


CASES = [
    Case(
        "adding-field-with-default",
        'ALTER TABLE "account" ADD COLUMN "ab_group" integer DEFAULT random();',
        'ALTER TABLE "account" ADD COLUMN "foo" integer DEFAULT 10;',
    ),
    Case(
        "adding-foreign-key-constraint",
        'ALTER TABLE "email" ADD CONSTRAINT "fk_user" '
        'FOREIGN KEY ("user_id") REFERENCES "user" ("id");',
        'ALTER TABLE "email" ADD CONSTRAINT "fk_user" '
        'FOREIGN KEY ("user_id") REFERENCES "user" ("id") NOT VALID;',
    ),
    Case(
        "adding-not-nullable-field",
        'ALTER TABLE "recipe" ALTER COLUMN "view_count" SET NOT NULL;',
        'ALTER TABLE "recipe" ADD CONSTRAINT view_count_not_null '
        'CHECK ("view_count" IS NOT NULL) NOT VALID;',
    ),
    Case(
        "adding-required-field",
        'ALTER TABLE "recipe" ADD COLUMN "public" boolean NOT NULL;',
        'ALTER TABLE "recipe" ADD COLUMN "public" boolean NOT NULL DEFAULT false;',
    ),
    Case(
        "adding-serial-primary-key-field",
        "ALTER TABLE items ADD PRIMARY KEY (id);",
        "ALTER TABLE items ADD CONSTRAINT items_pk PRIMARY KEY USING INDEX items_pk_idx;",
    ),
    Case(
        "ban-alter-domain-with-add-constraint",
        "ALTER DOMAIN domain_name ADD CONSTRAINT constraint_name CHECK (value > 0);",
        "ALTER DOMAIN domain_name RENAME CONSTRAINT a TO b;",
    ),
    Case(
        "ban-char-field",
        "CREATE TABLE app.users (id bigint, name char(100));",
        "CREATE TABLE app.users (id bigint, name text);",
    ),
    Case(
        "ban-concurrent-index-creation-in-transaction",
        'CREATE INDEX CONCURRENTLY "field_name_idx" ON "table_name" ("field_name");',
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "field_name_idx" ON "table_name" ("field_name");',
        clean_transactional=False,
    ),
    Case(
        "ban-create-domain-with-constraint",
        "CREATE DOMAIN domain_name AS integer CONSTRAINT positive CHECK (value > 0);",
        "CREATE DOMAIN domain_name AS integer;",
    ),
    Case(
        "ban-drop-column",
        'ALTER TABLE "bar_tbl" DROP COLUMN "foo_col" CASCADE;',
        'ALTER TABLE "bar_tbl" ADD COLUMN "foo_col" text;',
    ),
    Case(
        "ban-drop-database",
        'DROP DATABASE "table_name";',
        'CREATE TABLE "table_name" (id bigint);',
    ),
    Case(
        "ban-drop-not-null",
        'ALTER TABLE "bar_tbl" ALTER COLUMN "foo_col" DROP NOT NULL;',
        'ALTER TABLE "bar_tbl" ALTER COLUMN "foo_col" SET DEFAULT 0;',
    ),
    Case(
        "ban-drop-table",
        'DROP TABLE "table_name";',
        'CREATE TABLE "table_name" (id bigint); DROP TABLE "table_name";',
    ),
    Case(
        "ban-duplicate-column-assignments",
        "UPDATE t SET a = 1, a = 2;",
        "UPDATE t SET a = 2;",
    ),
    Case("ban-truncate-cascade", "TRUNCATE a CASCADE;", "TRUNCATE a, b;"),
    Case(
        "ban-uncommitted-transaction",
        "BEGIN;\nCREATE TABLE users (id bigint);",
        "BEGIN;\nCREATE TABLE users (id bigint);\nCOMMIT;",
        transactional=False,
    ),
    Case(
        "changing-column-type",
        'ALTER TABLE "core_recipe" ALTER COLUMN "edits" TYPE text USING "edits"::text;',
        'ALTER TABLE "core_recipe" ADD COLUMN "edits_text" text;',
    ),
    Case(
        "constraint-missing-not-valid",
        'ALTER TABLE "accounts" ADD CONSTRAINT "positive_balance" CHECK ("balance" >= 0);',
        'ALTER TABLE "accounts" ADD CONSTRAINT "positive_balance" '
        'CHECK ("balance" >= 0) NOT VALID;',
    ),
    Case(
        "disallowed-unique-constraint",
        "ALTER TABLE table_name ADD CONSTRAINT field_name_constraint UNIQUE (field_name);",
        "ALTER TABLE distributors ADD CONSTRAINT distributors_pkey UNIQUE USING INDEX "
        "dist_id_temp_idx;",
    ),
    Case(
        "identifier-too-long",
        "CREATE TABLE table_very_long_very_long_very_long_very_long_very_long_very_long "
        "(id bigint);",
        "CREATE TABLE a_shorter_table_name (id bigint);",
    ),
    Case(
        "prefer-bigint-over-int",
        "CREATE TABLE users (id integer);",
        "CREATE TABLE users (id bigint);",
    ),
    Case(
        "prefer-bigint-over-smallint",
        "CREATE TABLE users (id smallint);",
        "CREATE TABLE users (id bigint);",
    ),
    Case(
        "prefer-identity",
        "CREATE TABLE app.users (id bigserial);",
        "CREATE TABLE app.users (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY);",
    ),
    Case("prefer-repack", "VACUUM FULL t;", "VACUUM t;"),
    Case(
        "prefer-robust-stmts",
        'ALTER TABLE "app_user" ADD COLUMN "email" integer NULL;',
        'ALTER TABLE "app_user" ADD COLUMN IF NOT EXISTS "email" bigint NULL;',
        transactional=False,
    ),
    Case(
        "prefer-text-field",
        'CREATE TABLE "app_user" ("id" bigint, "email" varchar(100) NOT NULL);',
        'CREATE TABLE "app_user" ("id" bigint, "email" TEXT NOT NULL);',
    ),
    Case(
        "prefer-timestamptz",
        "CREATE TABLE app.users (created_ts timestamp);",
        "CREATE TABLE app.users (created_ts timestamptz);",
    ),
    Case(
        "renaming-column",
        'ALTER TABLE "table_name" RENAME COLUMN "column_name" TO "new_column_name";',
        'ALTER TABLE "table_name" ADD COLUMN "new_column_name" text;',
    ),
    Case(
        "renaming-table",
        'ALTER TABLE "table_name" RENAME TO "new_table_name";',
        'CREATE VIEW "new_table_name" AS SELECT * FROM "table_name";',
    ),
    Case(
        "require-concurrent-index-creation",
        'CREATE INDEX "field_name_idx" ON "table_name" ("field_name");',
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "field_name_idx" ON "table_name" ("field_name");',
        clean_transactional=False,
    ),
    Case(
        "require-concurrent-index-deletion",
        'DROP INDEX IF EXISTS "field_name_idx";',
        'DROP INDEX CONCURRENTLY IF EXISTS "field_name_idx";',
        clean_transactional=False,
    ),
    Case(
        "require-concurrent-partition-detach",
        "ALTER TABLE t DETACH PARTITION p;",
        "ALTER TABLE t DETACH PARTITION p CONCURRENTLY;",
    ),
    Case(
        "require-concurrent-reindex",
        "REINDEX TABLE foo;",
        "REINDEX TABLE CONCURRENTLY foo;",
        clean_transactional=False,
    ),
    Case(
        "require-enum-value-ordering",
        "ALTER TYPE status ADD VALUE 'pending_review';",
        "ALTER TYPE status ADD VALUE 'pending_review' BEFORE 'approved';",
    ),
    Case(
        "require-table-schema",
        "CREATE TABLE posts (id bigint);",
        "CREATE TABLE public.posts (id bigint);",
        settings={"lint": {"enable": ["require-table-schema"]}},
    ),
    Case(
        "require-timeout-settings",
        "ALTER TABLE t ADD COLUMN c boolean;",
        "SET lock_timeout = '1s';\nSET statement_timeout = '5s';\n"
        "ALTER TABLE t ADD COLUMN c boolean;",
        settings={"table_lock_timeout": "off"},
    ),
    Case(
        "transaction-nesting",
        "BEGIN;\nCREATE TABLE users (id bigint);\nCOMMIT;",
        "CREATE TABLE users (id bigint);",
    ),
    Case("syntax-error", "CREATE TABLEE users (id bigint);", "CREATE TABLE users (id bigint);"),
    Case(
        "unused-ignore",
        "-- mg:lint-ignore ban-drop-table\nCREATE TABLE users (id bigint);",
        "-- mg:lint-ignore ban-drop-table\nDROP TABLE users;",
    ),
]


def lint(
    *migrations: Migration,
    settings: dict[str, Any] | None = None,
    plan: bool = True,
    server_version: int | None = None,
    enable: tuple[str, ...] = (),
    disable: tuple[str, ...] = (),
) -> list[LintFinding]:
    hooks = make_hooks(builtins=["split", "lint"])
    session = make_session(hooks, make_config(Path("/project"), settings or {}))
    request = LintRequest(
        migrations, server_version=server_version, plan=plan, enable=enable, disable=disable
    )
    return hooks.lint(session, request)


def migration(sql: str, transactional: bool = True, ident: str = "001") -> Migration:
    return make_migration(ident, "m", sql, transactional=transactional)


def rules_of(findings: list[LintFinding]) -> list[str]:
    return [f.rule for f in findings]


def test_every_rule_has_a_case() -> None:
    assert sorted(c.rule for c in CASES) == sorted(RULES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule)
def test_rule_flags_its_documented_example(case: Case) -> None:
    found = lint(
        migration(case.flagged, case.transactional),
        settings=case.settings,
        server_version=case.server_version,
    )
    assert case.rule in rules_of(found), found
    finding = next(f for f in found if f.rule == case.rule)
    assert finding.severity == RULES[case.rule].severity
    assert finding.help == RULES[case.rule].help
    assert finding.migration == "001"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule)
def test_rule_accepts_the_safe_rewrite(case: Case) -> None:
    found = lint(
        migration(
            case.clean,
            case.transactional if case.clean_transactional is None else case.clean_transactional,
        ),
        settings=case.settings,
        server_version=case.server_version,
    )
    assert case.rule not in rules_of(found), found


def test_findings_point_at_file_line_and_column() -> None:
    sql = "CREATE TABLE users (id bigint);\n\n  ALTER TABLE accounts DROP COLUMN old;"
    m = migration(sql)
    (finding,) = lint(m)
    assert finding.rule == "ban-drop-column"
    assert finding.line == m.up_line + 2
    assert finding.column == 3
    assert finding.path == m.path


def test_positions_count_characters_not_bytes() -> None:
    sql = "CREATE TABLE émoji_ü (id bigint);  DROP TABLE accounts;"
    (finding,) = lint(migration(sql))
    assert finding.rule == "ban-drop-table"
    assert finding.column == sql.index("DROP") + 1


def test_a_table_created_earlier_in_the_file_is_new() -> None:
    sql = (
        "CREATE TABLE public.users (id bigint);\n"
        "CREATE INDEX users_id ON public.users (id);\n"
        "ALTER TABLE public.users ADD COLUMN email text NOT NULL;\n"
        "ALTER TABLE public.users ADD CONSTRAINT u UNIQUE (email);\n"
        "ALTER TABLE users ADD CONSTRAINT c CHECK (id > 0);"
    )
    assert lint(migration(sql)) == []


def test_a_table_created_by_an_earlier_migration_of_the_plan_is_new() -> None:
    first = migration("CREATE TABLE users (id bigint);", ident="001")
    second = migration("CREATE INDEX users_id ON users (id);", ident="002")
    assert lint(first, second) == []
    # Judged on their own (mg lint --all, named files), the table may hold rows.
    assert rules_of(lint(first, second, plan=False)) == ["require-concurrent-index-creation"]


def test_concurrent_index_in_a_no_transaction_file_is_fine_but_not_inside_begin() -> None:
    sql = "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);"
    assert lint(migration(sql, transactional=False)) == []
    wrapped = f"BEGIN;\n{sql}\nCOMMIT;"
    found = rules_of(lint(migration(wrapped, transactional=False)))
    assert found == ["ban-concurrent-index-creation-in-transaction"]


def test_server_version_changes_what_is_flagged() -> None:
    sql = "ALTER TABLE account ADD COLUMN foo bigint DEFAULT 10;"
    (before_11,) = lint(migration(sql), server_version=10)
    assert before_11.message == (
        "column foo on account with a default (before PostgreSQL 11, any default) "
        "rewrites the table under an ACCESS EXCLUSIVE lock"
    )
    assert lint(migration(sql), server_version=13) == []
    detach = "ALTER TABLE t DETACH PARTITION p;"
    (old,) = lint(migration(detach), server_version=13)
    assert "CONCURRENTLY needs PostgreSQL 14" in old.message
    (new,) = lint(migration(detach), server_version=14)
    assert "PostgreSQL 14" not in new.message
    configured = lint(migration(sql), settings={"lint": {"server_version": "10"}})
    assert rules_of(configured) == ["adding-field-with-default"]


def test_set_not_null_after_validating_a_check_is_accepted_from_12() -> None:
    sql = (
        "ALTER TABLE recipe VALIDATE CONSTRAINT view_count_not_null;\n"
        "ALTER TABLE recipe ALTER COLUMN view_count SET NOT NULL;"
    )
    assert lint(migration(sql)) == []


def test_validate_in_the_transaction_that_added_the_constraint_is_flagged() -> None:
    sql = (
        "ALTER TABLE accounts ADD CONSTRAINT pos CHECK (balance >= 0) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT pos;"
    )
    assert rules_of(lint(migration(sql))) == ["constraint-missing-not-valid"]


def test_mg_table_lock_timeout_satisfies_require_timeout_settings() -> None:
    sql = "ALTER TABLE t ADD COLUMN c boolean;"
    assert lint(migration(sql)) == []
    assert lint(migration(sql), settings={"table_lock_timeout": "2s"}) == []
    found = lint(migration(sql), settings={"table_lock_timeout": "off"})
    assert rules_of(found) == ["require-timeout-settings"]


def test_enable_disable_and_severity() -> None:
    sql = "CREATE TABLE posts (id integer);"
    assert rules_of(lint(migration(sql))) == ["prefer-bigint-over-int"]
    assert lint(migration(sql), disable=("prefer-bigint-over-int",)) == []
    everything = rules_of(lint(migration(sql), enable=("all",)))
    assert "require-table-schema" in everything
    settings = {"lint": {"severity": {"prefer-bigint-over-int": "error"}}}
    (finding,) = lint(migration(sql), settings=settings)
    assert finding.severity == "error"
    settings = {"lint": {"disable": ["prefer-bigint-over-int"]}}
    assert lint(migration(sql), settings=settings) == []
    # The command line wins over mg.yaml.
    assert lint(migration(sql), settings=settings, enable=("prefer-bigint-over-int",)) != []


def test_ignore_comments_before_a_statement() -> None:
    sql = (
        "-- mg:lint-ignore ban-drop-column,ban-drop-table the app stopped using them\n"
        "ALTER TABLE a DROP COLUMN b;\n"
        "-- squawk-ignore ban-drop-table\n"
        "DROP TABLE c;\n"
        "DROP TABLE d;"
    )
    found = lint(migration(sql))
    # ban-drop-table, named on line 1, silenced nothing there (tests/test_lint_ignores.py).
    assert [(f.rule, f.line - migration(sql).up_line + 1) for f in found] == [
        ("unused-ignore", 1),
        ("ban-drop-table", 5),
    ]


def test_ignore_in_the_file_header_covers_the_whole_file() -> None:
    m = make_migration("001", "m", "DROP TABLE a;\nDROP TABLE b;")
    text = m.text.replace("-- id: 001", "-- id: 001\n-- mg:lint-ignore ban-drop-table")
    header = Migration(**{**m.__dict__, "text": text, "up_line": m.up_line + 1})
    assert lint(header) == []


def test_an_ignore_that_matched_nothing_is_a_warning() -> None:
    sql = "-- squawk-ignore prefer-text-field\nCREATE TABLE t (id bigint);"
    (finding,) = lint(migration(sql))
    assert finding.rule == "unused-ignore"
    assert finding.severity == "warning"
    assert "prefer-text-field" in finding.message


def test_one_bad_statement_does_not_hide_the_others() -> None:
    sql = "DROP TABLE a;\nSELEC 1;\nDROP TABLE b;"
    found = lint(migration(sql))
    assert rules_of(found) == ["ban-drop-table", "syntax-error", "ban-drop-table"]
    assert found[1].line == migration(sql).up_line + 1


def test_lint_is_skipped_without_the_plugin() -> None:
    hooks = make_hooks(builtins=["split"])
    session = make_session(hooks, make_config(Path("/project")))
    request = LintRequest((migration("DROP TABLE a;"),))
    assert hooks.lint(session, request) == []


def test_hook_mg_lint() -> None:
    """A plugin answering mg_lint replaces the builtin linter."""

    class OwnLinter:
        @staticmethod
        def mg_lint(request: LintRequest) -> list[LintFinding]:
            m = request.migrations[0]
            return [LintFinding(m.path, 1, 1, "house-rule", "warning", "no", migration=m.id)]

    hooks = make_hooks(OwnLinter(), builtins=["split", "lint"])
    session = make_session(hooks, make_config(Path("/project")))
    found = hooks.lint(session, LintRequest((migration("DROP TABLE a;"),)))
    assert rules_of(found) == ["house-rule"]


def test_squawk_ignore_file_covers_every_statement() -> None:
    sql = "-- squawk-ignore-file ban-drop-table\nDROP TABLE a;\nDROP TABLE b;\nTRUNCATE c CASCADE;"
    assert rules_of(lint(migration(sql))) == ["ban-truncate-cascade"]


def test_an_ignore_without_rule_names_ignores_every_rule_of_its_statement() -> None:
    sql = "-- mg:lint-ignore\nALTER TABLE t ADD COLUMN c integer NOT NULL;\nDROP TABLE d;"
    assert rules_of(lint(migration(sql))) == ["ban-drop-table"]


def test_dropping_a_foreign_table_is_flagged_like_a_table() -> None:
    # squawk's ban-drop-table: "Dropping a table or foreign table may break existing clients."
    found = lint(migration("DROP FOREIGN TABLE remote_users;"))
    assert rules_of(found) == ["ban-drop-table"]
    assert "remote_users" in found[0].message
    created = "CREATE FOREIGN TABLE f (a text) SERVER s;\nDROP FOREIGN TABLE f;"
    assert lint(migration(created)) == []


def test_a_table_created_earlier_is_new_when_dropped_with_its_schema() -> None:
    sql = "CREATE TABLE users (id bigint);\nDROP TABLE public.users;"
    assert lint(migration(sql)) == []


@pytest.mark.parametrize("off", ["false", "off", "0", "FALSE"])
def test_an_option_switched_off_is_not_on(off: str) -> None:
    """VACUUM (FULL false) is a plain VACUUM; REINDEX (CONCURRENTLY false) is not concurrent."""
    vacuum = migration(f"VACUUM (FULL {off}, ANALYZE) t;", transactional=False)
    assert "prefer-repack" not in rules_of(lint(vacuum))
    reindex = migration(f"REINDEX (CONCURRENTLY {off}) TABLE t;", transactional=False)
    assert "require-concurrent-reindex" in rules_of(lint(reindex))
    for on in ("", " true", " on", " 1"):
        vacuum = migration(f"VACUUM (FULL{on}) t;", transactional=False)
        assert rules_of(lint(vacuum)) == ["prefer-repack"]
        reindex = migration(f"REINDEX (CONCURRENTLY{on}) TABLE t;", transactional=False)
        assert lint(reindex) == []


def test_identifier_too_long_counts_bytes_of_non_ascii_names() -> None:
    """32 'é' are 64 bytes: truncated. The scanner's offsets count characters."""
    long_name = "é" * 32
    sql = (
        f"SELECT 'ünïcode';\n"
        f'CREATE TABLE "{long_name}" (id bigint);\n'
        f"CREATE TABLE t_{'é' * 31} (id bigint);\n"
        f'CREATE TABLE "{"a" * 64}" (id bigint);\n'
        f'CREATE TABLE "{"é" * 31}" (id bigint);'
    )
    m = migration(sql)
    found = [(f.rule, f.line - m.up_line + 1, f.column, f.message) for f in lint(m)]
    assert found == [
        (
            "identifier-too-long",
            2,
            14,
            f"identifier '{long_name}' is 64 bytes; PostgreSQL truncates it to 63",
        ),
        (
            "identifier-too-long",
            3,
            14,
            f"identifier 't_{'é' * 31}' is 64 bytes; PostgreSQL truncates it to 63",
        ),
        (
            "identifier-too-long",
            4,
            14,
            f"identifier '{'a' * 64}' is 64 bytes; PostgreSQL truncates it to 63",
        ),
    ]


def test_the_command_line_table_lock_timeout_decides_require_timeout_settings() -> None:
    """``--table-lock-timeout`` wins over mg.yaml for what mg sets, so for the lint too."""
    sql = "ALTER TABLE t ADD COLUMN c boolean;"
    hooks = make_hooks(builtins=["split", "lint"])

    def found(settings: dict[str, Any], **options: Any) -> list[str]:
        session = make_session(hooks, make_config(Path("/project"), settings), **options)
        return rules_of(hooks.lint(session, LintRequest((migration(sql),))))

    off = {"table_lock_timeout": "off"}
    assert found(off) == ["require-timeout-settings"]
    assert found(off, table_lock_timeout=2.0) == []
    assert found({}, table_lock_timeout=0.0) == ["require-timeout-settings"]
    assert found({"table_lock_timeout": "0s"}) == ["require-timeout-settings"]


def test_require_table_schema_names_each_unqualified_table_dropped() -> None:
    found = lint(migration("DROP TABLE public.a, b;"), enable=("require-table-schema",))
    assert [(f.rule, f.message) for f in found if f.rule == "require-table-schema"] == [
        ("require-table-schema", "table b without a schema")
    ]
    assert "require-table-schema" not in rules_of(
        lint(migration("DROP TABLE public.a, public.b;"), enable=("require-table-schema",))
    )
