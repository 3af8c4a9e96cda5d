"""Shell hooks through the real ``mg`` command against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migretti_core.testing import run_cli, run_mg, write_migration, write_text
from migretti_plugins.shellhooks import pg_environment
from migretti_plugins.shellhooks.runner import run_command

MG = Path(sys.executable).parent / "mg"

DUMP_ENV = """\
import json, os, sys
with open(sys.argv[1], "w") as fh:
    json.dump({"env": dict(os.environ), "cwd": os.getcwd()}, fh)
"""


def table_migration(table: str) -> str:
    return (
        f"-- migrate: up\nCREATE TABLE {table} (id int);\n-- migrate: down\nDROP TABLE {table};\n"
    )


MIGRATIONS = {"0001_create_a.sql": table_migration("a"), "0002_create_b.sql": table_migration("b")}


# --- helpers -----------------------------------------------------------------------------


def dump_env(name: str) -> str:
    """A hook command that writes its environment and cwd to ``<name>.json``."""
    return f"{shlex.quote(sys.executable)} dump_env.py {name}.json"


def make_project(
    root: Path,
    database: Mapping[str, str],
    hooks: Mapping[str, str],
    *,
    extra: str = "",
    migrations: Mapping[str, str] = MIGRATIONS,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["database:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in database.items()]
    lines.append("hooks:")
    lines += [f"  {event}: {json.dumps(command)}" for event, command in hooks.items()]
    (root / "mg.yaml").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    (root / "migrations").mkdir(exist_ok=True)
    for name, text in migrations.items():
        (root / "migrations" / name).write_text(text, encoding="utf-8")
    (root / "dump_env.py").write_text(DUMP_ENV, encoding="utf-8")
    return root


def mg(
    root: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("MG_", "PG"))}
    child_env.update(env or {})
    return subprocess.run(
        [str(MG), *args],
        cwd=root,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_dump(root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))
    return data


def tables(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = 'public'")
        return {row[0] for row in rows}


def history(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        if conn.execute("select to_regclass('public._migrations')").fetchone() == (None,):
            return []
        rows = conn.execute("select id, status from _migrations order by id")
        return [(row[0], row[1]) for row in rows]


def is_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.fixture
def database(db_conninfo: dict[str, str]) -> dict[str, str]:
    """The test database as ``database:`` keys of mg.yaml."""
    return dict(db_conninfo)


def assert_pg_variables(env: Mapping[str, str], database: Mapping[str, str]) -> None:
    assert env["PGHOST"] == database["host"]
    assert env["PGPORT"] == database["port"]
    assert env["PGUSER"] == database["user"]
    assert env["PGDATABASE"] == database["dbname"]


# --- each event with its environment -----------------------------------------------------


def test_apply_hooks_run_before_and_after_with_the_documented_environment(
    tmp_path: Path, database: dict[str, str], database_url: str, psql_bin: Path
) -> None:
    query = "select count(*) from pg_tables where tablename in ('a', 'b')"
    count = f"{shlex.quote(str(psql_bin))} -XAtc {shlex.quote(query)}"
    root = make_project(
        tmp_path / "proj",
        database,
        {
            "pre_apply": f"{dump_env('pre')} && {count} > pre.count",
            "post_apply": f"{dump_env('post')} && {count} > post.count",
        },
    )
    done = mg(root, "apply")
    assert done.returncode == 0, done.stderr
    for name, event in (("pre", "pre_apply"), ("post", "post_apply")):
        dump = read_dump(root, name)
        env = dump["env"]
        assert Path(dump["cwd"]).resolve() == root.resolve()
        assert env["MG_EVENT"] == event
        assert env["MG_ENV"] == ""
        assert env["MG_MIGRATIONS"] == "0001,0002"
        assert env["MG_DIRECTION"] == "up"
        assert_pg_variables(env, database)
        assert env.get("PGPASSWORD") == database.get("password")
    # psql reached the target through the PG* variables, before and after the migrations
    assert (root / "pre.count").read_text().strip() == "0"
    assert (root / "post.count").read_text().strip() == "2"
    assert "running pre_apply hook" in done.stderr


def test_a_plan_too_long_for_one_variable_reaches_the_hook_in_a_file(
    tmp_path: Path, database: dict[str, str]
) -> None:
    # 5,000 ULID-long ids make a 135 KB MG_MIGRATIONS: Linux refuses to start a program
    # given a variable of 128 KiB or more, so the hook could not run and apply was refused.
    ids = [f"01J{n:023d}" for n in range(5000)]
    migrations = {f"{ident}_m.sql": "-- migrate: up\nSELECT 1;\n" for ident in ids}
    hook = (
        'echo "$${MG_MIGRATIONS-unset}" > $MG_EVENT.var; cp "$MG_MIGRATIONS_FILE" $MG_EVENT.ids; '
        'echo "$MG_MIGRATIONS_FILE" > $MG_EVENT.path'
    )
    root = make_project(
        tmp_path / "proj",
        database,
        {"pre_apply": hook, "post_apply": hook},
        extra="lint:\n  on_apply: off\n",
        migrations=migrations,
    )
    done = mg(root, "apply", timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    for event in ("pre_apply", "post_apply"):
        assert (root / f"{event}.var").read_text() == "unset\n"
        assert (root / f"{event}.ids").read_text().splitlines() == ids
        assert not Path((root / f"{event}.path").read_text().strip()).exists()


def test_the_migrations_file_lists_the_plan_one_id_a_line(
    tmp_path: Path, database: dict[str, str]
) -> None:
    hook = 'cp "$MG_MIGRATIONS_FILE" $MG_EVENT.ids && echo "$MG_MIGRATIONS" > $MG_EVENT.var'
    root = make_project(tmp_path / "proj", database, {"pre_rollback": hook, "on_failure": hook})
    assert mg(root, "apply").returncode == 0
    assert mg(root, "rollback", "2").returncode == 0
    assert (root / "pre_rollback.ids").read_text() == "0002\n0001\n"
    assert (root / "pre_rollback.var").read_text() == "0002,0001\n"
    (root / "migrations" / "0003_bad.sql").write_text("-- migrate: up\nSELECT 1/0;\n")
    assert mg(root, "apply").returncode == 1
    assert (root / "on_failure.ids").read_text() == "0001\n0002\n0003\n"


def test_a_hook_runs_without_the_migrations_file_when_no_temp_dir_is_writable(
    tmp_path: Path, database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_temp_dir(*args: object, **kwargs: object) -> tuple[int, str]:
        raise FileNotFoundError(2, "No usable temporary directory found")

    monkeypatch.setattr("tempfile.mkstemp", no_temp_dir)
    hook = 'echo "$MG_MIGRATIONS [$${MG_MIGRATIONS_FILE-unset}]" > pre.txt'
    root = make_project(tmp_path / "proj", database, {"pre_apply": hook})
    done = run_cli(["apply"], cwd=root, env={"MG_ENV": None, "MG_CONFIG": None})
    assert done.exit_code == 0, done.stderr
    assert (root / "pre.txt").read_text() == "0001,0002 [unset]\n"


def test_rollback_hooks_get_the_rollback_order(tmp_path: Path, database: dict[str, str]) -> None:
    root = make_project(
        tmp_path / "proj",
        database,
        {"pre_rollback": dump_env("pre"), "post_rollback": dump_env("post")},
    )
    assert mg(root, "apply").returncode == 0
    done = mg(root, "rollback", "2")
    assert done.returncode == 0, done.stderr
    for name, event in (("pre", "pre_rollback"), ("post", "post_rollback")):
        env = read_dump(root, name)["env"]
        assert env["MG_EVENT"] == event
        assert env["MG_MIGRATIONS"] == "0002,0001"
        assert env["MG_DIRECTION"] == "down"
        assert_pg_variables(env, database)


def test_a_profile_overrides_a_hook_and_names_itself_in_mg_env(
    tmp_path: Path, database: dict[str, str]
) -> None:
    profile = (
        "envs:\n"
        "  staging:\n"
        "    hooks:\n"
        f"      pre_apply: {json.dumps(dump_env('staging'))}\n"
        "      post_apply:\n"
    )
    root = make_project(
        tmp_path / "proj",
        database,
        {"pre_apply": dump_env("top"), "post_apply": dump_env("post")},
        extra=profile,
    )
    done = mg(root, "apply", "--env", "staging")
    assert done.returncode == 0, done.stderr
    assert read_dump(root, "staging")["env"]["MG_ENV"] == "staging"
    assert not (root / "top.json").exists()
    assert not (root / "post.json").exists()  # emptied in the profile: disabled


def test_on_failure_gets_the_failed_migration_and_the_error(
    tmp_path: Path, database: dict[str, str], database_url: str
) -> None:
    migrations = dict(MIGRATIONS)
    migrations["0002_create_b.sql"] = "-- migrate: up\nSELECT * FROM no_such_table;\n"
    root = make_project(
        tmp_path / "proj",
        database,
        {"on_failure": dump_env("failure"), "post_apply": dump_env("post")},
        migrations=migrations,
    )
    done = mg(root, "apply")
    assert done.returncode == 1
    env = read_dump(root, "failure")["env"]
    assert env["MG_EVENT"] == "on_failure"
    assert env["MG_FAILED_MIGRATION"] == "0002"
    assert env["MG_MIGRATIONS"] == "0001,0002"
    assert "no_such_table" in env["MG_ERROR"]
    assert_pg_variables(env, database)
    assert not (root / "post.json").exists()
    assert "a" in tables(database_url)
    assert "b" not in tables(database_url)


def test_on_failure_runs_for_an_error_too_long_for_one_variable(
    tmp_path: Path, database: dict[str, str]
) -> None:
    # RAISE with a 200 KB message: the whole text in MG_ERROR kept the hook from starting.
    raising = "DO $$ BEGIN RAISE EXCEPTION 'orphans: %', repeat('x', 200000); END $$;"
    root = make_project(
        tmp_path / "proj",
        database,
        {"on_failure": 'printf %s "$MG_ERROR" > error.txt'},
        migrations={"0001_check.sql": f"-- migrate: up\n{raising}\n"},
    )
    done = mg(root, "apply")
    assert done.returncode == 1
    assert "could not be run" not in done.stderr
    error = (root / "error.txt").read_text()
    assert error.startswith("migrations/0001_check.sql:2: orphans: xxx")
    assert error.endswith("more bytes cut; the whole error is in mg's output)")
    assert 100_000 < len(error) < 100_200
    assert "x" * 200000 in done.stderr


def test_a_failing_on_failure_hook_only_warns(tmp_path: Path, database: dict[str, str]) -> None:
    migrations = {"0001_bad.sql": "-- migrate: up\nSELECT * FROM no_such_table;\n"}
    root = make_project(
        tmp_path / "proj", database, {"on_failure": "exit 9"}, migrations=migrations
    )
    done = mg(root, "apply")
    assert done.returncode == 1
    assert "on_failure hook failed with exit code 9" in done.stderr
    assert "no_such_table" in done.stderr  # the migration's own error is still the error
    assert "mg: warning:" in done.stderr


# --- failures, timeouts, when hooks do not run ---------------------------------------------


def test_a_failing_pre_apply_hook_leaves_the_database_untouched(
    tmp_path: Path, database: dict[str, str], database_url: str
) -> None:
    root = make_project(tmp_path / "proj", database, {"pre_apply": "echo backing up; exit 3"})
    done = mg(root, "apply")
    assert done.returncode == 1
    assert "pre_apply hook failed with exit code 3; nothing was changed" in done.stderr
    assert "backing up" in done.stderr
    assert tables(database_url) & {"a", "b"} == set()
    assert history(database_url) == []


def test_a_failing_pre_rollback_hook_rolls_nothing_back(
    tmp_path: Path, database: dict[str, str], database_url: str
) -> None:
    root = make_project(tmp_path / "proj", database, {"pre_rollback": "exit 5"})
    assert mg(root, "apply").returncode == 0
    done = mg(root, "rollback")
    assert done.returncode == 1
    assert "pre_rollback hook failed with exit code 5; nothing was changed" in done.stderr
    assert {"a", "b"} <= tables(database_url)
    assert history(database_url) == [("0001", "applied"), ("0002", "applied")]


def test_a_failing_post_apply_hook_exits_1_and_keeps_the_migrations(
    tmp_path: Path, database: dict[str, str], database_url: str
) -> None:
    root = make_project(tmp_path / "proj", database, {"post_apply": "exit 2"})
    done = mg(root, "apply")
    assert done.returncode == 1
    assert "post_apply hook failed with exit code 2; the 2 migrations stay applied" in (done.stderr)
    assert {"a", "b"} <= tables(database_url)
    assert history(database_url) == [("0001", "applied"), ("0002", "applied")]


def test_a_failing_post_rollback_hook_says_the_rollback_stays(
    tmp_path: Path, database: dict[str, str], database_url: str
) -> None:
    root = make_project(tmp_path / "proj", database, {"post_rollback": "exit 2"})
    assert mg(root, "apply").returncode == 0
    done = mg(root, "rollback")
    assert done.returncode == 1
    assert "post_rollback hook failed with exit code 2; the migration stays rolled back" in (
        done.stderr
    )
    assert history(database_url) == [("0001", "applied")]


@pytest.mark.parametrize("script", ["sleep 60", "trap '' TERM; sleep 60"])
def test_a_hanging_hook_is_killed_with_its_children_after_the_timeout(
    tmp_path: Path, database: dict[str, str], database_url: str, script: str
) -> None:
    hook = f"{script} & echo $! > child.pid; wait"
    root = make_project(
        tmp_path / "proj", database, {"pre_apply": hook}, extra="hook_timeout: 1s\n"
    )
    started = time.monotonic()
    done = mg(root, "apply", timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert "pre_apply hook timed out after 1s; nothing was changed" in done.stderr
    assert "hook_timeout" in done.stderr  # the hint says how to allow more time
    assert elapsed < 15
    pid = int((root / "child.pid").read_text())
    deadline = time.monotonic() + 20  # a wait, not a measure: generous under load
    while not is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert is_gone(pid)
    assert tables(database_url) & {"a", "b"} == set()


def test_interrupting_mg_ends_a_running_hook_and_its_children(
    tmp_path: Path, database: dict[str, str], database_url: str
) -> None:
    root = make_project(
        tmp_path / "proj", database, {"pre_apply": "sleep 60 & echo $! > child.pid; wait"}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MG_", "PG"))}
    proc = subprocess.Popen(
        [str(MG), "apply"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not (root / "child.pid").exists() or not (root / "child.pid").read_text():
            assert time.monotonic() < deadline, "the hook never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    finally:
        proc.kill()
        proc.communicate()
    pid = int((root / "child.pid").read_text())
    deadline = time.monotonic() + 20  # a wait, not a measure: generous under load
    while not is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert is_gone(pid)
    assert tables(database_url) & {"a", "b"} == set()


def test_no_hook_runs_when_there_is_nothing_to_do_or_on_dry_run(
    tmp_path: Path, database: dict[str, str]
) -> None:
    every = {
        event: f"echo {event} >> ran.txt"
        for event in ("pre_apply", "post_apply", "pre_rollback", "post_rollback", "on_failure")
    }
    root = make_project(tmp_path / "proj", database, every)
    for args in (("apply", "--dry-run"), ("rollback",), ("rollback", "--dry-run")):
        done = mg(root, *args)
        assert done.returncode == 0, (args, done.stderr)
    assert not (root / "ran.txt").exists()
    assert mg(root, "apply").returncode == 0
    (root / "ran.txt").unlink()
    assert mg(root, "apply").returncode == 0  # already up to date
    assert mg(root, "rollback", "--dry-run").returncode == 0
    assert not (root / "ran.txt").exists()


# --- output ------------------------------------------------------------------------------


def test_hook_output_goes_to_stderr_and_stdout_keeps_the_results(
    tmp_path: Path, database: dict[str, str]
) -> None:
    root = make_project(
        tmp_path / "proj",
        database,
        {"pre_apply": "echo from-stdout; echo from-stderr >&2"},
    )
    done = mg(root, "apply")
    assert done.returncode == 0, done.stderr
    assert "from-stdout" in done.stderr
    assert "from-stderr" in done.stderr
    assert "from-" not in done.stdout
    assert "0001" in done.stdout and "0002" in done.stdout


def test_a_hook_writing_a_huge_line_without_newline_is_relayed_in_time(
    tmp_path: Path, database: dict[str, str]
) -> None:
    # A progress meter or a dump written to stdout by mistake: 96 MiB, no newline. mg
    # relays it in pieces, in linear time and bounded memory, well within the timeout.
    size = 96 * 1024 * 1024
    hook = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo after"
    root = make_project(
        tmp_path / "proj", database, {"pre_apply": hook}, extra="hook_timeout: 40s\n"
    )
    done = mg(root, "apply", timeout=90)
    assert done.returncode == 0, done.stderr[-500:]
    lines = done.stderr.splitlines()
    pieces = [line for line in lines if line and set(line) == {"x"}]
    assert sum(map(len, pieces)) == size
    assert max(map(len, pieces)) <= 1024 * 1024
    assert "after" in lines


def test_json_log_carries_hook_events_and_output_as_json_lines(
    tmp_path: Path, database: dict[str, str]
) -> None:
    root = make_project(tmp_path / "proj", database, {"pre_apply": "echo hello from hook"})
    done = mg(root, "apply", "--json-log")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    hooks = [r for r in records if r["event"].startswith("hook.")]
    assert [r["event"] for r in hooks] == ["hook.started", "hook.output", "hook.finished"]
    assert all(r["hook"] == "pre_apply" for r in hooks)
    assert hooks[1]["message"] == "hello from hook"
    assert hooks[2]["exit_code"] == 0
    assert isinstance(hooks[2]["duration_ms"], int)
    assert "echo" not in done.stderr  # the command itself is never logged


# --- secrets -------------------------------------------------------------------------------


@pytest.fixture
def password_role(database_url: str) -> Iterator[tuple[str, str]]:
    """A login role with a password and every right on the test database."""
    role = f"hookuser_{uuid.uuid4().hex[:10]}"
    password = f"s3cr3t-pw-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        dbname = conn.info.dbname
        conn.execute(
            sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield role, password
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_hook_gets_the_configured_password_and_psql_works(
    tmp_path: Path, database: dict[str, str], password_role: tuple[str, str], psql_bin: Path
) -> None:
    role, password = password_role
    config = dict(database, user=role, password="${DB_PASSWORD}")
    psql = f"{shlex.quote(str(psql_bin))} -XAtc 'select current_user' > whoami.txt"
    root = make_project(tmp_path / "proj", config, {"pre_apply": f"{dump_env('pre')} && {psql}"})
    done = mg(root, "apply", env={"DB_PASSWORD": password})
    assert done.returncode == 0, done.stderr
    env = read_dump(root, "pre")["env"]
    assert env["PGPASSWORD"] == password
    assert env["PGUSER"] == role
    assert (root / "whoami.txt").read_text().strip() == role
    assert password not in done.stdout + done.stderr


@pytest.mark.parametrize("flags", [(), ("-v",), ("--json-log",)])
def test_secrets_interpolated_into_a_hook_never_reach_the_output(
    tmp_path: Path, database: dict[str, str], flags: tuple[str, ...]
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    token = f"tok-{uuid.uuid4().hex}"
    config = dict(database, password="${DB_PASSWORD}")
    hook = (
        'echo "uploading to https://backup:${DB_PASSWORD}@example.invalid"; '
        'test -n "${API_TOKEN}" && exit 4'
    )
    root = make_project(tmp_path / "proj", config, {"pre_apply": hook, "on_failure": hook})
    env = {"DB_PASSWORD": password, "API_TOKEN": token}
    done = mg(root, "apply", *flags, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "pre_apply hook failed with exit code 4" in output
    assert "uploading to https://backup:****@example.invalid" in output
    assert password not in output
    assert token not in output


def test_a_broken_reference_in_a_hook_command_is_reported_without_its_text(
    tmp_path: Path, database: dict[str, str]
) -> None:
    # The command text may hold secrets: a broken ${...} in it is located, never quoted.
    for hook in (
        "curl -u ${USER_NAME curl -u admin:s3cr3tpart https://example.invalid",
        'curl -H "Authorization: Bearer ${TOKEN:-${s3cr3tpart}}" https://example.invalid',
    ):
        root = make_project(tmp_path / "proj", database, {"pre_apply": hook})
        for args in (("apply",), ("--json-log", "-v", "apply")):
            done = mg(root, *args)
            assert done.returncode == 2, done.stderr
            assert "hooks.pre_apply: invalid reference at character" in done.stderr
            assert "s3cr3t" not in done.stdout + done.stderr
            assert "${" not in done.stderr.split("invalid reference", 1)[1].split("(use", 1)[0]


# --- units ---------------------------------------------------------------------------------


def test_pg_environment_expands_a_url_and_keeps_a_socket_directory() -> None:
    env = pg_environment(
        {
            "dbname": "postgresql://alice:pw@/shop?host=/run/pg&port=5433&sslmode=disable",
            "application_name": "migretti",
            "keepalives": "1",
        }
    )
    assert env == {
        "PGHOST": "/run/pg",
        "PGPORT": "5433",
        "PGUSER": "alice",
        "PGPASSWORD": "pw",
        "PGDATABASE": "shop",
        "PGSSLMODE": "disable",
        "PGAPPNAME": "migretti",
    }


def test_run_command_relays_lines_and_reports_signals(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = run_command(
        "printf 'one\\ntwo'; kill -9 $$",
        cwd=str(tmp_path),
        env=dict(os.environ),
        timeout=10,
        on_line=lines.append,
    )
    assert lines == ["one", "two"]
    assert not outcome.ok
    assert outcome.signal_name == "SIGKILL"
    assert outcome.describe(10) == "was killed by SIGKILL"


def test_a_long_line_is_cut_into_pieces_between_characters(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text(
        "import sys\nsys.stdout.write('a' + '\\u00e9\\u20ac' * 400_000 + '\\nend\\n')\n"
    )
    lines: list[str] = []
    outcome = run_command(
        f"{shlex.quote(sys.executable)} long.py",
        cwd=str(tmp_path),
        env=dict(os.environ),
        timeout=20,
        on_line=lines.append,
    )
    assert outcome.ok
    assert len(lines) > 2
    assert "".join(lines[:-1]) == "a" + "\u00e9\u20ac" * 400_000
    assert lines[-1] == "end"


def test_a_background_child_holding_the_output_does_not_hang_the_hook(tmp_path: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    outcome = run_command(
        "sleep 30 & echo $! > bg.pid; echo started",
        cwd=str(tmp_path),
        env=dict(os.environ),
        timeout=20,
        on_line=lines.append,
    )
    try:
        assert outcome.ok
        assert lines == ["started"]
        assert time.monotonic() - started < 5
    finally:
        os.kill(int((tmp_path / "bg.pid").read_text()), 9)


PROGRAM_DIRS_PLUGIN = """
from pathlib import Path

from migretti_core.api import hookimpl


@hookimpl
def mg_program_dirs(config):
    return [Path(config.root) / "tools"]
"""


def test_hook_mg_program_dirs(tmp_path: Path, database_url: str) -> None:
    # A hook finds the programs a plugin puts first on PATH (the embedded server's pg_dump).
    project = tmp_path / "proj"
    project.mkdir()
    tools = project / "tools"
    tools.mkdir()
    program = tools / "mg-test-tool"
    program.write_text("#!/bin/sh\necho found > tool-ran.txt\n", encoding="utf-8")
    program.chmod(0o755)
    write_text(project / "tools_plugin.py", PROGRAM_DIRS_PLUGIN)
    write_text(
        project / "mg.yaml",
        f"database:\n  url: {json.dumps(database_url)}\nhooks:\n  pre_apply: mg-test-tool\n",
    )
    write_migration(project, "0001", "t", "CREATE TABLE t (id int);")
    done = run_mg(["-p", "tools_plugin", "apply"], project)
    assert done.returncode == 0, done.stderr
    assert (project / "tool-ran.txt").read_text(encoding="utf-8") == "found\n"


ENVIRONMENT_PLUGIN = """
from migretti_core.api import hookimpl


@hookimpl
def mg_program_environment(config):
    return {"MG_TEST_WHERE": "from the plugin", "MG_EVENT": "not mg's"}
"""


def test_hook_mg_program_environment(tmp_path: Path, database_url: str) -> None:
    # A plugin's variables reach the hook after mg's own, which they may replace.
    project = tmp_path / "proj"
    write_text(project / "env_plugin.py", ENVIRONMENT_PLUGIN)
    write_text(
        project / "mg.yaml",
        f"database:\n  url: {json.dumps(database_url)}\n"
        "hooks:\n  pre_apply: 'echo \"$MG_TEST_WHERE/$MG_EVENT\" > seen.txt'\n",
    )
    write_migration(project, "0001", "t", "CREATE TABLE t (id int);")
    done = run_mg(["-p", "env_plugin", "apply"], project)
    assert done.returncode == 0, done.stderr
    assert (project / "seen.txt").read_text(encoding="utf-8") == "from the plugin/not mg's\n"


def test_blocking_shellhooks_leaves_its_sections_ignored(tmp_path: Path, database_url: str) -> None:
    project = tmp_path / "proj"
    write_text(
        project / "mg.yaml",
        f"database:\n  url: {json.dumps(database_url)}\nhook_timeout: 5s\n"
        "hooks:\n  pre_apply: touch ran.txt\n",
    )
    write_migration(project, "0001", "t", "CREATE TABLE t (id int);")
    done = run_mg(["-p", "no:shellhooks", "apply"], project)
    assert done.returncode == 0, done.stderr
    assert "section 'hooks' is ignored: plugin 'shellhooks' is blocked" in done.stderr
    assert "section 'hook_timeout' is ignored" in done.stderr
    assert not (project / "ran.txt").exists()


def test_a_failing_pre_apply_hook_on_a_fresh_database_creates_no_history_tables(
    tmp_path: Path, database_url: str
) -> None:
    """SPEC 9: a failing pre_* hook aborts before any change, the history tables included."""
    from migretti_core.testing import Project

    project = Project(tmp_path / "fresh", database_url, configure=False)
    project.configure(extra="hooks:\n  pre_apply: echo checking; exit 3\n")
    project.add_table("0001")
    try:
        done = project.mg("apply")

        assert done.returncode == 1, done.stderr
        assert "pre_apply hook failed with exit code 3; nothing was changed" in done.stderr
        assert project.all_tables() == set()
        again = project.mg("apply", "-p", "no:shellhooks")  # and a later run is unaffected
        assert again.returncode == 0, again.stderr
        assert project.statuses() == {"0001": "applied"}
    finally:
        project.close()


# --- a connection service (pg_service.conf) -----------------------------------------------


def url_of(database: Mapping[str, str]) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**database)


def _service_project(
    tmp_path: Path, database: Mapping[str, str], psql_bin: Path, extra_keys: Mapping[str, str]
) -> tuple[Path, dict[str, str]]:
    """A service file whose service ``elsewhere`` names the server's ``postgres`` database,
    and a project whose pre_apply hook records the database psql reaches."""
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        "[elsewhere]\n"
        f"host={database['host']}\nport={database['port']}\nuser={database['user']}\n"
        "dbname=postgres\napplication_name=from-the-service\n",
        encoding="utf-8",
    )
    query = "select current_database() || ' ' || current_setting('application_name')"
    psql = f"{shlex.quote(str(psql_bin))} -XAtc {shlex.quote(query)} > reached.txt"
    root = make_project(
        tmp_path / "proj",
        dict(database, **extra_keys),
        {"pre_apply": f"{dump_env('pre')} && {psql}"},
    )
    env = {"PGSERVICEFILE": str(service_file)}
    if database.get("password"):
        env["PGPASSWORD"] = database["password"]
    return root, env


@pytest.mark.parametrize("where", ["environment", "config"])
def test_a_service_does_not_turn_a_hook_to_another_database(
    tmp_path: Path, database: dict[str, str], psql_bin: Path, where: str
) -> None:
    # libpq lets a service's settings win over PGHOST, PGDATABASE, ...: a hook handed
    # PGSERVICE beside them would back up the service's database, not the one mg migrates.
    extra = {"service": "elsewhere"} if where == "config" else {}
    root, env = _service_project(tmp_path, database, psql_bin, extra)
    if where == "environment":
        env["PGSERVICE"] = "elsewhere"
    done = mg(root, "apply", env=env)
    assert done.returncode == 0, done.stderr
    assert tables(url_of(database)) == {"_migrations", "_migrations_log", "a", "b"}
    reached = (root / "reached.txt").read_text().split()
    assert reached[0] == database["dbname"]
    # what the configuration leaves open still comes from the service, as for mg itself
    assert reached[1] == "from-the-service"
    assert "PGSERVICE" not in read_dump(root, "pre")["env"]


def test_a_service_that_names_the_database_still_reaches_it_in_a_hook(
    tmp_path: Path, database: dict[str, str], psql_bin: Path
) -> None:
    # mg.yaml without dbname: mg and the hook both take it from the service.
    config = {k: v for k, v in database.items() if k != "dbname"}
    root, env = _service_project(tmp_path, config, psql_bin, {})
    (tmp_path / "pg_service.conf").write_text(
        f"[mine]\ndbname={database['dbname']}\napplication_name=from-the-service\n",
        encoding="utf-8",
    )
    env["PGSERVICE"] = "mine"
    done = mg(root, "apply", env=env)
    assert done.returncode == 0, done.stderr
    assert tables(url_of(database)) == {"_migrations", "_migrations_log", "a", "b"}
    assert (root / "reached.txt").read_text().split() == [
        database["dbname"],
        "from-the-service",
    ]
