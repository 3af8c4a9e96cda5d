"""Statement splitting and transaction-block refusals, checked without a database."""

from __future__ import annotations

import random
import re
import time

import pytest

from migretti_core.types import Statement
from migretti_plugins.split import lexer
from migretti_plugins.split.lexer import find_transaction_problems, split_sql, transaction_refusal


def texts(sql: str) -> list[str]:
    return [s.text for s in split_sql(sql)]


# --- boundaries -----------------------------------------------------------------------


def test_splits_at_semicolons_and_reports_lines() -> None:
    sql = "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\n\n  SELECT 1;\n"
    assert split_sql(sql) == [
        Statement("CREATE TABLE a (x int)", 1),
        Statement("INSERT INTO a VALUES (1)", 2),
        Statement("SELECT 1", 4),
    ]


def test_several_statements_on_one_line_share_it() -> None:
    assert split_sql("\n\nSELECT 1; SELECT 2;SELECT 3") == [
        Statement("SELECT 1", 3),
        Statement("SELECT 2", 3),
        Statement("SELECT 3", 3),
    ]


def test_final_statement_without_semicolon_is_kept() -> None:
    assert split_sql("SELECT 1;\nSELECT 2\n") == [
        Statement("SELECT 1", 1),
        Statement("SELECT 2", 2),
    ]


def test_empty_statements_and_blank_input_yield_nothing() -> None:
    assert texts(";; SELECT 1;;; ;\n;") == ["SELECT 1"]
    assert split_sql("") == []
    assert split_sql("  \n\t ") == []
    assert split_sql(";") == []


def test_comment_only_chunks_are_dropped() -> None:
    sql = "-- header\n/* block */\nSELECT 1; -- done\n/* bye */\n-- really\n"
    assert split_sql(sql) == [Statement("SELECT 1", 3)]
    assert split_sql("-- nothing here; at all\n/* ; */") == []


def test_leading_comments_are_left_out_and_line_is_the_first_keyword() -> None:
    sql = "SELECT 1;\n-- explain the next one;\n/* more\n   text */\nUPDATE t SET x = 1;"
    assert split_sql(sql)[1] == Statement("UPDATE t SET x = 1", 5)


def test_trailing_comment_before_semicolon_is_left_out_so_appending_semicolon_is_safe() -> None:
    [statement] = split_sql("SELECT 1 -- the answer; really\n;")
    assert statement.text == "SELECT 1"
    assert texts(statement.text + ";") == ["SELECT 1"]
    assert texts("SELECT 2 /* note */ ; SELECT 3 -- end") == ["SELECT 2", "SELECT 3"]


def test_trailing_line_comment_ending_in_spaces_is_left_out() -> None:
    assert texts("SELECT 1 -- note  \n  ;\nSELECT 2") == ["SELECT 1", "SELECT 2"]


def test_comments_inside_a_statement_are_kept() -> None:
    assert texts("SELECT 1, -- first\n 2 /* second */ , 3;") == [
        "SELECT 1, -- first\n 2 /* second */ , 3"
    ]


def test_crlf_line_endings() -> None:
    assert split_sql("SELECT 1;\r\n\r\nSELECT 2;\r\n") == [
        Statement("SELECT 1", 1),
        Statement("SELECT 2", 3),
    ]


# --- quoting --------------------------------------------------------------------------


def test_semicolons_inside_single_quoted_strings() -> None:
    assert texts("INSERT INTO t VALUES ('a;b', 'it''s; ok', ''';'''); SELECT 2") == [
        "INSERT INTO t VALUES ('a;b', 'it''s; ok', ''';''')",
        "SELECT 2",
    ]


def test_backslash_does_not_escape_in_standard_strings() -> None:
    assert texts(r"SELECT 'C:\'; SELECT 2") == [r"SELECT 'C:\'", "SELECT 2"]


def test_escape_strings_honour_backslash_escapes() -> None:
    assert texts(r"SELECT E'it\'s; ok'; SELECT 2") == [r"SELECT E'it\'s; ok'", "SELECT 2"]
    assert texts(r"SELECT e'\\'; SELECT 2") == [r"SELECT e'\\'", "SELECT 2"]
    assert texts(r"SELECT 1,E'\';'; SELECT 2") == [r"SELECT 1,E'\';'", "SELECT 2"]


def test_a_word_ending_in_e_before_a_quote_is_not_an_escape_string() -> None:
    assert texts(r"SELECT date'a\'; SELECT 2") == [r"SELECT date'a\'", "SELECT 2"]


def test_unicode_and_other_prefixed_strings() -> None:
    assert texts(r"SELECT U&'d\0061t; a', X'1F', B'101', N'n;x'; SELECT 2") == [
        r"SELECT U&'d\0061t; a', X'1F', B'101', N'n;x'",
        "SELECT 2",
    ]


def test_double_quoted_identifiers() -> None:
    assert texts('SELECT 1 AS "a;""b", "--x" FROM "t/*"; SELECT 2') == [
        'SELECT 1 AS "a;""b", "--x" FROM "t/*"',
        "SELECT 2",
    ]


def test_quotes_and_comment_markers_inside_other_quotes_do_not_count() -> None:
    sql = "SELECT '-- not a comment;', '/* nor this;', '$$;', \"'\"; SELECT 2"
    assert texts(sql) == ["SELECT '-- not a comment;', '/* nor this;', '$$;', \"'\"", "SELECT 2"]


def test_unterminated_string_runs_to_the_end() -> None:
    assert texts("SELECT 1; SELECT 'open; SELECT 2") == ["SELECT 1", "SELECT 'open; SELECT 2"]


# --- dollar quotes --------------------------------------------------------------------


def test_dollar_quoted_bodies() -> None:
    sql = "DO $$ BEGIN PERFORM 1; END $$; SELECT 2"
    assert texts(sql) == ["DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"]


def test_tagged_dollar_quotes_may_contain_other_dollar_quotes() -> None:
    sql = "DO $fn$ BEGIN PERFORM '$$'; EXECUTE $x$ ; $x$; END $fn$; SELECT $a$ $b$ ; $a$; SELECT 3"
    assert texts(sql) == [
        "DO $fn$ BEGIN PERFORM '$$'; EXECUTE $x$ ; $x$; END $fn$",
        "SELECT $a$ $b$ ; $a$",
        "SELECT 3",
    ]


def test_parameters_and_dollar_in_identifiers_are_not_dollar_quotes() -> None:
    sql = "PREPARE q(int) AS SELECT $1 + $2; SELECT a$b, x$$y FROM t$1; SELECT 3"
    assert texts(sql) == [
        "PREPARE q(int) AS SELECT $1 + $2",
        "SELECT a$b, x$$y FROM t$1",
        "SELECT 3",
    ]


def test_plpgsql_function_in_dollar_quotes() -> None:
    sql = (
        "CREATE FUNCTION f() RETURNS trigger AS $body$\nBEGIN\n  NEW.x := 1;\n  RETURN NEW;\n"
        "END;\n$body$ LANGUAGE plpgsql;\nSELECT 2;"
    )
    assert split_sql(sql) == [Statement(sql[: sql.index(";\nSELECT")], 1), Statement("SELECT 2", 7)]


# --- comments -------------------------------------------------------------------------


def test_line_comments_hide_semicolons_and_quotes() -> None:
    assert texts("SELECT 1 -- it's; here\n, 2; SELECT 3") == [
        "SELECT 1 -- it's; here\n, 2",
        "SELECT 3",
    ]


def test_block_comments_nest() -> None:
    sql = "SELECT 1 /* a /* b; */ still comment; */ + 1; SELECT 2"
    assert texts(sql) == ["SELECT 1 /* a /* b; */ still comment; */ + 1", "SELECT 2"]
    # "/*/" opens a nested comment, as in PostgreSQL's lexer.
    assert texts("SELECT 1 /* x /*/ ; */ ; */ + 1; SELECT 2") == [
        "SELECT 1 /* x /*/ ; */ ; */ + 1",
        "SELECT 2",
    ]


def test_minus_and_slash_operators_are_not_comments() -> None:
    assert texts("SELECT 1 - -2, 6 / 3, 2*/**/3; SELECT 4") == [
        "SELECT 1 - -2, 6 / 3, 2*/**/3",
        "SELECT 4",
    ]


# --- routine bodies and transactions --------------------------------------------------


ATOMIC_FUNCTION = """CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT 1;
  SELECT CASE WHEN x > 0 THEN (CASE x WHEN 1 THEN 10 ELSE 20 END) ELSE 0 END;
END"""


def test_begin_atomic_body_keeps_its_semicolons() -> None:
    assert split_sql(ATOMIC_FUNCTION + ";\nSELECT f(1);") == [
        Statement(ATOMIC_FUNCTION, 1),
        Statement("SELECT f(1)", 6),
    ]


def test_begin_atomic_in_procedures_and_create_or_replace_any_case() -> None:
    proc = (
        "create or replace procedure p() language sql "
        "begin /* c */ atomic insert into t values (1); end"
    )
    assert texts(proc + "; CALL p()") == [proc, "CALL p()"]
    commented = (
        "CREATE /* a */ OR -- b\n REPLACE FUNCTION g() RETURNS int LANGUAGE sql "
        "BEGIN ATOMIC SELECT 1; END"
    )
    assert texts(commented + "; SELECT 2") == [commented, "SELECT 2"]
    empty = "CREATE FUNCTION g() RETURNS void LANGUAGE sql BEGIN ATOMIC END"
    assert texts(empty + "; SELECT 2") == [empty, "SELECT 2"]


def test_begin_elsewhere_is_an_ordinary_word() -> None:
    sql = (
        "BEGIN; CREATE TABLE t (begin int, atomic int); "
        "CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 2; "
        "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT 1; END; COMMIT"
    )
    assert texts(sql) == [
        "BEGIN",
        "CREATE TABLE t (begin int, atomic int)",
        "CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 2",
        "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT 1",
        "END",
        "COMMIT",
    ]


def test_rule_with_several_actions_is_one_statement() -> None:
    rule = "CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO u VALUES (1); DELETE FROM v)"
    assert texts(rule + "; SELECT 2") == [rule, "SELECT 2"]


# --- generated scripts ----------------------------------------------------------------

PIECES = [
    "SELECT 1",
    "INSERT INTO t VALUES ('a;b', 'it''s', E'x\\'; y', $$z; $$)",
    'UPDATE "we;ird""t" SET x = -1 / 2',
    "DO $tag$ BEGIN RAISE NOTICE '%', ';'; END $tag$",
    "SELECT 1 /* in /* nested; */ ; */ + 1",
    "SELECT 'x' -- tail; comment\n  || 'y'",
    ATOMIC_FUNCTION,
    "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)",
    "PREPARE q AS SELECT $1::text || a$b FROM t",
    "BEGIN",
]
SEPARATORS = [";", ";\n", " ;\n\n", "; -- note; here\n", ";/* c; */", ";\r\n", "\n;\n;"]


def test_random_scripts_split_back_into_their_pieces() -> None:
    rng = random.Random(20240601)
    for _ in range(300):
        chosen = [rng.choice(PIECES) for _ in range(rng.randint(1, 8))]
        script = rng.choice(["", "-- header;\n", "/* x */ ", "\n\n"])
        lines = []
        for piece in chosen:
            lines.append(script.count("\n") + 1)
            script += piece + rng.choice(SEPARATORS)
        assert split_sql(script) == [
            Statement(p, line) for p, line in zip(chosen, lines, strict=True)
        ], script


def test_pathological_input_stays_linear() -> None:
    unit = "SELECT " + "a''b " * 20 + "'x''y''z''w''q' " + "a" * 50 + " -- c\n;"
    started = time.perf_counter()
    assert len(split_sql(unit * 2000)) == 2000
    assert time.perf_counter() - started < 10


_WS = " \t\n\r\f\v"
_IDENT_CONT = re.compile(r"[\w$\x80-\U0010ffff]")
_IDENT_START = re.compile(r"[A-Za-z_\x80-\U0010ffff]")
_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]*")
_DOLLAR = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$")


def _skip_comment(t: str, i: int) -> int:
    if t.startswith("--", i):
        j = t.find("\n", i)
        return len(t) if j < 0 else j
    depth = 0
    while i < len(t):
        if t.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif t.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                break
        else:
            i += 1
    return i


def _skip_quoted(t: str, i: int, quote: str, backslash: bool) -> int:
    i += 1
    while i < len(t):
        if (backslash and t[i] == "\\") or t.startswith(quote * 2, i):
            i += 2
        elif t[i] == quote:
            return i + 1
        else:
            i += 1
    return len(t)


def reference_split(t: str) -> list[Statement]:
    """A slow character-by-character model of PostgreSQL's lexer, to check the fast one."""
    out: list[Statement] = []
    i, start, end, paren, atomic = 0, -1, 0, 0, 0
    head: list[str | None] = []  # leading words, None once anything else was seen

    def kind() -> str:
        words = head[:1] + head[3:] if head[1:3] == ["or", "replace"] else head
        if words[:1] != ["create"]:
            return "plain"
        return "routine" if words[1:2] in (["function"], ["procedure"]) else "create"

    while i < len(t):
        c = t[i]
        if t.startswith(("--", "/*"), i):
            i = _skip_comment(t, i)
            continue
        if c in _WS:
            i += 1
            continue
        if c == ";" and (start < 0 or kind() == "plain" or paren == atomic == 0):
            if start >= 0:
                out.append(Statement(t[start:end].rstrip(_WS), t.count("\n", 0, start) + 1))
            i, start, paren, atomic, head = i + 1, -1, 0, 0, []
            continue
        start = i if start < 0 else start
        dollar = _DOLLAR.match(t, i)
        if c in "'\"":
            prefix = t[max(i - 2, 0) : i]
            e_string = c == "'" and prefix[-1:] in ("e", "E") and not _IDENT_CONT.match(prefix[:-1])
            i = _skip_quoted(t, i, c, e_string)
            head.append(None)
        elif dollar and not (i and _IDENT_CONT.match(t, i - 1)):
            close = t.find(dollar.group(), dollar.end())
            i = len(t) if close < 0 else close + len(dollar.group())
            head.append(None)
        elif _IDENT_START.match(c):
            word = _WORD.match(t, i)
            assert word
            w, i = word.group().lower(), word.end()
            head.append(w if len(head) < 4 and None not in head else None)
            if kind() == "routine" and atomic:
                atomic += {"case": 1, "end": -1}.get(w, 0)
            elif kind() == "routine" and w == "begin":
                k = i
                while k < len(t) and (t[k] in _WS or t.startswith(("--", "/*"), k)):
                    k = k + 1 if t[k] in _WS else _skip_comment(t, k)
                after = _WORD.match(t, k)
                if after and after.group().lower() == "atomic":
                    atomic, i = 1, after.end()
        else:
            if kind() != "plain" and c in "()":
                paren = paren + 1 if c == "(" else max(paren - 1, 0)
            i += 1
            head.append(None)
        end = i
    if start >= 0:
        out.append(Statement(t[start:end].rstrip(_WS), t.count("\n", 0, start) + 1))
    return out


FUZZ_ALPHABET = [
    *"'\"$;-/*Ee\\\n x()1",
    "--",
    "/*",
    "*/",
    "''",
    "E'",
    "$a$",
    "$1",
    "a$",
    "begin",
    " atomic ",
    "case",
    " end ",
    "create ",
    " or replace ",
    "function f() ",
    "procedure ",
    "rule ",
    "\r\n",
]


def test_agrees_with_a_character_by_character_model_on_random_text() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        sql = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 30)))
        assert split_sql(sql) == reference_split(sql), repr(sql)


def test_the_model_itself_handles_the_basics() -> None:
    sql = ATOMIC_FUNCTION + r"; SELECT E'\\'';' -- x" + "\n;"
    assert reference_split(sql) == [
        Statement(ATOMIC_FUNCTION, 1),
        Statement(r"SELECT E'\\'';'", 5),
    ]


# --- sqlparse agreement ---------------------------------------------------------------

# Inputs sqlparse splits correctly: without leading or trailing comments, since sqlparse
# keeps those with a statement (or as a statement of their own) and split_sql drops them.
SQLPARSE_AGREES = [
    "SELECT 1; SELECT 2",
    "CREATE TABLE t (id int PRIMARY KEY, note text);\nINSERT INTO t VALUES (1, 'a;b');\n",
    "INSERT INTO t VALUES ('it''s; fine'), (E'back\\'slash; ok'); SELECT 2",
    "SELECT U&'d\\0061t; a'; SELECT 2",
    'SELECT 1 AS "a;""b"; SELECT 2',
    "DO $$ BEGIN PERFORM 1; END $$; SELECT 2",
    "DO $fn$ BEGIN PERFORM '$$'; END $fn$; SELECT 2",
    "SELECT $a$ x $b$ ; $a$; SELECT 2",
    "PREPARE p AS SELECT $1; SELECT a$b FROM t; SELECT 3",
    "SELECT 1 -- x;y\n + 1; SELECT 2",
    "SELECT 1 /* a; b */ + 1; SELECT 2",
    ATOMIC_FUNCTION + ";\nSELECT 2;",
    "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END;",
    "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN NEW.x := 1; RETURN NEW; END; $$ "
    "LANGUAGE plpgsql; SELECT 2",
    "BEGIN; SELECT 1; COMMIT;",
    "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT 1; END;",
    "SELECT 1;\nSELECT 2",
    "CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO u VALUES (1); DELETE FROM v)",
    "CREATE INDEX CONCURRENTLY i ON t (x);\nVACUUM ANALYZE t;",
    "SELECT 1 - -2; SELECT 3 / 2",
]


@pytest.mark.parametrize("sql", SQLPARSE_AGREES)
def test_agrees_with_sqlparse(sql: str) -> None:
    import sqlparse

    expected = [s.strip().removesuffix(";").strip() for s in sqlparse.split(sql)]
    assert texts(sql) == [s for s in expected if s]


# Where sqlparse splits wrongly (seen with sqlparse 0.6.1): a backslash before the closing quote of
# a standard string is taken as an escape, block comments are not nested, and a column
# named "begin" opens a block that swallows the following statements.
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (r"SELECT 'a\'; SELECT 2; SELECT '3'", [r"SELECT 'a\'", "SELECT 2", "SELECT '3'"]),
        ("SELECT 1 /* a /* b; */ c; */; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("CREATE TABLE t (begin int); SELECT 2", ["CREATE TABLE t (begin int)", "SELECT 2"]),
    ],
)
def test_cases_sqlparse_gets_wrong(sql: str, expected: list[str]) -> None:
    assert texts(sql) == expected


# --- transaction refusals -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (x)", "CREATE INDEX CONCURRENTLY"),
        ("create unique index concurrently if not exists i on t (x)", "CREATE INDEX CONCURRENTLY"),
        ("create  index\n concurrently i on t(x)", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
        ("REINDEX (VERBOSE) TABLE CONCURRENTLY t", "REINDEX CONCURRENTLY"),
        ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX CONCURRENTLY"),
        ("REINDEX (CONCURRENTLY true, VERBOSE) TABLE t", "REINDEX CONCURRENTLY"),
        ("REINDEX SCHEMA public", "REINDEX SCHEMA"),
        ("REINDEX DATABASE", "REINDEX DATABASE"),
        ("REINDEX SYSTEM", "REINDEX SYSTEM"),
        ("VACUUM", "VACUUM"),
        ("vacuum (analyze, verbose) t", "VACUUM"),
        ("CREATE DATABASE app", "CREATE DATABASE"),
        ("DROP DATABASE IF EXISTS app WITH (FORCE)", "DROP DATABASE"),
        ("CREATE TABLESPACE ts LOCATION '/data'", "CREATE TABLESPACE"),
        ("DROP TABLESPACE ts", "DROP TABLESPACE"),
        ("ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM"),
        ("ALTER DATABASE app SET TABLESPACE fast", "ALTER DATABASE SET TABLESPACE"),
        ('ALTER DATABASE "my app" SET TABLESPACE fast', "ALTER DATABASE SET TABLESPACE"),
        ("CLUSTER", "CLUSTER"),
        ("CLUSTER VERBOSE", "CLUSTER"),
        ("CLUSTER (VERBOSE);", "CLUSTER"),
        ("CREATE SUBSCRIPTION s CONNECTION 'dbname=a' PUBLICATION p", "CREATE SUBSCRIPTION"),
        ("DROP SUBSCRIPTION s", "DROP SUBSCRIPTION"),
        ("ALTER SUBSCRIPTION s REFRESH PUBLICATION", "ALTER SUBSCRIPTION ... REFRESH"),
        (
            "ALTER SUBSCRIPTION s SET PUBLICATION p2",
            "ALTER SUBSCRIPTION ... PUBLICATION with refresh",
        ),
        ("COMMIT PREPARED 'tx1'", "COMMIT PREPARED"),
        ("ROLLBACK PREPARED 'tx1'", "ROLLBACK PREPARED"),
        ("DISCARD ALL", "DISCARD ALL"),
        ("ALTER TABLE m DETACH PARTITION m_2020 CONCURRENTLY", "DETACH PARTITION CONCURRENTLY"),
        (
            'ALTER TABLE IF EXISTS s.m DETACH PARTITION s."m 2020" CONCURRENTLY',
            "DETACH PARTITION CONCURRENTLY",
        ),
        (
            "-- build it online\n/* /* nested */ */ CREATE INDEX CONCURRENTLY i ON t (x)",
            "CREATE INDEX CONCURRENTLY",
        ),
    ],
)
def test_refused_statements_are_named(sql: str, name: str) -> None:
    assert transaction_refusal(sql) == name


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX i ON t (x)",
        'CREATE INDEX "concurrently" ON t (x)',
        "DROP INDEX i",
        "REINDEX TABLE t",
        "REINDEX (CONCURRENTLY false) TABLE t",
        "REINDEX (CONCURRENTLY off) INDEX i",
        "ANALYZE t",
        "CLUSTER t",
        "CLUSTER VERBOSE t USING t_pkey",
        "CLUSTER (VERBOSE) t",
        "ALTER TYPE mood ADD VALUE 'sad'",
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'sad' BEFORE 'happy'",
        "ALTER DATABASE app SET work_mem = '4MB'",
        "ALTER DATABASE app SET default_tablespace = fast",
        "ALTER DATABASE app RENAME TO app2",
        "ALTER TABLESPACE ts RENAME TO ts2",
        "CREATE TABLE database (x int)",
        "CREATE SUBSCRIPTION s CONNECTION 'dbname=a' PUBLICATION p WITH (connect = false)",
        "CREATE SUBSCRIPTION s CONNECTION 'dbname=a' PUBLICATION p WITH (create_slot = false)",
        "ALTER SUBSCRIPTION s SET PUBLICATION p2 WITH (refresh = false)",
        "ALTER SUBSCRIPTION s ENABLE",
        "ALTER TABLE m DETACH PARTITION m_2020",
        "ALTER TABLE m ADD COLUMN detach int, ADD COLUMN partition int",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
        "COMMIT",
        "ROLLBACK",
        "DISCARD PLANS",
        "BEGIN",
        "SELECT 'CREATE INDEX CONCURRENTLY i ON t (x)'",
        "INSERT INTO log VALUES ('VACUUM')",
        "COMMENT ON TABLE t IS 'DROP DATABASE x'",
        "/* VACUUM */ SELECT 1",
        "-- VACUUM\nSELECT 1",
        "SELECT $$VACUUM$$",
        "",
        "-- only a comment",
    ],
)
def test_statements_allowed_in_a_transaction(sql: str) -> None:
    assert transaction_refusal(sql) is None


def test_find_transaction_problems_reports_refusals_with_their_lines() -> None:
    sql = (
        "CREATE TABLE t (x int);\n"
        "-- next one must run alone\n"
        "CREATE INDEX CONCURRENTLY t_x ON t (x);\n"
        "INSERT INTO t VALUES (1); VACUUM t;\n"
        "SELECT 'DROP DATABASE prod';\n"
        "/* DROP DATABASE prod; */\n"
        "DO $$ BEGIN EXECUTE 'VACUUM'; END $$;\n"
        "drop database\n  old_copy"
    )
    assert find_transaction_problems(sql) == [
        (3, "CREATE INDEX CONCURRENTLY", "refused"),
        (4, "VACUUM", "refused"),
        (8, "DROP DATABASE", "refused"),
    ]
    assert find_transaction_problems("CREATE TABLE t (x int); SELECT 1;") == []


@pytest.mark.parametrize(
    ("sql", "maybe"),
    [
        ("INSERT INTO t VALUES ('pending', 'appended');\nCREATE TABLE x (id int);", False),
        ("CREATE INDEX t_a ON t (a);", False),
        ("Commit;", True),
        ("SELECT 1;\n  cReAtE INDEX ConCurrently i ON t (a);", True),
        ("SELECT 1;/* c */vacuum", True),
        ("SELECT 1; /* x */ INSERT INTO t VALUES (1);\n-- a; b\nupdate t SET a = 2;", False),
        ("CREATE INDEX -- a;b\n  CONCURRENTLY i ON t (a);", True),
        ("ALTER TABLE t DETACH PARTITION s.p CONCURRENTLY;", True),
        ("ALTER TABLE t ADD COLUMN c text DEFAULT 'x';", False),
        ("create table x (id int);\nDROP TABLE y;", False),
        ("CREATE TABLE t (id int);\n\t  eNd;", True),
        ("INSERT INTO t VALUES ('a; vacuum');", True),  # a false start: the lexer clears it
        ("SELECT 1; (VACUUM);", True),  # not a word: left to the lexer
        ("SELECT 1; (SELECT 2);", False),  # no word a report needs, anywhere
        ("CREATE TABLE weekend_sales (id int);", False),  # "end" inside a word: tokenized
        ("ſtart transaction;", False),  # no ASCII keyword: PostgreSQL does not read START
        # a plain DDL statement (no quote, dollar or comment) is read up to its semicolon
        ("CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz);\nDROP TABLE u;", False),
        ("create tablespace ts owner me location x;", True),
        ("CREATE SUBSCRIPTION s CONNECTION c PUBLICATION p;", True),
        ("ALTER SYSTEM RESET work_mem;", True),
        ("drop DataBase old", True),
        ("CREATE INDEX i ON t (a); create index concurrently j on t (b)", True),
        ("CREATE TABLE system_log (id int);", False),  # a word holding one: tokenized
        ("CREATE TABLE t (a int);\nALTER TABLE t ADD b int;", False),
        # statement heads: a plain ASCII word is read without the tokenizer, the rest with it
        ("SELECT 1;\t Vacuum t;", True),
        ("SELECT 1;  E'end';", True),  # an E'' string, not the word e: left to the lexer
        ("SELECT 1; tabelleß; über;", False),
        ("SELECT 1; /* c */ CREATE INDEX CONCURRENTLY i ON t (a);", True),
    ],
)
def test_the_prefilter_clears_text_whose_statements_cannot_be_reported(
    sql: str, maybe: bool
) -> None:
    assert lexer.may_have_transaction_problems(sql) is maybe
    if not maybe:
        assert lexer.statement_problems(sql) == []


_PIECES = (
    "INSERT INTO t VALUES (1, 'a;b', $$x; COMMIT$$)",
    "CREATE TABLE t (id int, note text DEFAULT ';')",
    "CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)",
    "create index /* ; */ concurrently j on t (b)",
    "DROP DATABASE -- ;\n old",
    "ALTER TABLE t DETACH PARTITION p CONCURRENTLY",
    "ALTER TABLE t ADD c int",
    "ALTER SYSTEM SET work_mem = '8MB'",
    "VACUUM t",
    "COMMIT",
    "begin",
    "ROLLBACK TO SAVEPOINT s",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
    "DO $$ BEGIN PERFORM 1; END $$",
    "SELECT 'end; start'",
    "-- just a comment; VACUUM\nSELECT 1",
    "/* a /* nested; */ commit; */ SELECT 2",
    'CREATE TABLE "x;y" (a int)',
    "UPDATE t SET a = 1",
    "create index concurrently k on t (c)",
    "CREATE TABLESPACE ts LOCATION x",
    "Alter System Reset all",
    "CREATE TABLE system_log (id bigint PRIMARY KEY)",
    "CREATE TABLE t2 (id int, name text NOT NULL)",
)


def test_the_prefilter_never_clears_a_text_the_lexer_reports() -> None:
    rng = random.Random(15)
    for _ in range(3000):
        chosen = rng.choices(_PIECES, k=rng.randint(1, 5))
        sql = "".join(piece + rng.choice((";", ";\n", " ;  ", ";-- c\n")) for piece in chosen)
        if lexer.statement_problems(sql):
            assert lexer.may_have_transaction_problems(sql), sql
