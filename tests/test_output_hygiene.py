"""What every command writes, checked as a user's scripts and terminal see it: no character a
terminal acts on (a file name's ESC, a server message's, U+009B, U+202E) in any output, the JSON
log included, with ``-v`` too; no password in a configuration error; and a failing dry run ends
with the command's error like every other failure. Through the real ``mg`` and the suite's
PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project, run_mg, write_text
from tests.test_control_characters import no_raw_controls

# ESC ] ... BEL retitles the terminal, U+009B is the one-character CSI, U+202E reverses the
# text after it, DEL.
HOSTILE = "evil\x1b]0;pwned\x07\x9b2J\u202ex\x7f"
SHOWN = "evil\\x1b]0;pwned\\x07\\x9b2J\\u202ex\\x7f"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def test_the_json_log_escapes_what_a_terminal_acts_on_and_keeps_the_exact_names(
    project: Project,
) -> None:
    project.add("0001", HOSTILE, "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
    write_text(project.root / "seeds" / f"01_{HOSTILE}.sql", "SELECT 1;\n")
    runs = [
        project.mg("--json-log", "apply", "--dry-run"),
        project.mg("--json-log", "apply"),
        project.mg("--json-log", "seed"),
        project.mg("--json-log", "down"),
    ]
    names: set[str] = set()
    for done in runs:
        assert done.returncode == 0, done.stderr
        no_raw_controls(done.stdout, done.stderr)
        for line in done.stderr.splitlines():
            record = json.loads(line)
            names.update(str(record[k]) for k in ("migration_name", "seed") if k in record)
    assert names == {HOSTILE, f"01_{HOSTILE}.sql"}


def test_a_verbose_traceback_escapes_the_server_message_and_the_names(project: Project) -> None:
    project.add(
        "0001",
        HOSTILE,
        "DO $$ BEGIN RAISE EXCEPTION E'boom\\x1b]0;pwned\\x07\\u202e'; END $$;",
    )
    for args in (["-v", "apply"], ["-v", "apply", "--dry-run"], ["-v", "--json-log", "apply"]):
        done = project.mg(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert "Traceback" in done.stderr, done.stderr
        no_raw_controls(done.stdout, done.stderr)
    assert "boom\\x1b]0;pwned\\x07\\u202e" in project.mg("-v", "apply").stderr


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ("lock_id: Tr0ub4dor-hygiene\n", "lock_id: expected an integer, got '****'"),
        ("lock_timeout: Tr0ub4dor-hygiene\n", "lock_timeout: invalid duration '****'"),
        ("envs:\n  staging: Tr0ub4dor-hygiene\n", "envs.staging: expected a mapping, got '****'"),
        ("Tr0ub4dor-hygiene: 1\n", "unknown key '****'"),
    ],
)
@pytest.mark.parametrize("given", ["file", "variable", "url", "PGPASSWORD"])
def test_a_configuration_error_never_shows_the_configured_password(
    tmp_path: Path, extra: str, shown: str, given: str
) -> None:
    password = "Tr0ub4dor-hygiene"
    env: dict[str, str] = {}
    database = {
        "file": f"database:\n  host: db.invalid\n  password: {password}\n",
        "variable": "database:\n  host: db.invalid\n  password: ${DB_PASSWORD}\n",
        "url": f"database:\n  url: postgresql://app:{password}@db.invalid/app\n",
        "PGPASSWORD": "database:\n  host: db.invalid\n",
    }[given]
    if given == "variable":
        env["DB_PASSWORD"] = password
    if given == "PGPASSWORD":
        env["PGPASSWORD"] = password
    write_text(tmp_path / "mg.yaml", database + extra)
    (tmp_path / "migrations").mkdir()
    for args in (["status"], ["--json-log", "apply"], ["-v", "apply"]):
        done = run_mg(args, tmp_path, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert shown in done.stderr, (args, done.stderr)
        assert password not in done.stdout + done.stderr, (args, done.stderr)


def test_a_failing_seed_dry_run_ends_with_the_command_error(project: Project) -> None:
    write_text(project.root / "seeds" / "01_ok.sql", "SELECT 1;\n")
    write_text(project.root / "seeds" / "02_bad.sql", "SELECT nope;\n")
    write_text(project.root / "seeds" / "03_later.sql", "SELECT 3;\n")
    text = project.mg("seed", "--dry-run")
    assert text.returncode == 1, text.stderr
    assert "seeds/02_bad.sql:1:" in text.stderr
    last = text.stderr.splitlines()[-1]
    assert last == "mg: error: dry run: 1 seed failed; nothing was changed", text.stderr

    logged = project.mg("--json-log", "seed", "--dry-run")
    assert logged.returncode == 1, logged.stderr
    records = [json.loads(line) for line in logged.stderr.splitlines()]
    assert [r["event"] for r in records][-2:] == ["seed.finished", "command.failed"]
    assert records[-1]["exit_code"] == 1
    assert records[-1]["dry_run"] is True
    assert project.sql("SELECT to_regclass('_migrations_seeds')") == [(None,)]


def test_github_annotations_escape_control_characters_in_the_path(project: Project) -> None:
    project.add("0001", HOSTILE, "CREATE TABLE t1 (id int PRIMARY KEY);")
    done = project.mg("lint", "--format", "github")
    assert done.returncode == 0, done.stderr
    assert f"::warning file=migrations/0001_{SHOWN}.sql,line=2," in done.stdout, done.stdout
    no_raw_controls(done.stdout, done.stderr)


def test_squash_dry_run_escapes_control_characters_like_every_dry_run(project: Project) -> None:
    project.add("0001", "a", f"CREATE TABLE t1 (v text DEFAULT '{HOSTILE}');", "DROP TABLE t1;")
    project.add("0002", "b", "CREATE TABLE t2 (id int);", "DROP TABLE t2;")
    done = project.mg("squash", f"both {HOSTILE}", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"-- migration: both {SHOWN}\n" in done.stdout, done.stdout
    assert f"DEFAULT '{SHOWN}'" in done.stdout, done.stdout
    no_raw_controls(done.stdout, done.stderr)
    written = project.mg("squash", f"both {HOSTILE}")
    assert written.returncode == 0, written.stderr
    (path,) = project.migrations_dir.glob("*.sql")
    assert f"DEFAULT '{HOSTILE}'" in path.read_text(encoding="utf-8")


def test_a_plugin_that_fails_to_load_quoting_the_password_shows_it_masked(
    tmp_path: Path,
) -> None:
    password = "Tr0ub4dor-plugin"
    write_text(
        tmp_path / "mg.yaml",
        f'database:\n  host: db.invalid\n  password: {password}\nplugins: ["./plug.py"]\n',
    )
    (tmp_path / "migrations").mkdir()
    write_text(tmp_path / "plug.py", f"raise RuntimeError('cannot log in with {password}')\n")
    failed = run_mg(["status"], tmp_path)
    assert failed.returncode == 2, failed.stderr
    assert "failed to load: RuntimeError: cannot log in with ****" in failed.stderr
    runs = [failed]
    for args in (["--json-log", "status"], ["-v", "status"], ["plugins"]):
        runs.append(run_mg(args, tmp_path))
    listed = run_mg(["plugins", "--format", "json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    (plug,) = [p for p in json.loads(listed.stdout) if p["name"] == "plug"]
    assert plug["error"] == "RuntimeError: cannot log in with ****"
    for done in [*runs, listed]:
        assert password not in done.stdout + done.stderr, (done.args, done.stdout, done.stderr)


def test_ctrl_c_while_mg_starts_is_a_json_line_with_every_common_field(tmp_path: Path) -> None:
    # An interrupt while the command line is still being imported (its first milliseconds):
    # a stand-in for click that raises KeyboardInterrupt as it is imported.
    write_text(tmp_path / "stub" / "click" / "__init__.py", "raise KeyboardInterrupt\n")
    done = run_mg(["--json-log", "status"], tmp_path, env={"PYTHONPATH": str(tmp_path / "stub")})
    assert done.returncode == 130, done.stderr
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["event"] == "command.failed"
    assert {"ts", "level", "event", "message", "env", "dry_run"} <= set(record), record
    assert (record["env"], record["dry_run"], record["exit_code"]) == (None, False, 130)


# A server message holding a line break that would start a line of its own reading as mg's.
FORGED = "mg: info: all migrations applied"
RAISING = (
    f"RAISE EXCEPTION E'boom\\n{FORGED}\\x1b[2J' "
    f"USING DETAIL = E'd1\\n{FORGED}\\r', HINT = E'h1\\n{FORGED}'"
)


def _one_line_per_error(done: subprocess.CompletedProcess[str]) -> None:
    """The server's text is in the output, escaped: no line of it starts a line of mg's
    output, and no control character of it reaches the terminal raw."""
    output = done.stdout + done.stderr
    assert f"boom\\n{FORGED}\\x1b[2J" in output, output
    no_raw_controls(done.stdout, done.stderr)
    for line in output.splitlines():
        assert not line.startswith(FORGED), output


def test_a_server_message_of_several_lines_is_one_escaped_line_in_every_command(
    project: Project,
) -> None:
    project.add("0001", "ok", "CREATE TABLE t1 (id bigint);", f"DO $$ BEGIN {RAISING}; END $$;")
    project.add("0002", "raises", f"DO $$ BEGIN {RAISING}; END $$;")
    project.add("0003", "raises_alone", f"DO $$ BEGIN {RAISING}; END $$;", no_transaction=True)
    write_text(project.root / "seeds" / "01_raises.sql", f"DO $$ BEGIN {RAISING}; END $$;\n")

    applied = project.mg("apply")
    assert applied.returncode == 1, applied.stderr
    _one_line_per_error(applied)
    error = next(line for line in applied.stderr.splitlines() if line.startswith("mg: error:"))
    assert f"0002_raises.sql:2: boom\\n{FORGED}\\x1b[2J (SQLSTATE P0001)" in error, error
    # DETAIL and HINT continue indented under their labels
    assert f"  DETAIL: d1\n    {FORGED}\n" in applied.stderr, applied.stderr
    assert f"  HINT: h1\n    {FORGED}\n" in applied.stderr, applied.stderr

    for args in (["apply", "--dry-run"], ["-v", "apply"], ["seed"], ["seed", "--dry-run"]):
        done = project.mg(*args)
        assert done.returncode == 1, (args, done.stderr)
        _one_line_per_error(done)

    logged = project.mg("--json-log", "apply")
    assert logged.returncode == 1, logged.stderr
    records = [json.loads(line) for line in logged.stderr.splitlines()]
    assert f"boom\\n{FORGED}" in records[-1]["error"], records[-1]

    rolled = project.mg("rollback")
    assert rolled.returncode == 1, rolled.stderr
    _one_line_per_error(rolled)

    # A no-transaction migration: the error shown and the one its history row keeps.
    project.path_of("0002").unlink()
    alone = project.mg("apply")
    assert alone.returncode == 1, alone.stderr
    _one_line_per_error(alone)
    assert "0003_raises_alone.sql:3:" in alone.stderr, alone.stderr
    refused = project.mg("apply")
    assert refused.returncode == 3, refused.stderr
    _one_line_per_error(refused)


def test_check_shows_a_server_message_of_several_lines_escaped(
    project: Project, pg_url: str
) -> None:
    project.add("0001", "raises", f"DO $$ BEGIN {RAISING}; END $$;")
    done = project.mg("check", "--database-url", pg_url)
    assert done.returncode == 1, done.stderr
    _one_line_per_error(done)
    assert f"  DETAIL: d1\n    {FORGED}\n" in done.stdout, done.stdout
    data = project.mg("check", "--database-url", pg_url, "--format", "json")
    assert data.returncode == 1, data.stderr
    (problem,) = json.loads(data.stdout)["migrations"][0]["problems"]
    assert f"boom\\n{FORGED}\\x1b[2J (SQLSTATE P0001)\n  DETAIL: d1\n" in problem, problem


def test_a_fleet_shows_a_server_message_of_several_lines_escaped(project: Project) -> None:
    dbname = project.value("SELECT current_database()")
    project.sql(
        "CREATE FUNCTION members() RETURNS SETOF text LANGUAGE plpgsql AS "
        f"$$ BEGIN {RAISING}; END $$"
    )
    project.configure(
        extra=f"fleets:\n  one:\n    databases: [{dbname}]\n"
        "  queried:\n    query: SELECT members()\n"
    )
    project.add("0001", "raises", f"DO $$ BEGIN {RAISING}; END $$;")
    for args in (
        ["--fleet", "one", "apply"],
        ["--fleet", "one", "apply", "--format", "json"],
        ["--fleet", "queried", "apply"],
    ):
        done = project.mg(*args)
        assert done.returncode == 1, (args, done.stderr)
        _one_line_per_error(done)
    queried = project.mg("--fleet", "queried", "status")
    assert f"hint: h1\\n{FORGED}" in queried.stderr, queried.stderr
