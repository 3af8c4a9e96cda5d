"""History rows edited by hand are reported, never silently skipped.

A status mg does not know, a row without a checksum, two rows for one id once the primary key
of ``_migrations`` is gone: ``mg status`` and ``mg verify`` name each (verify exits 3),
``rollback N`` says why it rolls back fewer than N, and ``mg fix`` repairs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    for ident in ("0001", "0002", "0003"):
        project.add_table(ident)
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    yield project
    project.close()


def problems(project: Project) -> list[str]:
    done = project.mg("status", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    found: list[str] = data["problems"]
    assert data["ok"] is False
    return found


def verify_fails(project: Project, *expected: str) -> str:
    done = project.mg("verify")
    assert done.returncode == 3, done.stdout + done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout
    as_json = project.mg("verify", "--format", "json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["ok"] is False
    return done.stdout


def test_unknown_status_values_are_problems(project: Project) -> None:
    project.sql("UPDATE _migrations SET status = 'APPLIED' WHERE id = '0002'")
    project.sql("UPDATE _migrations SET status = 'skipped' WHERE id = '0003'")

    found = problems(project)
    assert any("0002" in p and "'APPLIED'" in p and "unknown status" in p for p in found), found
    assert any("0003" in p and "'skipped'" in p for p in found), found
    text = project.mg("status")
    assert "'APPLIED'" in text.stdout and "'skipped'" in text.stdout
    verify_fails(project, "'APPLIED'", "'skipped'")

    done = project.mg("rollback", "3")
    assert done.returncode == 0, done.stderr
    assert "rolling back 1 of the 3 asked for" in done.stderr
    assert "0002 is recorded as 'APPLIED'" in done.stderr
    assert "0003 is recorded as 'skipped'" in done.stderr
    assert project.tables() == {"t_0002", "t_0003"}

    fixed = project.mg("fix", "0002", "--applied")
    assert fixed.returncode == 0, fixed.stderr
    assert project.statuses()["0002"] == "applied"


def test_rollback_n_says_why_there_is_nothing_to_roll_back(project: Project) -> None:
    project.sql("UPDATE _migrations SET status = 'skipped'")
    done = project.mg("rollback", "2")
    assert done.returncode == 0, done.stderr
    assert "nothing to roll back" in done.stderr
    assert "0001 is recorded as 'skipped'" in done.stderr
    assert project.tables() == {"t_0001", "t_0002", "t_0003"}


def test_null_or_empty_checksum_is_a_problem(project: Project) -> None:
    project.sql("UPDATE _migrations SET checksum = NULL WHERE id = '0001'")
    project.sql("UPDATE _migrations SET checksum = '' WHERE id = '0002'")

    found = problems(project)
    assert any(p.startswith("no checksum: 0001") for p in found), found
    assert any(p.startswith("no checksum: 0002") for p in found), found
    # the hint is a whole sentence: it says what `mg fix --applied` records
    assert all(
        p.endswith("--applied` records the file's current checksum")
        for p in found
        if p.startswith("no checksum")
    ), found
    verify_fails(project, "0001", "0002", "no checksum")

    project.add_table("0004")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert "no checksum: 0001" in done.stderr  # a warning, not silence

    fixed = project.mg("fix", "0001", "--applied")
    assert fixed.returncode == 0, fixed.stderr
    fixed = project.mg("fix", "0002", "--applied")
    assert fixed.returncode == 0, fixed.stderr
    assert project.mg("verify").returncode == 0


def test_duplicate_rows_without_the_primary_key(project: Project) -> None:
    project.sql("ALTER TABLE _migrations DROP CONSTRAINT _migrations_pkey")
    project.sql("INSERT INTO _migrations SELECT * FROM _migrations WHERE id = '0002'")

    found = problems(project)
    assert any(p.startswith("duplicate rows: 0002") and "2 rows" in p for p in found), found
    verify_fails(project, "duplicate rows: 0002")

    # Writing the history does not need the primary key.
    project.add_table("0004")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "t_0002", "t_0003", "t_0004"}

    done = project.mg("rollback", "9", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "rolling back 4 of the 9 asked for" in done.stderr
    assert "0002 has 2 rows in the history and counts once" in done.stderr

    fixed = project.mg("fix", "0002", "--applied")
    assert fixed.returncode == 0, fixed.stderr
    assert project.value("SELECT count(*) FROM _migrations WHERE id = '0002'") == 1
    assert project.mg("verify").returncode == 0
    order = [r[0] for r in project.sql("SELECT id FROM _migrations ORDER BY apply_seq")]
    assert order == ["0001", "0002", "0003", "0004"]

    removed = project.mg("fix", "0004", "--remove")
    assert removed.returncode == 0, removed.stderr
    assert "0004" not in project.statuses()


def test_a_null_status_is_a_problem_not_applied(project: Project) -> None:
    project.sql("UPDATE _migrations SET status = NULL WHERE id = '0002'")

    found = problems(project)
    assert any(
        p.startswith("unknown status: 0002") and "no status (NULL or empty)" in p for p in found
    ), found
    text = project.mg("status")
    assert "applied: 2 " in text.stdout, text.stdout
    verify_fails(project, "unknown status: 0002")
    listed = project.mg("list")
    assert "(no status)" in listed.stdout, listed.stdout

    done = project.mg("rollback", "3")
    assert done.returncode == 0, done.stderr
    assert "0002 is recorded with no status" in done.stderr
    assert project.tables() == {"t_0002"}

    fixed = project.mg("fix", "0002", "--applied")
    assert fixed.returncode == 0, fixed.stderr
    assert project.statuses() == {"0002": "applied"}


def test_two_applied_rows_at_one_position_are_a_problem(project: Project) -> None:
    project.sql("UPDATE _migrations SET apply_seq = 1 WHERE id = '0003'")

    found = problems(project)
    assert any(
        p.startswith("shared position: 0001 create_t_0001 and 0003 create_t_0003")
        and "apply_seq 1" in p
        for p in found
    ), found
    verify_fails(project, "shared position: 0001 create_t_0001 and 0003 create_t_0003")
    done = project.mg("rollback", "--dry-run")
    assert "shared position" in done.stderr, done.stderr

    project.sql("UPDATE _migrations SET apply_seq = 3 WHERE id = '0003'")
    assert project.mg("verify").returncode == 0


def test_another_tools_migrations_table_is_named_not_a_bare_column_error(
    tmp_path: Path, database_url: str
) -> None:
    project = Project(tmp_path / "other", database_url)
    project.add_table("0001")
    project.sql("CREATE TABLE _migrations (version bigint PRIMARY KEY, dirty boolean)")
    for args in (["status"], ["apply"], ["list", "--format", "json"]):
        done = project.mg(*args)
        assert done.returncode == 1, done.stderr
        assert "_migrations is not migretti's history table" in done.stderr
        assert "no columns id, name, status, checksum, applied_at" in done.stderr
        assert "(it has dirty, version)" in done.stderr
    assert project.all_tables() == {"public._migrations"}  # nothing created or run
    project.close()


def test_a_migrations_table_whose_status_is_an_integer_is_named_not_a_bare_server_error(
    tmp_path: Path, database_url: str
) -> None:
    """Another tool's ``_migrations`` with all of 0.10's column names but an integer
    ``status``: every command says the table is not migretti's and which column differs
    (exit 1, as for a table lacking columns), and neither runs nor changes anything."""
    project = Project(tmp_path / "other", database_url)
    project.add_table("0001")
    project.sql(
        "CREATE TABLE _migrations (id text PRIMARY KEY, name text, applied_at timestamptz, "
        "checksum text, status integer)"
    )
    project.sql("INSERT INTO _migrations VALUES ('20240101', 'init', now(), 'abc', 1)")
    expected = (
        "_migrations exists but is not migretti's history table (migretti 0.10's layout): "
        "its column status is integer, where migretti has VARCHAR(20)"
    )
    for args in (
        ["status"],
        ["status", "--exit-code"],
        ["apply"],
        ["list", "--format", "json"],
        ["verify"],
        ["fix", "0001", "--applied"],
    ):
        done = project.mg(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert expected in done.stderr, done.stderr
        assert "invalid input syntax" not in done.stderr and "Traceback" not in done.stderr
        assert "hint: another tool's table of that name?" in done.stderr
    assert project.all_tables() == {"public._migrations"}  # nothing created or run

    # a log table of another layout is named before anything is written
    project.sql("DROP TABLE _migrations")
    project.sql("CREATE TABLE _migrations_log (id bigint, migration_id bigint, action text)")
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "_migrations_log exists but is not migretti's history table" in done.stderr
    assert "its column migration_id is bigint, where migretti has VARCHAR(26)" in done.stderr
    assert project.all_tables() == {"public._migrations_log"}
    project.close()


def test_a_read_only_target_says_the_history_tables_cannot_be_created_and_why(
    tmp_path: Path, database_url: str
) -> None:
    """A hot standby, or ``default_transaction_read_only``: the server's bare message names
    no table, so mg says what it was creating and what helps."""
    project = Project(tmp_path / "fresh", database_url)
    project.add_table("0001")
    dbname = project.value("SELECT current_database()")
    project.sql(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    try:
        done = project.mg("apply", "--no-lint")
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "cannot create the history tables" in done.stderr, done.stderr
        assert "SQLSTATE 25006" in done.stderr and "read-only" in done.stderr
        assert "point mg at the primary" in done.stderr
    finally:
        import psycopg

        with psycopg.connect(
            project.database_url, autocommit=True, options="-c default_transaction_read_only=off"
        ) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
    assert project.statuses() == {}


def test_a_history_table_kept_locked_ends_commands_after_table_lock_timeout(
    project: Project,
) -> None:
    """A session keeping ``_migrations`` locked (a hand edit left open in a transaction)
    ends each command after ``table_lock_timeout`` with a message, instead of a silent wait
    without end."""
    import psycopg

    project.configure(extra="table_lock_timeout: 1s\n")
    project.add_table("0004")
    holder = psycopg.connect(project.database_url)
    try:
        holder.execute("LOCK TABLE _migrations IN ACCESS EXCLUSIVE MODE")
        for args in (("status",), ("verify",), ("apply",), ("rollback",)):
            done = project.mg(*args, timeout=30)
            assert done.returncode == 1, (args, done.stdout + done.stderr)
            assert done.stderr.startswith(
                "mg: error: cannot read the history: another session kept _migrations locked "
                "for longer than table_lock_timeout (1s); nothing was changed"
            ), done.stderr
        holder.rollback()
        assert project.statuses() == {"0001": "applied", "0002": "applied", "0003": "applied"}
        done = project.mg("apply")
        assert done.returncode == 0, done.stderr
        # the history read's bound is not left on the connection for the migrations
        assert project.statuses()["0004"] == "applied"
    finally:
        holder.close()
