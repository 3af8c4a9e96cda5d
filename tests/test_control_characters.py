"""File and migration names holding control characters reach no terminal raw.

A name such as ``0001_x\\x1b]0;title\\x07.sql`` would otherwise rewrite the terminal of whoever
runs ``mg status``. Human output shows each control character as an escape (``\\x1b``,
``\\r``, ``\\n``); JSON documents keep the exact name, and the history stores it as it is.
Through the real ``mg`` and against the suite's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.messages import printable
from migretti_core.testing import Project, run_mg

# Every character a terminal acts on, except the line breaks of mg's own multi-line output.
RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)

# ESC ] ... BEL sets the terminal's title (click strips only ESC [ ... m sequences), CR goes
# back to the start of the line, U+009B is the one-character CSI, LF starts a new line.
HOSTILE = "evil\x1b]0;pwned\x07\r\x9bx\nline"
SHOWN = "evil\\x1b]0;pwned\\x07\\r\\x9bx\\nline"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def no_raw_controls(*texts: str) -> None:
    for text in texts:
        found = RAW_CONTROL.search(text)
        assert found is None, (found, text)


def test_printable_escapes_every_control_character_and_keeps_the_rest() -> None:
    assert printable("0001_add_users.sql") == "0001_add_users.sql"
    assert printable("café ☕ 表") == "café ☕ 表"
    assert printable("a\\b") == "a\\b"
    assert printable("\x1b[31m\r\n\t\x07\x00\x7f\x9b") == "\\x1b[31m\\r\\n\\t\\x07\\x00\\x7f\\x9b"
    assert printable("a\u202eb") == "a\\u202eb"  # right-to-left override
    assert printable("caf\udce9") == "caf\\xe9"  # a name's byte that is not UTF-8
    assert printable("one\ntwo\tthree\r", lines=True) == "one\ntwo\tthree\\r"


def test_a_migration_name_is_escaped_in_every_human_output_and_exact_in_json(
    project: Project,
) -> None:
    project.add("0001", HOSTILE, "CREATE TABLE t1 (id int PRIMARY KEY);", "DROP TABLE t1;")

    listed = project.mg("list")
    assert listed.returncode == 0, listed.stderr
    assert SHOWN in listed.stdout
    no_raw_controls(listed.stdout, listed.stderr)

    applied = project.mg("apply")
    assert applied.returncode == 0, applied.stderr
    assert f"applied 0001 {SHOWN} (" in applied.stdout
    # the lint warning names the file
    assert f"0001_{SHOWN}.sql:" in applied.stderr
    no_raw_controls(applied.stdout, applied.stderr)

    for args in (("status",), ("list",), ("head",), ("-v", "down", "--dry-run")):
        done = project.mg(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert SHOWN in done.stdout + done.stderr, (args, done.stdout, done.stderr)
        no_raw_controls(done.stdout, done.stderr)

    # JSON keeps the exact name (json.dumps escapes it), and so does the history
    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["head"]["name"] == HOSTILE
    listing = json.loads(project.mg("list", "--format", "json").stdout)
    assert [row["name"] for row in listing] == [HOSTILE]
    assert project.sql("SELECT name FROM _migrations") == [(HOSTILE,)]

    # the JSON log keeps the exact name in its fields
    logged = project.mg("--json-log", "down")
    assert logged.returncode == 0, logged.stderr
    events = [json.loads(line) for line in logged.stderr.splitlines()]
    assert {e.get("migration_name") for e in events} >= {HOSTILE}

    # the name is still matched as written
    assert project.mg("apply", "--to", HOSTILE).returncode == 0

    # a changed file: verify, status and apply name it
    path = project.path_of("0001")
    path.write_text(path.read_text() + "-- changed\n")
    for args, code in ((("verify",), 3), (("status",), 0), (("apply",), 3)):
        done = project.mg(*args)
        assert done.returncode == code, (args, done.stderr)
        assert f"0001_{SHOWN}.sql" in done.stdout + done.stderr, (args, done.stdout, done.stderr)
        no_raw_controls(done.stdout, done.stderr)
    verified = json.loads(project.mg("verify", "--format", "json").stdout)
    assert [m["file"] for m in verified["mismatches"]] == [f"migrations/0001_{HOSTILE}.sql"]


def test_a_bad_file_name_is_escaped_in_the_error_of_apply_status_and_lint(
    project: Project,
) -> None:
    (project.migrations_dir / f"bad{HOSTILE}.sql").write_text("-- migrate: up\nSELECT 1;\n")
    for args in (("apply",), ("status",), ("lint",), ("apply", "--dry-run")):
        done = project.mg(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert f"migrations/bad{SHOWN}.sql:1: file name must be <id>_<name>.sql" in done.stderr
        no_raw_controls(done.stdout, done.stderr)
    assert project.all_tables() == set()


def test_lint_findings_show_the_escaped_path_and_json_the_exact_one(project: Project) -> None:
    project.add("0001", HOSTILE, "CREATE TABLE t1 (id int PRIMARY KEY);")
    done = project.mg("lint")
    assert f"migrations/0001_{SHOWN}.sql:2:" in done.stdout, done.stdout
    no_raw_controls(done.stdout, done.stderr)
    document = json.loads(project.mg("lint", "--format", "json").stdout)
    assert {f["path"] for f in document["findings"]} == {f"migrations/0001_{HOSTILE}.sql"}


def test_create_and_config_errors_escape_the_configured_paths(tmp_path: Path) -> None:
    migrations = f"sql{HOSTILE}"
    (tmp_path / "mg.yaml").write_text(f"migrations_dir: {json.dumps(migrations)}\n")
    os.mkdir(tmp_path / migrations)
    done = run_mg(["create", "first"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sql{SHOWN}/"), done.stdout
    no_raw_controls(done.stdout, done.stderr)

    seeds = run_mg(["seed", "create", "first"], tmp_path, env={"MG_CONFIG": "mg.yaml"})
    assert seeds.returncode == 0, seeds.stderr
    no_raw_controls(seeds.stdout, seeds.stderr)

    missing = run_mg(["--config", f"gone{HOSTILE}.yaml", "status"], tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert f"gone{SHOWN}.yaml" in missing.stderr
    no_raw_controls(missing.stdout, missing.stderr)


def test_a_plugin_file_name_is_escaped_in_mg_plugins_with_or_without_the_output_plugin(
    tmp_path: Path,
) -> None:
    (tmp_path / f"ev{HOSTILE}.py").write_text("x = 1\n")
    (tmp_path / "mg.yaml").write_text(f"plugins:\n  - {json.dumps(f'ev{HOSTILE}.py')}\n")
    for args in (["plugins"], ["-p", "no:output", "plugins"]):
        done = run_mg(args, tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert f"ev{SHOWN}" in done.stdout, (args, done.stdout)
        no_raw_controls(done.stdout, done.stderr)
    document = json.loads(
        run_mg(["-p", "no:output", "plugins", "--format", "json"], tmp_path).stdout
    )
    assert f"ev{HOSTILE}" in {p["name"] for p in document}


def shown_clean(done: subprocess.CompletedProcess[str], code: int) -> str:
    """What ``mg`` printed, checked: exit ``code``, and no line break or other control
    character of a name written raw (``x\\nline`` is HOSTILE's break)."""
    text = done.stdout + done.stderr
    assert done.returncode == code, (done.returncode, text)
    assert "Traceback" not in text, text
    assert "x\nline" not in text, text
    no_raw_controls(done.stdout, done.stderr)
    return text


def test_errors_naming_a_migration_escape_its_name(project: Project) -> None:
    """The errors a user meets with such a name (a failing SQL statement, a failed row that
    blocks, a baseline or fix of it, a missing down section, an ambiguous id, a file gone)
    show it escaped: a line break in a name never starts a new line of mg's output."""
    project.add("0001", HOSTILE, "CREATE TABLE t1 (id int PRIMARY KEY);", "DROP TABLE t1;")
    project.add(
        "0002",
        f"{HOSTILE}_nt",
        "CREATE TABLE t2 (id int PRIMARY KEY);\nSELECT 1/0;",
        "DROP TABLE t2;",
        no_transaction=True,
    )
    project.configure(extra="envs:\n  prod:\n    protected: true\n")
    refused = shown_clean(project.mg("--env", "prod", "apply"), 5)  # no terminal to ask on
    assert f"up   0002 {SHOWN}_nt" in refused, refused
    dry = shown_clean(project.mg("apply", "--dry-run"), 0)
    assert f"ok: 0001 {SHOWN}" in dry and f"not executed: 0002 {SHOWN}_nt" in dry, dry
    failed = shown_clean(project.mg("apply"), 1)
    assert f"0002_{SHOWN}_nt.sql:4" in failed and "division by zero" in failed

    blocked = shown_clean(project.mg("apply"), 3)
    assert f"0002 ({SHOWN}_nt)" in blocked
    baseline = shown_clean(project.mg("baseline", "0002", "--force"), 3)
    assert f"0002 ({SHOWN}_nt)" in baseline
    fixed = shown_clean(project.mg("fix", "0002", "--remove"), 0)
    assert f"0002 {SHOWN}_nt" in fixed
    project.path_of("0002").unlink()
    project.sql("DROP TABLE t2")

    project.add("0003", f"{HOSTILE}_nd", "CREATE TABLE t3 (id int PRIMARY KEY);")
    shown_clean(project.mg("apply"), 0)
    no_down = shown_clean(project.mg("down"), 3)
    assert f"0003_{SHOWN}_nd.sql has no down section" in no_down, no_down

    ambiguous = shown_clean(project.mg("rollback", "--to", "000"), 2)
    assert f"0001_{SHOWN}.sql" in ambiguous and f"0003_{SHOWN}_nd.sql" in ambiguous

    project.path_of("0003").unlink()  # applied, its file gone
    gone = shown_clean(project.mg("down"), 3)
    assert f"0003 ({SHOWN}_nd)" in gone, gone


def test_squash_escapes_the_names_it_writes_into_the_new_file(project: Project) -> None:
    """The squashed file says where each part came from in a comment: a line break in a file
    name must not end that comment and turn the rest of the name into SQL."""
    project.add("0001", f"{HOSTILE};DROP TABLE keep", "CREATE TABLE t1 (id int);")
    project.add("0002", f"{HOSTILE}_nt", "CREATE TABLE t2 (id int);", no_transaction=True)
    refused = shown_clean(project.mg("squash", "both"), 2)
    assert f"(no-transaction: 0002_{SHOWN}_nt.sql)" in refused, refused
    project.path_of("0002").unlink()
    project.add("0002", f"{HOSTILE}_b", "CREATE TABLE t2 (id int);")
    dry = shown_clean(project.mg("squash", "both", "--dry-run"), 0)
    assert f"-- from 0001_{SHOWN};DROP TABLE keep.sql" in dry, dry
    assert f"0002_{SHOWN}_b.sql have no down section" in dry, dry
    done = shown_clean(project.mg("squash", "both"), 0)
    (squashed,) = project.migrations_dir.glob("*_both.sql")
    text = squashed.read_text(encoding="utf-8")
    assert "x\nline" not in text and f"-- from 0002_{SHOWN}_b.sql" in text, text
    assert "wrote" in done
    project.sql("CREATE TABLE keep (id int)")
    shown_clean(project.mg("apply"), 0)
    assert project.tables() >= {"t1", "t2", "keep"}


def test_seed_and_drift_messages_escape_the_names_they_give(project: Project) -> None:
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / f"0001_{HOSTILE}.sql").write_text("CREATE TABLE s1 (id int);\n", encoding="utf-8")
    ran = shown_clean(project.mg("seed"), 0)
    assert f"ran 0001_{SHOWN}.sql" in ran, ran
    skipped = shown_clean(project.mg("seed"), 0)
    assert f"skipped 0001_{SHOWN}.sql" in skipped, skipped
    (seeds / f"0002_{HOSTILE}_bad.sql").write_text("SELECT 1/0;\n", encoding="utf-8")
    failed = shown_clean(project.mg("seed"), 1)
    assert f"seed 0002_{SHOWN}_bad.sql was rolled back" in failed, failed
    unknown = shown_clean(project.mg("seed", "nope"), 2)
    assert f"0001_{SHOWN}.sql, 0002_{SHOWN}_bad.sql" in unknown, unknown

    project.add("0001", HOSTILE, "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
    shown_clean(project.mg("apply"), 0)
    project.path_of("0001").unlink()
    gone = shown_clean(project.mg("drift"), 3)
    assert f"0001 ({SHOWN})" in gone, gone


def test_a_stored_error_is_escaped_where_apply_refuses_a_failed_migration(
    project: Project,
) -> None:
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    project.sql(
        "UPDATE _migrations SET status = 'failed', "
        "error = E'boom\\x1b[2J\\nmg: info: all migrations applied' WHERE id = '0001'"
    )
    project.add_table("0002")

    for args in (("apply",), ("rollback",), ("apply", "--dry-run")):
        done = project.mg(*args)
        assert done.returncode != 0, done.stdout + done.stderr
        assert "boom\\x1b[2J\\nmg: info: all migrations applied" in done.stderr, done.stderr
        assert not any(line.startswith("mg: info") for line in done.stderr.splitlines())
        no_raw_controls(done.stderr.replace("\n", ""))
