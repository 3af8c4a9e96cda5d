"""Linting a large data migration: parsed statement by statement, data statements once per
shape, with the same findings as parsing the section whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from migretti_core.testing import make_config, make_hooks, make_migration, make_session
from migretti_core.types import LintFinding, LintRequest
from migretti_plugins.lint import linter

LONG = "c" * 70


def big_section() -> str:
    rows = [
        f"INSERT INTO t (id, a) VALUES ({i}, 'row {i} it''s {'x' * 100}');" for i in range(9000)
    ]
    rows[10] = "INSERT INTO t (id, a, a) VALUES (10, 'x', 'y');"
    rows[20] = f"INSERT INTO t (id, {LONG}) VALUES (20, 1);"
    rows[30] = 'INSERT INTO "it\'s" (a, a) VALUES (1, 2);'
    rows[40] = "UPDATE t SET a = 'q', a = 'r' WHERE id = 3;"
    rows[50] = "CREATE INDEX u_a ON u (a);"
    return "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n" + "\n".join(rows) + "\n"


def findings(sql: str) -> list[LintFinding]:
    session = make_session(make_hooks(builtins=True), make_config(Path(".")))
    migration = make_migration("0001", "big", sql)
    return linter.lint(session, LintRequest((migration,), apply=True))


def test_a_large_section_gives_the_same_findings_as_parsed_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sql = big_section()
    assert len(sql) > linter._BULK_SECTION
    bulk = findings(sql)
    monkeypatch.setattr(linter, "_BULK_SECTION", 10 * len(sql))
    linter._parse_json.cache_clear()
    assert findings(sql) == bulk
    rules = {(f.rule, f.line) for f in bulk}
    first = make_migration("0001", "big", sql).up_line
    # statement k (0-based) of the rows is on section line k + 2
    assert ("ban-duplicate-column-assignments", first + 11) in rules
    assert ("identifier-too-long", first + 21) in rules
    assert ("ban-duplicate-column-assignments", first + 31) in rules
    assert ("ban-duplicate-column-assignments", first + 41) in rules
    assert any(line == first + 51 for _, line in rules)  # an index built with a lock


def multi_row_insert(rows: int, columns: str = "id, a, a", broken_row: int | None = None) -> str:
    """One INSERT of ``rows`` rows (one per line) between two statements lint flags."""
    values = [f"({i}, 'row {i} it''s {'x' * 40}', 'b')" for i in range(rows)]
    if broken_row is not None:
        values[broken_row] = f"({broken_row}, 'row' 'b' oops)"
    return (
        "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n"
        f"INSERT INTO t ({columns}) VALUES\n" + ",\n".join(values) + ";\n"
        "CREATE INDEX u_a ON u (a);\n"
    )


@pytest.mark.parametrize(
    "sql",
    [
        multi_row_insert(20_000),
        multi_row_insert(20_000, broken_row=15_000),
        multi_row_insert(20_000, columns="id, a, b")
        .replace(" VALUES\n", " SELECT * FROM (VALUES\n")
        .replace("'b');\nCREATE", "'b')) AS v;\nCREATE"),
    ],
    ids=["columns", "syntax-error", "values-in-a-subquery"],
)
def test_a_large_insert_is_checked_without_parsing_its_rows(
    sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An INSERT of over 64 KiB in a large section gives the findings a parse of its every
    row gives: its column list is checked, a syntax error in a row is found at its line,
    and the statements after it are where they are."""
    assert len(sql) > linter._BULK_SECTION
    cut = findings(sql)
    monkeypatch.setattr(linter, "_LARGE_STATEMENT", 10 * len(sql))
    linter._parse_json.cache_clear()
    assert findings(sql) == cut
    first = make_migration("0001", "big", sql).up_line  # the CREATE TABLE; the INSERT next
    found = {(f.rule, f.line) for f in cut}
    assert ("require-concurrent-index-creation", first + 20_002) in found
    if "oops" in sql:
        assert ("syntax-error", first + 2 + 15_000) in found
    elif "a, a" in sql:
        assert ("ban-duplicate-column-assignments", first + 1) in found
