"""Dry runs (docs/dry-run.md) through the real ``mg`` command against PostgreSQL.

A dry run must try the SQL for real and leave no trace: no tables, no rows, no history
tables, no lock waited on, no shell hook run.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from migretti_core.testing import AdvisoryLockHolder, Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return Project(tmp_path / "proj", database_url)


def outcome_lines(text: str) -> dict[str, str]:
    """The dry run's per-migration verdicts on stdout: id -> ``ok`` / ``failed`` / ...."""
    verdicts: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^(ok|failed|not executed): (\w+) ", line)
        if match:
            verdicts[match.group(2)] = match.group(1)
    return verdicts


def add_chain(project: Project) -> None:
    """Three migrations, each needing the one before it."""
    project.add(
        "0001",
        "create_accounts",
        "CREATE TABLE accounts (id int PRIMARY KEY);",
        "DROP TABLE accounts;",
    )
    project.add(
        "0002",
        "create_orders",
        "CREATE TABLE orders (id int PRIMARY KEY, account int REFERENCES accounts (id));",
        "DROP TABLE orders;",
    )
    project.add(
        "0003",
        "seed_orders",
        "INSERT INTO accounts VALUES (1);\nINSERT INTO orders VALUES (10, 1);",
        "DELETE FROM orders;\nDELETE FROM accounts;",
    )


def test_dependent_pending_migrations_are_all_ok_and_nothing_changes(project: Project) -> None:
    add_chain(project)

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert outcome_lines(done.stdout) == {"0001": "ok", "0002": "ok", "0003": "ok"}
    # The plan and the SQL are shown, in order.
    assert "CREATE TABLE orders" in done.stdout
    assert done.stdout.index("0001_create_accounts.sql") < done.stdout.index(
        "0002_create_orders.sql"
    )
    assert done.stdout.index("0002_create_orders.sql") < done.stdout.index("0003_seed_orders.sql")
    assert "nothing was changed" in done.stderr
    # Not a single table, history tables included, exists afterwards.
    assert project.all_tables() == set()


def test_dry_run_leaves_existing_history_untouched(project: Project) -> None:
    add_chain(project)
    assert project.mg("up").returncode == 0
    statuses, log = project.statuses(), project.log()
    applied_at = project.sql("SELECT id, applied_at, checksum FROM _migrations ORDER BY id")

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert outcome_lines(done.stdout) == {"0002": "ok", "0003": "ok"}
    assert project.statuses() == statuses == {"0001": "applied"}
    assert project.log() == log
    assert project.sql("SELECT id, applied_at, checksum FROM _migrations ORDER BY id") == applied_at
    assert project.tables() == {"accounts"}
    assert project.value("SELECT count(*) FROM accounts") == 0


def test_nothing_pending_dry_run_creates_no_history_tables(project: Project) -> None:
    done = project.mg("apply", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert project.all_tables() == set()


def test_failing_migration_exits_1_naming_file_and_line_and_the_rest_are_tried(
    project: Project,
) -> None:
    project.add("0001", "create_a", "CREATE TABLE a (id int);")
    # The failing statement is on line 5 of the file (line 1 is the up marker).
    project.add(
        "0002",
        "broken",
        "CREATE TABLE b (id int);\n\n-- fill it\nINSERT INTO no_such_table VALUES (1);",
    )
    project.add("0003", "create_c", "CREATE TABLE c (id int);\nINSERT INTO a VALUES (1);")

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 1, done.stdout + done.stderr
    assert outcome_lines(done.stdout) == {"0001": "ok", "0002": "failed", "0003": "ok"}
    output = done.stdout + done.stderr
    assert "migrations/0002_broken.sql:5:" in output
    assert "no_such_table" in output
    assert "42P01" in output
    assert project.all_tables() == set()


def test_migration_after_a_failed_one_does_not_see_its_changes(project: Project) -> None:
    project.add("0001", "create_a", "CREATE TABLE a (id int);\nSELECT 1/0;")
    project.add("0002", "use_a", "INSERT INTO a VALUES (1);")

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 1
    assert outcome_lines(done.stdout) == {"0001": "failed", "0002": "failed"}
    assert "migrations/0001_create_a.sql:3:" in done.stdout + done.stderr
    assert project.all_tables() == set()


def test_up_dry_run_tries_only_the_next_migration(project: Project) -> None:
    project.add_table("0001")
    project.add("0002", "broken", "SELECT * FROM missing;")

    done = project.mg("up", "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert outcome_lines(done.stdout) == {"0001": "ok"}
    assert "0002" not in done.stdout
    assert project.all_tables() == set()


def test_down_dry_run_tries_the_down_section_and_keeps_table_and_data(project: Project) -> None:
    project.add_table("0001")
    project.add_table("0002")
    assert project.mg("apply").returncode == 0
    project.sql("INSERT INTO t_0002 VALUES (7)")
    statuses, log = project.statuses(), project.log()

    done = project.mg("down", "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert outcome_lines(done.stdout) == {"0002": "ok"}
    assert "DROP TABLE t_0002;" in done.stdout
    assert "DROP TABLE t_0001" not in done.stdout
    assert project.tables() == {"t_0001", "t_0002"}
    assert project.value("SELECT count(*) FROM t_0002") == 1
    assert project.statuses() == statuses
    assert project.log() == log


def test_rollback_dry_run_walks_back_in_application_order(project: Project) -> None:
    for ident in ("0001", "0002", "0003"):
        project.add_table(ident)
    assert project.mg("apply").returncode == 0
    statuses, log = project.statuses(), project.log()

    done = project.mg("rollback", "2", "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert outcome_lines(done.stdout) == {"0003": "ok", "0002": "ok"}
    assert done.stdout.index("DROP TABLE t_0003") < done.stdout.index("DROP TABLE t_0002")
    assert "DROP TABLE t_0001" not in done.stdout
    assert project.tables() == {"t_0001", "t_0002", "t_0003"}
    assert project.statuses() == statuses
    assert project.log() == log


def test_rollback_dry_run_says_a_migration_without_down_only_loses_its_history_row(
    project: Project,
) -> None:
    project.add_table("0001")
    project.add("0002", "no_down", "CREATE TABLE t_0002 (id int);")
    assert project.mg("apply").returncode == 0

    done = project.mg("rollback", "2", "--dry-run", "--allow-missing-down")

    assert done.returncode == 0, done.stdout + done.stderr
    assert outcome_lines(done.stdout) == {"0002": "ok", "0001": "ok"}
    shown = done.stdout.split("-- down 0001")[0]
    assert "-- down 0002 no_down (0002_no_down.sql)\n-- no down section: only its history row " in (
        shown
    ), done.stdout
    assert project.tables() == {"t_0001", "t_0002"}


def test_failing_down_section_in_dry_run_names_its_line(project: Project) -> None:
    project.add("0001", "create_a", "CREATE TABLE a (id int);", "DROP TABLE a;\nDROP TABLE nope;")
    assert project.mg("apply").returncode == 0

    done = project.mg("rollback", "--dry-run")

    assert done.returncode == 1
    assert outcome_lines(done.stdout) == {"0001": "failed"}
    # up marker (1), up SQL (2), down marker (3), DROP TABLE a (4), DROP TABLE nope (5)
    assert "migrations/0001_create_a.sql:5:" in done.stdout + done.stderr
    assert project.tables() == {"a"}
    assert project.statuses() == {"0001": "applied"}


def test_no_transaction_migration_is_printed_not_executed_and_later_ones_too(
    project: Project,
) -> None:
    project.add("0001", "create_a", "CREATE TABLE a (id int);")
    project.add(
        "0002",
        "index_a",
        "CREATE INDEX CONCURRENTLY a_id ON a (id);",
        "DROP INDEX CONCURRENTLY a_id;",
        no_transaction=True,
    )
    # Would fail if it were executed.
    project.add("0003", "broken", "SELECT * FROM missing;")

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert outcome_lines(done.stdout) == {
        "0001": "ok",
        "0002": "not executed",
        "0003": "not executed",
    }
    assert "CREATE INDEX CONCURRENTLY a_id ON a (id);" in done.stdout
    assert "SELECT * FROM missing;" in done.stdout
    assert 'missing" does not exist' not in done.stdout + done.stderr
    assert project.all_tables() == set()


def test_dry_run_summary_does_not_count_unexecuted_migrations_as_ok(project: Project) -> None:
    project.add("0001", "create_a", "CREATE TABLE a (id int);")
    project.add("0002", "index_a", "CREATE INDEX CONCURRENTLY a_id ON a (id);", no_transaction=True)
    project.add("0003", "create_b", "CREATE TABLE b (id int);")

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 0, done.stderr
    (summary,) = [line for line in done.stderr.splitlines() if line.startswith("dry run:")]
    assert "1 ok" in summary, summary
    assert "not executed" in summary, summary


def test_transaction_control_statement_is_not_executed_and_is_reported(project: Project) -> None:
    project.add("0001", "create_a", "CREATE TABLE a (id int);")
    project.add("0002", "commits", "CREATE TABLE b (id int);\nCOMMIT;\nCREATE TABLE c (id int);")

    done = project.mg("apply", "--dry-run")

    # Refused as a file error before anything runs, or reported failed by the dry run.
    assert done.returncode in (1, 2), done.stdout + done.stderr
    assert "ok: 0002" not in done.stdout
    assert "migrations/0002_commits.sql:3:" in done.stdout + done.stderr
    assert "COMMIT" in done.stdout + done.stderr
    assert project.all_tables() == set()


def test_deferred_constraint_violation_is_reported(project: Project) -> None:
    project.add(
        "0001",
        "deferred",
        "CREATE TABLE parent (id int PRIMARY KEY);\n"
        "CREATE TABLE child (p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);\n"
        "INSERT INTO child VALUES (1);",
    )

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 1
    assert outcome_lines(done.stdout) == {"0001": "failed"}
    assert "23503" in done.stdout + done.stderr
    assert project.all_tables() == set()


def test_dry_run_does_not_wait_for_the_migration_lock(project: Project) -> None:
    project.add_table("0001")
    with AdvisoryLockHolder(project.database_url):
        done = project.mg("apply", "--dry-run", "--lock-timeout", "1s", timeout=60)

    assert done.returncode == 0, done.stderr
    assert outcome_lines(done.stdout) == {"0001": "ok"}


HOOK_WRITER = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('ran')"


def hook_command(marker: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(HOOK_WRITER)} {marker}"


def configure_hooks(project: Project) -> None:
    hooks = {
        name: hook_command(f"{name}.ran")
        for name in ("pre_apply", "post_apply", "pre_rollback", "post_rollback", "on_failure")
    }
    extra = "hooks:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in hooks.items())
    project.configure(extra=extra)


def test_shell_hooks_do_not_run_on_dry_run(project: Project) -> None:
    configure_hooks(project)
    project.add_table("0001")
    project.add("0002", "broken", "SELECT * FROM missing;")

    done = project.mg("apply", "--dry-run")

    assert done.returncode == 1
    assert sorted(p.name for p in project.root.glob("*.ran")) == []

    # The same hooks do run for real, so the check above can fail.
    assert project.mg("up").returncode == 0
    assert (project.root / "pre_apply.ran").exists()
    assert (project.root / "post_apply.ran").exists()


def test_shell_hooks_do_not_run_on_rollback_dry_run(project: Project) -> None:
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    configure_hooks(project)

    done = project.mg("rollback", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in project.root.glob("*.ran")) == []
    assert project.tables() == {"t_0001"}
