"""Ignore comments naming several rules: each rule that silenced nothing is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from migretti_core.testing import make_config, make_hooks, make_migration, make_session
from migretti_core.types import LintFinding, LintRequest


def lint(sql: str) -> list[tuple[str, int, str]]:
    hooks = make_hooks(builtins=["split", "lint"])
    session = make_session(hooks, make_config(Path("/project")))
    migration = make_migration("001", "m", sql)
    found: list[LintFinding] = hooks.lint(session, LintRequest((migration,)))
    return [(f.rule, f.line - migration.up_line + 1, f.message) for f in found]


@pytest.mark.parametrize("kind", ["mg:lint-ignore", "squawk-ignore"])
def test_a_rule_named_beside_one_that_matched_is_still_unused(kind: str) -> None:
    sql = f"-- {kind} ban-drop-column, ban-drop-table\nALTER TABLE a DROP COLUMN b;"
    assert lint(sql) == [
        ("unused-ignore", 1, "ignore comment for ban-drop-table matched no finding")
    ]


@pytest.mark.parametrize("kind", ["mg:lint-ignore", "squawk-ignore"])
def test_every_rule_named_matched_so_nothing_is_reported(kind: str) -> None:
    sql = (
        f"-- {kind} ban-drop-column,ban-drop-table\n"
        "ALTER TABLE a DROP COLUMN b;\n"
        f"-- {kind} ban-drop-table, ban-drop-column\n"
        "DROP TABLE c; ALTER TABLE d DROP COLUMN e;\n"
        "DROP TABLE f;"
    )
    # The first comment silences one of its rules only: the other is reported unused.
    assert lint(sql) == [
        ("unused-ignore", 1, "ignore comment for ban-drop-table matched no finding"),
        ("ban-drop-table", 5, "dropping f breaks clients still using it and loses its data"),
    ]
    assert lint(sql.replace("ban-drop-column,ban-drop-table", "ban-drop-column")) == [
        ("ban-drop-table", 5, "dropping f breaks clients still using it and loses its data"),
    ]


def test_two_unused_rules_are_named_together_and_a_bare_ignore_only_when_unused() -> None:
    sql = "-- mg:lint-ignore prefer-text-field, ban-drop-table\nCREATE TABLE t (id bigint);"
    assert lint(sql) == [
        (
            "unused-ignore",
            1,
            "ignore comment for ban-drop-table, prefer-text-field matched no finding",
        )
    ]
    assert lint("-- mg:lint-ignore\nDROP TABLE t;") == []
    assert lint("-- mg:lint-ignore\nCREATE TABLE t (id bigint);") == [
        ("unused-ignore", 1, "ignore comment for every rule matched no finding")
    ]


@pytest.mark.parametrize("kind", ["mg:lint-ignore-file", "squawk-ignore-file"])
def test_a_file_wide_ignore_anywhere_covers_the_whole_file(kind: str) -> None:
    sql = f"DROP TABLE a;\n-- {kind} ban-drop-table\nSELECT 1;\nDROP TABLE b;\nTRUNCATE c CASCADE;"
    assert [rule for rule, _, _ in lint(sql)] == ["ban-truncate-cascade"]


def test_a_file_wide_ignore_reports_the_rules_it_never_used() -> None:
    sql = "-- squawk-ignore-file ban-drop-table, ban-drop-column\nDROP TABLE a;\nDROP TABLE b;"
    assert lint(sql) == [
        ("unused-ignore", 1, "ignore comment for ban-drop-column matched no finding")
    ]


def test_an_ignore_inside_a_statement_covers_the_line_after_it() -> None:
    """squawk's reading: an ignore comment covers findings on its line and the next one, so
    one above a column of a CREATE TABLE silences that column only."""
    sql = (
        "CREATE TABLE t (\n"
        "  id bigint,\n"
        "  -- squawk-ignore prefer-text-field\n"
        "  email varchar(255),\n"
        "  name varchar(10)\n"
        ");"
    )
    assert [(rule, line) for rule, line, _ in lint(sql)] == [("prefer-text-field", 5)]
    sql = (
        "ALTER TABLE foo\n"
        "-- mg:lint-ignore adding-field-with-default\n"
        "ADD COLUMN bar numeric GENERATED ALWAYS AS (bar + baz) STORED;"
    )
    assert lint(sql) == []


@pytest.mark.parametrize("kind", ["mg:lint-ignore", "squawk-ignore"])
def test_an_ignore_after_a_statement_on_its_line(kind: str) -> None:
    sql = f"ALTER TABLE a DROP COLUMN b; -- {kind} ban-drop-column\nDROP TABLE c;"
    assert [(rule, line) for rule, line, _ in lint(sql)] == [("ban-drop-table", 2)]
    # In a string it is no comment.
    sql = f"SELECT '-- {kind} ban-drop-column'; ALTER TABLE a DROP COLUMN b;"
    assert [(rule, line) for rule, line, _ in lint(sql)] == [("ban-drop-column", 1)]


@pytest.mark.parametrize(
    "kind", ["mg:lint-ignore", "squawk-ignore", "squawk-ignore-file", "mg:lint-ignore-file"]
)
def test_an_ignore_in_a_block_comment(kind: str) -> None:
    sql = f"/* {kind} ban-drop-column */\nALTER TABLE a DROP COLUMN b;"
    assert lint(sql) == []
    sql = f"/* {kind} */\nALTER TABLE a DROP COLUMN b;"
    assert lint(sql) == []


def test_an_ignore_after_a_statement_on_a_line_with_non_ascii_text() -> None:
    sql = "SELECT 'ünï'; ALTER TABLE a DROP COLUMN b; -- squawk-ignore ban-drop-column"
    assert lint(sql) == []


@pytest.mark.parametrize("kind", ["mg:lint-ignore", "squawk-ignore"])
def test_a_line_of_a_string_that_reads_like_an_ignore_comment_is_none(kind: str) -> None:
    """Inside a string, ``-- squawk-ignore ...`` at the start of a line is data: it neither
    silences the DROP TABLE on the next line nor counts as an unused ignore comment."""
    sql = (
        f"INSERT INTO notes (body) VALUES ('first line\n-- {kind} ban-drop-table');\nDROP TABLE c;"
    )
    assert [rule for rule, _, _ in lint(sql)] == ["ban-drop-table"]
    # The same words as a real comment still work.
    real = (
        f"INSERT INTO notes (body) VALUES ('first line');\n-- {kind} ban-drop-table\nDROP TABLE c;"
    )
    assert lint(real) == []
