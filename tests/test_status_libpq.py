"""Read-only commands connect through libpq itself (``migretti_plugins/postgres/libpq.py``)
instead of importing psycopg: what users see must be what the psycopg path shows.

``MG_PSYCOPG_ONLY=1`` forces psycopg; each comparison runs the real ``mg`` both ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from migretti_core.errors import DatabaseError, SqlError
from migretti_core.testing import Project, mg_env
from migretti_plugins import postgres
from migretti_plugins.postgres import libpq

PSYCOPG = {libpq.PSYCOPG_ONLY: "1"}

pytestmark = pytest.mark.skipif(libpq.library() is None, reason="libpq cannot be loaded here")


def _both(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    light = project.mg(*args)
    heavy = project.mg(*args, env=PSYCOPG)
    assert (light.returncode, light.stdout, light.stderr) == (
        heavy.returncode,
        heavy.stdout,
        heavy.stderr,
    ), args
    return light, heavy


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    try:
        yield project
    finally:
        project.close()


def test_read_only_commands_show_the_same_with_libpq_and_with_psycopg(project: Project) -> None:
    for ident in ("0001", "0002", "0003", "0004"):
        project.add_table(ident)
    assert project.mg("apply").returncode == 0
    project.add("0005", "pending", "CREATE TABLE p (id int);")
    # every state and NULL the history can hold: failed with an error, running, edited
    project.sql(
        "INSERT INTO _migrations (id, name, status, error, failed_statement, applied_at) "
        "VALUES ('0006', 'broke', 'failed', 'boom 100%', 2, NULL), "
        "('0007', 'halfway', 'running', NULL, NULL, now())"
    )
    project.sql("UPDATE _migrations SET checksum = 'x' WHERE id = '0002'")
    name = project.value("SELECT current_database()")
    project.sql(f"ALTER DATABASE \"{name}\" SET TimeZone TO 'Asia/Kolkata'")
    for args in (
        ["status"],
        ["status", "--format", "json"],
        ["status", "--exit-code"],
        ["list"],
        ["list", "--format", "json"],
        ["head", "--format", "json"],
        ["verify"],
        ["verify", "--format", "json"],
    ):
        light, _ = _both(project, *args)
        assert light.stdout.strip(), args
    document = json.loads(project.mg("list", "--format", "json").stdout)
    assert any(row["applied_at"] and row["applied_at"].endswith("+05:30") for row in document)


def imports(root: Path, module: str, env: dict[str, str], *args: str) -> bool:
    """Whether ``mg ARGS`` (which must succeed) imported ``module``, by ``-X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "migretti_core", *args],
        cwd=root,
        env=mg_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return any(line.rstrip().endswith(f" {module}") for line in done.stderr.splitlines())


def test_status_does_not_import_psycopg(project: Project) -> None:
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    assert "applied: 1" in project.mg("status").stdout

    def status_imports(module: str, env: dict[str, str], *args: str) -> bool:
        return imports(project.root, module, env, *args, "status")

    def imports_psycopg(env: dict[str, str], *args: str) -> bool:
        return status_imports("psycopg", env, *args)

    assert not imports_psycopg({})
    assert imports_psycopg(PSYCOPG)
    # the database from the environment, mg.yaml only comments: neither psycopg nor PyYAML
    (project.root / "mg.yaml").write_text("# the database comes from MG_DATABASE_URL\n")
    from_env = {"MG_DATABASE_URL": project.database_url}
    assert not imports_psycopg(from_env)
    assert not status_imports("yaml", from_env)
    project.configure()
    assert status_imports("yaml", {})  # mg.yaml with a database section is YAML to parse
    # a third-party plugin may expect a psycopg connection in its hooks: then psycopg it is
    (project.root / "audit.py").write_text("def mg_after_command(command):\n    pass\n")
    project.configure(extra="plugins:\n  - audit.py\n")
    assert imports_psycopg({})


def test_a_failed_connection_reads_the_same_and_hides_the_password(
    project: Project, database_url: str
) -> None:
    secret = "S3cret-pw-Xy"
    project.sql(f"CREATE ROLE mg_nologin_role NOLOGIN PASSWORD '{secret}'")
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
        for settings, needle in (
            ({**params, "user": "mg_nologin_role", "password": secret}, "not permitted to log in"),
            ({**params, "user": "mg_no_such_role", "password": secret}, "does not exist"),
            ({**params, "dbname": "mg_no_such_db", "password": secret}, "does not exist"),
            ({"host": "127.0.0.1", "port": "1", "password": secret}, "refused"),
            ({"host": "localhost", "port": "1", "password": secret}, "refused"),
            ({"host": "/nonexistent-dir", "port": "5", "password": secret}, "No such file"),
        ):
            project.configure(settings)
            light, _ = _both(project, "status")
            assert light.returncode == 1
            assert light.stderr.startswith("mg: error: cannot connect to "), light.stderr
            assert needle in light.stderr
            assert secret not in light.stdout + light.stderr
    finally:
        project.sql("DROP ROLE mg_nologin_role")


@pytest.fixture
def connections(database_url: str) -> Iterator[tuple[Any, Any]]:
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    light = postgres._connect_libpq(params, None)
    assert isinstance(light, libpq.LibpqConnection)
    heavy = postgres._connect_psycopg(params, None)
    try:
        yield light, heavy
    finally:
        light.close()
        heavy.close()


VALUES = """
SELECT 1::int2, '-32768'::int2, 2147483647::int4, '-9223372036854775808'::int8, 42::oid,
       true, false, 'naïve €'::text, 'v'::varchar(3), 'padded'::char(8), 'nm'::name,
       'c'::"char", 1.5::float4, 'NaN'::float8, '-Infinity'::float8, 1e300::float8,
       12345678901234567890.000100::numeric, 'NaN'::numeric, '-0.5'::numeric,
       '2026-11-27 05:17:14.77356+00'::timestamptz, '1999-12-31 23:59:59+05:30'::timestamptz,
       '0002-01-01 00:00:00+00'::timestamptz, '2026-03-29 01:30:00'::timestamp,
       '2000-01-01 00:00:00.000001'::timestamp, NULL::text, NULL::int8, NULL::timestamptz,
       NULL::bool, ''::text, '100%', pg_sleep(0)
"""


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Etc/GMT+3"]
)
def test_values_convert_as_psycopg_converts_them(connections: tuple[Any, Any], zone: str) -> None:
    light, heavy = connections
    for conn in connections:
        postgres.query(conn, f"SET TimeZone TO '{zone}'")
    # the light connection reads TimeZone when it first converts a timestamptz: set first
    got = postgres.query(light, VALUES)
    want = postgres.query(heavy, VALUES)
    assert light.fallback is None, "converted without psycopg"
    assert len(got[0]) == len(want[0])
    for mine, theirs in zip(got[0], want[0], strict=True):
        assert type(mine) is type(theirs), (mine, theirs)
        if isinstance(mine, float) and mine != mine:
            assert theirs != theirs
            continue
        if isinstance(mine, Decimal) and mine.is_nan():
            assert theirs.is_nan()
            continue
        assert mine == theirs
        if isinstance(mine, datetime):
            assert mine.tzinfo == theirs.tzinfo
            assert mine.isoformat() == theirs.isoformat()
        assert repr(mine) == repr(theirs)


def test_parameters_bind_as_psycopg_binds_them(connections: tuple[Any, Any]) -> None:
    light, _ = connections
    sql = (
        "SELECT %s, pg_typeof(%s)::text, %s::int8 + 1, pg_typeof(%s)::text, "
        "pg_typeof(%s)::text, %s::text IS NULL, %s::float8, '50%%', pg_typeof(%s)::text, %s"
    )
    params = ("it's %s", 5, 2**40, 2**40, 2**70, None, 0.1, True, "x")
    got = [postgres.query(conn, sql, params) for conn in connections]
    assert got[0] == got[1]
    assert got[0][0][1:5] == ("smallint", 2**40 + 1, "bigint", "numeric")
    assert got[0][0][7] == "50%"
    assert postgres.query(light, "SELECT '5%'") == [("5%",)]  # no parameters: % is literal
    assert light.fallback is None


def test_what_libpq_does_not_convert_goes_through_psycopg(connections: tuple[Any, Any]) -> None:
    light, heavy = connections
    sql = "SELECT gen_random_uuid() IS NOT NULL, '{\"a\": [1]}'::jsonb, 'infinity'::timestamptz"
    try:
        want = postgres.query(heavy, sql)
    except DatabaseError:
        want = None
    if want is None:
        with pytest.raises(DatabaseError):
            postgres.query(light, sql)
    else:
        assert postgres.query(light, sql) == want
    assert light.fallback is not None, "the uuid/json/infinity values needed psycopg"
    # from then on the psycopg connection serves every query
    assert postgres.query(light, "SELECT pg_backend_pid()") == [(light.fallback.info.backend_pid,)]


def test_server_errors_are_the_same_sql_errors(connections: tuple[Any, Any]) -> None:
    errors = []
    for conn in connections:
        with pytest.raises(SqlError) as info:
            postgres.query(conn, "SELECT 1 FROM no_such_table WHERE x = %s", (1,))
        errors.append(info.value)
        with pytest.raises(SqlError) as info:
            postgres.query(
                conn,
                "DO $$BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'd', HINT = 'h'; END$$",
            )
        errors.append(info.value)
    light, heavy = errors[:2], errors[2:]
    for mine, theirs in zip(light, heavy, strict=True):
        assert (
            mine.server_message,
            mine.sqlstate,
            mine.detail,
            mine.hint,
            mine.position,
            mine.context,
        ) == (
            theirs.server_message,
            theirs.sqlstate,
            theirs.detail,
            theirs.hint,
            theirs.position,
            theirs.context,
        )
    assert light[0].sqlstate == "42P01" and light[0].position == 15
    assert light[1].hint == "h"


def test_a_terminated_session_fails_as_with_psycopg(database_url: str) -> None:
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    failures = []
    with psycopg.connect(database_url, autocommit=True) as admin:
        light = postgres._connect_libpq(params, None)
        assert isinstance(light, libpq.LibpqConnection)
        for conn in (light, postgres._connect_psycopg(params, None)):
            pid = postgres.query(conn, "SELECT pg_backend_pid()")[0][0]
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises((SqlError, DatabaseError)) as info:
                postgres.query(conn, "SELECT 1")
            failures.append((type(info.value), str(info.value)))
            conn.close()
    assert failures[0] == failures[1]


def test_placeholders_become_numbered_parameters() -> None:
    text, values, types = libpq._bind("SELECT %s, '%%', %s", ("a", 7))
    assert text == "SELECT $1, '%', $2"
    assert values == [b"a", b"7"] and types == [0, 21]
    for bad in (("SELECT %d", (1,)), ("SELECT %s, %s", (1,)), ("SELECT %s", (b"x",))):
        with pytest.raises(libpq.Unsupported):
            libpq._bind(*bad)


def test_conninfo_is_quoted_as_psycopg_quotes_it() -> None:
    params = {"host": "/tmp/a b", "password": "it's \\ x", "dbname": "", "user": "u"}
    assert libpq.conninfo_of(params) == psycopg.conninfo.make_conninfo("", **params)
    lib = libpq.library()
    assert libpq.parse_conninfo(lib, libpq.conninfo_of(params)) == params


@pytest.mark.parametrize("env", [{}, PSYCOPG], ids=["libpq", "psycopg"])
def test_ctrl_c_while_status_waits_on_a_lock_cancels_the_query(
    project: Project, database_url: str, env: dict[str, str]
) -> None:

    from migretti_core.testing import wait_until

    project.add_table("0001")
    assert project.mg("apply").returncode == 0

    def waiting() -> list[tuple[Any, ...]]:
        return project.sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'migretti' "
            "AND wait_event_type = 'Lock'"
        )

    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE _migrations IN ACCESS EXCLUSIVE MODE")
        job = project.spawn("status", env=env)
        wait_until(lambda: waiting() or not job.running(), timeout=60)
        assert job.running(), job.stderr_so_far()
        done, took = project.interrupt(job)
        assert done.returncode == 130, done.stderr
        assert took < 10
        assert "Traceback" not in done.stderr
        # the server stopped waiting while the lock is still held: the query was cancelled
        wait_until(lambda: not waiting(), timeout=10)


def test_several_statements_without_parameters_answer_as_psycopg(
    connections: tuple[Any, Any],
) -> None:
    light, heavy = connections
    for sql in ("SELECT 1; SELECT 2", "SET search_path TO public; SELECT 3", "SELECT 4 LIMIT 0"):
        assert postgres.query(light, sql) == postgres.query(heavy, sql), sql
    errors = []
    for conn in connections:
        with pytest.raises(SqlError) as info:
            postgres.query(conn, "SELECT 1; SELECT 1/0; SELECT 2")
        errors.append((info.value.sqlstate, info.value.server_message))
    assert errors[0] == errors[1] == ("22012", "division by zero")
    assert light.fallback is None


def test_a_database_with_another_datestyle_still_reads_timestamps(database_url: str) -> None:
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    with psycopg.connect(database_url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        admin.execute(f"ALTER DATABASE \"{name}\" SET DateStyle TO 'SQL, DMY'")
        admin.execute("SET DateStyle TO ISO")
        sql = "SELECT '2026-11-27 05:17:14.77356+00'::timestamptz, '1999-12-31 23:59:59'::timestamp"
        want = admin.execute(sql).fetchall()
    light = postgres._connect_libpq(params, None)
    assert isinstance(light, libpq.LibpqConnection)
    try:
        assert light.parameter_status("DateStyle") == "ISO, DMY"
        assert postgres.query(light, sql) == want
        assert light.fallback is None
    finally:
        light.close()
