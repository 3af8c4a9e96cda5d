"""Table-lock timeouts with retry, against real concurrent sessions.

A session of the test holds a lock on ``t`` the way a long transaction would; ``mg apply``
runs in its own process; a third session keeps reading ``t`` to show that, thanks to the
lock timeout, nobody queues behind the waiting migration for long.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    project.sql("CREATE TABLE t (id bigint)")
    project.sql("INSERT INTO t SELECT generate_series(1, 100)")
    yield project
    project.close()


class Holder:
    """A session that holds a lock on ``t`` for ``seconds`` (the length of a slow report),
    or until ``release`` when ``seconds`` is None."""

    def __init__(self, url: str, seconds: float | None, mode: str = "ACCESS SHARE") -> None:
        self.guard = threading.Lock()
        self.conn = psycopg.connect(url, application_name="slow_report")
        self.conn.execute(f"LOCK TABLE t IN {mode} MODE")
        self.pid = self.conn.info.backend_pid
        self.timer = threading.Timer(seconds or 0, self.release)
        if seconds is not None:
            self.timer.start()

    def release(self) -> None:
        with self.guard:
            if not self.conn.closed:
                self.conn.rollback()
                self.conn.close()

    def close(self) -> None:
        self.timer.cancel()
        self.release()


class Reader:
    """A third session counting ``t`` in a loop; remembers the slowest count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.counts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute("SELECT count(*) FROM t").fetchone()
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.counts += 1
                time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def apply_while_held(project: Project, holder: Holder, *args: str) -> Any:
    """Run ``mg apply``; release the lock 2 s after its first retry (however slow the
    machine is to get there), as a report that ends."""
    job = project.spawn("--json-log", "apply", *args)
    deadline = time.monotonic() + 120
    while "migration.lock_retry" not in job.stderr_so_far() and job.running():
        assert time.monotonic() < deadline, job.stderr_so_far()
        time.sleep(0.05)
    threading.Timer(2.0, holder.release).start()
    return project.finish(job)


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def columns(project: Project) -> set[str]:
    rows = project.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 't'")
    return {row[0] for row in rows}


def test_a_blocked_migration_retries_and_readers_never_queue_long(project: Project) -> None:
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 500ms\n")
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, None)
    reader = Reader(project.database_url)
    try:
        done = apply_while_held(project, holder)
    finally:
        reader.finish()
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "c" in columns(project)
    retries = events(done.stderr, "migration.lock_retry")
    assert retries, done.stderr
    first = retries[0]
    assert first["attempt"] == 1 and first["retries"] == 10
    assert first["migration_id"] == "001"
    assert first["wait_s"] > 0
    assert [b["pid"] for b in first["blockers"]] == [holder.pid]
    assert first["blockers"][0]["application_name"] == "slow_report"
    # Without the lock timeout the ALTER would wait for the holder, and every count behind
    # it too, for seconds.
    assert reader.counts > 10
    assert reader.slowest < 2.0, reader.slowest


class TableReader(Reader):
    """A reader of another table."""

    def __init__(self, url: str, table: str) -> None:
        self.table = table
        super().__init__(url)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.counts += 1
                time.sleep(0.02)


def test_single_transaction_retries_the_whole_plan_holding_no_lock_while_it_pauses(
    project: Project,
) -> None:
    """With --single-transaction, a migration after the first that hits the timeout does not
    wait for its retry inside the plan's transaction, which holds the locks the migrations
    before it took: the whole plan is rolled back and tried again."""
    project.sql("CREATE TABLE t2 (id bigint)")
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 500ms\n")
    project.add("001", "add_x", "ALTER TABLE t2 ADD COLUMN x int;")
    project.add("002", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, None)
    reader = TableReader(project.database_url, "t2")
    try:
        job = project.spawn("--json-log", "apply", "--single-transaction", "--no-lint")
        deadline = time.monotonic() + 120
        while "migration.lock_retry" not in job.stderr_so_far() and job.running():
            assert time.monotonic() < deadline, job.stderr_so_far()
            time.sleep(0.05)
        threading.Timer(3.0, holder.release).start()
        done = project.finish(job)
    finally:
        reader.finish()
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "c" in columns(project)
    assert project.statuses() == {"001": "applied", "002": "applied"}
    # t2, altered by 001, is not kept locked while 002 waits for its next try
    assert reader.slowest < 2.0, reader.slowest
    retry = events(done.stderr, "migration.lock_retry")[0]
    assert retry["migration_id"] == "002" and retry["attempt"] == 1
    assert "the whole plan was rolled back (--single-transaction)" in retry["message"]

    project.sql("ALTER TABLE t DROP COLUMN c")
    project.sql("ALTER TABLE t2 DROP COLUMN x")
    project.sql("DELETE FROM _migrations")
    project.configure(
        {"url": project.database_url},
        extra="table_lock_timeout: 200ms\ntable_lock_retries: 1\n",
    )
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--single-transaction", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "002_add_c.sql:" in done.stderr and "(SQLSTATE 55P03)" in done.stderr
    assert "no table lock within 200ms after 1 retry; blocked by pid" in done.stderr
    assert "the 1 migration(s) reported applied before it are not applied" in done.stderr
    assert project.statuses() == {}
    assert "x" not in {
        row[0]
        for row in project.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 't2'"
        )
    }


def test_after_the_last_retry_exit_1_names_the_blockers(project: Project) -> None:
    project.configure(
        {"url": project.database_url},
        extra="table_lock_timeout: 200ms\ntable_lock_retries: 2\n",
    )
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "55P03" in done.stderr
    assert f"blocked by pid {holder.pid} ('slow_report', idle in transaction" in done.stderr
    assert "after 2 retries" in done.stderr
    assert done.stderr.count("retry ") >= 2
    assert "c" not in columns(project)
    assert project.sql("SELECT count(*) FROM _migrations")[0][0] == 0


@pytest.mark.parametrize("no_transaction", [False, True])
def test_a_migration_with_its_own_lock_timeout_is_reported_as_it_ran(
    project: Project, no_transaction: bool
) -> None:
    """A migration that sets a shorter lock_timeout of its own (squawk's advice) gives up
    sooner than table_lock_timeout: the messages do not claim mg's value, and the blockers
    are still named (asked for sooner on the next try)."""
    project.configure({"url": project.database_url}, extra="table_lock_retries: 2\n")
    set_timeout = "SET lock_timeout" if no_transaction else "SET LOCAL lock_timeout"
    project.add(
        "001",
        "own",
        f"{set_timeout} = '100ms';\nALTER TABLE t ADD COLUMN c int;",
        no_transaction=no_transaction,
    )
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("--json-log", "apply", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    retries = events(done.stderr, "migration.lock_retry")
    assert [r["attempt"] for r in retries] == [1, 2]
    for retry in retries:
        assert "within 5s" not in retry["message"]
        assert "the migration's own lock_timeout or NOWAIT" in retry["message"]
        assert retry["attempt_s"] < 5
    assert [b["pid"] for b in retries[1]["blockers"]] == [holder.pid]
    (failed,) = events(done.stderr, "command.failed")
    assert "(SQLSTATE 55P03)" in failed["error"]
    assert "within 5s" not in failed["error"]
    assert "had gone when asked" not in failed["error"]
    assert "the migration's own lock_timeout or NOWAIT" in failed["error"]
    assert f"blocked by pid {holder.pid} ('slow_report'" in failed["error"]
    assert "c" not in columns(project)


def test_a_migration_with_a_longer_lock_timeout_of_its_own_is_not_quoted_mg_s(
    project: Project,
) -> None:
    project.configure(
        {"url": project.database_url},
        extra="table_lock_timeout: 200ms\ntable_lock_retries: 1\n",
    )
    project.add("001", "own", "SET LOCAL lock_timeout = '1s';\nALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "within 200ms" not in done.stderr
    assert "(the migration's own lock_timeout or NOWAIT, not table_lock_timeout 200ms)" in (
        done.stderr
    )
    assert f"blocked by pid {holder.pid}" in done.stderr


def test_a_history_row_kept_locked_is_waited_for_like_a_table(project: Project) -> None:
    """The history row is written in the migration's transaction: a session keeping it
    locked (a hand edit left open) times the write out like any table lock, and the whole
    transaction is retried, naming who holds it, instead of failing at once."""
    project.configure(
        {"url": project.database_url},
        extra="table_lock_timeout: 300ms\ntable_lock_retries: 1\n",
    )
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    assert project.mg("apply", "--no-lint").returncode == 0

    def hand_edit() -> Holder:
        holder = Holder(project.database_url, None)
        holder.conn.rollback()  # no lock on t: only the history row
        holder.conn.execute("UPDATE _migrations SET name = name WHERE id = '001'")
        return holder

    holder = hand_edit()
    try:
        done = project.mg("down")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "retry 1 of 1" in done.stderr
    assert "recording migration 001 (add_c) in the history failed" in done.stderr
    # the row is what the hand edit holds: the messages say so
    assert f"no row lock within 300ms after 1 retry; blocked by pid {holder.pid}" in (done.stderr)
    assert project.statuses() == {"001": "applied"}
    assert "c" in columns(project)

    project.configure({"url": project.database_url}, extra="table_lock_timeout: 300ms\n")
    holder = hand_edit()
    try:
        job = project.spawn("--json-log", "down")
        deadline = time.monotonic() + 120
        while "migration.lock_retry" not in job.stderr_so_far() and job.running():
            assert time.monotonic() < deadline, job.stderr_so_far()
            time.sleep(0.05)
        threading.Timer(1.0, holder.release).start()
        done = project.finish(job)
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    (first, *_) = events(done.stderr, "migration.lock_retry")
    assert [b["pid"] for b in first["blockers"]] == [holder.pid]
    assert project.statuses() == {}
    assert "c" not in columns(project)


def test_a_no_transaction_migration_is_not_held_up_by_a_locked_history(
    project: Project,
) -> None:
    """The ``running`` row a no-transaction migration writes before its first statement
    waits for a lock on _migrations at most table_lock_timeout, with retries, instead of
    holding the run (and the migration lock) up without end."""
    project.configure(
        {"url": project.database_url},
        extra="table_lock_timeout: 300ms\ntable_lock_retries: 1\n",
    )
    project.add("001", "first", "CREATE TABLE a (id bigint);")
    assert project.mg("apply", "--no-lint").returncode == 0
    project.add("002", "add_c", "ALTER TABLE t ADD COLUMN c int;", no_transaction=True)
    holder = Holder(project.database_url, None)
    holder.conn.rollback()
    holder.conn.execute("LOCK TABLE _migrations IN SHARE MODE")  # readers pass, writers wait
    try:
        done = project.finish(project.spawn("apply", "--no-lint"), timeout=60)
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "retry 1 of 1" in done.stderr
    assert (
        "recording migration 002 (add_c) as running in the history failed: canceling "
        "statement due to lock timeout (SQLSTATE 55P03)"
    ) in done.stderr
    assert f"after 1 retry; blocked by pid {holder.pid} ('slow_report'" in done.stderr
    assert "none of its statements ran" in done.stderr
    assert project.statuses() == {"001": "applied"}
    assert "c" not in columns(project)
    assert project.mg("apply", "--no-lint").returncode == 0
    assert "c" in columns(project)


def test_command_line_timeout_wins_and_off_waits(project: Project) -> None:
    project.configure({"url": project.database_url}, extra="table_lock_retries: 1\n")
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--table-lock-timeout", "100ms")
        assert done.returncode == 1
        assert "no table lock within 100ms after 1 retry" in done.stderr
    finally:
        holder.close()
    project.configure({"url": project.database_url}, extra="table_lock_retries: 0\n")
    holder = Holder(project.database_url, 3.0)
    try:
        done = project.mg("apply", "--table-lock-timeout", "off")
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "retry 1 of" not in done.stderr


def test_no_transaction_statement_is_retried_but_not_a_concurrent_index(
    project: Project,
) -> None:
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 300ms\n")
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;", no_transaction=True)
    holder = Holder(project.database_url, None)
    try:
        done = apply_while_held(project, holder)
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert events(done.stderr, "migration.lock_retry")[0]["attempt"] == 1
    assert "c" in columns(project)

    project.add("002", "index", "CREATE INDEX CONCURRENTLY t_c ON t (c);", no_transaction=True)
    holder = Holder(project.database_url, 60.0, mode="SHARE ROW EXCLUSIVE")
    try:
        done = project.mg("apply")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "retry 1 of" not in done.stderr
    assert "55P03" in done.stderr
    assert "INVALID index" in done.stderr


def test_a_concurrent_detach_that_timed_out_is_not_retried(project: Project) -> None:
    """DETACH PARTITION ... CONCURRENTLY commits its first step (the partition is pending
    detach) before it waits for the readers of the table: timed out there, it has changed
    something, and run again it would fail with "already pending detach"."""
    project.sql("CREATE TABLE parts (id bigint, k int) PARTITION BY RANGE (k)")
    project.sql("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (10)")
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 300ms\n")
    project.add(
        "001",
        "detach",
        "ALTER TABLE parts DETACH PARTITION parts_1 CONCURRENTLY;",
        no_transaction=True,
    )
    reader = psycopg.connect(project.database_url, application_name="slow_report")
    try:
        reader.execute("SELECT count(*) FROM parts").fetchone()  # a transaction left open
        done = project.mg("apply")
    finally:
        reader.close()
    assert done.returncode == 1, done.stderr
    assert "retry 1 of" not in done.stderr
    assert "55P03" in done.stderr
    assert "already pending detach" not in done.stderr
    assert "DETACH PARTITION ... FINALIZE" in done.stderr
    assert project.statuses() == {"001": "failed"}


@pytest.mark.parametrize(
    "statement",
    [
        "DO $$\nBEGIN\n  INSERT INTO audit VALUES (1);\n  COMMIT;\n"
        "  ALTER TABLE t ADD COLUMN c int;\nEND\n$$;",
        "CALL add_c();",
    ],
)
def test_a_statement_that_may_have_committed_is_not_retried(
    project: Project, statement: str
) -> None:
    """A procedure or a DO block with COMMIT keeps what it committed before its lock timed
    out: run again, it would do that work twice."""
    project.sql("CREATE TABLE audit (n int)")
    project.sql(
        "CREATE PROCEDURE add_c() LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO audit VALUES (1); COMMIT; ALTER TABLE t ADD COLUMN c int; END $$"
    )
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 300ms\n")
    project.add("001", "backfill", statement, no_transaction=True)
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "retry 1 of" not in done.stderr
    assert "(SQLSTATE 55P03)" in done.stderr
    assert "keeps what it committed before it failed" in done.stderr
    assert project.sql("SELECT count(*) FROM audit")[0][0] == 1
    assert project.statuses() == {"001": "failed"}


def test_a_statement_failing_inside_the_migrations_own_begin_block(project: Project) -> None:
    """In a no-transaction migration, a statement that fails between the migration's own
    BEGIN and COMMIT is reported with its file, line and SQLSTATE, and the migration is
    marked failed; the block is rolled back (it could not commit)."""
    project.add(
        "001",
        "block",
        "BEGIN;\nCREATE TABLE side (id bigint);\nSELECT 1 / 0;\nCOMMIT;",
        no_transaction=True,
    )
    done = project.mg("apply", "--no-lint")
    assert done.returncode == 1, done.stderr
    assert "current transaction is aborted" not in done.stderr
    assert "001_block.sql:5: division by zero (SQLSTATE 22012)" in done.stderr
    assert "rolled back" in done.stderr
    assert project.statuses() == {"001": "failed"}
    assert "side" not in project.tables()


def test_a_lock_timeout_inside_the_migrations_own_begin_block_is_not_retried(
    project: Project,
) -> None:
    """Retried alone, the statement would run without the block's earlier statements, which
    the failure rolled back."""
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 300ms\n")
    project.add(
        "001",
        "block",
        "BEGIN;\nCREATE TABLE side (id bigint);\nALTER TABLE t ADD COLUMN c int;\nCOMMIT;",
        no_transaction=True,
    )
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "retry 1 of" not in done.stderr
    assert "current transaction is aborted" not in done.stderr
    assert "001_block.sql:5: canceling statement due to lock timeout (SQLSTATE 55P03)" in (
        done.stderr
    )
    assert project.statuses() == {"001": "failed"}
    assert "side" not in project.tables()
    assert "c" not in columns(project)


# --- leftovers of failed concurrent builds ------------------------------------------------------


def test_hook_mg_invalid_indexes(project: Project) -> None:
    """mg status lists the INVALID index a failed CREATE INDEX CONCURRENTLY left behind."""
    project.sql("INSERT INTO t VALUES (1)")  # a duplicate: the unique build fails late
    project.add(
        "001", "unique", "CREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id);", no_transaction=True
    )
    done = project.mg("apply")
    assert done.returncode == 1
    assert "INVALID index" in done.stderr

    status = project.mg("status")
    assert status.returncode == 0, status.stderr
    assert "invalid indexes (1), left by failed CREATE INDEX CONCURRENTLY:" in status.stdout
    assert "  public.t_id on public.t: DROP INDEX CONCURRENTLY public.t_id;" in status.stdout
    data = json.loads(project.mg("status", "--format", "json").stdout)
    assert data["invalid_indexes"] == [
        {
            "index": "public.t_id",
            "table": "public.t",
            "drop": "DROP INDEX CONCURRENTLY public.t_id;",
        }
    ]

    project.sql("DROP INDEX CONCURRENTLY public.t_id")
    data = json.loads(project.mg("status", "--format", "json").stdout)
    assert data["invalid_indexes"] == []
    assert "invalid indexes" not in project.mg("status").stdout


def test_bad_settings_are_configuration_errors(project: Project) -> None:
    project.configure({"url": project.database_url}, extra="table_lock_retries: many\n")
    done = project.mg("status")
    assert done.returncode == 2
    assert "table_lock_retries" in done.stderr
    project.configure({"url": project.database_url}, extra="table_lock_timeout: soon\n")
    assert project.mg("status").returncode == 2
    project.configure({"url": project.database_url})
    done = project.mg("apply", "--table-lock-timeout", "soon")
    assert done.returncode == 2
    assert "--table-lock-timeout" in done.stderr


@pytest.mark.parametrize("key", ["table_lock_timeout", "statement_timeout"])
def test_a_timeout_longer_than_postgresql_holds_is_refused_before_running(
    project: Project, key: str
) -> None:
    project.add("001", "u", "CREATE TABLE u (id bigint);")
    project.configure({"url": project.database_url}, extra=f"{key}: 1000h\n")
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert f"{key}: duration '1000h' is longer than PostgreSQL allows" in done.stderr
    project.configure({"url": project.database_url})
    option = "--" + key.replace("_", "-")
    done = project.mg("apply", option, "1000h")
    assert done.returncode == 2 and option in done.stderr, done.stderr
    assert project.tables() == {"t"}  # the fixture's own
    assert project.mg("apply", option, "596h").returncode == 0  # 24.8 days is the most


def test_statement_timeout_stops_a_long_statement_without_retry(project: Project) -> None:
    project.add("001", "slow", "SELECT pg_sleep(5);")
    done = project.mg("apply", "--statement-timeout", "300ms")
    assert done.returncode == 1, done.stderr
    assert "57014" in done.stderr  # query_canceled
    assert "retry" not in done.stderr
    project.configure({"url": project.database_url}, extra="statement_timeout: 300ms\n")
    assert project.mg("apply").returncode == 1
    assert project.mg("apply", "--statement-timeout", "off").returncode == 0


def test_a_dry_run_waits_for_a_table_lock_no_longer_than_table_lock_timeout(
    project: Project,
) -> None:
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--dry-run", "--no-lint", "--table-lock-timeout", "200ms")
        json_run = project.mg(
            "apply", "--dry-run", "--format", "json", "--table-lock-timeout", "200ms"
        )
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "failed: 001 add_c: migrations/001_add_c.sql:" in done.stdout
    assert "55P03" in done.stdout
    assert "retry" not in done.stderr
    assert json_run.returncode == 1
    first = json.loads(json_run.stdout)["migrations"][0]
    assert first["ok"] is False and "55P03" in first["error"]
    assert "c" not in columns(project)
    project.add("002", "slow", "SELECT pg_sleep(5);")
    done = project.mg("apply", "--dry-run", "--statement-timeout", "300ms")
    assert done.returncode == 1 and "failed: 002 slow" in done.stdout
    assert "57014" in done.stdout


def test_a_dry_run_that_timed_out_names_who_held_the_lock(project: Project) -> None:
    project.add("001", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    holder = Holder(project.database_url, 60.0)
    try:
        done = project.mg("apply", "--dry-run", "--no-lint", "--table-lock-timeout", "300ms")
        json_run = project.mg(
            "apply", "--dry-run", "--format", "json", "--table-lock-timeout", "300ms"
        )
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    note = (
        "no table lock within 300ms (table_lock_timeout; a dry run does not retry); "
        f"blocked by pid {holder.pid} ('slow_report', idle in transaction"
    )
    assert note in done.stdout
    assert note in json.loads(json_run.stdout)["migrations"][0]["error"]


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        ("CALL add_c();", "(table_lock_timeout); not retried: a procedure (CALL) or a DO block"),
        (
            "DO $$\nBEGIN\n  INSERT INTO audit VALUES (1);\n  COMMIT;\n"
            "  ALTER TABLE t ADD COLUMN c int;\nEND\n$$;",
            "(table_lock_timeout); not retried: a procedure (CALL) or a DO block",
        ),
        (
            "CREATE INDEX CONCURRENTLY t_id ON t (id);",
            "(table_lock_timeout); not retried: a CREATE INDEX CONCURRENTLY that fails",
        ),
    ],
)
def test_a_lock_timeout_not_retried_says_why_not_after_0_retries(
    project: Project, statement: str, why: str
) -> None:
    """A statement mg does not run again after a lock timeout says why it was not retried,
    not that it gave up after 0 retries (table_lock_retries is 10)."""
    project.sql("CREATE TABLE audit (n int)")
    project.sql(
        "CREATE PROCEDURE add_c() LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO audit VALUES (1); COMMIT; ALTER TABLE t ADD COLUMN c int; END $$"
    )
    project.configure({"url": project.database_url}, extra="table_lock_timeout: 300ms\n")
    project.add("001", "backfill", statement, no_transaction=True)
    holder = Holder(project.database_url, 60.0, "ACCESS EXCLUSIVE")
    try:
        done = project.mg("apply", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert "retries" not in done.stderr, done.stderr
    assert "retry" not in done.stderr.replace("retrying", ""), done.stderr
    assert why in done.stderr, done.stderr
    assert "slow_report" in done.stderr, done.stderr
    assert project.statuses() == {"001": "failed"}


def test_a_wait_for_a_row_lock_is_named_a_row_lock(project: Project) -> None:
    """table_lock_timeout also ends a wait for a row another session locked (SELECT ... FOR
    UPDATE): the warning, the error and a dry run's error say row lock, not table lock; the
    event name and its fields stay as they are."""
    project.configure(
        {"url": project.database_url},
        extra="table_lock_timeout: 300ms\ntable_lock_retries: 1\n",
    )
    project.add("001", "touch_row", "UPDATE t SET id = 0 WHERE id = 1;")
    holder = psycopg.connect(project.database_url, application_name="slow_report")
    try:
        holder.execute("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        done = project.mg("--json-log", "apply", "--no-lint")
        dry = project.mg("apply", "--dry-run", "--no-lint")
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    (retry,) = events(done.stderr, "migration.lock_retry")
    assert "001 touch_row: row lock not granted within 300ms" in retry["message"], retry
    assert [b["application_name"] for b in retry["blockers"]] == ["slow_report"]
    assert "table lock" not in done.stderr, done.stderr
    assert "no row lock within 300ms after 1 retry; blocked by pid" in done.stderr, done.stderr
    assert dry.returncode == 1, dry.stderr
    assert "no row lock within 300ms (table_lock_timeout; a dry run does not retry)" in (
        dry.stdout
    ), dry.stdout
    assert project.statuses() == {}
    assert project.sql("SELECT count(*) FROM t WHERE id = 1")[0][0] == 1
