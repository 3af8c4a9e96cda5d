"""Several ``mg`` processes against one database at once: the advisory lock."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migretti_core.testing import AdvisoryLockHolder, Project, fresh_database, wait_until

WAITING = "waiting for the migration lock"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def test_sixteen_applies_started_together_apply_each_migration_once(project: Project) -> None:
    project.add("0001", "runs", "CREATE TABLE runs (id text);\nINSERT INTO runs VALUES ('0001');")
    for n in range(2, 51):
        ident = f"{n:04d}"
        project.add(
            ident,
            f"step_{n}",
            f"CREATE TABLE t_{ident} (id int);\nINSERT INTO runs VALUES ('{ident}');",
        )
    jobs = [project.spawn("apply") for _ in range(16)]
    results = [project.finish(job, timeout=180) for job in jobs]

    for done in results:
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    expected = [f"{n:04d}" for n in range(1, 51)]
    assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == expected
    assert project.statuses() == dict.fromkeys(expected, "applied")
    ups = project.sql(
        "SELECT migration_id FROM _migrations_log WHERE action = 'UP' ORDER BY migration_id"
    )
    assert [r[0] for r in ups] == expected
    assert project.value("SELECT count(*) FROM _migrations_log") == 50
    applied_lines = [
        line for done in results for line in done.stdout.splitlines() if line.startswith("applied")
    ]
    assert len(applied_lines) == 50


def test_lock_timeout_exits_4_after_the_timeout_naming_the_holder(project: Project) -> None:
    project.add_table("0001")
    with AdvisoryLockHolder(project.database_url) as holder:
        job = project.spawn("apply", "--lock-timeout", "2s")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        waiting_since = time.monotonic()
        done = project.finish(job, timeout=60)
        waited = time.monotonic() - waiting_since
    assert done.returncode == 4, done.stderr
    assert f"pid {holder.pid}" in done.stderr
    assert holder.application_name in done.stderr
    assert "Traceback" not in done.stderr
    assert 1.0 <= waited <= 5.0, waited
    assert project.all_tables() == set()


def test_lock_timeout_from_the_config_file(project: Project) -> None:
    project.configure(extra="lock_timeout: 1s\n")
    project.add_table("0001")
    with AdvisoryLockHolder(project.database_url) as holder:
        done = project.mg("up", timeout=60)
    assert done.returncode == 4, done.stderr
    assert f"pid {holder.pid}" in done.stderr
    assert project.all_tables() == set()


def test_apply_waits_for_the_lock_and_then_runs(project: Project) -> None:
    project.add_table("0001")
    holder = AdvisoryLockHolder(project.database_url)
    try:
        job = project.spawn("apply")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        assert f"pid {holder.pid}" in job.stderr_so_far()
        assert project.all_tables() == set()
    finally:
        holder.release()
    done = project.finish(job, timeout=60)
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"t_0001"}


def test_second_apply_waits_while_the_first_creates_an_index_concurrently(
    project: Project,
) -> None:
    project.add(
        "0001",
        "big",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g;",
    )
    project.add(
        "0002",
        "index_big",
        "CREATE INDEX CONCURRENTLY big_v ON big (v);",
        "DROP INDEX CONCURRENTLY big_v;",
        no_transaction=True,
    )
    project.add_table("0003")
    assert project.mg("apply", "--to", "0001").returncode == 0

    # An open writer on the table keeps CREATE INDEX CONCURRENTLY waiting until we commit.
    writer = psycopg.connect(project.database_url)
    try:
        writer.execute("INSERT INTO big VALUES (0, 'x')")
        first = project.spawn("apply")

        def building() -> bool:
            return any(
                "CREATE INDEX CONCURRENTLY" in query for _, _, query in project.other_backends()
            )

        wait_until(lambda: building() or not first.running(), timeout=60)
        assert first.running(), first.stderr_so_far()
        second = project.spawn("apply")
        wait_until(lambda: WAITING in second.stderr_so_far() or not second.running(), timeout=60)
        assert second.running(), second.stderr_so_far()
        time.sleep(0.5)
        assert first.running() and second.running()
        writer.commit()
    finally:
        writer.close()

    first_done = project.finish(first, timeout=60)
    second_done = project.finish(second, timeout=60)
    assert first_done.returncode == 0, first_done.stderr
    assert second_done.returncode == 0, second_done.stderr
    assert project.value("SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_v'::regclass")
    assert project.statuses() == {"0001": "applied", "0002": "applied", "0003": "applied"}
    assert project.log() == [("0001", "UP"), ("0002", "UP"), ("0003", "UP")]
    assert "0002" in first_done.stdout and "0003" in first_done.stdout
    assert second_done.stdout.strip() == ""


# --- a lock lost in the middle of a run ---------------------------------------------------

UNLOCK_ALL = "SELECT pg_advisory_unlock_all();"


# A migration statement that runs until the test opens its gate: the test decides when the
# migration goes on, however slow the machine is to start the other runs.
def gate(n: int = 1) -> str:
    return (
        "DO $$ BEGIN WHILE NOT EXISTS (SELECT FROM gates WHERE n = "
        f"{n}) LOOP PERFORM pg_sleep(0.05); END LOOP; END $$;"
    )


def make_gates(project: Project) -> None:
    project.sql("CREATE TABLE gates (n int)")


def at_gate(project: Project, n: int = 1) -> bool:
    return any(
        state == "active" and f"FROM gates WHERE n = {n})" in query
        for _, state, query in project.other_backends()
    )


def open_gate(project: Project, n: int = 1) -> None:
    project.sql("INSERT INTO gates VALUES (%s)", (n,))


def test_four_applies_with_a_migration_releasing_the_lock_run_each_migration_once(
    project: Project,
) -> None:
    project.add("0001", "unlock", UNLOCK_ALL)
    project.add("0002", "runs", "CREATE TABLE runs (id text);")
    for n in range(3, 31):
        project.add(f"{n:04d}", f"step_{n}", f"INSERT INTO runs VALUES ('{n:04d}');")
    jobs = [project.spawn("apply") for _ in range(4)]
    results = [project.finish(job, timeout=180) for job in jobs]

    for done in results:
        assert done.returncode in (0, 1, 3), done.stderr
        assert "Traceback" not in done.stderr
        if done.returncode == 1:
            assert "lock" in done.stderr and "was lost before migration" in done.stderr
        if done.returncode == 3:
            assert "already recorded as applied" in done.stderr
    # Whatever stopped early, finishing the run applies the rest, and each migration's
    # effect exists exactly once.
    final = project.mg("apply")
    assert final.returncode == 0, final.stderr
    expected = [f"{n:04d}" for n in range(3, 31)]
    assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == expected
    ids = [f"{n:04d}" for n in range(1, 31)]
    assert project.statuses() == dict.fromkeys(ids, "applied")
    ups = [m for m, action in project.log() if action == "UP"]
    assert sorted(ups) == ids


def test_a_migration_releasing_the_lock_keeps_others_out_until_it_commits(
    project: Project,
) -> None:
    # 0001 releases the run's lock and then takes its time. The lock check at the start of
    # its transaction holds the key for that transaction too, so a second run waits instead
    # of planning 0001 again; the first run then finds its lock gone before 0002 and stops.
    project.sql("CREATE TABLE once (n int)")
    make_gates(project)
    project.add("0001", "unlock", f"INSERT INTO once VALUES (1);\n{UNLOCK_ALL}\n{gate()}")
    project.add("0002", "insert", "INSERT INTO once VALUES (2);")
    first = project.spawn("apply")
    wait_until(lambda: at_gate(project) or not first.running(), timeout=60)
    assert first.running(), first.stderr_so_far()
    second = project.spawn("apply")
    wait_until(lambda: WAITING in second.stderr_so_far() or not second.running(), timeout=60)
    open_gate(project)
    first_done = project.finish(first, timeout=60)
    second_done = project.finish(second, timeout=60)

    # The first run committed 0001, then found its lock gone before 0002: exit 1, named.
    assert first_done.returncode == 1, first_done.stderr
    assert "was lost before migration 0002 (insert)" in first_done.stderr
    assert "0001" in first_done.stdout
    # The second waited for 0001's transaction, then applied only 0002.
    assert second_done.returncode == 0, second_done.stderr
    assert "waiting for the migration lock" in second_done.stderr
    assert "0002" in second_done.stdout and "0001" not in second_done.stdout
    assert "Traceback" not in first_done.stderr + second_done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert project.log() == [("0001", "UP"), ("0002", "UP")]
    assert sorted(project.sql("SELECT n FROM once")) == [(1,), (2,)]


def test_a_migration_that_writes_its_own_applied_row_is_refused_with_exit_3(
    project: Project,
) -> None:
    # However the row got there first, recording the migration as applied refuses it: the
    # migration's transaction, its effect included, is rolled back and mg says why.
    project.sql("CREATE TABLE once (n int)")
    project.add(
        "0001",
        "sneaky",
        "INSERT INTO once VALUES (1);\n"
        "INSERT INTO _migrations (id, name, checksum, status, apply_seq)\n"
        "VALUES ('0001', 'sneaky', 'x', 'applied', 1);",
    )
    done = project.mg("apply")
    assert done.returncode == 3, done.stderr
    assert "migration 0001 (sneaky) is already recorded as applied" in done.stderr
    assert "Traceback" not in done.stderr
    assert project.value("SELECT count(*) FROM once") == 0
    assert project.statuses() == {}


def test_a_no_transaction_migration_whose_row_became_applied_meanwhile_exits_3(
    project: Project,
) -> None:
    # Its statements ran; recording it finds the row `applied` (not the `running` this run
    # wrote): the refusal is named as such, never as mg's own history SQL failing.
    project.sql("CREATE TABLE once (n int)")
    project.add(
        "0001",
        "sneaky",
        "INSERT INTO once VALUES (1);\n"
        "UPDATE _migrations SET status = 'applied' WHERE id = '0001';",
        no_transaction=True,
    )
    done = project.mg("apply")
    assert done.returncode == 3, done.stderr
    assert "migration 0001 (sneaky) is already recorded as applied" in done.stderr
    assert "integer" not in done.stderr and "migretti: " not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert project.value("SELECT count(*) FROM once") == 1
    assert project.log() == []


def test_a_plan_emptied_while_waiting_for_the_lock_is_reported_as_the_command_words_it(
    project: Project,
) -> None:
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    ((ident, name, checksum),) = project.sql("SELECT id, name, checksum FROM _migrations")
    # While each command waits for the lock, another run does its work.
    elsewhere = (
        (["rollback"], "DELETE FROM _migrations", "nothing to roll back: no migration is applied"),
        (
            ["apply"],
            "INSERT INTO _migrations (id, name, checksum, status) "
            f"VALUES ('{ident}', '{name}', '{checksum}', 'applied')",
            "nothing to apply: already up to date",
        ),
    )
    for args, meanwhile, expected in elsewhere:
        holder = AdvisoryLockHolder(project.database_url)
        try:
            job = project.spawn(*args)
            wait_until(lambda j=job: WAITING in j.stderr_so_far() or not j.running(), timeout=60)
            assert job.running(), job.stderr_so_far()
            project.sql(meanwhile)
        finally:
            holder.release()
        done = project.finish(job, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == expected, done.stderr


@pytest.mark.parametrize("lock_id", ["-9223372036854775808", "9223372036854775807", "-7"])
def test_any_bigint_lock_id_is_checked_and_shared_by_concurrent_applies(
    project: Project, lock_id: str
) -> None:
    # The whole bigint range is a valid lock_id, the smallest included: every run checks the
    # lock before each migration with that very key.
    project.configure(extra=f"lock_id: {lock_id}\n")
    project.sql("CREATE TABLE runs (id text)")
    for n in range(1, 6):
        project.add(f"{n:04d}", f"step_{n}", f"INSERT INTO runs VALUES ('{n:04d}');")
    jobs = [project.spawn("apply") for _ in range(3)]
    results = [project.finish(job, timeout=120) for job in jobs]

    for done in results:
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    expected = [f"{n:04d}" for n in range(1, 6)]
    assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == expected
    assert project.sql("SELECT id, apply_seq FROM _migrations ORDER BY apply_seq") == [
        (ident, n) for n, ident in enumerate(expected, 1)
    ]
    assert project.value("SELECT pg_try_advisory_lock(%s::bigint)", (int(lock_id),)) is True


def test_files_replaced_while_waiting_for_the_lock_are_not_applied_from_memory(
    project: Project, pg_url: str
) -> None:
    # An apply reads the migration files, then waits for the lock. Meanwhile `mg squash` (on
    # another database, where they are all pending) replaces three of them with one file.
    # Once it holds the lock the apply must not run the originals it read: the next apply
    # would run them again, as the squashed file.
    project.sql("CREATE TABLE runs (id text)")
    for n in range(1, 4):
        project.add(f"{n:04d}", f"step_{n}", f"INSERT INTO runs VALUES ('{n:04d}');")
    with fresh_database(pg_url) as other, AdvisoryLockHolder(project.database_url) as holder:
        job = project.spawn("apply")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        squashed = project.mg("squash", "merged", env={"MG_DATABASE_URL": other})
        assert squashed.returncode == 0, squashed.stderr
        holder.release()
        done = project.finish(job, timeout=60)

    assert done.returncode == 2, done.stderr
    assert "changed while waiting for the migration lock" in done.stderr, done.stderr
    assert "migrations/0001_step_1.sql (and 2 more) changed" in done.stderr, done.stderr
    assert "they are gone" in done.stderr and "Traceback" not in done.stderr
    assert project.statuses() == {}
    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == ["0001", "0002", "0003"]


def test_fix_remove_of_a_running_row_that_became_applied_while_waiting_changes_nothing(
    project: Project,
) -> None:
    # `mg status` shows 0001 `running` while another run applies it (a no-transaction
    # migration). `mg fix 0001 --remove` waits for that run's lock; by then 0001 is applied:
    # removing its row would have the next apply run it a second time.
    project.sql("CREATE TABLE runs (id text)")
    make_gates(project)
    project.add("0001", "slow", f"INSERT INTO runs VALUES ('0001');\n{gate()}", no_transaction=True)
    apply = project.spawn("apply")
    wait_until(lambda: project.statuses().get("0001") == "running" or not apply.running())
    assert apply.running(), apply.stderr_so_far()
    fix = project.spawn("fix", "0001", "--remove")
    wait_until(lambda: WAITING in fix.stderr_so_far() or not fix.running(), timeout=60)
    open_gate(project)
    fixed = project.finish(fix, timeout=60)
    applied = project.finish(apply, timeout=60)

    assert applied.returncode == 0, applied.stderr
    assert fixed.returncode == 3, fixed.stderr
    assert WAITING in fixed.stderr
    assert "0001 (slow) was `running` when mg fix started" in fixed.stderr, fixed.stderr
    assert "is now `applied`" in fixed.stderr and "nothing was changed" in fixed.stderr
    assert "Traceback" not in fixed.stderr
    assert project.statuses() == {"0001": "applied"}
    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert project.sql("SELECT id FROM runs") == [("0001",)]


@pytest.mark.parametrize("change", ["edited", "line endings"])
def test_a_file_edited_while_waiting_for_the_lock_is_not_applied_as_first_read(
    project: Project, change: str
) -> None:
    # An apply reads 0002, then waits for the lock; meanwhile its file is edited. Applied
    # from the text read first, the row would record a checksum the file no longer has and
    # the database would hold what no file says. A change of line endings alone leaves the
    # text (and its checksum) as it was: that one is applied.
    project.sql("CREATE TABLE runs (id text)")
    project.add("0001", "first", "INSERT INTO runs VALUES ('0001');")
    path = project.add("0002", "second", "INSERT INTO runs VALUES ('first text');")
    time.sleep(1.1)  # files written a second before mg reads them are compared by content
    with AdvisoryLockHolder(project.database_url) as holder:
        job = project.spawn("apply")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        if change == "edited":
            project.add("0002", "second", "INSERT INTO runs VALUES ('second text');")
        else:
            path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
        holder.release()
        done = project.finish(job, timeout=60)

    assert "Traceback" not in done.stderr
    if change == "line endings":
        assert done.returncode == 0, done.stderr
        assert sorted(project.sql("SELECT id FROM runs")) == [("0001",), ("first text",)]
        return
    assert done.returncode == 2, done.stderr
    assert (
        "migrations/0002_second.sql changed while waiting for the migration lock: it was "
        "edited after mg read it; nothing was applied: run the command again" in done.stderr
    ), done.stderr
    assert project.statuses() == {}
    assert project.sql("SELECT id FROM runs") == []
    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert sorted(project.sql("SELECT id FROM runs")) == [("0001",), ("second text",)]
    assert project.mg("verify").returncode == 0


def test_an_apply_waiting_while_a_migration_runs_discard_all_waits_for_it_and_goes_on(
    project: Project,
) -> None:
    # Run A's no-transaction migration 0001 runs DISCARD ALL, which releases A's session lock
    # while 0001 still has statements to run. Run B, waiting for the lock, takes it and finds
    # 0001 `running`: not an interrupted run (A's session is still connected), so B waits
    # for it, then finds it applied and applies 0002. A stops before 0002, its lock lost.
    project.sql("CREATE TABLE runs (id text)")
    make_gates(project)
    project.add(
        "0001",
        "reset",
        f"{gate(1)}\nDISCARD ALL;\n{gate(2)}\nINSERT INTO runs VALUES ('0001');",
        no_transaction=True,
    )
    project.add("0002", "after", "INSERT INTO runs VALUES ('0002');")
    first = project.spawn("apply")
    wait_until(lambda: at_gate(project, 1) or not first.running())
    assert first.running(), first.stderr_so_far()
    second = project.spawn("apply")
    wait_until(lambda: WAITING in second.stderr_so_far() or not second.running(), timeout=60)
    assert first.running() and second.running(), second.stderr_so_far()
    open_gate(project, 1)  # DISCARD ALL: the second run takes the lock and finds 0001 at work
    wait_until(
        lambda: "waiting for it to finish" in second.stderr_so_far() or not second.running(),
        timeout=60,
    )
    open_gate(project, 2)
    one = project.finish(first, timeout=60)
    two = project.finish(second, timeout=60)

    assert two.returncode == 0, two.stderr
    assert "migration 0001 (reset) is `running` in database session" in two.stderr, two.stderr
    assert "still connected" in two.stderr and "waiting for it to finish" in two.stderr
    assert "applied 0002 after" in two.stdout, two.stdout
    assert one.returncode == 1, one.stderr
    assert "lost before migration 0002 (after) started" in one.stderr, one.stderr
    assert "Traceback" not in one.stderr + two.stderr
    assert sorted(project.sql("SELECT id FROM runs")) == [("0001",), ("0002",)]
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert project.value("SELECT count(session_id) FROM _migrations") == 0


def test_fix_of_a_running_row_whose_session_is_still_at_work_changes_nothing(
    project: Project,
) -> None:
    # 0001 ran DISCARD ALL: its run no longer holds the lock, and mg fix takes it at once.
    # The row is `running` because the migration is still at work, not because it stopped:
    # neither --remove nor --applied is true of it yet.
    project.sql("CREATE TABLE runs (id text)")
    make_gates(project)
    project.add(
        "0001",
        "reset",
        f"DISCARD ALL;\n{gate()}\nINSERT INTO runs VALUES ('0001');",
        no_transaction=True,
    )
    apply = project.spawn("apply")

    def lock_released() -> bool:
        held = project.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        return project.statuses().get("0001") == "running" and held == 0

    wait_until(lambda: lock_released() or not apply.running(), timeout=60)
    assert apply.running(), apply.stderr_so_far()
    fixed = project.mg("fix", "0001", "--remove", timeout=60)
    assert apply.running(), "the fix should have been refused before the migration ended"
    open_gate(project)
    applied = project.finish(apply, timeout=60)

    assert fixed.returncode == 3, fixed.stderr
    assert "migration 0001 (reset) is `running` in database session" in fixed.stderr
    assert "still connected" in fixed.stderr and "nothing was changed" in fixed.stderr
    assert "Traceback" not in fixed.stderr
    assert applied.returncode == 0, applied.stderr
    assert project.statuses() == {"0001": "applied"}
    assert project.sql("SELECT action FROM _migrations_log") == [("UP",)]


def test_status_tells_a_migration_at_work_from_an_interrupted_one(project: Project) -> None:
    # While its run is at work, a `running` row is not something to fix; once the run and
    # its session are gone, it is.
    project.add("0001", "slow", "SELECT pg_sleep(30);\nSELECT 1;", no_transaction=True)
    apply = project.spawn("apply")
    try:
        wait_until(lambda: project.statuses().get("0001") == "running" or not apply.running())
        assert apply.running(), apply.stderr_so_far()
        at_work = project.mg("status")
    finally:
        apply.kill()
    project.terminate_backends()
    stopped = project.mg("status")

    problem = next(line for line in at_work.stdout.splitlines() if "0001" in line)
    assert "is being run by database session" in problem, at_work.stdout
    assert "still connected — wait for it to finish" in problem
    assert "mg fix" not in problem
    problem = next(line for line in stopped.stdout.splitlines() if "0001" in line)
    assert "was interrupted or is still running" in problem, stopped.stdout
    assert "mg fix 0001" in problem


def test_a_dry_run_tells_a_migration_at_work_from_an_interrupted_one(project: Project) -> None:
    # A dry run takes no lock: while another run's no-transaction migration is at work, its
    # `running` row is said to be so (wait for it), not interrupted with `mg fix` advice.
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    project.add("0002", "slow", "SELECT pg_sleep(30);\nSELECT 1;", no_transaction=True)
    apply = project.spawn("apply")
    try:
        wait_until(lambda: project.statuses().get("0002") == "running" or not apply.running())
        assert apply.running(), apply.stderr_so_far()
        at_work = [project.mg(*args, "--dry-run") for args in (("apply",), ("rollback",))]
        assert apply.running(), "the dry runs should have ended before the migration"
    finally:
        apply.kill()
    project.terminate_backends()
    stopped = [project.mg(*args, "--dry-run") for args in (("apply",), ("rollback",))]

    for done in at_work:
        assert done.returncode == 3, done.stderr
        assert "migration 0002 (slow) is running right now in database session" in done.stderr
        assert "still connected: another run is applying it (it was not interrupted)" in (
            done.stderr
        )
        assert "interrupted?" not in done.stderr and "mg fix" not in done.stderr
        assert "hint: wait for the other run to finish" in done.stderr
        assert "Traceback" not in done.stderr
    for done in stopped:
        assert done.returncode == 3, done.stderr
        assert "migration 0002 (slow) is still marked running (interrupted?)" in done.stderr
        assert "mg fix 0002 --applied" in done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "running"}


def _three_applied(project: Project) -> None:
    for ident, table in (("0001", "a"), ("0002", "b"), ("0003", "c")):
        project.add_table(ident, table)
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr


def test_two_downs_started_together_roll_back_the_last_migration_once(project: Project) -> None:
    """Like N applies, N rollbacks of the same head undo it once: the second one, finding
    what it planned already done, says so instead of rolling back the migration below."""
    _three_applied(project)
    holder = AdvisoryLockHolder(project.database_url)
    try:
        jobs = [project.spawn("down") for _ in range(2)]
        for job in jobs:
            wait_until(lambda j=job: WAITING in j.stderr_so_far() or not j.running(), timeout=60)
            assert job.running(), job.stderr_so_far()
    finally:
        holder.release()
    results = [project.finish(job, timeout=60) for job in jobs]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert project.tables() == {"a", "b"}
    assert set(project.statuses()) == {"0001", "0002"}
    said = [r.stderr.strip().splitlines()[-1] for r in results]
    assert (
        "nothing to roll back: 0003 (create_c) was rolled back by another run while this one "
        "waited for the migration lock" in said
    ), said


def test_a_rollback_whose_plan_was_partly_done_meanwhile_rolls_back_only_the_rest(
    project: Project,
) -> None:
    _three_applied(project)
    with AdvisoryLockHolder(project.database_url):
        job = project.spawn("rollback", "2")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        project.sql("DROP TABLE c")  # another run rolled back 0003
        project.sql("DELETE FROM _migrations WHERE id = '0003'")
    done = project.finish(job, timeout=60)
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"a"}
    assert set(project.statuses()) == {"0001"}
    assert "0003 (create_c) was rolled back by another run" in done.stderr, done.stderr


def test_a_rollback_finding_a_newer_migration_applied_meanwhile_changes_nothing(
    project: Project,
) -> None:
    """A migration applied while `mg down` waited is not the one its user saw as the head:
    it is not rolled back in its place."""
    _three_applied(project)
    path = project.add_table("0004", "d")
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    with AdvisoryLockHolder(project.database_url):
        job = project.spawn("down")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        # another run applied 0004
        project.sql("CREATE TABLE d (id int)")
        project.sql(
            "INSERT INTO _migrations (id, name, checksum, status, apply_seq) "
            "VALUES ('0004', 'create_d', %s, 'applied', 4)",
            (checksum,),
        )
    done = project.finish(job, timeout=60)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "0004 (create_d) was applied while this one waited" in done.stderr, done.stderr
    assert project.tables() == {"a", "b", "c", "d"}
    assert set(project.statuses()) == {"0001", "0002", "0003", "0004"}


def test_two_ups_started_together_apply_the_next_migration_once(project: Project) -> None:
    """`mg up` applies the migration it planned: a second one started at the same time finds
    it applied and says so, instead of applying the one after it, which nobody asked for."""
    for ident, table in (("0001", "a"), ("0002", "b"), ("0003", "c")):
        project.add_table(ident, table)
    holder = AdvisoryLockHolder(project.database_url)
    try:
        jobs = [project.spawn("up") for _ in range(2)]
        for job in jobs:
            wait_until(lambda j=job: WAITING in j.stderr_so_far() or not j.running(), timeout=60)
            assert job.running(), job.stderr_so_far()
    finally:
        holder.release()
    results = [project.finish(job, timeout=60) for job in jobs]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert project.tables() == {"a"}
    assert set(project.statuses()) == {"0001"}
    said = [r.stderr.strip().splitlines()[-1] for r in results]
    assert (
        "nothing to apply: 0001 (create_a) was applied by another run while this one waited "
        "for the migration lock" in said
    ), said


def test_an_up_finding_an_earlier_migration_rolled_back_meanwhile_changes_nothing(
    project: Project,
) -> None:
    for ident, table in (("0001", "a"), ("0002", "b")):
        project.add_table(ident, table)
    assert project.mg("up").returncode == 0
    with AdvisoryLockHolder(project.database_url):
        job = project.spawn("up")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        project.sql("DROP TABLE a")  # another run rolled back 0001
        project.sql("DELETE FROM _migrations WHERE id = '0001'")
    done = project.finish(job, timeout=60)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "0001 (create_a) was rolled back while this one waited" in done.stderr, done.stderr
    assert project.tables() == set()
    assert project.statuses() == {}


def test_a_rollback_whose_migration_failed_elsewhere_meanwhile_is_blocked(
    project: Project,
) -> None:
    """Not rolled back by another run but left `failed` by it: the rollback that waited says
    so (exit 3), and does not call it done."""
    _three_applied(project)
    with AdvisoryLockHolder(project.database_url):
        job = project.spawn("down")
        wait_until(lambda: WAITING in job.stderr_so_far() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        project.sql("UPDATE _migrations SET status = 'failed' WHERE id = '0003'")
    done = project.finish(job, timeout=60)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "migration 0003 (create_c) failed" in done.stderr, done.stderr
    assert "rolled back by another run" not in done.stderr
    assert project.tables() == {"a", "b", "c"}
