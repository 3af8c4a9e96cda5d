"""migretti_core.testing: the helpers plugin authors use in their own test suites."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from migretti_core import hookimpl
from migretti_core.errors import PluginError
from migretti_core.testing import (
    MG_COMMAND,
    assert_clean_error,
    make_config,
    make_hooks,
    make_migration,
    make_project,
    mg_env,
    plugin_manager,
    postgres_server,
    registered,
    run_cli,
    run_mg,
    wait_until,
    write_migration,
    write_text,
)
from migretti_core.types import Statement
from tests.test_check import _processes_mentioning


class Upper:
    name = "upper"

    @hookimpl
    def mg_split_statements(self, sql: str) -> list[Statement]:
        return [Statement(sql.upper(), 1)]


class Misspelled:
    @hookimpl
    def mg_after_aply(self) -> None:
        pass


def test_plugin_manager_holds_only_the_chosen_plugins() -> None:
    pm = plugin_manager(Upper(), builtins=["split"])

    assert sorted(name for name, _ in pm.list_name_plugin()) == ["split", "upper"]


def test_the_last_plugin_given_runs_first() -> None:
    hooks = make_hooks(("first_given", Upper()), ("last_given", Upper()), builtins=["split"])
    impls = hooks.pm.hook.mg_split_statements.get_hookimpls()

    assert [i.plugin_name for i in reversed(impls)] == ["last_given", "first_given", "split"]
    assert hooks.split_statements("select 1") == [Statement("SELECT 1", 1)]


def test_without_the_plugin_the_builtin_answers() -> None:
    assert make_hooks(builtins=["split"]).split_statements("select 1; select 2") == [
        Statement("select 1", 1),
        Statement("select 2", 1),
    ]


def test_plugin_manager_validates_plugins_like_mg_does() -> None:
    with pytest.raises(PluginError, match="did you mean mg_after_apply"):
        plugin_manager(Misspelled())


def test_plugin_manager_refuses_an_unknown_builtin() -> None:
    with pytest.raises(ValueError, match="no such builtin: splitter"):
        plugin_manager(builtins=["splitter"])


def test_all_builtins() -> None:
    names = {name for name, _ in plugin_manager(builtins=True).list_name_plugin()}

    assert {"config", "files", "split", "postgres", "lock", "history", "output"} <= names


def test_make_migration_matches_what_the_parser_reads(tmp_path: Path) -> None:
    from migretti_plugins.files.parse import parse_migration

    made = make_migration("0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    path = write_migration(tmp_path, "0001", "users", made.up_sql, made.down_sql)
    parsed = parse_migration(path, path.read_bytes())

    assert (made.up_line, made.checksum, made.transactional) == (
        parsed.up_line,
        parsed.checksum,
        parsed.transactional,
    )
    assert made.up_sql.strip() == parsed.up_sql.strip()


def test_make_config_carries_plugin_sections(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"slack": {"channel": "#ops"}}, env="staging", lock_id=7)

    assert config.settings["slack"] == {"channel": "#ops"}
    assert (config.env, config.lock_id, config.migrations_dir) == (
        "staging",
        7,
        tmp_path / "migrations",
    )


# --- registered and run_cli ----------------------------------------------------------------


def listed(tmp_path: Path, *args: str) -> dict[str, dict[str, object]]:
    result = run_cli(["plugins", "--format", "json", *args], cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_registered_plugin_goes_through_the_real_loader(tmp_path: Path) -> None:
    with registered(Upper()) as name:
        assert name == "upper"
        plugin = listed(tmp_path)["upper"]
        blocked = listed(tmp_path, "-p", "no:upper")["upper"]

    assert plugin["origin"] == "command line"
    assert plugin["hooks"] == ["mg_split_statements"]
    assert blocked["status"] == "blocked"
    assert "upper" not in listed(tmp_path)
    assert "upper" not in sys.modules


def test_registered_restores_mg_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MG_PLUGINS", "mine")

    with registered(Upper(), "shouting"):
        assert os.environ["MG_PLUGINS"] == "mine,shouting"

    assert os.environ["MG_PLUGINS"] == "mine"


def test_registered_refuses_to_shadow_a_module() -> None:
    with pytest.raises(ValueError, match="already an imported module"), registered(Upper(), "json"):
        pass


def test_a_misspelled_hook_in_a_registered_plugin_is_reported(tmp_path: Path) -> None:
    make_project(tmp_path)

    result = run_cli(["create", "first"], cwd=tmp_path, plugins=[Misspelled()])

    assert result.exit_code == 2
    assert "unknown hook mg_after_aply (did you mean mg_after_apply?)" in result.stderr


def test_run_cli_captures_and_restores(tmp_path: Path) -> None:
    cwd = Path.cwd()

    result = run_cli("--version", cwd=tmp_path, env={"MG_SOMETHING": "x"})
    failed = run_cli(["no-such-command"], cwd=tmp_path)

    assert (result.exit_code, result.stdout.startswith("mg "), result.stderr) == (0, True, "")
    assert failed.exit_code == 2
    assert "No such command" in failed.stderr
    assert Path.cwd() == cwd
    assert "MG_SOMETHING" not in os.environ


def test_a_project_made_by_the_helpers_applies(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    write_migration(
        tmp_path,
        "0002",
        "index",
        "CREATE INDEX CONCURRENTLY users_id ON users (id);",
        transactional=False,
    )

    result = run_cli(["apply"], cwd=tmp_path)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("applied ") == 2


def test_postgres_server_uses_mg_test_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MG_TEST_DATABASE_URL", "postgresql://someone@db.example/postgres")

    with postgres_server() as url:
        assert url == "postgresql://someone@db.example/postgres"


# --- the pytest plugin -------------------------------------------------------------------------


def test_pytest_plugin_provides_the_fixtures(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["migretti_core.testing"]\n')
    (tmp_path / "test_mine.py").write_text(
        textwrap.dedent(
            """
            import psycopg

            from migretti_core import hookimpl
            from migretti_core.testing import make_project, run_cli, write_migration


            class Counter:
                name = "counter"
                applied = 0

                @hookimpl
                def mg_after_migration(self, result):
                    Counter.applied += 1


            def test_apply(tmp_path, mg_database_url, mg_register):
                mg_register(Counter())
                make_project(tmp_path, mg_database_url)
                write_migration(tmp_path, "0001", "t", "CREATE TABLE t (id int);")
                result = run_cli(["apply"], cwd=tmp_path)
                assert result.exit_code == 0, result.stderr
                assert Counter.applied == 1
                with psycopg.connect(mg_database_url) as conn:
                    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


            def test_unregistered_after_the_test(tmp_path):
                result = run_cli(["plugins"], cwd=tmp_path)
                assert "counter" not in result.stdout
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env["MG_TEST_DATABASE_URL"] = pg_url

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # its own temp root: the shared /tmp/pytest-of-USER would be reset to mode 0700
            f"--basetemp={tmp_path / 'basetemp'}",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_importable_without_pytest(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None  # as if it were not installed
        import migretti_core.testing as t
        assert not hasattr(t, "mg_database_url")
        assert t.run_cli(["--version"]).exit_code == 0
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_mg_env_drops_the_developers_mg_and_libpq_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MG_ENV", "prod")
    monkeypatch.setenv("PGHOST", "db.example.com")
    monkeypatch.setenv("PGTZ", "UTC")
    env = mg_env({"MG_LOCK_ID": "7"})
    assert "MG_ENV" not in env and "PGHOST" not in env
    assert env["PGTZ"] == "UTC" and env["MG_LOCK_ID"] == "7"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_run_mg_runs_the_installed_command_without_the_developers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path(MG_COMMAND[0]).name in ("mg", Path(sys.executable).name)
    write_text(
        tmp_path / "mg.yaml",
        """
        envs:
          dev:
        """,
    )
    monkeypatch.setenv("MG_ENV", "nosuchprofile")  # would fail the run if it leaked
    done = run_mg(["create", "users"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "migrations").glob("*_users.sql"))) == 1


def test_assert_clean_error_reads_both_kinds_of_result(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "lock_id: abc\n")
    in_process = run_cli(["status"], cwd=tmp_path)
    assert "lock_id" in assert_clean_error(in_process, "expected an integer")
    assert "lock_id" in assert_clean_error(run_mg(["status"], tmp_path), "expected an integer")
    with pytest.raises(AssertionError):
        assert_clean_error(in_process, "expected an integer", code=1)
    with pytest.raises(AssertionError):
        assert_clean_error(run_mg(["--version"], tmp_path))


def test_ctrl_c_while_postgres_server_starts_leaves_no_server_running(
    server_tmp_path: Path,
) -> None:
    # Ctrl-C while pg_ctl waits for the new server: the server must not run on after the
    # block, which a test suite's teardown never reaches.
    workdir = server_tmp_path / "w"
    script = (
        "from migretti_core.testing import postgres_server\n"
        f"with postgres_server({str(workdir)!r}):\n"
        "    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MG_TEST_DATABASE_URL"}
    job = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (workdir / "data" / "postmaster.pid").exists():
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=60)
    assert b"KeyboardInterrupt" in stderr, stderr
    # a wait, not a measure: a busy machine may take a while to end the server
    wait_until(lambda: not _processes_mentioning(str(workdir)), timeout=30)
