"""The fast path for large sections (linter._fast_bulk): 10,000 INSERTs are not parsed one by
one, and still no finding hides among them, whatever the casing, strings or comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from migretti_core.testing import make_config, make_hooks, make_migration, make_session
from migretti_core.types import LintFinding, LintRequest
from migretti_plugins.lint import linter

LONG = "c" * 70
ROWS = 12_000


def rows() -> list[str]:
    return [
        f"INSERT INTO t (id, a) VALUES ({i}, 'row {i}; it''s {'x' * 100} DROP TABLE t;');"
        for i in range(ROWS)
    ]


def findings(sql: str) -> list[LintFinding]:
    session = make_session(make_hooks(builtins=True), make_config(Path(".")))
    migration = make_migration("0001", "big", sql)
    return linter.lint(session, LintRequest((migration,), apply=True))


def whole(sql: str, monkeypatch: pytest.MonkeyPatch) -> list[LintFinding]:
    """The findings with the section parsed whole, as a small one is."""
    with monkeypatch.context() as patch:
        patch.setattr(linter, "_BULK_SECTION", 10 * len(sql))
        linter._parse_json.cache_clear()
        return findings(sql)


def located(sql: str, found: list[LintFinding]) -> set[tuple[str, int]]:
    """(rule, section line) of each finding; line 1 is the CREATE TABLE."""
    first = make_migration("0001", "big", sql).up_line
    return {(f.rule, f.line - first + 1) for f in found}


def test_findings_after_ten_thousand_inserts_in_any_casing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = rows()
    body[10_001] = "insert into T (ID, a, Id) values (1, 'x', 2);"  # unquoted: id twice
    body[10_002] = f"InSeRt InTo t (id, {LONG}) VaLuEs (2, 'y');"
    body[10_003] = f"INSERT INTO t (id, a) VALUES (3, {LONG}(1));"  # a long function name
    body[10_004] = "INSERT INTO my_values (a, a) VALUES (4, 5);"  # not the keyword VALUES
    body[10_005] = "INSERT INTO my_values (a, b) VALUES (4, 5);"
    body[10_006] = "update t set a = 'q', A = 'r' where id = 3;"
    body[10_007] = "create index u_a on u (a);"
    body[10_008] = "drop table old_things;"
    body[10_009] = "INSERT INTO t (id, a) SELECT id, a FROM t WHERE a = 'DROP TABLE x;';"
    sql = "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n" + "\n".join(body) + "\n"
    assert len(sql) > linter._BULK_SECTION
    assert linter._fast_bulk(sql) is not None  # the fast path, not the lexer

    found = findings(sql)
    assert found == whole(sql, monkeypatch)
    line = 10_001 + 2  # section line of body[10_001]
    assert located(sql, found) == {
        ("ban-duplicate-column-assignments", line),
        ("identifier-too-long", line + 1),
        ("identifier-too-long", line + 2),
        ("ban-duplicate-column-assignments", line + 3),
        ("ban-duplicate-column-assignments", line + 5),
        ("require-concurrent-index-creation", line + 6),
        ("ban-drop-table", line + 8 - 1),
    }


def test_strings_hide_no_statement_and_an_unterminated_one_falls_back() -> None:
    sql = "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n" + "\n".join(rows()) + "\n"
    assert findings(sql) == []  # 'DROP TABLE t;' in every row is data
    pieces = linter._fast_bulk(sql)
    # The CREATE TABLE and the first INSERT: the other rows repeat it up to VALUES, and it
    # had no finding, so they cannot add one.
    assert pieces is not None
    assert [piece.text[:20] for piece in pieces] == ["CREATE TABLE t (id b", "INSERT INTO t (id, a"]
    assert linter._fast_bulk(sql + "INSERT INTO t VALUES (1, 'open);\n") is None
    broken = findings(sql + "INSERT INTO t VALUES (1, 'open);\n")
    assert [f.rule for f in broken] == ["syntax-error"]


@pytest.mark.parametrize(
    "comment",
    [
        "-- a comment; DROP TABLE c;\n",
        "/* a comment; DROP TABLE c; */\n",
        "-- the old column isn't read; DROP TABLE c;\n",  # a quote inside a comment
        "-- mg:lint-ignore ban-drop-column the app stopped using it\n",
    ],
)
def test_comments_take_the_lexer_and_are_honoured(
    comment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = rows()
    body[10_500] = comment + "ALTER TABLE accounts DROP COLUMN a;"
    sql = "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n" + "\n".join(body) + "\n"
    assert linter._fast_bulk(sql) is None
    found = findings(sql)
    assert found == whole(sql, monkeypatch)
    rules = sorted(f.rule for f in found)
    if "mg:lint-ignore" in comment:
        assert rules == []
    else:
        assert rules == ["ban-drop-column"]  # nothing from inside the comment


def test_runs_of_repeats_are_passed_whole_and_what_breaks_them_is_linted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = rows()
    body[4_000] = "create index u_a on u (a);"  # breaks the run: the rows after it run again
    body[8_000] = "INSERT INTO t (id, a) VALUES(8000, 'no space before the row');"
    body[8_001] = "INSERT INTO t (id, a, id) VALUES (1, 'x', 2);"
    body[8_002] = "INSERT INTO t (id, a) VALUES\n(8002, 'another line');"
    body.append("DROP TABLE old_things;")
    sql = "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n" + "\n".join(body) + "\n"
    pieces = linter._fast_bulk(sql)
    assert pieces is not None
    # Parsed: the CREATE TABLE, the first INSERT, the index, the INSERT with id twice and the
    # DROP TABLE; every other row repeats the first INSERT up to VALUES and is passed.
    assert [piece.text[:13] for piece in pieces if piece.text] == [
        "CREATE TABLE ",
        "INSERT INTO t",
        "create index ",
        "INSERT INTO t",
        "DROP TABLE ol",
    ]
    found = findings(sql)
    assert found == whole(sql, monkeypatch)
    assert located(sql, found) == {
        ("require-concurrent-index-creation", 4_002),
        ("ban-duplicate-column-assignments", 8_003),
        ("ban-drop-table", ROWS + 3),  # body[8_002] takes two lines
    }
