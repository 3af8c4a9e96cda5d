"""``mg apply`` and ``mg rollback`` run on libpq itself when only builtins are loaded
(``migretti_plugins/postgres/libpq.py``): users must see what the psycopg path shows, and
the database must end in the same state.

Each scenario runs in two databases, once as shipped and once with ``MG_PSYCOPG_ONLY=1``;
the output is compared with durations taken out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from migretti_core.errors import DatabaseError
from migretti_core.testing import Project, fresh_database, wait_until
from migretti_plugins import postgres
from migretti_plugins.postgres import libpq
from tests.test_status_libpq import imports

PSYCOPG = {libpq.PSYCOPG_ONLY: "1"}

pytestmark = pytest.mark.skipif(libpq.library() is None, reason="libpq cannot be loaded here")

_DURATION = re.compile(r"\(\d+(?:\.\d+)? m?s\)|\d+(?:\.\d+)? m?s\b")


class Pair:
    """The same project twice: ``light`` as shipped, ``heavy`` with psycopg only."""

    def __init__(self, light: Project, heavy: Project) -> None:
        self.light, self.heavy = light, heavy

    def add(self, *args: Any, **kwargs: Any) -> None:
        for project in (self.light, self.heavy):
            project.add(*args, **kwargs)

    def mg(self, *args: str) -> subprocess.CompletedProcess[str]:
        light = self.light.mg(*args)
        heavy = self.heavy.mg(*args, env=PSYCOPG)
        assert light.returncode == heavy.returncode, (args, light.stderr, heavy.stderr)
        assert _DURATION.sub("T", light.stdout) == _DURATION.sub("T", heavy.stdout), args
        assert _DURATION.sub("T", light.stderr) == _DURATION.sub("T", heavy.stderr), args
        self.same_database()
        return light

    def same_database(self) -> None:
        history = (
            "SELECT id, status, error, failed_statement, checksum FROM _migrations ORDER BY id"
        )
        for query in (
            history,
            "SELECT migration_id, action FROM _migrations_log ORDER BY id",
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        ):
            assert self.light.sql(query) == self.heavy.sql(query), query


@pytest.fixture
def pair(tmp_path: Path, pg_url: str) -> Iterator[Pair]:
    with fresh_database(pg_url) as one, fresh_database(pg_url) as two:
        light, heavy = Project(tmp_path / "light", one), Project(tmp_path / "heavy", two)
        try:
            yield Pair(light, heavy)
        finally:
            light.close()
            heavy.close()


def test_apply_and_rollback_read_the_same_on_libpq_and_on_psycopg(pair: Pair) -> None:
    pair.add(
        "0001",
        "notices",
        "CREATE TABLE t1 (id int PRIMARY KEY, note text);\n"
        "DO $$ BEGIN RAISE NOTICE 'hello'; RAISE WARNING 'careful'; END $$;\n"
        "INSERT INTO t1 VALUES (1, 'naïve € 100%');",
        "DROP TABLE t1;",
    )
    pair.add(
        "0002",
        "copy_out",
        "COPY (SELECT g FROM generate_series(1, 5000) g) TO STDOUT;\nCREATE TABLE t2 (id int);",
        "DROP TABLE t2;",
    )
    assert pair.mg("apply").returncode == 0
    assert pair.light.value("SELECT note FROM t1") == "naïve € 100%"

    failing = [
        "CREATE TABLE t3 (id int);\nCOPY t3 FROM STDIN;",
        "CREATE TABLE t3 (id int);\n\nSELECT 1 / 0;",
        "CREATE TABLE t3 (id int);\nSELEC oops;",
        "CREATE TABLE t3 (id int);\nCOMMIT;",
        "CREATE TABLE t3 (id int);\nINSERT INTO t1 VALUES (1, 'again');",
    ]
    for up in failing:
        pair.add("0003", "broken", up, "DROP TABLE t3;")
        done = pair.mg("apply")
        assert done.returncode != 0 and "0003" in done.stderr, done.stderr
        assert "t3" not in pair.light.tables()
        assert pair.mg("status").returncode == 0

    pair.add("0003", "broken", "CREATE TABLE t3 (id int);", "DROP TABLE t3;")
    pair.add(
        "0004",
        "each",
        "\n".join(f"INSERT INTO t1 VALUES ({n}, 'n');" for n in range(10, 16))
        + "\nINSERT INTO t1 VALUES (12, 'dup');\nINSERT INTO t1 VALUES (99, 'after');",
        no_transaction=True,
    )
    done = pair.mg("apply")
    assert done.returncode == 1 and "duplicate key" in done.stderr
    assert pair.light.value("SELECT count(*) FROM t1 WHERE note = 'n'") == 6
    assert pair.light.value("SELECT count(*) FROM t1 WHERE id = 99") == 0

    assert pair.mg("fix", "0004", "--applied").returncode == 0
    assert pair.mg("apply").returncode == 0
    assert pair.mg("rollback", "--allow-missing-down", "--yes").returncode == 0
    assert pair.mg("rollback", "--to", "0001", "--yes").returncode == 0
    assert pair.light.tables() == {"t1"}
    assert pair.mg("apply", "--dry-run").returncode == 0
    pair.add(
        "0004",
        "each",
        "\n".join(f"INSERT INTO t1 VALUES ({n}, 'again');" for n in range(30, 40)),
        no_transaction=True,
    )
    assert pair.mg("apply", "--verbose").returncode == 0
    assert pair.light.value("SELECT count(*) FROM t1 WHERE note = 'again'") == 10


def test_apply_and_rollback_do_not_import_psycopg(tmp_path: Path, database_url: str) -> None:
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    project.add(
        "0002",
        "each",
        "CREATE TABLE a (id int);\nCREATE TABLE b (id int);",
        "DROP TABLE b;\nDROP TABLE a;",
        no_transaction=True,
    )

    def imports_psycopg(env: dict[str, str], *args: str) -> bool:
        return imports(project.root, "psycopg", env, *args)

    assert not imports_psycopg({}, "apply")
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert not imports_psycopg({}, "rollback", "--yes")
    assert imports_psycopg(PSYCOPG, "rollback", "--yes")
    assert imports_psycopg({}, "apply", "--dry-run")  # the lock report needs psycopg
    assert project.statuses() == {}


@pytest.mark.parametrize("no_transaction", [False, True])
@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM", "lost connection"])
def test_a_stopped_statement_reads_the_same_on_libpq_as_on_psycopg(
    pair: Pair, no_transaction: bool, stop: str
) -> None:
    pair.add(
        "0001",
        "slow",
        "CREATE TABLE first (id int);\nSELECT pg_sleep(60);\nCREATE TABLE second (id int);",
        no_transaction=no_transaction,
    )
    results = []
    for project, env in ((pair.light, {}), (pair.heavy, PSYCOPG)):
        job = project.spawn("apply", env=env)
        wait_until(
            lambda project=project: any("pg_sleep" in q for _, _, q in project.other_backends()),
            timeout=60,
        )
        if stop == "lost connection":
            project.terminate_backends()
            done = project.finish(job)
        else:
            done, _ = project.interrupt(job, signal.SIGINT if stop == "Ctrl-C" else signal.SIGTERM)
        project.wait_for_backends_to_end()
        results.append((done.returncode, _DURATION.sub("T", done.stderr)))
    assert results[0] == results[1], results
    assert results[0][0] == (1 if stop == "lost connection" else 130), results[0][1]
    pair.same_database()
    assert ("first" in pair.light.tables()) is no_transaction
    assert "second" not in pair.light.tables()


@pytest.fixture
def writing(database_url: str) -> Iterator[libpq.LibpqConnection]:
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    conn = postgres._connect_libpq(params, None)
    assert isinstance(conn, libpq.LibpqConnection)
    conn.writing = True
    try:
        yield conn
    finally:
        conn.close()


def test_a_writing_session_is_not_handed_to_psycopg_while_it_holds_the_lock(
    writing: libpq.LibpqConnection,
) -> None:
    unsupported = "SELECT ARRAY[1, 2]"  # no converter here: psycopg's turn
    postgres.query(writing, "SELECT pg_advisory_lock(4242)")
    with pytest.raises(DatabaseError, match="migration lock") as caught:
        postgres.query(writing, unsupported)
    assert libpq.PSYCOPG_ONLY in (caught.value.hint or "")
    assert writing.fallback is None
    postgres.query(writing, "SELECT pg_advisory_unlock(4242)")
    with postgres.transaction(writing), pytest.raises(DatabaseError, match="transaction"):
        postgres.query(writing, unsupported)
    assert postgres.query(writing, unsupported) == [([1, 2],)]
    assert writing.fallback is not None


def test_transactions_and_savepoints_on_libpq(writing: libpq.LibpqConnection) -> None:
    postgres.query(writing, "CREATE TEMP TABLE tx (id int)")
    with postgres.transaction(writing):
        postgres.query(writing, "INSERT INTO tx VALUES (1)")
        with pytest.raises(RuntimeError), postgres.transaction(writing):
            postgres.query(writing, "INSERT INTO tx VALUES (2)")
            raise RuntimeError("inner block fails")
        with postgres.transaction(writing, rollback=True):
            postgres.query(writing, "INSERT INTO tx VALUES (3)")
        with postgres.transaction(writing):
            postgres.query(writing, "INSERT INTO tx VALUES (4)")
    assert postgres.query(writing, "SELECT id FROM tx ORDER BY id") == [(1,), (4,)]
    assert writing.transaction_status() == libpq.TRANS_IDLE
    with postgres.transaction(writing, rollback=True):
        postgres.query(writing, "INSERT INTO tx VALUES (5)")
    assert postgres.query(writing, "SELECT count(*) FROM tx") == [(2,)]


# The server sends results when its buffer fills or the query ends: the wide row makes the
# two COMMITs reach the client before the sleep ends.
EACH = (
    "BEGIN; SELECT 1; COMMIT; BEGIN; SELECT 2; COMMIT; SELECT repeat('x', 100000); "
    "BEGIN; SELECT pg_sleep(30); COMMIT;"
)


def test_an_interruption_while_waiting_is_counted_exactly(
    writing: libpq.LibpqConnection,
) -> None:
    commits: list[int] = []
    settled: list[bool] = []

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    # Well after the COMMITs before the sleep, however slow the server is to get to them.
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            writing.execute(
                bytearray(EACH.encode()), lambda: commits.append(1), lambda: settled.append(True)
            )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # cancelled on the server and read to the end: the two COMMITs before the sleep counted
    assert (len(commits), settled) == (2, [True])
    assert writing.transaction_status() == libpq.TRANS_INERROR
    postgres.query(writing, "ROLLBACK")
    assert postgres.query(writing, "SELECT 1") == [(1,)]


def test_an_interruption_while_counting_leaves_the_count_unsettled(
    writing: libpq.LibpqConnection,
) -> None:
    commits: list[int] = []
    settled: list[bool] = []

    def commit() -> None:
        commits.append(1)
        if len(commits) == 2:
            raise KeyboardInterrupt  # as a signal handler would, between two results

    with pytest.raises(KeyboardInterrupt):
        writing.execute(bytearray(EACH.encode()), commit, lambda: settled.append(True))
    # the query was still cancelled and read to its end, but the count is not vouched for
    assert settled == []
    assert writing.transaction_status() in (libpq.TRANS_IDLE, libpq.TRANS_INERROR)
    postgres.query(writing, "ROLLBACK")
    assert postgres.query(writing, "SELECT 1") == [(1,)]


def test_a_signal_while_counting_waits_until_the_result_is_counted(
    writing: libpq.LibpqConnection,
) -> None:
    commits: list[int] = []
    settled: list[bool] = []

    def commit() -> None:
        commits.append(1)
        if len(commits) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the result is counted

    with pytest.raises(KeyboardInterrupt):
        writing.execute(bytearray(EACH.encode()), commit, lambda: settled.append(True))
    # held until the COMMIT was counted, then the query cancelled and read to its end
    assert (len(commits), settled) == (2, [True])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    postgres.query(writing, "ROLLBACK")
    assert postgres.query(writing, "SELECT 1") == [(1,)]


def test_a_database_with_another_datestyle_applies_and_dry_runs_on_both_paths(
    pair: Pair,
) -> None:
    for project in (pair.light, pair.heavy):
        name = project.value("SELECT current_database()")
        project.sql(f"ALTER DATABASE \"{name}\" SET DateStyle TO 'SQL, DMY'")
    pair.add("0001", "a", "CREATE TABLE a (d date);\nINSERT INTO a VALUES ('01/02/2026');")
    pair.add("0002", "b", "CREATE TABLE b (id bigint);", "DROP TABLE b;")
    assert pair.mg("up").returncode == 0
    # psycopg reads the applied_at of 0001 from here on: it parses only the ISO style
    for args in (("apply", "--dry-run"), ("status",), ("apply",), ("down",)):
        done = pair.mg(*args)
        assert done.returncode == 0, (args, done.stderr)
    # (`mg list` shows applied_at, which differs between the two databases)
    assert pair.light.mg("list").returncode == pair.heavy.mg("list", env=PSYCOPG).returncode == 0
    dry = pair.light.mg("apply", "--dry-run")  # dry runs connect through psycopg
    assert dry.returncode == 0 and "ok: 0002 b" in dry.stdout, dry.stderr
    # the input order the database chose is kept: 1 February
    assert pair.light.value("SELECT to_char(d, 'YYYY-MM-DD') FROM a") == "2026-02-01"


def test_a_migration_that_sets_client_encoding_is_followed_on_both_paths(pair: Pair) -> None:
    pair.add("0001", "latin1", "SET client_encoding = 'LATIN1';\nCREATE TABLE d (t text);")
    pair.add("0002", "accents", "INSERT INTO d VALUES ('é');")
    pair.add(
        "0003",
        "each",
        "INSERT INTO d VALUES ('ü');\nINSERT INTO d VALUES ('ö');",
        None,
        no_transaction=True,
    )
    pair.add("0004", "fails", "SELECT 'ä'::int;")
    done = pair.mg("apply")
    assert done.returncode == 1 and 'integer: "ä"' in done.stderr, done.stderr
    # sent in the session's encoding, as psycopg sends it: the server stores the characters
    assert sorted(r[0] for r in pair.light.sql("SELECT t FROM d")) == ["é", "ö", "ü"]
    for project in (pair.light, pair.heavy):
        project.path_of("0004").unlink()
    pair.add("0004", "latin1_again", "SET client_encoding = 'LATIN1';")
    pair.add("0005", "euro", "INSERT INTO d VALUES ('€');")  # not in LATIN1
    done = pair.mg("apply")
    assert done.returncode == 1 and "cannot be sent in client encoding" in done.stderr
    assert "0005" not in pair.light.statuses() and pair.light.statuses()["0004"] == "applied"


def test_a_client_encoding_python_has_no_codec_for_sends_ascii_and_refuses_the_rest(
    pair: Pair,
) -> None:
    pair.add("0001", "euc_tw", "SET client_encoding = 'EUC_TW';\nCREATE TABLE d (t text);")
    pair.add("0002", "ascii", "INSERT INTO d VALUES ('plain');")
    pair.add("0003", "accent", "INSERT INTO d VALUES ('é');")
    done = pair.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "cannot be sent in client encoding EUC_TW" in done.stderr
    assert "0003_accent.sql:2:" in done.stderr
    assert "Traceback" not in done.stderr and "plugin" not in done.stderr
    for project in (pair.light, pair.heavy):
        assert project.statuses() == {"0001": "applied", "0002": "applied"}
        assert project.sql("SELECT t FROM d") == [("plain",)]
    # an error the server reports in that session is read, not a crash
    pair.add("0004", "fails", "SET client_encoding = 'EUC_TW';\nSELECT 'x'::int;")
    for project in (pair.light, pair.heavy):
        project.path_of("0003").unlink()
    done = pair.mg("apply")
    assert done.returncode == 1 and 'integer: "x"' in done.stderr, done.stderr
