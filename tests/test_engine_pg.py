"""Every engine command and flag against a real PostgreSQL, through real ``mg`` processes.

Each test states what a user would check after running the command: the exit code, what
was printed, and what is now in the database (tables, ``_migrations``, ``_migrations_log``).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import AdvisoryLockHolder, Project, wait_until

READ_ONLY = ("status", "list", "head", "verify")


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def with_tables(project: Project, *idents: str) -> None:
    for ident in idents:
        project.add_table(ident)


def error_of(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("mg: error:")]
    assert lines, stderr
    return "\n".join(lines)


# --- apply ------------------------------------------------------------------------------------


def test_apply_runs_every_pending_migration_and_records_it(project: Project) -> None:
    with_tables(project, "0001", "0002", "0003")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002", "t_0003"}
    assert project.statuses() == {"0001": "applied", "0002": "applied", "0003": "applied"}
    assert project.log() == [("0001", "UP"), ("0002", "UP"), ("0003", "UP")]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 3, done.stdout
    for line, ident in zip(lines, ("0001", "0002", "0003"), strict=True):
        assert ident in line and f"create_t_{ident}" in line, line
        assert re.search(r"\d+ ?ms", line), line
    checksums = dict(project.sql("SELECT id, checksum FROM _migrations"))
    import hashlib

    expected = hashlib.sha256(project.path_of("0002").read_bytes()).hexdigest()
    assert checksums["0002"] == expected

    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == ""
    assert "nothing" in again.stderr.lower()
    assert len(project.log()) == 3


def test_apply_to_stops_at_the_given_migration(project: Project) -> None:
    with_tables(project, "0001", "0002", "0003", "0004")
    done = project.mg("apply", "--to", "0002")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002"}
    unknown = project.mg("apply", "--to", "9999")
    assert unknown.returncode == 2, unknown.stderr
    assert "9999" in error_of(unknown.stderr)
    done = project.mg("apply", "--to", "0003")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002", "t_0003"}


def test_up_applies_only_the_next_migration(project: Project) -> None:
    with_tables(project, "0001", "0002")
    assert project.mg("up").returncode == 0
    assert project.tables() == {"t_0001"}
    assert project.mg("up").returncode == 0
    assert project.tables() == {"t_0001", "t_0002"}
    done = project.mg("up")
    assert done.returncode == 0, done.stderr
    assert project.log() == [("0001", "UP"), ("0002", "UP")]


def test_out_of_order_migration_is_refused_unless_allowed(project: Project) -> None:
    with_tables(project, "0001", "0003")
    assert project.mg("apply").returncode == 0
    project.add_table("0002")

    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert {r["id"]: r["status"] for r in listed}["0002"] == "out-of-order"
    status = project.mg("status")
    assert "out-of-order" in status.stdout and "0002" in status.stdout

    for command in ("apply", "up"):
        refused = project.mg(command)
        assert refused.returncode == 3, (command, refused.stderr)
        assert "--allow-out-of-order" in refused.stderr
        assert "t_0002" not in project.tables()

    done = project.mg("up", "--allow-out-of-order")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002", "t_0003"}
    project.add_table("0000")
    done = project.mg("apply", "--allow-out-of-order")
    assert done.returncode == 0, done.stderr
    assert "t_0000" in project.tables()


def test_single_transaction_applies_all_or_nothing(project: Project) -> None:
    with_tables(project, "0001", "0002")
    project.add("0003", "broken", "CREATE TABLE t_0003 (id int);\nSELECT 1/0;")
    failed = project.mg("apply", "--single-transaction")
    assert failed.returncode == 1, failed.stderr
    # 0001 and 0002 were shown as applied while the plan ran: the error takes it back
    assert "the 2 migration(s) reported applied before it are not applied" in failed.stderr
    assert project.tables() == set()
    assert project.statuses() == {}

    project.path_of("0003").unlink()
    done = project.mg("apply", "--single-transaction")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002"}
    assert project.log() == [("0001", "UP"), ("0002", "UP")]

    project.add("0003", "idx", "CREATE INDEX CONCURRENTLY i ON t_0001 (id);", no_transaction=True)
    refused = project.mg("apply", "--single-transaction")
    assert refused.returncode == 2, refused.stderr
    assert "0003_idx.sql" in refused.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_an_interrupted_single_transaction_apply_takes_back_the_lines_it_printed(
    project: Project, signum: int
) -> None:
    """The plan's migrations were shown as applied while it ran; interrupted, the whole plan
    is rolled back, and mg says so instead of leaving those lines standing."""
    with_tables(project, "0001", "0002")
    project.add("0003", "slow", "SELECT pg_sleep(60);")
    job = project.spawn("apply", "--single-transaction", "--no-lint")
    wait_until(
        lambda: (
            bool(project.sql("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"))
            or not job.running()
        ),
        timeout=60,
    )
    assert job.running(), job.stderr_so_far()
    done, _ = project.interrupt(job, signum)
    assert done.returncode == 130, done.stderr
    assert "applied 0001" in done.stdout
    assert "the 2 migration(s) reported applied before it are not applied" in done.stderr, (
        done.stderr
    )
    assert project.tables() == set()
    assert project.statuses() == {}


def test_transactional_migration_with_concurrently_statement_is_rejected(
    project: Project,
) -> None:
    with_tables(project, "0001")
    project.add("0002", "idx", "CREATE INDEX CONCURRENTLY i ON t_0001 (id);")
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert "no-transaction" in done.stderr
    assert project.tables() == set()


def test_a_failing_transactional_migration_leaves_no_trace(project: Project) -> None:
    with_tables(project, "0001")
    project.add("0002", "broken", "CREATE TABLE t_0002 (id int);\nSELECT 1/0;")
    with_tables(project, "0003")
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert project.tables() == {"t_0001"}
    assert project.statuses() == {"0001": "applied"}
    assert project.log() == [("0001", "UP")]


# --- SQL errors -------------------------------------------------------------------------------


def test_a_migration_that_changes_search_path_is_still_recorded(project: Project) -> None:
    # pg_dump's preamble empties search_path for the session; a migration may also move it
    # to the schema it fills. Its history row still goes to the tables the run started with.
    project.add(
        "0001",
        "dump",
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "CREATE SCHEMA app;\nCREATE TABLE app.a (id bigint);",
        "DROP TABLE app.a;\nDROP SCHEMA app;",
    )
    project.add("0002", "in_app", "SET search_path = app;\nCREATE TABLE b (id bigint);")
    project.add(
        "0003", "each", "SELECT 1;\nSET search_path = nowhere;\nSELECT 2;", no_transaction=True
    )
    project.add("0004", "qualified", "CREATE TABLE public.d (id bigint);")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {n: "applied" for n in ("0001", "0002", "0003", "0004")}
    assert [action for _, action in project.log()] == ["UP"] * 4
    assert {"app.a", "app.b", "public.d"} <= project.all_tables()
    done = project.mg("rollback", "--to", "0001", "--allow-missing-down")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied"}


def test_unique_violation_names_file_line_sqlstate_message_and_detail(project: Project) -> None:
    project.add(
        "0001",
        "dup",
        "CREATE TABLE u (id int PRIMARY KEY);\n"  # line 2
        "INSERT INTO u VALUES (1);\n"  # line 3
        "\n"
        "INSERT INTO u VALUES (1);\n",  # line 5
    )
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "migrations/0001_dup.sql:5:" in done.stderr, done.stderr
    assert "23505" in done.stderr
    assert 'duplicate key value violates unique constraint "u_pkey"' in done.stderr
    assert "Key (id)=(1) already exists." in done.stderr


def test_a_context_of_several_lines_stays_indented_under_the_error(project: Project) -> None:
    project.add(
        "0001",
        "nested",
        "DO $$ BEGIN EXECUTE 'SELECT 1 / 0'; END $$;",  # CONTEXT: the statement, then the frame
    )
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("mg: error:"))
    assert "division by zero" in lines[at] and "22012" in lines[at], done.stderr
    context = [line for line in lines[at + 1 :] if "CONTEXT:" in line or "PL/pgSQL" in line]
    assert len(context) == 2, done.stderr
    assert all(line.startswith("  ") for line in lines[at + 1 :]), done.stderr


def test_raise_in_a_do_block_names_file_line_and_hint(project: Project) -> None:
    project.add(
        "0001",
        "raise",
        "SELECT 1;\n"  # line 2
        "DO $$\n"  # line 3
        "BEGIN\n"
        "  RAISE EXCEPTION 'no tea left' USING HINT = 'put the kettle on', ERRCODE = 'P0042';\n"
        "END\n"
        "$$;\n",
    )
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    match = re.search(r"migrations/0001_raise\.sql:(\d+):", done.stderr)
    assert match, done.stderr
    assert 3 <= int(match.group(1)) <= 5, done.stderr
    assert "P0042" in done.stderr
    assert "no tea left" in done.stderr
    assert "put the kettle on" in done.stderr


def test_syntax_error_names_the_exact_line(project: Project) -> None:
    project.add("0001", "typo", "SELECT 1;\n\nCREATE TABLE ok (id int);\nSELEC 2;\n")
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "migrations/0001_typo.sql:5:" in done.stderr, done.stderr
    assert "42601" in done.stderr
    assert 'syntax error at or near "SELEC"' in done.stderr


# --- no-transaction migrations: failed state and fix ------------------------------------------

NO_TX_UP = "CREATE TABLE nt_a (id int);\nSELECT 1/0;\nCREATE TABLE nt_c (id int);\n"


def failed_no_tx(project: Project) -> None:
    with_tables(project, "0001")
    project.add("0002", "three_steps", NO_TX_UP, "DROP TABLE nt_a;", no_transaction=True)
    with_tables(project, "0003")
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "migrations/0002_three_steps.sql:4:" in done.stderr, done.stderr
    assert "22012" in done.stderr and "division by zero" in done.stderr
    assert "statement 2 of 3" in done.stderr


def test_failed_no_transaction_statement_marks_the_migration_failed(project: Project) -> None:
    failed_no_tx(project)
    assert project.tables() == {"t_0001", "nt_a"}
    assert project.statuses() == {"0001": "applied", "0002": "failed"}

    status = project.mg("status")
    assert status.returncode == 0
    assert "failed: 1" in status.stdout
    problem = [line for line in status.stdout.splitlines() if "0002" in line and "failed" in line]
    assert problem, status.stdout
    assert "statement 2" in problem[0] and "division by zero" in problem[0]

    data = json.loads(project.mg("status", "--format", "json").stdout)
    assert data["counts"] == {"applied": 1, "pending": 1, "failed": 1, "running": 0}
    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert {r["id"]: r["status"] for r in listed} == {
        "0001": "applied",
        "0002": "failed",
        "0003": "pending",
    }


def test_failed_migration_blocks_every_changing_command(project: Project) -> None:
    failed_no_tx(project)
    for args in (["apply"], ["up"], ["down"], ["rollback", "--to", "0001"]):
        blocked = project.mg(*args)
        assert blocked.returncode == 3, (args, blocked.stderr)
        assert "0002" in blocked.stderr and "failed" in blocked.stderr
        assert "mg fix 0002 --applied" in blocked.stderr
        assert "mg fix 0002 --remove" in blocked.stderr
    assert project.tables() == {"t_0001", "nt_a"}
    assert project.log() == [("0001", "UP")]

    no_mode = project.mg("fix", "0002")
    assert no_mode.returncode == 2, no_mode.stderr
    assert "--applied" in no_mode.stderr and "--remove" in no_mode.stderr
    # the two flags say opposite things: refused whatever their order, the row untouched
    for both in (("--applied", "--remove"), ("--remove", "--applied")):
        done = project.mg("fix", "0002", *both)
        assert done.returncode == 2, done.stderr
        assert "either --applied or --remove, not both" in done.stderr, done.stderr
    unknown = project.mg("fix", "0003", "--applied")
    assert unknown.returncode == 2, unknown.stderr
    assert "0003" in unknown.stderr
    assert project.statuses() == {"0001": "applied", "0002": "failed"}
    assert project.log() == [("0001", "UP")]


def test_fix_remove_forgets_the_migration_so_it_runs_again(project: Project) -> None:
    failed_no_tx(project)
    project.sql("DROP TABLE nt_a")
    project.path_of("0002").write_text(
        "-- migrate: no-transaction\n-- migrate: up\n"
        "CREATE TABLE nt_a (id int);\nSELECT 1;\nCREATE TABLE nt_c (id int);\n"
    )
    done = project.mg("fix", "0002", "--remove")
    assert done.returncode == 0, done.stderr
    assert "0002" not in project.statuses()
    assert project.log() == [("0001", "UP"), ("0002", "FIX")]

    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "nt_a", "nt_c", "t_0003"}
    assert project.log()[-2:] == [("0002", "UP"), ("0003", "UP")]


def test_fix_applied_keeps_position_and_records_current_checksum(project: Project) -> None:
    failed_no_tx(project)
    project.sql("CREATE TABLE nt_c (id int)")
    fixed_text = (
        "-- migrate: no-transaction\n-- migrate: up\n"
        "CREATE TABLE nt_a (id int);\nSELECT 1;\nCREATE TABLE nt_c (id int);\n"
        "-- migrate: down\nDROP TABLE nt_c;\nDROP TABLE nt_a;\n"
    )
    project.path_of("0002").write_text(fixed_text)
    done = project.mg("fix", "0002", "--applied")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert project.log() == [("0001", "UP"), ("0002", "FIX")]
    import hashlib

    recorded = project.value("SELECT checksum FROM _migrations WHERE id = '0002'")
    assert recorded == hashlib.sha256(fixed_text.encode()).hexdigest()
    assert project.value("SELECT checksum FROM _migrations_log WHERE action = 'FIX'") == recorded
    assert project.mg("verify").returncode == 0

    assert project.mg("apply").returncode == 0
    assert project.tables() == {"t_0001", "nt_a", "nt_c", "t_0003"}
    # 0002 was applied (by hand) before 0003: rollback undoes 0003 first.
    assert project.mg("rollback").returncode == 0
    assert project.tables() == {"t_0001", "nt_a", "nt_c"}
    assert project.mg("rollback").returncode == 0
    assert project.tables() == {"t_0001"}
    assert project.statuses() == {"0001": "applied"}


def test_failed_no_transaction_rollback_names_the_fix_for_a_rollback(project: Project) -> None:
    # Finishing a rollback by hand means the migration is no longer applied: `--remove`.
    # The up-direction advice (`--applied` if you completed it by hand) would undo that.
    project.add(
        "0001",
        "two_tables",
        "CREATE TABLE nt_a (id int);\nCREATE TABLE nt_b (id int);",
        "DROP TABLE nt_b;\nDROP TABLE nosuch;",
        no_transaction=True,
    )
    assert project.mg("apply").returncode == 0
    down = project.mg("down")
    assert down.returncode == 1, down.stderr
    assert "statement 2 of 2" in down.stderr, down.stderr
    assert project.statuses() == {"0001": "failed"}
    assert "`mg fix 0001 --remove` if you completed its rollback by hand" in down.stderr
    assert "`mg fix 0001 --applied` if you restored what the rollback undid" in down.stderr
    assert "--applied` if you completed it by hand" not in down.stderr
    done = project.mg("fix", "0001", "--remove")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {}
    assert project.log() == [("0001", "UP"), ("0001", "FIX")]


# --- rolling back -----------------------------------------------------------------------------


def test_down_rolls_back_the_last_migration(project: Project) -> None:
    with_tables(project, "0001", "0002")
    nothing = project.mg("down")
    assert nothing.returncode == 0, nothing.stderr
    assert project.mg("apply").returncode == 0
    done = project.mg("down")
    assert done.returncode == 0, done.stderr
    assert "0002" in done.stdout
    assert project.tables() == {"t_0001"}
    assert project.statuses() == {"0001": "applied"}
    assert project.log()[-1] == ("0002", "DOWN")


def test_no_transaction_migration_rolls_back_statement_by_statement(project: Project) -> None:
    with_tables(project, "0001")
    project.add(
        "0002",
        "index",
        "INSERT INTO t_0001 VALUES (1), (2);\nCREATE INDEX CONCURRENTLY t_0001_idx ON t_0001 (id);",
        "DROP INDEX CONCURRENTLY t_0001_idx;\nDELETE FROM t_0001;",
        no_transaction=True,
    )
    assert project.mg("apply").returncode == 0
    assert project.value("SELECT count(*) FROM pg_indexes WHERE indexname = 't_0001_idx'") == 1
    done = project.mg("down")
    assert done.returncode == 0, done.stderr
    assert project.value("SELECT count(*) FROM pg_indexes WHERE indexname = 't_0001_idx'") == 0
    assert project.value("SELECT count(*) FROM t_0001") == 0
    assert project.statuses() == {"0001": "applied"}
    assert project.log() == [("0001", "UP"), ("0002", "UP"), ("0002", "DOWN")]


def test_rollback_count_and_to(project: Project) -> None:
    with_tables(project, "0001", "0002", "0003", "0004", "0005")
    assert project.mg("apply").returncode == 0

    done = project.mg("rollback")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002", "t_0003", "t_0004"}

    done = project.mg("rollback", "2")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002"}
    assert project.log()[-3:] == [("0005", "DOWN"), ("0004", "DOWN"), ("0003", "DOWN")]

    assert project.mg("apply").returncode == 0
    done = project.mg("rollback", "--to", "0002")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002"}
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    head = project.mg("rollback", "--to", "0002")
    assert head.returncode == 0, head.stderr
    assert "nothing to roll back: 0002 is the last applied migration" in head.stderr

    for args in (["0"], ["1", "--to", "0001"], ["--to", "0009"], ["--to", "0003"]):
        refused = project.mg("rollback", *args)
        assert refused.returncode == 2, (args, refused.stderr)
    assert project.tables() == {"t_0001", "t_0002"}

    assert project.mg("rollback", "5").returncode == 0
    assert project.tables() == set()
    nothing = project.mg("rollback")
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to roll back: no migration is applied" in nothing.stderr


def test_rollback_follows_application_order_not_ids(project: Project) -> None:
    with_tables(project, "0001", "0003")
    assert project.mg("apply").returncode == 0
    project.add_table("0002")
    assert project.mg("apply", "--allow-out-of-order").returncode == 0

    head = json.loads(project.mg("head", "--format", "json").stdout)
    assert head["id"] == "0002"
    assert project.mg("rollback").returncode == 0
    assert project.tables() == {"t_0001", "t_0003"}
    assert project.mg("rollback").returncode == 0
    assert project.tables() == {"t_0001"}


def test_missing_down_section_is_refused_unless_allowed(project: Project) -> None:
    with_tables(project, "0001")
    project.add("0002", "no_down", "CREATE TABLE keep_me (id int);")
    assert project.mg("apply").returncode == 0

    refused = project.mg("down")
    assert refused.returncode == 3, refused.stderr
    assert "0002_no_down.sql" in refused.stderr and "--allow-missing-down" in refused.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}

    done = project.mg("rollback", "--allow-missing-down")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied"}
    assert "keep_me" in project.tables()
    # The line for it says that only the history went: its table is still there.
    (line,) = [line for line in done.stdout.splitlines() if "0002" in line]
    assert "no down section: only its history row was removed" in line, line
    assert project.log()[-1] == ("0002", "DOWN")
    # A migration with a down section reads as before.
    down = project.mg("down")
    assert down.returncode == 0, down.stderr
    assert "0001" in down.stdout and "history row" not in down.stdout, down.stdout


def test_applied_migration_whose_file_is_gone(project: Project) -> None:
    with_tables(project, "0001", "0002")
    assert project.mg("apply").returncode == 0
    project.path_of("0002").unlink()

    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert {r["id"]: r["status"] for r in listed} == {"0001": "applied", "0002": "missing"}
    status = project.mg("status")
    assert "missing" in status.stdout and "0002" in status.stdout
    verify = project.mg("verify")
    assert verify.returncode == 3
    assert "0002" in verify.stdout + verify.stderr

    refused = project.mg("down")
    assert refused.returncode == 3, refused.stderr
    assert "0002" in refused.stderr and "gone" in refused.stderr
    assert project.tables() == {"t_0001", "t_0002"}


# --- checksums --------------------------------------------------------------------------------


def test_editing_an_applied_migration_blocks_apply_and_verify(project: Project) -> None:
    with_tables(project, "0001")
    assert project.mg("apply").returncode == 0
    path = project.path_of("0001")
    path.write_text(path.read_text() + "-- an edit after the fact\n")
    project.add_table("0002")

    verify = project.mg("verify")
    assert verify.returncode == 3, verify.stderr
    assert "0001_create_t_0001.sql" in verify.stdout
    data = json.loads(project.mg("verify", "--format", "json").stdout)
    assert data["ok"] is False
    assert [m["id"] for m in data["mismatches"]] == ["0001"]

    for command in ("apply", "up"):
        blocked = project.mg(command)
        assert blocked.returncode == 3, (command, blocked.stderr)
        assert "0001_create_t_0001.sql" in blocked.stderr
        assert "--no-verify" in blocked.stderr
    assert project.tables() == {"t_0001"}

    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert {r["id"]: r["status"] for r in listed}["0001"] == "modified"

    done = project.mg("apply", "--no-verify")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002"}


def test_rolling_back_an_edited_migration_needs_no_verify(project: Project) -> None:
    with_tables(project, "0001")
    assert project.mg("apply").returncode == 0
    path = project.path_of("0001")
    path.write_text(path.read_text().replace("DROP TABLE", "DROP TABLE IF EXISTS"))
    refused = project.mg("down")
    assert refused.returncode == 3, refused.stderr
    assert project.tables() == {"t_0001"}
    done = project.mg("down", "--no-verify")
    assert done.returncode == 0, done.stderr
    assert project.tables() == set()


def test_crlf_line_endings_are_not_a_change(project: Project) -> None:
    with_tables(project, "0001")
    assert project.mg("apply").returncode == 0
    path = project.path_of("0001")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    project.add_table("0002")

    verify = project.mg("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002"}
    assert project.mg("rollback", "2").returncode == 0
    assert project.tables() == set()


# --- read-only commands -----------------------------------------------------------------------


def test_read_only_commands_report_state_as_json(project: Project) -> None:
    with_tables(project, "0001", "0002", "0003")
    assert project.mg("apply", "--to", "0002").returncode == 0

    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["counts"] == {"applied": 2, "pending": 1, "failed": 0, "running": 0}
    assert status["head"]["id"] == "0002"
    assert status["problems"] == []

    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [
        ("0001", "applied"),
        ("0002", "applied"),
        ("0003", "pending"),
    ]
    assert listed[0]["name"] == "create_t_0001"
    assert listed[0]["applied_at"] and listed[2]["applied_at"] is None

    head = json.loads(project.mg("head", "--format", "json").stdout)
    assert head["id"] == "0002" and head["name"] == "create_t_0002"

    verify = project.mg("verify", "--format", "json")
    assert verify.returncode == 0
    assert json.loads(verify.stdout) == {
        "ok": True,
        "checked": 2,
        "mismatches": [],
        "missing": [],
    }

    status_text = project.mg("status")
    assert status_text.returncode == 0
    assert "applied: 2" in status_text.stdout and "pending: 1" in status_text.stdout
    assert "0002" in status_text.stdout
    listed_text = project.mg("list")
    rows = {line.split()[0]: line.split()[2] for line in listed_text.stdout.splitlines()[1:]}
    assert rows == {"0001": "applied", "0002": "applied", "0003": "pending"}
    head_text = project.mg("head")
    assert head_text.returncode == 0 and "0002" in head_text.stdout
    verify_text = project.mg("verify")
    assert verify_text.returncode == 0 and "ok" in verify_text.stdout


def test_read_only_commands_on_a_fresh_database_create_nothing_and_never_wait(
    project: Project,
) -> None:
    with_tables(project, "0001")
    with AdvisoryLockHolder(project.database_url):
        for command, fmt in zip(READ_ONLY, ("json", "json", "text", "text"), strict=True):
            done = project.mg(command, "--format", fmt, timeout=30)
            assert done.returncode == 0, (command, done.stderr)
            assert "waiting" not in done.stderr
            if command == "status":
                assert json.loads(done.stdout)["counts"]["pending"] == 1
            if command == "list":
                assert [r["status"] for r in json.loads(done.stdout)] == ["pending"]
            if command == "head":
                assert "no migration applied" in done.stdout
    assert project.all_tables() == set()


# --- other exit codes -------------------------------------------------------------------------


def test_a_database_that_does_not_exist_exits_1(project: Project) -> None:
    with_tables(project, "0001")
    url = project.database_url.replace("/mg_test_", "/mg_nosuch_")
    assert url != project.database_url
    project.configure({"url": url})
    for command in ("apply", "status"):
        done = project.mg(command)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "does not exist" in done.stderr


def test_a_broken_migration_file_exits_2_before_any_change(project: Project) -> None:
    with_tables(project, "0001")
    project.add("0002", "empty", "")
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert "0002_empty.sql" in done.stderr
    assert project.all_tables() == set()


def test_protected_environment_without_a_terminal_exits_5(project: Project) -> None:
    with_tables(project, "0001")
    project.configure(extra="envs:\n  prod: {}\n")
    refused = project.mg("apply", "--env", "prod")
    assert refused.returncode == 5, refused.stderr
    assert "--yes" in refused.stderr
    assert project.all_tables() == set()
    done = project.mg("--env", "prod", "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001"}


def test_list_shows_when_each_migration_was_applied_with_its_utc_offset(project: Project) -> None:
    """The time is the session's (the server's `timezone`, or PGTZ): without its offset,
    `2026-11-28 09:52:39` could be any of them."""
    with_tables(project, "0001")
    assert project.mg("apply").returncode == 0
    done = project.mg("list", env={"PGTZ": "Asia/Tokyo"})
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("0001")]
    assert re.search(r"applied +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+09:00$", row), row
    utc = project.mg("list", env={"PGTZ": "UTC"}).stdout
    assert re.search(r"\d\d:\d\d:\d\d\+00:00$", utc.splitlines()[1]), utc
