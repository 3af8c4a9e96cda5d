"""The builtin PostgreSQL plugins against a real server: connection, execution, lock,
history tables and the smart dry run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migretti_core import hookspecs
from migretti_core.errors import (
    EXIT_LOCK_TIMEOUT,
    ConfigError,
    DatabaseError,
    LockTimeout,
    SqlError,
)
from migretti_core.hooks import Hooks
from migretti_core.plugins import MgPluginManager
from migretti_core.running import sql_failure
from migretti_core.types import (
    Config,
    HistoryChange,
    LockHolder,
    Migration,
    Options,
    Plan,
    Session,
)
from migretti_plugins import dryrun, history, lock, postgres, split
from migretti_plugins.lock import key_parts

REPO_ROOT = Path(postgres.__file__).resolve().parents[1]


class LockWaits:
    """Records mg_on_lock_wait calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[LockHolder, float]] = []

    def mg_on_lock_wait(self, holder: LockHolder, waited: float) -> None:
        self.calls.append((holder, waited))


def make_session(
    database: Mapping[str, Any],
    root: Path,
    *,
    lock_id: int = 894321,
    extra: tuple[object, ...] = (),
) -> Session:
    pm = MgPluginManager("migretti")
    pm.add_hookspecs(hookspecs)
    for name, module in (
        ("split", split),
        ("postgres", postgres),
        ("lock", lock),
        ("history", history),
        ("dryrun", dryrun),
    ):
        pm.register(module, name=name)
    for plugin in extra:
        pm.register(plugin)
    config = Config(
        path=None,
        root=root,
        env=None,
        settings={},
        database=dict(database),
        migrations_dir=root / "migrations",
        lock_id=lock_id,
    )
    return Session(config, Options(), Hooks(pm))


@pytest.fixture
def session(database_url: str, tmp_path: Path) -> Session:
    return make_session({"url": database_url}, tmp_path)


@pytest.fixture
def conn(session: Session) -> Iterator[Any]:
    connection = session.hooks.connect(session)
    try:
        yield connection
    finally:
        session.hooks.disconnect(session, connection)


def one(session: Session, conn: Any, sql: str, *params: Any) -> Any:
    rows = session.hooks.query(session, conn, sql, params)
    assert len(rows) == 1
    return rows[0][0]


def migration(tmp_path: Path, ident: str, up: str, *, transactional: bool = True) -> Migration:
    header = f"-- migration: {ident}\n" + (
        "-- migrate: no-transaction\n" if not transactional else ""
    )
    text = f"{header}\n-- migrate: up\n{up}"
    up_line = text[: text.index("-- migrate: up")].count("\n") + 2
    return Migration(
        id=ident,
        name=f"step_{ident.lower()}",
        path=tmp_path / f"{ident}_step_{ident.lower()}.sql",
        text=text,
        checksum=hashlib.sha256(text.encode()).hexdigest(),
        up_sql=up,
        up_line=up_line,
        transactional=transactional,
    )


def server_password(database_url: str) -> str:
    """The URL's own password, else one a trust-auth server ignores."""
    return str(psycopg.conninfo.conninfo_to_dict(database_url).get("password") or "hunter2-secret")


# --- connection ------------------------------------------------------------------------------


def test_params_come_from_the_url_with_other_keys_winning(tmp_path: Path) -> None:
    session = make_session(
        {"url": "postgresql://alice:s3cret@db.example:6543/app?sslmode=require", "port": "7"},
        tmp_path,
    )
    params = session.hooks.connection_params(session)
    assert params == {
        "user": "alice",
        "password": "s3cret",
        "host": "db.example",
        "port": "7",
        "dbname": "app",
        "sslmode": "require",
    }
    target = session.hooks.describe_target(session)
    assert target.describe() == "alice@db.example:7/app"
    assert "s3cret" not in repr(target)


def test_params_from_keys_drop_an_empty_password(tmp_path: Path) -> None:
    session = make_session(
        {"host": "h", "port": "5432", "user": "u", "dbname": "0123", "password": ""}, tmp_path
    )
    assert session.hooks.connection_params(session) == {
        "host": "h",
        "port": "5432",
        "user": "u",
        "dbname": "0123",
    }


def test_embedded_targets_are_left_to_the_embedded_plugin(tmp_path: Path) -> None:
    for database in ({"embedded": True}, {"url": "embedded:"}):
        session = make_session(database, tmp_path)
        assert session.hooks.pm.hook.mg_connection_params(session=session) is None


def test_unknown_parameter_is_a_config_error_naming_it(tmp_path: Path) -> None:
    session = make_session({"host": "h", "database": "app"}, tmp_path)
    with pytest.raises(ConfigError, match=r"database\.database: .*did you mean dbname"):
        session.hooks.connection_params(session)


def test_invalid_url_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    session = make_session({"url": "postgresql://u:pw-secret@h/db?nosuchparam=1"}, tmp_path)
    with pytest.raises(ConfigError) as info:
        session.hooks.connection_params(session)
    assert "pw-secret" not in str(info.value)


def test_unreachable_server_error_is_one_line_without_password(tmp_path: Path) -> None:
    session = make_session({"url": "postgresql://alice:Tr0ub4dor-pw@127.0.0.1:1/appdb"}, tmp_path)
    with pytest.raises(DatabaseError) as info:
        session.hooks.connect(session)
    message = str(info.value)
    assert message.startswith("cannot connect to alice@127.0.0.1:1/appdb: ")
    assert "refused" in message.lower()
    assert "\n" not in message
    assert "Tr0ub4dor" not in message + str(info.value.hint)


def test_missing_database_error_names_target_and_reason(database_url: str, tmp_path: Path) -> None:
    password = server_password(database_url)
    session = make_session(
        {"url": database_url, "dbname": "mg_no_such_db", "password": password}, tmp_path
    )
    target = session.hooks.describe_target(session).describe()
    with pytest.raises(DatabaseError) as info:
        session.hooks.connect(session)
    message = str(info.value)
    assert message == f'cannot connect to {target}: database "mg_no_such_db" does not exist'
    assert password not in message + str(info.value.hint)


def test_connection_is_autocommit_and_named_migretti(session: Session, conn: Any) -> None:
    assert one(session, conn, "SHOW application_name") == "migretti"
    session.hooks.execute(session, conn, "CREATE TABLE kept (id int)")
    other = psycopg.connect(session.config.database["url"])
    try:
        assert other.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    finally:
        other.close()


# --- execution -------------------------------------------------------------------------------


def test_execute_runs_several_statements_in_one_call(session: Session, conn: Any) -> None:
    session.hooks.execute(
        session,
        conn,
        "CREATE TABLE t (id int, note text);\n"
        "INSERT INTO t VALUES (1, '100%');\n"
        "INSERT INTO t SELECT 2, note || ' %s %(x)s' FROM t WHERE note LIKE '%\\%';\n"
        "DO $$ BEGIN INSERT INTO t VALUES (3, 'a;b'); END $$;",
    )
    rows = session.hooks.query(session, conn, "SELECT id, note FROM t ORDER BY id", ())
    assert rows == [(1, "100%"), (2, "100% %s %(x)s"), (3, "a;b")]


def test_query_without_params_keeps_percent_literal(session: Session, conn: Any) -> None:
    assert one(session, conn, "SELECT '50%'") == "50%"
    assert one(session, conn, "SELECT %s::text || '%%'", "7") == "7%"


def test_failing_statement_undoes_the_whole_call(session: Session, conn: Any) -> None:
    session.hooks.execute(session, conn, "CREATE TABLE t (id int PRIMARY KEY)")
    sql = (
        "INSERT INTO t VALUES (1);\n"
        "SELECT 1; COPY (SELECT 2) TO STDOUT;\n"
        "  INSERT INTO t VALUES (1);\n"
    )
    with pytest.raises(SqlError) as info:
        session.hooks.execute(session, conn, sql)
    err = info.value
    assert err.sqlstate == "23505"
    assert err.detail == "Key (id)=(1) already exists."
    assert err.position == sql.rindex("INSERT") + 1  # the server gives none: its statement
    assert one(session, conn, "SELECT count(*) FROM t") == 0


def test_error_position_points_into_the_sql_and_maps_to_the_file_line(
    session: Session, conn: Any, tmp_path: Path
) -> None:
    sql = "SELECT 'é€';\nSELECT 2;\n  SELECT nosuch FROM pg_class;\nSELECT 3;\n"
    with pytest.raises(SqlError) as info:
        session.hooks.execute(session, conn, sql)
    err = info.value
    assert err.sqlstate == "42703"
    assert err.server_message == 'column "nosuch" does not exist'
    assert err.position is not None
    assert sql[err.position - 1 :].startswith("nosuch")
    m = migration(tmp_path, "01A", sql)
    text = sql_failure(m, err, sql, m.up_line).message
    assert f"{m.filename}:{m.up_line + 2}: " in text
    assert "(SQLSTATE 42703)" in text


def test_copy_from_stdin_fails_instead_of_hanging(session: Session, conn: Any) -> None:
    session.hooks.execute(session, conn, "CREATE TABLE t (id int)")
    with pytest.raises(SqlError, match="COPY from stdin failed"):
        session.hooks.execute(session, conn, "COPY t FROM STDIN; INSERT INTO t VALUES (1)")
    session.hooks.execute(session, conn, "COPY (SELECT 1) TO STDOUT; INSERT INTO t VALUES (2)")
    assert session.hooks.query(session, conn, "SELECT id FROM t", ()) == [(2,)]


def test_transaction_commits_rolls_back_and_nests(session: Session, conn: Any) -> None:
    hooks = session.hooks
    hooks.execute(session, conn, "CREATE TABLE t (id int)")
    with hooks.transaction(session, conn):
        hooks.execute(session, conn, "INSERT INTO t VALUES (1)")
    with hooks.transaction(session, conn, rollback=True):
        hooks.execute(session, conn, "INSERT INTO t VALUES (2)")
    with pytest.raises(SqlError), hooks.transaction(session, conn):
        hooks.execute(session, conn, "INSERT INTO t VALUES (3)")
        hooks.execute(session, conn, "INSERT INTO t VALUES ('x')")
    with hooks.transaction(session, conn):
        hooks.execute(session, conn, "INSERT INTO t VALUES (4)")
        with pytest.raises(SqlError), hooks.transaction(session, conn):
            hooks.execute(session, conn, "INSERT INTO t VALUES (5); SELECT 1/0")
        hooks.execute(session, conn, "INSERT INTO t VALUES (6)")
    assert hooks.query(session, conn, "SELECT id FROM t ORDER BY id", ()) == [(1,), (4,), (6,)]
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_sql_that_commits_the_transaction_is_an_error(session: Session, conn: Any) -> None:
    hooks = session.hooks
    hooks.execute(session, conn, "CREATE TABLE t (id int)")
    with pytest.raises(SqlError, match="ended the transaction"), hooks.transaction(session, conn):
        hooks.execute(session, conn, "INSERT INTO t VALUES (1); COMMIT")
    # Outside a transaction the same SQL is fine (no-transaction migrations).
    hooks.execute(session, conn, "BEGIN; INSERT INTO t VALUES (2); COMMIT")


def test_execute_transaction_commits_all_or_nothing_in_one_query(
    session: Session, conn: Any
) -> None:
    hooks = session.hooks
    hooks.execute(session, conn, "CREATE TABLE t (id int)")
    assert hooks.execute_transaction(session, conn, ["", "INSERT INTO t VALUES (1);", "\n;\n"])
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pytest.raises(SqlError, match="division by zero") as failed:
        hooks.execute_transaction(
            session, conn, ["SELECT 1;\n", "INSERT INTO t VALUES (2);\nSELECT 1 / 0;", "\n;\n"]
        )
    # positions count in the parts as if sent alone: here the failing statement's start
    assert failed.value.position == len("SELECT 1;\nINSERT INTO t VALUES (2);\n") + 1
    with pytest.raises(SqlError, match="syntax error") as failed:
        hooks.execute_transaction(session, conn, ["", "INSERT INTO t VALUES (3);\nSELEC 1;", ""])
    assert failed.value.position == len("INSERT INTO t VALUES (3);\n") + 1
    # the failed transactions were rolled back and the connection is usable
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert hooks.query(session, conn, "SELECT id FROM t ORDER BY id", ()) == [(1,)]


def test_execute_transaction_refuses_sql_that_ends_its_transaction(
    session: Session, conn: Any
) -> None:
    hooks = session.hooks
    hooks.execute(session, conn, "CREATE TABLE t (id int)")
    with pytest.raises(SqlError, match="ended the transaction"):
        hooks.execute_transaction(session, conn, ["", "INSERT INTO t VALUES (1); COMMIT;", ""])
    # inside an open transaction it is left to mg_transaction and mg_execute
    with hooks.transaction(session, conn, rollback=True):
        assert not hooks.execute_transaction(session, conn, ["", "SELECT 1", ""])


MEMORY_SCRIPT = """
import sys
from migretti_core.types import Config
from tests.test_pg_plugins import make_session
from pathlib import Path

def peak():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1]) * 1024

session = make_session({"url": sys.argv[1]}, Path("."))
conn = session.hooks.connect(session)
session.hooks.execute(session, conn, "CREATE TABLE big (id int, note text)")
line = "INSERT INTO big VALUES (1, '" + "x" * 150 + "');\\n"
sql = line * (22_000_000 // len(line))
before = peak()
with session.hooks.transaction(session, conn, rollback=True):
    session.hooks.execute(session, conn, sql)
print(len(sql), peak() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_22_mb_migration_costs_a_small_multiple_of_its_size(database_url: str) -> None:
    """libpq keeps two copies while sending; no per-statement result is kept."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, database_url],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    size, growth = map(int, done.stdout.split())
    assert size > 21_000_000
    assert growth < 3.5 * size


# --- lock ------------------------------------------------------------------------------------


def test_bigint_key_split_matches_pg_locks(session: Session, conn: Any) -> None:
    for key in (894321, -5, 2**40 + 7):
        assert one(session, conn, "SELECT pg_try_advisory_lock(%s::bigint)", key)
        rows = session.hooks.query(
            session,
            conn,
            "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            (),
        )
        assert rows == [(*key_parts(key), 1)]
        assert one(session, conn, "SELECT pg_advisory_unlock(%s::bigint)", key)


def _advisory_holds(session: Session, conn: Any) -> int:
    return int(
        one(
            session,
            conn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        )
    )


@pytest.mark.parametrize("key", [894321, -5, 2**40 + 7])
def test_lock_check_passes_while_held_and_leaves_the_lock_held_once(
    session: Session, conn: Any, database_url: str, key: int
) -> None:
    check = lock.check_sql(key)
    assert one(session, conn, "SELECT pg_try_advisory_lock(%s::bigint)", key)
    for _ in range(3):
        assert one(session, conn, check) == 1
    # Still held, once: a single unlock frees it for everyone.
    assert _advisory_holds(session, conn) == 1
    assert one(session, conn, "SELECT pg_advisory_unlock(%s::bigint)", key)
    assert _advisory_holds(session, conn) == 0
    with psycopg.connect(database_url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s::bigint)", (key,)).fetchone() == (
            True,
        )


@pytest.mark.parametrize("held_elsewhere", [False, True])
def test_lock_check_fails_when_the_session_lost_the_lock(
    session: Session, conn: Any, database_url: str, held_elsewhere: bool
) -> None:
    key = 894321
    with psycopg.connect(database_url, autocommit=True) as other:
        if held_elsewhere:
            other.execute("SELECT pg_advisory_lock(%s::bigint)", (key,))
        with pytest.raises(SqlError) as info:
            session.hooks.query(session, conn, lock.check_sql(key), ())
        assert info.value.sqlstate == "22P02"
        assert f"no longer holds the migration lock {key}" in str(info.value)
        # The failed check took nothing: the lock is where it was.
        assert _advisory_holds(session, conn) == 0
        free = other.execute("SELECT pg_try_advisory_lock(%s::bigint)", (key,)).fetchone()
        assert free == (True,)


@pytest.mark.parametrize("lock_id", [894321, -42])
def test_second_session_times_out_naming_the_holder(
    database_url: str, tmp_path: Path, lock_id: int
) -> None:
    waits = LockWaits()
    first = make_session({"url": database_url}, tmp_path, lock_id=lock_id)
    second = make_session({"url": database_url}, tmp_path, lock_id=lock_id, extra=(waits,))
    holder_conn = first.hooks.connect(first)
    waiter_conn = second.hooks.connect(second)
    try:
        first.hooks.lock_acquire(first, holder_conn, 1.0)
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            second.hooks.lock_acquire(second, waiter_conn, 1.0)
        elapsed = time.monotonic() - started
        pid = holder_conn.info.backend_pid
        assert 1.0 <= elapsed < 3.0
        assert info.value.exit_code == EXIT_LOCK_TIMEOUT
        assert str(info.value).startswith(f"lock {lock_id} is held by pid {pid} (migretti) since ")
        assert str(info.value).endswith("; gave up after 1s")
        assert waits.calls and waits.calls[0][0].pid == pid
        assert waits.calls[0][0].application_name == "migretti"
        assert waits.calls[0][0].since is not None
        assert waiter_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

        first.hooks.lock_release(first, holder_conn)
        second.hooks.lock_acquire(second, waiter_conn, 1.0)
        second.hooks.lock_release(second, waiter_conn)
    finally:
        first.hooks.disconnect(first, holder_conn)
        second.hooks.disconnect(second, waiter_conn)


def test_waiting_does_not_block_the_holders_create_index_concurrently(
    database_url: str, tmp_path: Path
) -> None:
    first = make_session({"url": database_url}, tmp_path)
    second = make_session({"url": database_url}, tmp_path)
    holder_conn = first.hooks.connect(first)
    waiter_conn = second.hooks.connect(second)
    errors: list[BaseException] = []

    def wait_for_lock() -> None:
        try:
            second.hooks.lock_acquire(second, waiter_conn, 20.0)
        except BaseException as exc:
            errors.append(exc)

    try:
        first.hooks.execute(first, holder_conn, "CREATE TABLE t (id int); SET lock_timeout = '10s'")
        first.hooks.lock_acquire(first, holder_conn, 1.0)
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        time.sleep(0.6)
        first.hooks.execute(first, holder_conn, "CREATE INDEX CONCURRENTLY t_id ON t (id)")
        first.hooks.lock_release(first, holder_conn)
        waiter.join(20)
        assert not waiter.is_alive()
        assert errors == []
    finally:
        first.hooks.disconnect(first, holder_conn)
        second.hooks.disconnect(second, waiter_conn)


# --- history ---------------------------------------------------------------------------------


def table_columns(session: Session, conn: Any, table: str) -> dict[str, str]:
    rows = session.hooks.query(
        session,
        conn,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND table_schema = current_schema()",
        (table,),
    )
    return dict(rows)


def change(ident: str, status: Any, action: Any = "UP", **kw: Any) -> HistoryChange:
    return HistoryChange(ident, f"name_{ident}", f"sum_{ident}", action, status, **kw)


def test_read_on_an_empty_database_creates_nothing(session: Session, conn: Any) -> None:
    assert session.hooks.history_read(session, conn) == []
    assert one(session, conn, "SELECT to_regclass('_migrations') IS NULL")


def test_prepare_creates_the_010_tables_plus_new_columns(session: Session, conn: Any) -> None:
    session.hooks.history_prepare(session, conn)
    session.hooks.history_prepare(session, conn)
    assert table_columns(session, conn, "_migrations") == {
        "id": "character varying",
        "name": "character varying",
        "applied_at": "timestamp with time zone",
        "checksum": "character varying",
        "status": "character varying",
        "apply_seq": "bigint",
        "duration_ms": "integer",
        "error": "text",
        "failed_statement": "integer",
        "session_id": "text",
    }
    assert table_columns(session, conn, "_migrations_log") == {
        "id": "bigint",
        "migration_id": "character varying",
        "name": "character varying",
        "action": "character varying",
        "performed_at": "timestamp with time zone",
        "performed_by": "character varying",
        "checksum": "character varying",
        "duration_ms": "integer",
    }


def seed_010(session: Session, conn: Any, ddl_010: str) -> None:
    session.hooks.execute(
        session,
        conn,
        ddl_010 + "INSERT INTO _migrations (id, name, applied_at, checksum) VALUES "
        "('01C', 'third', '2024-01-03', 'c'), ('01A', 'first', '2024-01-01', 'a'), "
        "('01B', 'second', '2024-01-02', 'b'), ('00Z', 'same_time', '2024-01-03', 'z');",
    )


def test_010_tables_are_read_as_they_are(session: Session, conn: Any, ddl_010: str) -> None:
    seed_010(session, conn, ddl_010)
    entries = session.hooks.history_read(session, conn)
    assert [e.id for e in entries] == ["01A", "01B", "00Z", "01C"]
    assert {e.status for e in entries} == {"applied"}
    assert entries[0].checksum == "a" and entries[0].seq is None
    assert "apply_seq" not in table_columns(session, conn, "_migrations")


def test_prepare_upgrades_010_tables_in_place_and_backfills_order(
    session: Session, conn: Any, ddl_010: str
) -> None:
    seed_010(session, conn, ddl_010)
    session.hooks.history_prepare(session, conn)
    session.hooks.history_prepare(session, conn)
    entries = session.hooks.history_read(session, conn)
    assert [(e.id, e.seq) for e in entries] == [("01A", 1), ("01B", 2), ("00Z", 3), ("01C", 4)]
    session.hooks.history_write(session, conn, change("01D", "applied", duration_ms=5))
    assert session.hooks.history_read(session, conn)[-1].seq == 5


def test_prepare_takes_no_strong_lock_when_nothing_changes(session: Session, conn: Any) -> None:
    session.hooks.history_prepare(session, conn)
    reader = psycopg.connect(session.config.database["url"])
    try:
        reader.execute("SELECT * FROM _migrations")  # holds ACCESS SHARE until rollback
        session.hooks.execute(session, conn, "SET lock_timeout = '500ms'")
        session.hooks.history_prepare(session, conn)
    finally:
        reader.close()


def test_a_running_row_names_its_session_and_a_reader_sees_whether_it_is_connected(
    session: Session, conn: Any
) -> None:
    # A no-transaction migration's `running` row records the session that runs it, so a run
    # that finds it can tell another run at work (connected) from an interrupted one.
    hooks = session.hooks
    hooks.history_prepare(session, conn)
    other = hooks.connect(session)
    try:
        hooks.history_prepare(session, other)
        hooks.history_write(session, other, change("01A", "running", log=False))
        pid, started = hooks.query(
            session,
            other,
            "SELECT pg_backend_pid(), to_hex(trunc(extract(epoch FROM backend_start))::bigint) "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            (),
        )[0]
        (entry,) = hooks.history_read(session, conn)
        assert entry.session_id == f"{started}.{pid:x}"  # as log_line_prefix's %c shows it
        assert entry.session_connected is True
        (own,) = hooks.history_read(session, other)
        assert own.session_connected is False  # a session is never waiting for itself
    finally:
        hooks.disconnect(session, other)
    deadline = time.monotonic() + 10
    while hooks.history_read(session, conn)[0].session_connected and time.monotonic() < deadline:
        time.sleep(0.05)  # the server lets the closed session go
    (entry,) = hooks.history_read(session, conn)
    assert (entry.status, entry.session_id, entry.session_connected) == (
        "running",
        f"{started}.{pid:x}",
        False,
    )
    hooks.history_write(session, conn, change("01A", "applied"))
    assert hooks.history_read(session, conn)[0].session_id is None
    assert one(session, conn, "SELECT session_id FROM _migrations") is None


def test_write_read_round_trip_and_fix_keeps_position(session: Session, conn: Any) -> None:
    hooks = session.hooks
    hooks.history_prepare(session, conn)
    hooks.history_write(session, conn, change("01A", "applied", duration_ms=12))
    hooks.history_write(session, conn, change("01B", "running", log=False))
    hooks.history_write(
        session,
        conn,
        change("01B", "failed", duration_ms=3, error="line 4: boom", failed_statement=2, log=False),
    )
    hooks.history_write(session, conn, change("01C", "applied", duration_ms=7))
    a, b, c = hooks.history_read(session, conn)
    assert (a.id, a.status, a.seq, a.checksum, a.duration_ms) == (
        "01A",
        "applied",
        1,
        "sum_01A",
        12,
    )
    assert a.applied_at is not None
    assert (b.id, b.status, b.seq, b.error, b.failed_statement) == (
        "01B",
        "failed",
        2,
        "line 4: boom",
        2,
    )
    assert (c.id, c.seq) == ("01C", 3)

    hooks.history_write(session, conn, change("01B", "applied", "FIX"))
    a, b, c = hooks.history_read(session, conn)
    assert (b.id, b.status, b.seq, b.error, b.failed_statement) == ("01B", "applied", 2, None, None)

    hooks.history_write(session, conn, change("01C", None, "DOWN", duration_ms=1))
    assert [e.id for e in hooks.history_read(session, conn)] == ["01A", "01B"]

    log = hooks.query(
        session,
        conn,
        "SELECT migration_id, name, action, checksum, duration_ms, performed_by "
        "FROM _migrations_log ORDER BY id",
        (),
    )
    assert [row[:5] for row in log] == [
        ("01A", "name_01A", "UP", "sum_01A", 12),
        ("01C", "name_01C", "UP", "sum_01C", 7),
        ("01B", "name_01B", "FIX", "sum_01B", None),
        ("01C", "name_01C", "DOWN", "sum_01C", 1),
    ]
    assert all("@" in row[5] for row in log)


def test_history_write_joins_the_callers_transaction(session: Session, conn: Any) -> None:
    hooks = session.hooks
    hooks.history_prepare(session, conn)
    with hooks.transaction(session, conn, rollback=True):
        hooks.history_write(session, conn, change("01A", "applied"))
        assert len(hooks.history_read(session, conn)) == 1
    assert hooks.history_read(session, conn) == []


def test_history_follows_the_search_path(database_url: str, tmp_path: Path) -> None:
    admin = psycopg.connect(database_url, autocommit=True)
    try:
        admin.execute("CREATE SCHEMA app")
    finally:
        admin.close()
    session = make_session({"url": database_url, "options": "-c search_path=app"}, tmp_path)
    conn = session.hooks.connect(session)
    try:
        session.hooks.history_prepare(session, conn)
        session.hooks.history_write(session, conn, change("01A", "applied"))
        assert one(session, conn, "SELECT count(*) FROM app._migrations") == 1
        assert one(session, conn, "SELECT to_regclass('public._migrations') IS NULL")
    finally:
        session.hooks.disconnect(session, conn)


# --- dry run ---------------------------------------------------------------------------------


def dry_run(session: Session, conn: Any, *steps: Migration) -> list[Any]:
    return session.hooks.dry_run(session, conn, Plan("up", steps))


def test_dry_run_sees_earlier_migrations_and_keeps_nothing(
    session: Session, conn: Any, tmp_path: Path
) -> None:
    steps = (
        migration(tmp_path, "01A", "CREATE TABLE users (id int PRIMARY KEY);\n"),
        migration(tmp_path, "01B", "ALTER TABLE users ADD COLUMN email text;\n"),
        migration(tmp_path, "01C", "CREATE INDEX users_email ON users (email);\n"),
    )
    results = dry_run(session, conn, *steps)
    assert [(r.migration.id, r.ok, r.executed, r.error) for r in results] == [
        ("01A", True, True, None),
        ("01B", True, True, None),
        ("01C", True, True, None),
    ]
    assert all(r.dry_run for r in results)
    assert one(session, conn, "SELECT to_regclass('users') IS NULL")
    assert one(session, conn, "SELECT to_regclass('_migrations') IS NULL")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_dry_run_reports_each_failure_and_goes_on(
    session: Session, conn: Any, tmp_path: Path
) -> None:
    steps = (
        migration(tmp_path, "01A", "CREATE TABLE users (id int PRIMARY KEY);\n"),
        migration(tmp_path, "01B", "SELECT 1;\nALTER TABLE userz ADD COLUMN email text;\n"),
        migration(tmp_path, "01C", "CREATE INDEX users_email ON users (email);\n"),
        migration(tmp_path, "01D", "INSERT INTO users VALUES (1);\n"),
    )
    a, b, c, d = dry_run(session, conn, *steps)
    assert a.ok and d.ok
    assert not b.ok and not c.ok
    assert b.error is not None
    assert b.error.startswith(f"{tmp_path / b.migration.filename}:{b.migration.up_line + 1}: ")
    assert 'relation "userz" does not exist (SQLSTATE 42P01)' in b.error
    assert c.error is not None and 'column "email" does not exist' in c.error
    assert one(session, conn, "SELECT to_regclass('users') IS NULL")


def test_dry_run_reports_deferred_constraint_violations(
    session: Session, conn: Any, tmp_path: Path
) -> None:
    session.hooks.execute(
        session,
        conn,
        "CREATE TABLE parent (id int PRIMARY KEY);"
        "CREATE TABLE child (parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);",
    )
    steps = (
        migration(tmp_path, "01A", "INSERT INTO child VALUES (1);\n"),
        migration(
            tmp_path, "01B", "INSERT INTO child VALUES (2);\nINSERT INTO parent VALUES (2);\n"
        ),
        migration(
            tmp_path, "01C", "INSERT INTO child VALUES (3);\nINSERT INTO parent VALUES (3);\n"
        ),
    )
    a, b, c = dry_run(session, conn, *steps)
    assert not a.ok and a.error is not None and "(SQLSTATE 23503)" in a.error
    assert "deferred constraint" in a.error
    assert b.ok, b.error
    assert c.ok, c.error  # the check did not leave the constraint immediate


def test_dry_run_stops_executing_at_a_no_transaction_migration(
    session: Session, conn: Any, tmp_path: Path
) -> None:
    steps = (
        migration(tmp_path, "01A", "CREATE TABLE t (id int);\n"),
        migration(
            tmp_path, "01B", "CREATE INDEX CONCURRENTLY t_id ON t (id);\n", transactional=False
        ),
        migration(tmp_path, "01C", "SELECT 1/0;\n"),
    )
    a, b, c = dry_run(session, conn, *steps)
    assert (a.ok, a.executed) == (True, True)
    assert (b.executed, c.executed) == (False, False)
    assert b.error is None and c.error is None


def test_dry_run_does_not_run_sql_that_would_commit(
    session: Session, conn: Any, tmp_path: Path
) -> None:
    steps = (
        migration(tmp_path, "01A", "CREATE TABLE t (id int);\n-- a comment\nCOMMIT;\n"),
        migration(tmp_path, "01B", "CREATE TABLE u (id int);\n"),
    )
    a, b = dry_run(session, conn, *steps)
    assert not a.ok
    assert a.error is not None
    assert a.error.startswith(
        f"{tmp_path / a.migration.filename}:{a.migration.up_line + 2}: COMMIT"
    )
    assert b.ok
    assert one(session, conn, "SELECT to_regclass('t') IS NULL")


def test_history_sql_inserts_only_rows_the_run_knows_are_new(session: Session, conn: Any) -> None:
    # The plain insert (the cheap form) is used once the prepared run has counted the rows it
    # read; an id it read, a change other than applying, or any other write since, gets the
    # update-or-insert form.
    def sql(ident: str, action: Any = "UP", status: Any = "applied") -> str:
        change = HistoryChange(ident, f"m_{ident}", "c" * 64, action, status)
        return str(session.hooks.history_sql(session, change))

    session.hooks.history_prepare(session, conn)
    session.hooks.query(
        session,
        conn,
        "INSERT INTO _migrations (id, name, status, apply_seq) VALUES ('0001', 'a', 'applied', 7)",
        (),
    )
    assert sql("0002").startswith("WITH updated")  # not read since the row appeared
    session.hooks.history_read(session, conn)
    session.hooks.history_prepare(session, conn)
    first, second = sql("0002"), sql("0003")
    assert first.startswith("INSERT") and "\n    8, (extract" in first
    assert second.startswith("INSERT") and "\n    9, (extract" in second
    assert sql("0001").startswith("WITH updated")  # read: may need updating
    assert sql("0004").startswith("WITH updated")  # and everything after it
    session.hooks.history_read(session, conn)
    session.hooks.history_prepare(session, conn)
    assert sql("0001", "DOWN", None).startswith("DELETE")
    assert sql("0005").startswith("WITH updated")


# --- a connection service's settings ---------------------------------------------------------


def write_service(path: Path, conninfo: Mapping[str, str], *settings: str) -> dict[str, str]:
    """A pg_service.conf with one service, ``target``; the environment that finds it."""
    lines = ["[target]", *(f"{key}={value}" for key, value in conninfo.items()), *settings]
    path.write_text("\n".join(lines) + "\n")
    return {"PGSERVICEFILE": str(path)}


SEEN = (
    "CREATE TABLE seen AS SELECT current_setting('application_name') AS app, "
    "current_setting('client_encoding') AS enc;"
)


@pytest.mark.parametrize("psycopg_only", [False, True], ids=["libpq", "psycopg"])
def test_a_connection_services_settings_win_over_mgs_defaults(
    tmp_path: Path, database_url: str, db_conninfo: dict[str, str], psycopg_only: bool
) -> None:
    """libpq's order: mg.yaml (and its URL) first, then the service, then the PG* variables,
    and mg's own defaults only for what none of them sets."""
    from migretti_core.testing import Project

    env = write_service(
        tmp_path / "pg_service.conf",
        db_conninfo,
        "application_name=from-service",
        "client_encoding=LATIN1",
    )
    if psycopg_only:
        env["MG_PSYCOPG_ONLY"] = "1"
    project = Project(tmp_path / "proj", database_url, configure=False)
    try:
        project.configure({"service": "target"})
        for ident, variable, expected in (
            ("0001", None, "from-service"),
            ("0002", "from-variable", "from-service"),  # the service before the variable
        ):
            project.add(ident, "seen", SEEN.replace("seen", f"seen{ident}", 1))
            done = project.mg("apply", env={**env, **({"PGAPPNAME": variable} if variable else {})})
            assert done.returncode == 0, done.stderr
            assert project.sql(f"SELECT app, enc FROM seen{ident}") == [(expected, "LATIN1")]

        project.configure({"service": "target", "application_name": "from-yaml"})
        project.add("0003", "seen", SEEN.replace("seen", "seen0003", 1))
        done = project.mg("apply", env=env)
        assert done.returncode == 0, done.stderr
        assert project.sql("SELECT app, enc FROM seen0003") == [("from-yaml", "LATIN1")]
    finally:
        project.close()


def test_a_connection_services_connect_timeout_wins_over_mgs(
    tmp_path: Path, db_conninfo: dict[str, str]
) -> None:
    """A server that takes the connection and never answers: the service's 2 seconds, not
    mg's 10."""
    import socket

    from migretti_core.testing import run_mg

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog and are never answered
        info = {"host": "127.0.0.1", "port": str(silent.getsockname()[1])}
        info.update((k, db_conninfo[k]) for k in ("user", "dbname") if k in db_conninfo)
        env = write_service(tmp_path / "pg_service.conf", info, "connect_timeout=2")
        env["MG_DATABASE_URL"] = "service=target sslmode=disable"
        started = time.monotonic()
        done = run_mg(["status"], tmp_path, env, timeout=60)
        waited = time.monotonic() - started
    assert done.returncode != 0, done.stdout
    assert "timeout" in done.stderr.lower(), done.stderr
    assert waited < 8, (waited, done.stderr)
