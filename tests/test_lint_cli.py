"""``mg lint`` through the real entry point: selection, formats, exit codes, configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project

DROP = "ALTER TABLE accounts DROP COLUMN old;"  # ban-drop-column: error
INT = "CREATE TABLE posts (id integer);"  # prefer-bigint-over-int: warning


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


@pytest.fixture
def offline(tmp_path: Path) -> Project:
    """A project whose database cannot be reached: only file-based linting works."""
    return Project(tmp_path / "off", "postgresql://nobody@127.0.0.1:9/none")


def findings(project: Project, *args: str) -> list[dict[str, object]]:
    done = project.mg("lint", "--format", "json", *args)
    assert done.returncode in (0, 3), done.stderr
    data = json.loads(done.stdout)
    result: list[dict[str, object]] = data["findings"]
    return result


def test_text_output_and_exit_code(offline: Project) -> None:
    offline.add("001", "drop", DROP)
    done = offline.mg("lint", "--all")
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "migrations/001_drop.sql:2:1: ban-drop-column: dropping accounts.old breaks clients "
        "still using it and loses its data"
    )
    assert lines[1].startswith("  help: ")
    assert "1 error, 0 warnings" in done.stderr


def test_warnings_exit_0_unless_strict(offline: Project) -> None:
    offline.add("001", "posts", INT)
    done = offline.mg("lint", "--all")
    assert done.returncode == 0, done.stderr
    assert "prefer-bigint-over-int" in done.stdout
    assert offline.mg("lint", "--all", "--strict").returncode == 3


def test_clean_migrations_exit_0_silently(offline: Project) -> None:
    offline.add("001", "posts", "CREATE TABLE posts (id bigint);")
    done = offline.mg("lint", "--all")
    assert (done.returncode, done.stdout) == (0, "")


def test_json_document(offline: Project) -> None:
    offline.add("001", "drop", DROP)
    (finding,) = findings(offline, "--all")
    assert finding == {
        "path": "migrations/001_drop.sql",
        "line": 2,
        "column": 1,
        "rule": "ban-drop-column",
        "severity": "error",
        "message": "dropping accounts.old breaks clients still using it and loses its data",
        "help": finding["help"],
        "migration": "001",
    }
    assert finding["help"]


def test_github_annotations(offline: Project) -> None:
    offline.add("001", "drop", DROP + "\n" + INT)
    done = offline.mg("lint", "--all", "--format", "github")
    assert done.returncode == 3
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        "::error file=migrations/001_drop.sql,line=2,col=1,title=ban-drop-column::dropping"
    )
    assert lines[1].startswith("::warning file=migrations/001_drop.sql,line=3,")


def test_pending_only_by_default(project: Project) -> None:
    project.add("001", "posts", "CREATE TABLE posts (id bigint); DROP TABLE posts;")
    assert project.mg("apply").returncode == 0
    project.add("002", "drop", "ALTER TABLE posts DROP COLUMN x;")
    assert [f["migration"] for f in findings(project)] == ["002"]
    assert [f["rule"] for f in findings(project, "--all")] == ["ban-drop-column"]


def test_pending_plan_knows_new_tables(project: Project) -> None:
    project.add("001", "create", "CREATE TABLE users (id bigint);")
    project.add("002", "index", "CREATE INDEX users_id ON users (id);")
    assert findings(project) == []
    # Once the table exists and holds rows, the index build blocks writes.
    assert project.mg("apply", "--to", "001").returncode == 0
    assert [f["rule"] for f in findings(project)] == ["require-concurrent-index-creation"]


def test_named_migrations(offline: Project) -> None:
    offline.add("01AAA", "first", DROP)
    offline.add("01BBB", "second", INT)
    for name in ("01BBB", "01B", "second", "migrations/01BBB_second.sql", "01BBB_second.sql"):
        assert [f["migration"] for f in findings(offline, name)] == ["01BBB"], name
    done = offline.mg("lint", "01")
    assert done.returncode == 2
    assert "ambiguous" in done.stderr
    done = offline.mg("lint", "nothing")
    assert done.returncode == 2
    assert "no such migration" in done.stderr


def test_unreachable_database_lints_every_file_with_a_warning(offline: Project) -> None:
    offline.add("001", "drop", DROP)
    done = offline.mg("lint")
    assert done.returncode == 3
    assert "ban-drop-column" in done.stdout
    assert "linting every migration" in done.stderr


def test_enable_disable_on_the_command_line(offline: Project) -> None:
    offline.add("001", "posts", INT)
    assert findings(offline, "--all", "--disable", "prefer-bigint-over-int") == []
    rules = [f["rule"] for f in findings(offline, "--all", "--enable", "all")]
    assert "require-table-schema" in rules
    assert findings(offline, "--all", "--disable", "all") == []
    only = findings(offline, "--all", "--disable", "all", "--enable", "require-table-schema")
    assert [f["rule"] for f in only] == ["require-table-schema"]
    done = offline.mg("lint", "--all", "--enable", "no-such-rule")
    assert done.returncode == 2
    assert "unknown lint rule 'no-such-rule'" in done.stderr


def test_lint_section_in_mg_yaml(offline: Project) -> None:
    offline.configure(
        {"url": offline.database_url},
        extra="lint:\n  disable: [ban-drop-column]\n  severity:\n"
        "    prefer-bigint-over-int: error\n",
    )
    offline.add("001", "both", DROP + "\n" + INT)
    (finding,) = findings(offline, "--all")
    assert (finding["rule"], finding["severity"]) == ("prefer-bigint-over-int", "error")


def test_bad_lint_section_is_a_configuration_error(offline: Project) -> None:
    offline.configure({"url": offline.database_url}, extra="lint:\n  disable: [nope]\n")
    done = offline.mg("lint", "--all")
    assert done.returncode == 2
    assert "lint.disable: unknown lint rule 'nope'" in done.stderr


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ("lint: 5", "lint: expected a mapping"),
        ("lint:\n  on_apply: maybe", "lint.on_apply: expected one of warn, block, off"),
        ("lint:\n  severity: [x]", "lint.severity: expected a mapping of rule"),
        ("lint:\n  bogus: 1", "lint.bogus: unknown key"),
        # A severity names rules one by one: `all` would be silently ignored.
        ("lint:\n  severity:\n    all: warning", "lint.severity: 'all' is no rule"),
    ],
)
def test_a_bad_lint_section_names_the_file_on_every_command(
    offline: Project, section: str, said: str
) -> None:
    offline.configure({"url": offline.database_url}, extra=section + "\n")
    for command in (["lint", "--all"], ["status"]):
        done = offline.mg(*command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"mg: error: mg.yaml: {said}"), done.stderr


@pytest.mark.parametrize("command", [["lint"], ["lint", "--all"], ["check"]])
def test_lint_and_check_outside_a_project_fail_instead_of_passing_on_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """A CI job that runs `mg lint` or `mg check` in the wrong directory must not go green
    on "0 migrations"; nor may mg check start a scratch server for nothing."""
    from migretti_core.testing import assert_clean_error, run_mg

    done = run_mg(command, tmp_path, env={"MG_DATABASE_URL": ""}, timeout=60)
    assert_clean_error(
        done, f"no mg.yaml in {tmp_path} or its parents, and no migrations/ directory"
    )
    assert "scratch" not in done.stderr and done.stdout == ""
    (tmp_path / "migrations").mkdir()  # a project without mg.yaml, as mg create makes one
    assert run_mg(["lint"], tmp_path, env={"MG_DATABASE_URL": ""}).returncode == 0


def test_server_version_option(offline: Project) -> None:
    offline.add("001", "default", "ALTER TABLE a ADD COLUMN b bigint DEFAULT 1;")
    assert findings(offline, "--all") == []
    rules = [f["rule"] for f in findings(offline, "--all", "--server-version", "10")]
    assert rules == ["adding-field-with-default"]


def test_syntax_error_is_a_finding(offline: Project) -> None:
    offline.add("001", "bad", "CREATE TABLEE x (id bigint);")
    done = offline.mg("lint", "--all")
    assert done.returncode == 3
    assert "syntax-error" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_finding_quoting_a_line_break_stays_on_one_line(project: Project) -> None:
    project.add("001", "open", "SELECT 1;\n/*\nnever closed")
    done = project.mg("lint", "--all")
    assert done.returncode == 3, done.stderr
    line, help_line = done.stdout.splitlines()
    assert help_line.startswith("  help:")
    assert line.startswith("migrations/001_open.sql:3:1: syntax-error: unterminated /* comment")
    assert line.endswith('"/*\\nnever closed\\n"'), line
    applied = project.mg("apply")  # warned about, then refused by the server
    assert applied.returncode == 1, applied.stderr
    [warning] = [x for x in applied.stderr.splitlines() if "syntax-error" in x]
    assert warning.endswith('"/*\\nnever closed\\n"'), applied.stderr


def test_lint_can_be_blocked(offline: Project) -> None:
    done = offline.mg("-p", "no:lint", "lint", "--all")
    assert done.returncode == 2
    listed = offline.mg("plugins", "--format", "json")
    names = {p["name"]: p["status"] for p in json.loads(listed.stdout)}
    assert names["lint"] == "loaded"


# --- apply, up and dry runs lint their plan ------------------------------------------------------

SETUP = "CREATE TABLE other (id bigint);"
EXISTING = "CREATE TABLE accounts (id bigint, old text)"


def block(project: Project, on_apply: str = "block", extra: str = "") -> None:
    project.configure(
        {"url": project.database_url}, extra=f"lint:\n  on_apply: {on_apply}\n{extra}"
    )


def test_apply_warns_about_findings_and_applies(project: Project) -> None:
    project.sql(EXISTING)
    project.add("001", "setup", SETUP)
    project.add("002", "drop", DROP)
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert (
        "mg: warning: migrations/002_drop.sql:2:1: ban-drop-column: dropping accounts.old"
        in done.stderr
    )
    assert project.sql("SELECT count(*) FROM _migrations")[0][0] == 2


def test_on_apply_block_stops_before_anything_runs(project: Project) -> None:
    project.sql(EXISTING)
    block(project)
    project.add("001", "setup", SETUP)
    project.add("002", "drop", DROP)
    done = project.mg("apply")
    assert done.returncode == 3, done.stderr
    assert "ban-drop-column" in done.stderr
    assert "other" not in project.tables()
    up = project.mg("up")  # 001 alone has no error finding
    assert up.returncode == 0, up.stderr
    assert project.mg("up").returncode == 3
    dry = project.mg("apply", "--dry-run")
    assert dry.returncode == 3
    assert project.mg("apply", "--no-lint").returncode == 0
    assert project.sql("SELECT count(*) FROM _migrations")[0][0] == 2


def test_on_apply_off_and_no_lint_skip_it(project: Project) -> None:
    project.sql(EXISTING)
    block(project, "off")
    project.add("001", "setup", SETUP)
    project.add("002", "drop", DROP)
    done = project.mg("apply", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "ban-drop-column" not in done.stderr
    block(project, "warn")
    done = project.mg("apply", "--dry-run", "--no-lint")
    assert "ban-drop-column" not in done.stderr
    done = project.mg("apply", "--dry-run")
    assert "ban-drop-column" in done.stderr


def test_apply_lint_uses_the_target_version(project: Project) -> None:
    project.sql(EXISTING)
    # A constant default rewrote the table before PostgreSQL 11; the test server is newer.
    project.add("001", "setup", SETUP)
    project.add("002", "default", "ALTER TABLE accounts ADD COLUMN n bigint DEFAULT 1;")
    block(project, extra="  severity: {}\n")
    done = project.mg("apply", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "adding-field-with-default" not in done.stderr
    block(project, extra="  server_version: 10\n")
    assert project.mg("apply", "--dry-run").returncode == 3


def test_protected_confirmation_lists_error_findings(project: Project) -> None:
    project.sql(EXISTING)
    project.configure({"url": project.database_url}, extra="protected: true\n")
    project.add("001", "setup", SETUP)
    project.add("002", "drop", DROP)
    done = project.mg("apply", "--yes")
    assert done.returncode == 0, done.stderr
    prompt = done.stderr[done.stderr.index("protected environment") :]
    assert "lint found 1 error:" in prompt
    assert "migrations/002_drop.sql:2:1: ban-drop-column" in prompt


def test_apply_lint_reads_the_table_lock_timeout_of_the_command_line(project: Project) -> None:
    """require-timeout-settings follows what mg will set: --table-lock-timeout wins."""
    project.sql(EXISTING)
    project.add("001", "flag", "ALTER TABLE accounts ADD COLUMN flag boolean;")
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 'off'\n")
    done = project.mg("apply", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "require-timeout-settings" in done.stderr
    done = project.mg("apply", "--dry-run", "--table-lock-timeout", "2s")
    assert done.returncode == 0, done.stderr
    assert "require-timeout-settings" not in done.stderr
    project.configure({"url": project.database_url})
    done = project.mg("apply", "--dry-run", "--table-lock-timeout", "off")
    assert done.returncode == 0, done.stderr
    assert "require-timeout-settings" in done.stderr


GO_SPLITTER = """
import re

from migretti_core.api import Statement, hookimpl

_GO = re.compile(r"(?m)^GO[ \\t]*$\\n?")


@hookimpl
def mg_split_statements(sql):
    statements, line = [], 1
    for chunk in _GO.split(sql):
        if chunk.strip():
            leading = len(chunk) - len(chunk.lstrip("\\n"))
            statements.append(Statement(chunk.strip(), line + leading))
        line += chunk.count("\\n") + 1
    return statements
"""


def test_a_replaced_splitter_s_statements_are_what_lint_checks(project: Project) -> None:
    """With a plugin splitting on ``GO`` lines, a no-transaction migration runs as the
    statements between them: lint checks those (no syntax error for the ``GO`` lines, and a
    finding still names its line of the file), and a statement the splitter cuts in two is
    the syntax error it will be when it runs. A transactional migration is sent whole, so
    there a ``GO`` line stays the syntax error the server will report."""
    (project.root / "go_splitter.py").write_text(GO_SPLITTER, encoding="utf-8")
    project.configure(extra="plugins:\n  - go_splitter.py\n")
    project.add(
        "0001",
        "go",
        "CREATE TABLE IF NOT EXISTS a (id bigint PRIMARY KEY)\nGO\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_id ON a (id)\nGO\n"
        "ALTER TABLE a ADD COLUMN IF NOT EXISTS n integer\nGO\n",
        no_transaction=True,
    )
    found = findings(project)
    assert [(f["rule"], f["line"]) for f in found] == [("prefer-bigint-over-int", 7)], found
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert "syntax-error" not in done.stderr
    assert project.tables() == {"a"}

    # the whole parses, but the splitter cuts the string at its GO line: so will the run
    project.add(
        "0002",
        "cut",
        "INSERT INTO a (id) SELECT length('one\nGO\ntwo')\n",
        no_transaction=True,
    )
    found = findings(project)
    assert [(f["rule"], f["line"]) for f in found] == [
        ("syntax-error", 3),
        ("syntax-error", 5),
    ], found

    project.path_of("0002").unlink()
    project.add("0003", "sent_whole", "CREATE TABLE b (id bigint)\nGO\n")
    found = findings(project)
    assert [(f["rule"], f["line"]) for f in found] == [("syntax-error", 3)], found


def test_an_ignore_naming_no_rule_says_so(offline: Project) -> None:
    offline.add(
        "001",
        "drop",
        "-- squawk-ignore ban-drop-colum, Ban-Drop-Table, xyzzy\n" + DROP,
    )
    done = offline.mg("lint", "--all")
    assert done.returncode == 3
    assert (
        "migrations/001_drop.sql:2:1: unused-ignore: ignore comment for Ban-Drop-Table, "
        "ban-drop-colum, xyzzy matched no finding; Ban-Drop-Table is no lint rule (did you "
        "mean ban-drop-table?); ban-drop-colum is no lint rule (did you mean "
        "ban-drop-column?); xyzzy is no lint rule\n"
    ) in done.stdout
    assert "001_drop.sql:3:1: ban-drop-column:" in done.stdout


def test_a_deeply_nested_statement_does_not_fail_the_lint_or_apply(project: Project) -> None:
    """PostgreSQL runs an expression of a thousand terms; its parse tree is too deep for
    Python's JSON decoder, so lint leaves that statement unchecked and checks the others."""
    terms = "".join(f" + {i}" for i in range(1, 1000))
    project.add("001", "accounts", "CREATE TABLE accounts (id bigint, old text);")
    project.add(
        "002",
        "sum",
        f"CREATE VIEW total AS SELECT 0{terms} AS x; {DROP}\nCREATE TABLE posts (id bigint);",
    )
    done = project.mg("lint", "--all", "--format", "json")
    assert done.returncode == 3, done.stderr
    found = [(f["rule"], f["line"]) for f in json.loads(done.stdout)["findings"]]
    assert found == [("ban-drop-column", 2)]
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "plugin 'lint' failed" not in done.stderr
    assert {"accounts", "posts"} <= project.tables()
    assert project.value("SELECT x FROM total") == sum(range(1000))


def test_syntax_newer_than_the_parser_s_grammar_is_a_warning_for_a_newer_target(
    offline: Project,
) -> None:
    """prefer-repack's advice, REPACK (CONCURRENTLY), is PostgreSQL 19 syntax: pglast reads
    an older grammar, so for a target of 19 its syntax error may be none."""
    from pglast import parser

    grammar = parser.get_postgresql_version()[0]
    offline.add("001", "repack", "REPACK (CONCURRENTLY) t;", no_transaction=True)
    done = offline.mg("lint", "--all", "--server-version", str(grammar))
    assert done.returncode == 3
    assert "001_repack.sql:3:1: syntax-error: syntax error at or near" in done.stdout
    (finding,) = findings(offline, "--all", "--server-version", str(grammar + 1))
    assert (finding["rule"], finding["severity"]) == ("syntax-error", "warning")
    assert str(finding["message"]).endswith(
        f"(by PostgreSQL {grammar}'s grammar; PostgreSQL {grammar + 1} may accept it)"
    )
    offline.configure(
        {"url": offline.database_url}, extra="lint:\n  severity:\n    syntax-error: error\n"
    )
    (finding,) = findings(offline, "--all", "--server-version", str(grammar + 1))
    assert finding["severity"] == "error"


def test_an_ignore_of_a_rule_switched_off_is_not_unused(offline: Project) -> None:
    """Switching a rule off (on the command line, in mg.yaml, or by default) must not turn
    every ignore comment kept for it into an unused-ignore warning (exit 3 with --strict)."""
    offline.add("001", "drop", "-- mg:lint-ignore ban-drop-column unused since 4.2\n" + DROP)
    offline.add(
        "002", "posts", "-- squawk-ignore require-table-schema\nCREATE TABLE public.p (id int);"
    )
    assert findings(offline, "--all", "--disable", "ban-drop-column,prefer-bigint-over-int") == []
    done = offline.mg("lint", "--all", "--strict", "--disable", "prefer-bigint-over-int")
    assert done.returncode == 0, done.stdout
    found = findings(offline, "--all", "--enable", "require-table-schema")
    rules = [f["rule"] for f in found if f["migration"] == "002"]
    assert rules == ["unused-ignore", "prefer-bigint-over-int"]


def test_squawk_ignores_of_rules_mg_makes_moot_are_not_unused(offline: Project) -> None:
    """squawk asks for a lock_timeout and for robust statements in every file; mg sets the
    timeout itself and runs the migration in a transaction, so a squawk-ignore kept for those
    rules matches nothing here, and is no unused-ignore either."""
    ignore = "-- squawk-ignore require-timeout-settings, prefer-robust-stmts\n"
    offline.add("001", "add", ignore + "ALTER TABLE t ADD COLUMN c bigint;")
    done = offline.mg("lint", "--all", "--strict")
    assert done.returncode == 0, done.stdout
    # Where the rule can fire, an ignore that silences nothing is still reported.
    offline.add(
        "002",
        "robust",
        ignore + "ALTER TABLE t ADD COLUMN IF NOT EXISTS c bigint;",
        no_transaction=True,
    )
    offline.configure({"url": offline.database_url}, extra="table_lock_timeout: off\n")
    # 001's ignore now silences require-timeout-settings; 002's names a rule that could fire.
    found = [(f["migration"], f["rule"], f["message"]) for f in findings(offline, "--all")]
    assert found == [
        ("002", "unused-ignore", "ignore comment for prefer-robust-stmts matched no finding")
    ]
