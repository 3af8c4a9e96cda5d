"""``mg`` killed or interrupted mid-run: the database must tell the truth afterwards."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migretti_core.testing import AdvisoryLockHolder, MgProcess, Project, wait_until

MIGRATIONS = 200
ROUNDS = 5


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def _applied_count(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    try:
        row = conn.execute("SELECT count(*) FROM _migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def _wait_for_progress(
    conn: psycopg.Connection[tuple[Any, ...]], job: MgProcess, target: int
) -> None:
    wait_until(lambda: _applied_count(conn) >= target or not job.running(), timeout=120)


def _assert_all_or_nothing(project: Project, context: str) -> set[str]:
    """Every table exists exactly when its migration's ``applied`` row does."""
    statuses = project.statuses()
    assert set(statuses.values()) <= {"applied"}, (context, statuses)
    applied = set(statuses)
    assert project.tables() == {f"t_{ident}" for ident in applied}, context
    logged = [ident for ident, action in project.log() if action == "UP"]
    assert sorted(logged) == sorted(applied), context
    return applied


def test_kill_9_at_random_moments_never_splits_a_migration(project: Project) -> None:
    for n in range(1, MIGRATIONS + 1):
        ident = f"{n:04d}"
        project.add(
            ident,
            f"step_{n}",
            # The pause inside makes a migration take at least 5 ms, so the 50 left after the
            # last target outlast the poller's delay even on a fast server, and a kill
            # often lands inside a migration's transaction.
            f"CREATE TABLE t_{ident} (id int);\nSELECT pg_sleep(0.005);\n"
            f"INSERT INTO t_{ident} VALUES ({n});",
        )
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    applied: set[str] = set()
    interrupted_midway = 0
    with psycopg.connect(project.database_url, autocommit=True) as conn:
        for round_no in range(ROUNDS):
            context = f"seed {seed}, round {round_no}"
            before = len(applied)
            # Leave enough migrations after the target that the kill lands before the end even
            # when this poller is scheduled late (mg applies one in a few milliseconds).
            target = min(before + rng.randint(1, MIGRATIONS // ROUNDS - 5), MIGRATIONS - 50)
            job = project.spawn("apply")
            _wait_for_progress(conn, job, target)
            time.sleep(rng.uniform(0.0, 0.03))
            if not job.running():  # it finished first: a round with nothing cut short
                finished = job.wait()
                assert finished.returncode == 0, (context, finished.stderr)
            job.kill()
            project.wait_for_backends_to_end(ignore=[conn.info.backend_pid])
            applied = _assert_all_or_nothing(project, context)
            assert len(applied) >= before, context
            if 0 < len(applied) < MIGRATIONS:
                interrupted_midway += 1
    assert interrupted_midway >= ROUNDS - 1, f"seed {seed}: kills landed mid-run too rarely"

    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    applied = _assert_all_or_nothing(project, "after the rerun")
    assert len(applied) == MIGRATIONS
    assert len(project.log()) == MIGRATIONS


def _sleeping(project: Project) -> bool:
    return any("pg_sleep(30)" in query for _, _, query in project.other_backends())


def test_kill_9_during_a_no_transaction_migration_leaves_it_running(project: Project) -> None:
    project.add_table("0001")
    project.add(
        "0002",
        "slow",
        "CREATE TABLE nt_a (id int);\nSELECT pg_sleep(30);\nCREATE TABLE nt_c (id int);",
        "DROP TABLE nt_c;\nDROP TABLE nt_a;",
        no_transaction=True,
    )
    project.add_table("0003")
    job = project.spawn("apply")
    wait_until(lambda: _sleeping(project) or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    job.kill()
    # The server notices the dead client only after pg_sleep; a DBA would end the session.
    project.terminate_backends()

    assert project.statuses() == {"0001": "applied", "0002": "running"}
    assert project.tables() == {"t_0001", "nt_a"}
    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["counts"] == {"applied": 1, "pending": 1, "failed": 0, "running": 1}
    assert any("0002" in p and "running" in p for p in status["problems"]), status
    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert {r["id"]: r["status"] for r in listed}["0002"] == "running"

    for command in ("apply", "rollback"):
        blocked = project.mg(command, "--lock-timeout", "5s")
        assert blocked.returncode == 3, (command, blocked.stderr)
        assert "0002" in blocked.stderr and "running" in blocked.stderr
        assert "mg fix 0002 --applied" in blocked.stderr
        assert "mg fix 0002 --remove" in blocked.stderr
    assert project.tables() == {"t_0001", "nt_a"}

    project.sql("CREATE TABLE nt_c (id int)")
    done = project.mg("fix", "0002", "--applied")
    assert done.returncode == 0, done.stderr
    assert project.log() == [("0001", "UP"), ("0002", "FIX")]
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == dict.fromkeys(("0001", "0002", "0003"), "applied")
    assert project.tables() == {"t_0001", "nt_a", "nt_c", "t_0003"}


def test_ctrl_c_during_a_migration_exits_130_and_changes_nothing(project: Project) -> None:
    project.add_table("0001")
    project.add("0002", "slow", "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);")
    job = project.spawn("apply")
    wait_until(lambda: _sleeping(project) or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    done, took = project.interrupt(job)
    assert done.returncode == 130, done.stderr
    assert took < 10
    assert "Traceback" not in done.stderr
    # stderr is a pipe: no blank line to close a terminal's ^C echo, no line left empty
    assert done.stderr.endswith("\nmg: interrupted\n"), done.stderr
    assert "" not in done.stderr.splitlines(), done.stderr
    project.wait_for_backends_to_end()
    assert project.statuses() == {"0001": "applied"}
    assert project.tables() == {"t_0001"}

    project.add("0002", "slow", "CREATE TABLE slow (id int);\nSELECT pg_sleep(0);")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001", "slow"}


# --- a no-transaction migration cut short: Ctrl-C, SIGTERM, a lost connection --------------

SLOW_NO_TX = "CREATE TABLE nt_a (id int);\nSELECT pg_sleep(30);\nCREATE TABLE nt_c (id int);"


def _start_slow_no_transaction(project: Project) -> MgProcess:
    project.add_table("0001")
    project.add("0002", "slow", SLOW_NO_TX, "DROP TABLE nt_a;", no_transaction=True)
    job = project.spawn("apply")
    wait_until(lambda: _sleeping(project) or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    return job


def _says_what_fix_does(stderr: str) -> None:
    assert "migration 0002 (slow)" in stderr, stderr
    assert "statement 2 of 3" in stderr, stderr
    assert "0002_slow.sql:4" in stderr, stderr  # the file line of statement 2
    assert "mg fix 0002 --applied` records it as applied" in stderr, stderr
    assert "mg fix 0002 --remove` deletes its row" in stderr, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("signum", "reason"),
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")],
)
def test_signal_during_a_no_transaction_migration_marks_it_failed(
    project: Project, signum: int, reason: str
) -> None:
    job = _start_slow_no_transaction(project)
    os.kill(job.pid, signum)
    done = project.finish(job, timeout=60)

    assert done.returncode == 130, done.stderr
    _says_what_fix_does(done.stderr)
    assert f"stopped by {reason}" in done.stderr
    assert "row is left `failed` at statement 2" in done.stderr
    project.wait_for_backends_to_end()
    assert project.statuses() == {"0001": "applied", "0002": "failed"}
    row = project.sql("SELECT failed_statement, error FROM _migrations WHERE id = '0002'")
    assert row[0][0] == 2 and reason in row[0][1], row
    assert project.tables() == {"t_0001", "nt_a"}

    status = project.mg("status")
    assert "0002" in status.stdout and "statement 2" in status.stdout
    blocked = project.mg("apply")
    assert blocked.returncode == 3 and "mg fix 0002" in blocked.stderr
    project.sql("CREATE TABLE nt_c (id int)")
    assert project.mg("fix", "0002", "--applied").returncode == 0
    assert project.mg("apply").returncode == 0


def test_ctrl_c_in_the_only_statement_says_it_may_or_may_not_have_taken_effect(
    project: Project,
) -> None:
    project.add("0001", "only", "SELECT pg_sleep(30);", "SELECT 1;", no_transaction=True)
    job = project.spawn("apply")
    wait_until(lambda: _sleeping(project) or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    os.kill(job.pid, signal.SIGINT)
    done = project.finish(job, timeout=60)

    assert done.returncode == 130, done.stderr
    assert (
        "it is a no-transaction migration, so statement 1 may or may not have taken effect. "
        "Its row is left `failed` at statement 1."
    ) in done.stderr, done.stderr


def test_sighup_is_left_alone_under_nohup(project: Project) -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts mg
    try:
        job = _start_slow_no_transaction(project)
    finally:
        signal.signal(signal.SIGHUP, previous)
    os.kill(job.pid, signal.SIGHUP)
    time.sleep(0.5)
    done, _ = project.interrupt(job)
    # Had SIGHUP stopped it, the row would name SIGHUP: it was ignored, Ctrl-C stopped it.
    assert done.returncode == 130, done.stderr
    assert "stopped by Ctrl-C" in done.stderr and "SIGHUP" not in done.stderr


def test_lost_connection_during_a_no_transaction_migration_leaves_it_running(
    project: Project,
) -> None:
    job = _start_slow_no_transaction(project)
    project.terminate_backends()
    done = project.finish(job, timeout=60)

    assert done.returncode == 1, done.stderr
    _says_what_fix_does(done.stderr)
    assert "stopped by a lost connection" in done.stderr
    assert "row is left `running`" in done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "running"}
    assert project.tables() == {"t_0001", "nt_a"}
    assert project.mg("fix", "0002", "--remove").returncode == 0
    project.sql("DROP TABLE nt_a")
    project.path_of("0002").write_text(
        "-- migrate: no-transaction\n-- migrate: up\nCREATE TABLE nt_a (id int);\n"
    )
    assert project.mg("apply").returncode == 0
    assert project.statuses()["0002"] == "applied"


@pytest.mark.parametrize("psycopg_only", ["", "1"])
def test_lost_connection_during_a_transactional_migration_names_it(
    project: Project, psycopg_only: str
) -> None:
    project.add_table("0001")
    project.add("0002", "slow", "CREATE TABLE tx_a (id int);\nSELECT pg_sleep(30);")
    job = project.spawn("apply", env={"MG_PSYCOPG_ONLY": psycopg_only})
    wait_until(lambda: _sleeping(project) or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    project.terminate_backends()
    done = project.finish(job, timeout=60)

    assert done.returncode == 1, done.stderr
    assert "connection was lost while migration 0002 (slow) ran" in done.stderr, done.stderr
    assert "mg status" in done.stderr and "Traceback" not in done.stderr
    # the server's reason, without the client library's framing around it
    (first,) = [line for line in done.stderr.splitlines() if line.startswith("mg: error:")]
    assert first.endswith("ran: terminating connection due to administrator command"), first
    # the transaction went with the session: nothing of 0002, and the next run applies it
    assert project.statuses() == {"0001": "applied"}
    assert project.tables() == {"t_0001"}
    project.path_of("0002").write_text("-- migrate: up\nCREATE TABLE tx_a (id int);\n")
    assert project.mg("apply").returncode == 0
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


def test_ctrl_c_while_rolling_back_a_no_transaction_migration_marks_it_failed(
    project: Project,
) -> None:
    project.add(
        "0001",
        "slow",
        "CREATE TABLE nt_a (id int);",
        "DROP TABLE nt_a;\nSELECT pg_sleep(30);\nCREATE TABLE nt_c (id int);",
        no_transaction=True,
    )
    assert project.mg("apply").returncode == 0
    job = project.spawn("down")
    wait_until(lambda: _sleeping(project) or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    os.kill(job.pid, signal.SIGINT)
    done = project.finish(job, timeout=60)

    assert done.returncode == 130, done.stderr
    assert "was stopped by Ctrl-C while rolling it back, during statement 2 of 3" in done.stderr
    assert "0001_slow.sql:6" in done.stderr, done.stderr  # the file line of statement 2
    assert "`mg fix 0001 --remove` deletes its row, as a finished rollback would" in done.stderr
    assert "Traceback" not in done.stderr
    assert project.statuses() == {"0001": "failed"}
    assert project.tables() == set()


@pytest.mark.parametrize("psycopg_only", ["", "1"])
def test_lost_connection_while_waiting_for_the_lock_says_so(
    project: Project, psycopg_only: str
) -> None:
    project.add_table("0001")
    with AdvisoryLockHolder(project.database_url):
        job = project.spawn("apply", env={"MG_PSYCOPG_ONLY": psycopg_only})
        wait_until(lambda: "waiting for the migration lock" in job.stderr_so_far(), timeout=60)
        project.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'migretti'"
        )
        done = project.finish(job, timeout=60)

    assert done.returncode == 1, done.stderr
    assert (
        "the database connection was lost while waiting for the migration lock 894321"
        in done.stderr
    ), done.stderr
    assert "nothing was changed" in done.stderr and "Traceback" not in done.stderr
    assert project.statuses() == {}
    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert project.statuses() == {"0001": "applied"}


@pytest.mark.parametrize("psycopg_only", ["", "1"])
def test_lost_connection_after_taking_the_lock_before_the_first_migration_says_so(
    project: Project, psycopg_only: str
) -> None:
    # The pre_apply hook runs under the lock, before anything is written: the session is
    # ended while it runs, so the next query (preparing the history) finds it gone.
    project.configure(
        extra="hooks:\n  pre_apply: 'touch started; while [ ! -e go ]; do sleep 0.05; done'\n"
    )
    project.add_table("0001")
    job = project.spawn("apply", env={"MG_PSYCOPG_ONLY": psycopg_only})
    wait_until(lambda: (project.root / "started").exists() or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    project.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'migretti'"
    )
    (project.root / "go").touch()
    done = project.finish(job, timeout=60)

    assert done.returncode == 1, done.stderr
    assert (
        "the database connection was lost after mg took the migration lock 894321, before any "
        "migration ran: terminating connection due to administrator command; nothing was "
        "changed" in done.stderr
    ), done.stderr
    assert "run the command again" in done.stderr and "Traceback" not in done.stderr
    assert project.statuses() == {}
    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert project.statuses() == {"0001": "applied"}
