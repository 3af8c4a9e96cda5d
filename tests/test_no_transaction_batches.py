"""A no-transaction migration's statements sent in batches (``mg_execute_each``): each still
commits on its own, and whatever happens, users see what they saw when every statement went
alone.

Each scenario runs twice, in two databases: as shipped (batched), and with a plugin that
implements ``mg_execute`` and not ``mg_execute_each``, which keeps every statement alone as
before batching existed. A wrapper around ``mg_execute_each`` logs the batches, so each test
also shows that batching took place.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migretti_core.testing import Project, fresh_database, wait_until
from migretti_plugins.postgres import may_share_query

BATCH_LOG = """\
import json, os
from migretti_core.api import hookimpl

@hookimpl(hookwrapper=True)
def mg_execute_each(batch):
    yield
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(json.dumps([len(batch.statements), batch.committed]) + "\\n")
"""

ALONE = """\
from migretti_core.api import hookimpl

@hookimpl
def mg_execute(sql):
    return None  # not answered: the builtin runs it, one statement at a time
"""


class Run:
    """One project, batched or not, with its batch log."""

    def __init__(self, root: Path, url: str, batched: bool) -> None:
        root.mkdir(parents=True)
        (root / "batch_log.py").write_text(BATCH_LOG)
        (root / "alone.py").write_text(ALONE)
        self.log = root / "batches.jsonl"
        self.log.touch()
        self.project = Project(root, url, configure=False)
        self.batched = batched
        self.configure()

    def configure(self, extra: str = "") -> None:
        plugins = '["batch_log.py"]' if self.batched else '["batch_log.py", "alone.py"]'
        self.project.configure(extra=f"plugins: {plugins}\n{extra}")

    def mg(self, *args: str) -> Any:
        return self.project.mg(*args, env={"BATCH_LOG": str(self.log)})

    def spawn(self, *args: str) -> Any:
        return self.project.spawn(*args, env={"BATCH_LOG": str(self.log)})

    def batches(self) -> list[list[int]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def runs(tmp_path: Path, pg_url: str) -> Iterator[tuple[Run, Run]]:
    with fresh_database(pg_url) as one, fresh_database(pg_url) as two:
        batched, alone = Run(tmp_path / "batched", one, True), Run(tmp_path / "alone", two, False)
        yield batched, alone
        batched.project.close()
        alone.project.close()


def both(runs: tuple[Run, Run], up: str, *args: str) -> tuple[Any, Any]:
    """Add migration 0001 (no-transaction) to both projects and apply it in each."""
    results = []
    for run in runs:
        run.project.add("0001", "batch", up, no_transaction=True)
        results.append(run.mg("apply", *args))
    return results[0], results[1]


def history(project: Project) -> list[tuple[Any, ...]]:
    return project.sql("SELECT id, status, failed_statement, error FROM _migrations")


def inserts(first: int, last: int, table: str = "t") -> list[str]:
    return [f"INSERT INTO {table} VALUES ({n});" for n in range(first, last + 1)]


def test_statements_go_in_batches_and_each_commits(runs: tuple[Run, Run]) -> None:
    statements = [
        "CREATE TABLE t (id int PRIMARY KEY);",
        *inserts(1, 150),
        "-- a comment before the keyword\nCREATE INDEX CONCURRENTLY t_id ON t (id);",
        "/* a /* nested */ comment */ INSERT INTO t VALUES (151);",
        *inserts(152, 260),
    ]
    batched, alone = runs
    done, before = both(runs, "\n".join(statements))
    assert done.returncode == 0, done.stderr
    assert before.returncode == 0, before.stderr
    for run in runs:
        assert run.project.value("SELECT count(*) FROM t") == 260
        assert run.project.value(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id'::regclass"
        )
        assert run.project.statuses() == {"0001": "applied"}
    # 151 statements before the index, 100 at most per batch; the index alone; then 110
    assert batched.batches() == [[100, 100], [100, 51], [100, 0], [100, 100], [10, 10]]
    assert alone.batches() == []


def test_a_failing_statement_in_a_batch_leaves_the_ones_before_it(runs: tuple[Run, Run]) -> None:
    statements = ["CREATE TABLE t (id int PRIMARY KEY);", *inserts(1, 40)]
    statements += ["INSERT INTO t VALUES (7);", *inserts(41, 60)]
    batched, alone = runs
    done, before = both(runs, "\n".join(statements))
    assert done.returncode == before.returncode == 1, done.stderr
    assert done.stderr == before.stderr
    assert "0001_batch.sql:44: duplicate key value" in done.stderr
    assert "statement 42 of 62 (INSERT INTO) failed" in done.stderr
    for run in runs:
        assert run.project.value("SELECT count(*) FROM t") == 40
        assert history(run.project) == history(alone.project)
    assert history(batched.project)[0][1:3] == ("failed", 42)
    assert batched.batches() == [[62, 41]]


def test_an_error_position_points_into_the_file(runs: tuple[Run, Run]) -> None:
    statements = [
        "CREATE TABLE t (id int);",
        *inserts(1, 5),
        "INSERT INTO t\n  VALUES (6);",
        "INSERT INTO t (id)\n  SELECT missing FROM t;",
        *inserts(7, 9),
    ]
    batched, alone = runs
    done, before = both(runs, "\n".join(statements))
    assert done.returncode == before.returncode == 1
    assert done.stderr == before.stderr
    assert '0001_batch.sql:12: column "missing" does not exist' in done.stderr
    assert history(batched.project) == history(alone.project)
    assert batched.batches() == [[11, 7]]


@pytest.mark.parametrize(
    "bad",
    [
        "INSERT INTO t VALUES (1,;",  # a syntax error: the server refuses the whole batch
        "INSERT INTO t VALUES ('never closed);",  # swallows everything after it
    ],
)
def test_a_syntax_error_runs_exactly_the_statements_before_it(
    runs: tuple[Run, Run], bad: str
) -> None:
    statements = ["CREATE TABLE t (id text);", *inserts(1, 10), bad, *inserts(11, 20)]
    batched, alone = runs
    done, before = both(runs, "\n".join(statements))
    assert done.returncode == before.returncode == 1
    assert done.stderr == before.stderr
    assert "statement 12 of" in done.stderr
    for run in runs:
        assert run.project.value("SELECT count(*) FROM t") == 10
    assert history(batched.project) == history(alone.project)
    # refused as a whole, then the statements before the bad one went again, without it
    assert batched.batches()[0][1] == 11


def test_user_transaction_control_keeps_statements_alone(runs: tuple[Run, Run]) -> None:
    statements = [
        "CREATE TABLE t (id int);",
        "BEGIN;",
        *inserts(1, 3),
        "ROLLBACK;",
        *inserts(4, 6),
    ]
    batched, _ = runs
    done, before = both(runs, "\n".join(statements))
    assert done.returncode == before.returncode == 0, done.stderr
    for run in runs:
        assert run.project.sql("SELECT id FROM t ORDER BY id") == [(4,), (5,), (6,)]
    # inside the migration's own BEGIN the builtin declines, and the statements go alone
    assert [c for _, c in batched.batches()] == [0, 0, 0, 0, 0, 0, 3]


def test_the_statement_timeout_counts_for_each_statement(runs: tuple[Run, Run]) -> None:
    # six statements of 0.25 s in one batch, 1.5 s together: each well under a 1 s timeout
    naps = [f"INSERT INTO t SELECT {n} FROM pg_sleep(0.25);" for n in range(1, 7)]
    batched, _ = runs
    done, before = both(
        runs, "\n".join(["CREATE TABLE t (id int);", *naps]), "--statement-timeout", "1s"
    )
    assert done.returncode == before.returncode == 0, done.stderr
    for run in runs:
        assert run.project.value("SELECT count(*) FROM t") == 6
    assert batched.batches() == [[7, 7]]


def test_a_statement_timeout_in_a_batch(runs: tuple[Run, Run]) -> None:
    statements = [
        "CREATE TABLE t (id int);",
        *inserts(1, 2),
        "INSERT INTO t SELECT 3 FROM pg_sleep(5);",
    ]
    statements += inserts(4, 5)
    batched, alone = runs
    done, before = both(runs, "\n".join(statements), "--statement-timeout", "300ms")
    assert done.returncode == before.returncode == 1
    assert done.stderr == before.stderr
    assert "57014" in done.stderr and "statement 4 of 6" in done.stderr
    assert "retry" not in done.stderr
    for run in runs:
        assert run.project.sql("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
    assert history(batched.project) == history(alone.project)
    assert batched.batches() == [[6, 3]]


@pytest.mark.parametrize(
    ("sql", "shared"),
    [
        ("INSERT INTO t VALUES (1)", True),
        ("update t SET a = 1", True),
        ("DELETE FROM t", True),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", True),
        ("CREATE TABLE t (id int)", True),
        ("ALTER TABLE t ADD COLUMN b int", True),
        ("DROP TABLE t", True),
        ("COMMENT ON TABLE t IS 'x'", True),
        ("GRANT SELECT ON t TO PUBLIC", True),
        ("-- note\n  /* a /* nested */ one */\nINSERT INTO t VALUES (1)", True),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", False),
        ("DROP INDEX CONCURRENTLY i", False),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", False),
        ("CREATE DATABASE d", False),
        ("DROP TABLESPACE s", False),
        ("ALTER SYSTEM SET work_mem = '1MB'", False),
        ("CREATE SUBSCRIPTION s CONNECTION '' PUBLICATION p", False),
        ("REINDEX TABLE t", False),
        ("VACUUM t", False),
        ("BEGIN", False),
        ("COMMIT", False),
        ("SAVEPOINT a", False),
        ("COPY t FROM STDIN", False),
        ("SET search_path = x", False),
        ("DO $$ BEGIN COMMIT; END $$", False),
        ("CALL p()", False),
        ("SELECT 1", False),
        ("inserted_at", False),
        ("INSERT INTO t VALUES ('\0')", False),
        ("INSERT INTO t VALUES (1);", True),
        ("INSERT INTO t VALUES (1); \n", True),
        ("INSERT INTO t VALUES (1); COMMIT", False),
        ("INSERT INTO t VALUES (';')", False),
        ("/* never closed INSERT INTO t VALUES (1)", False),
    ],
)
def test_which_statements_may_share_a_query(sql: str, shared: bool) -> None:
    assert may_share_query(sql) is shared


# --- table locks and interruptions ---------------------------------------------------------------


class Holder:
    """A session holding a lock on ``locked`` until released."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, application_name="slow_report")
        self.conn.execute("LOCK TABLE locked IN ACCESS SHARE MODE")
        self.pid = self.conn.info.backend_pid
        self.guard = threading.Lock()

    def release(self) -> None:
        with self.guard:
            if not self.conn.closed:
                self.conn.rollback()
                self.conn.close()


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    return [
        event
        for line in stderr.splitlines()
        if line.startswith("{") and (event := json.loads(line)).get("event") == name
    ]


def test_a_lock_timeout_in_a_batch_is_retried_from_that_statement(
    tmp_path: Path, pg_url: str
) -> None:
    with fresh_database(pg_url) as url:
        run = Run(tmp_path / "p", url, True)
        run.configure("table_lock_timeout: 300ms\n")
        run.project.sql("CREATE TABLE locked (id int); CREATE TABLE t (id int)")
        statements = [*inserts(1, 5), "ALTER TABLE locked ADD COLUMN c int;", *inserts(6, 10)]
        run.project.add("0001", "batch", "\n".join(statements), no_transaction=True)
        holder = Holder(url)
        try:
            job = run.spawn("--json-log", "apply")
            wait_until(
                lambda: "migration.lock_retry" in job.stderr_so_far() or not job.running(),
                timeout=120,
            )
            # the statements before the blocked one committed while it waits
            assert run.project.value("SELECT count(*) FROM t") == 5
            threading.Timer(1.0, holder.release).start()
            done = run.project.finish(job)
        finally:
            holder.release()
            run.project.close()
        assert done.returncode == 0, done.stderr
        first = events(done.stderr, "migration.lock_retry")[0]
        assert first["attempt"] == 1
        assert [b["pid"] for b in first["blockers"]] == [holder.pid]
        assert run.project.value("SELECT count(*) FROM t") == 10
        assert "c" in {
            r[0]
            for r in run.project.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'locked'"
            )
        }
        # the batch stopped at the blocked statement, and went on from it after the retry
        assert run.batches()[0] == [11, 5]
        assert run.batches()[-1] == [6, 6]


SLOW = "INSERT INTO t SELECT 3 FROM pg_sleep(30);"


def _sleeping(project: Project) -> bool:
    """The server is in the batch's pg_sleep: the statements before it have committed (the
    query's text is shown from its start, before any of them ran)."""
    rows = project.sql(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event = 'PgSleep'"
    )
    return bool(rows)


@pytest.mark.parametrize(
    ("signum", "reason"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")]
)
def test_a_signal_during_a_batch_records_what_committed(
    tmp_path: Path, pg_url: str, signum: int, reason: str
) -> None:
    with fresh_database(pg_url) as url:
        run = Run(tmp_path / "p", url, True)
        statements = ["CREATE TABLE t (id int);", *inserts(1, 2), SLOW, *inserts(4, 5)]
        run.project.add("0001", "slow", "\n".join(statements), no_transaction=True)
        job = run.spawn("apply")
        try:
            wait_until(lambda: _sleeping(run.project) or not job.running(), timeout=60)
            assert job.running(), job.stderr_so_far()
            os.kill(job.pid, signum)
            done = run.project.finish(job, timeout=60)
        finally:
            run.project.close()
        assert done.returncode == 130, done.stderr
        assert f"stopped by {reason}" in done.stderr
        assert "during statement 4 of 6 (migrations/0001_slow.sql:6)" in done.stderr
        assert "statements 1-3 took effect, statement 4 may or may not have" in done.stderr
        assert "statements 5-6 did not run" in done.stderr
        assert "row is left `failed` at statement 4" in done.stderr
        run.project.wait_for_backends_to_end()
        assert run.project.sql("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
        row = run.project.sql("SELECT status, failed_statement FROM _migrations")
        assert row == [("failed", 4)]
        assert run.batches() == [[6, 3]]


def test_a_lost_connection_during_a_batch_leaves_it_running(tmp_path: Path, pg_url: str) -> None:
    with fresh_database(pg_url) as url:
        run = Run(tmp_path / "p", url, True)
        statements = ["CREATE TABLE t (id int);", *inserts(1, 2), SLOW, *inserts(4, 5)]
        run.project.add("0001", "slow", "\n".join(statements), no_transaction=True)
        job = run.spawn("apply")
        try:
            wait_until(lambda: _sleeping(run.project) or not job.running(), timeout=60)
            assert job.running(), job.stderr_so_far()
            started = time.monotonic()
            run.project.terminate_backends()
            done = run.project.finish(job, timeout=60)
        finally:
            run.project.close()
        assert time.monotonic() - started < 30
        assert done.returncode == 1, done.stderr
        assert "stopped by a lost connection" in done.stderr
        assert "statements 1-3 took effect" in done.stderr
        assert re.search(r"statements? 4(-6)? may or may not have", done.stderr), done.stderr
        assert "row is left `running`" in done.stderr
        assert run.project.statuses() == {"0001": "running"}
        assert run.project.sql("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
