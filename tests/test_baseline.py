"""`mg baseline ID`: adopt a database whose schema already exists."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import AdvisoryLockHolder, Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    project.add("0001", "users", "CREATE TABLE users (id int PRIMARY KEY);", "DROP TABLE users;")
    project.add("0002", "orders", "CREATE TABLE orders (id int);", "DROP TABLE orders;")
    project.add("0003", "items", "CREATE TABLE items (id int);", "DROP TABLE items;")
    yield project
    project.close()


def _schema_by_hand(project: Project) -> None:
    project.sql("CREATE TABLE users (id int PRIMARY KEY); CREATE TABLE orders (id int);")


def _columns(project: Project, table: str) -> list[str]:
    rows = project.sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return [str(r[0]) for r in rows]


def test_a_010_database_is_baselined_then_migrated(project: Project, ddl_010: str) -> None:
    project.sql(ddl_010)
    _schema_by_hand(project)
    columns_010 = _columns(project, "_migrations")

    done = project.mg("baseline", "orders")  # by name
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["baseline 0001 users", "baseline 0002 orders"]
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert project.log() == [("0001", "BASELINE"), ("0002", "BASELINE")]
    checksums = dict(project.sql("SELECT id, checksum FROM _migrations"))
    assert checksums["0001"] == hashlib.sha256(project.path_of("0001").read_bytes()).hexdigest()
    # 0.10's columns stay as they were; new ones are added after them.
    assert _columns(project, "_migrations")[: len(columns_010)] == columns_010

    listed = {r["id"]: r for r in json.loads(project.mg("list", "--format", "json").stdout)}
    assert listed["0001"]["status"] == "applied" and listed["0001"]["baseline"] is True
    assert listed["0003"]["status"] == "pending" and listed["0003"]["baseline"] is False
    text = project.mg("list").stdout
    assert "applied (baseline)" in text
    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["counts"]["applied"] == 2 and status["baseline"] == 2
    assert "baseline: 2" in project.mg("status").stdout

    assert project.mg("verify").returncode == 0
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"users", "orders", "items"}
    listed = {r["id"]: r for r in json.loads(project.mg("list", "--format", "json").stdout)}
    assert listed["0003"]["baseline"] is False
    assert project.mg("status", "--exit-code").returncode == 0

    # A baselined migration rolls back like any other.
    assert project.mg("rollback", "2").returncode == 0
    assert project.tables() == {"users"}


def test_refused_when_the_history_has_applied_rows_unless_forced(project: Project) -> None:
    assert project.mg("up").returncode == 0
    project.sql("CREATE TABLE orders (id int)")
    done = project.mg("baseline", "0002")
    assert done.returncode == 3
    assert "already has 1 applied migration" in done.stderr and "--force" in done.stderr
    assert project.statuses() == {"0001": "applied"}

    done = project.mg("baseline", "0002", "--force")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["baseline 0002 orders"]
    assert project.log() == [("0001", "UP"), ("0002", "BASELINE")]
    listed = {r["id"]: r for r in json.loads(project.mg("list", "--format", "json").stdout)}
    assert (listed["0001"]["baseline"], listed["0002"]["baseline"]) == (False, True)


def test_dry_run_prefixes_and_ambiguity_change_nothing(project: Project) -> None:
    done = project.mg("baseline", "0002", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "0001 users" in done.stdout and "0002 orders" in done.stdout
    assert "0003" not in done.stdout
    assert project.value("SELECT to_regclass('_migrations') IS NULL") is True

    done = project.mg("baseline", "000")
    assert done.returncode == 2 and "ambiguous" in done.stderr
    done = project.mg("baseline", "nope")
    assert done.returncode == 2
    assert project.value("SELECT to_regclass('_migrations') IS NULL") is True

    done = project.mg("baseline", "0002_orders.sql")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


def test_protected_profiles_ask_and_the_lock_is_taken(project: Project) -> None:
    project.configure(extra="envs:\n  prod: {}\n")
    done = project.mg("baseline", "0001", "--env", "prod")
    assert done.returncode == 5
    # The list of migrations shown for confirmation is not a plan of SQL to run.
    assert "baseline up to 0001 (recorded as applied, their SQL is not run)" in done.stderr
    assert project.value("SELECT to_regclass('_migrations') IS NULL") is True
    done = project.mg("baseline", "0001", "--env", "prod", input="yes\n")
    assert done.returncode == 5  # no terminal: refused without --yes

    with AdvisoryLockHolder(project.database_url):
        done = project.mg("baseline", "0001", "--lock-timeout", "1s")
    assert done.returncode == 4
    assert project.statuses() == {}

    done = project.mg("baseline", "0001", "--env", "prod", "--yes")
    assert done.returncode == 0, done.stderr
    assert "recorded 1 migration as applied without running it (baseline up to 0001)" in (
        done.stderr
    )
    assert project.statuses() == {"0001": "applied"}


def test_a_failed_row_is_not_covered(project: Project, ddl_010: str) -> None:
    project.sql(ddl_010)
    project.sql("INSERT INTO _migrations (id, name, status) VALUES ('0001', 'users', 'failed')")
    done = project.mg("baseline", "0002", "--force")
    assert done.returncode == 3
    assert "mg fix 0001" in done.stderr


def test_adding_the_baseline_column_never_waits_without_end_behind_a_held_table_lock(
    project: Project,
) -> None:
    """The first baseline adds a column to ``_migrations``, which needs a brief exclusive lock.
    While another session holds a lock on the table (an open transaction that read it), the
    baseline gives up after ``table_lock_timeout`` and its retries, says who holds the table,
    and records nothing; it never waits without end with every reader queued behind it."""
    import time

    import psycopg

    assert project.mg("apply", "--to", "0001").returncode == 0
    assert project.mg("down").returncode == 0  # the history tables, no baseline column yet
    project.sql("DROP TABLE IF EXISTS users")
    _schema_by_hand(project)
    project.configure(extra="table_lock_timeout: 300ms\ntable_lock_retries: 1\n")
    reader = psycopg.connect(project.database_url, application_name="dashboard")
    try:
        reader.execute("SELECT count(*) FROM _migrations")  # its transaction stays open
        started = time.monotonic()
        done = project.mg("baseline", "0002", timeout=60)
        assert time.monotonic() - started < 30
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert "cannot add the baseline column to _migrations" in done.stderr, done.stderr
        assert "not granted within 0.3s after 1 retry" in done.stderr, done.stderr
        assert "dashboard" in done.stderr, done.stderr
        assert "retry 1 of 1" in done.stderr, done.stderr  # the warning before the retry
        assert "baseline" not in _columns(project, "_migrations")
        assert project.statuses() == {}
        assert ("0001", "BASELINE") not in project.log()
    finally:
        reader.close()
    again = project.mg("baseline", "0002")
    assert again.returncode == 0, again.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert "baseline" in _columns(project, "_migrations")


def test_adopting_with_one_migration_made_from_the_schema_dump(
    project: Project, pg_url: str
) -> None:
    # The recipe of docs/verification.md: the dump's schema part as the first migration,
    # ending with RESET ALL (pg_dump's header empties search_path for the session), baselined;
    # the migrations after it then run, and check and drift agree, on one connection.
    for path in project.migrations_dir.iterdir():
        path.unlink()
    project.sql("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
    dump = project.mg("schema", "dump")
    assert dump.returncode == 0, dump.stderr
    schema = dump.stdout[: dump.stdout.index("--\n-- Applied migrations")]
    project.add("0001", "initial", schema + "\nRESET ALL;", "DROP TABLE public.users;")
    assert project.mg("baseline", "0001").returncode == 0
    project.add(
        "0002",
        "nickname",
        "ALTER TABLE users ADD nickname text;",
        "ALTER TABLE users DROP nickname;",
    )
    assert project.mg("apply").returncode == 0
    done = project.mg("drift", "--database-url", pg_url)
    assert done.returncode == 0, done.stdout + done.stderr
    done = project.mg("check", "--database-url", pg_url, "--format", "json")
    assert all(m["ok"] for m in json.loads(done.stdout)["migrations"]), done.stdout


def test_the_history_lock_retry_names_its_blockers_as_a_field_of_the_json_log(
    project: Project,
) -> None:
    """``history.lock_retry`` carries ``blockers`` as ``migration.lock_retry`` does: a log
    reader need not parse the message to learn who held the table."""
    import psycopg

    assert project.mg("apply", "--to", "0001").returncode == 0
    assert project.mg("down").returncode == 0  # the history tables, no baseline column yet
    project.sql("DROP TABLE IF EXISTS users")
    _schema_by_hand(project)
    project.configure(extra="table_lock_timeout: 300ms\ntable_lock_retries: 1\n")
    reader = psycopg.connect(project.database_url, application_name="dashboard")
    try:
        reader.execute("SELECT count(*) FROM _migrations")  # its transaction stays open
        pid = reader.info.backend_pid
        done = project.mg("--json-log", "baseline", "0002", timeout=60)
        assert done.returncode == 1, (done.stdout, done.stderr)
    finally:
        reader.close()
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (retry,) = [r for r in lines if r.get("event") == "history.lock_retry"]
    blockers = retry["blockers"]
    assert [(b["pid"], b["application_name"]) for b in blockers] == [(pid, "dashboard")]
    assert blockers[0]["state"] == "idle in transaction"
    assert isinstance(blockers[0]["transaction_s"], float)
    assert retry["lock_timeout_s"] == 0.3
