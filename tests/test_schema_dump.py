"""`mg schema dump` and `schema_file:`: a deterministic, version-matched schema.sql."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project, fresh_database


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    project.add(
        "0001",
        "users",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);",
        "DROP TABLE users;",
    )
    project.add(
        "0002", "email_idx", "CREATE INDEX users_email ON users (email);", "DROP INDEX users_email;"
    )
    yield project
    project.close()


def test_dump_is_deterministic_and_lists_applied_migrations(project: Project) -> None:
    assert project.mg("apply").returncode == 0
    first = project.mg("schema", "dump")
    assert first.returncode == 0, first.stderr
    second = project.mg("schema", "dump")
    assert first.stdout == second.stdout
    text = first.stdout
    assert "CREATE TABLE public.users" in text
    assert "CREATE INDEX users_email ON public.users" in text
    assert "\\restrict" not in text and "Dumped from" not in text and "Dumped by" not in text
    tail = text[text.index("-- Applied migrations") :]
    assert tail.index("'0001'") < tail.index("'0002'")
    assert "INSERT INTO public._migrations" in tail

    out = project.root / "db" / "schema.sql"
    assert project.mg("schema", "dump", "-o", "db/schema.sql").returncode == 0
    assert out.read_text() == text


def test_an_output_that_can_name_no_file_is_a_usage_error(project: Project) -> None:
    (project.root / "db").mkdir()
    for output, said in (
        ("", "-o needs a file path, not an empty value"),
        ("db", "-o db: is a directory, not a file"),
    ):
        done = project.mg("schema", "dump", "-o", output)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"mg: error: {said}\n"), done.stderr
        assert done.stdout == ""
    assert list((project.root / "db").iterdir()) == []


def test_a_dump_loads_into_a_database_mg_sees_as_up_to_date(project: Project, pg_url: str) -> None:
    import psycopg

    assert project.mg("apply").returncode == 0
    text = project.mg("schema", "dump").stdout
    with fresh_database(pg_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(text.encode())
        loaded = Project(project.root, url, configure=False)
        env = {"MG_DATABASE_URL": url}
        assert loaded.mg("status", "--exit-code", env=env).returncode == 0
        assert loaded.mg("schema", "dump", env=env).stdout == text


def test_a_dump_of_a_baselined_database_loads_with_its_baseline_marks(
    project: Project, pg_url: str
) -> None:
    import psycopg

    project.sql("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
    assert project.mg("baseline", "0001").returncode == 0
    assert project.mg("apply").returncode == 0
    text = project.mg("schema", "dump").stdout
    with fresh_database(pg_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(text.encode())
        loaded = Project(project.root, url, configure=False)
        env = {"MG_DATABASE_URL": url}
        status = loaded.mg("status", "--format", "json", env=env)
        assert json.loads(status.stdout)["baseline"] == 1, status.stdout
        listed = json.loads(loaded.mg("list", "--format", "json", env=env).stdout)
        assert [(m["id"], m["baseline"]) for m in listed] == [("0001", True), ("0002", False)]
        assert loaded.mg("schema", "dump", env=env).stdout == text


def test_a_pg_dump_of_another_major_version_is_refused(project: Project) -> None:
    fake = project.root / "pg_dump_12"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.3'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    server = project.value("SHOW server_version_num")
    major = int(server) // 10000
    done = project.mg("schema", "dump", env={"PG_DUMP": str(fake)})
    assert done.returncode == 2
    assert "12.3" in done.stderr and f"PostgreSQL {major}" in done.stderr
    project.configure(extra=f"schema:\n  pg_dump: {json.dumps(str(fake))}\n")
    done = project.mg("schema", "dump")
    assert done.returncode == 2 and "12.3" in done.stderr


def test_schema_file_follows_every_change(project: Project) -> None:
    project.configure(extra="schema_file: db/schema.sql\n")
    path = project.root / "db" / "schema.sql"
    assert project.mg("up").returncode == 0
    assert "CREATE TABLE public.users" in path.read_text()
    assert "users_email" not in path.read_text()
    assert project.mg("apply").returncode == 0
    assert "CREATE INDEX users_email" in path.read_text()
    assert path.read_text() == project.mg("schema", "dump").stdout
    assert project.mg("down").returncode == 0
    assert "users_email" not in path.read_text()
    assert project.mg("rollback").returncode == 0
    assert "CREATE TABLE public.users" not in path.read_text()
    assert project.mg("apply", "--dry-run").returncode == 0
    assert "CREATE TABLE public.users" not in path.read_text()

    # fix: a failed no-transaction migration the user completed by hand.
    project.add("0003", "half", "CREATE TABLE half (id int);\nSELECT 1/0;", no_transaction=True)
    assert project.mg("apply").returncode == 1
    before = path.read_text()
    assert "'0003'" not in before
    assert project.mg("fix", "0003", "--applied").returncode == 0
    assert "'0003'" in path.read_text() and "CREATE TABLE public.half" in path.read_text()


def test_a_failed_apply_leaves_the_schema_file_as_it_was(project: Project) -> None:
    project.configure(extra="schema_file: db/schema.sql\n")
    path = project.root / "db" / "schema.sql"
    assert project.mg("up").returncode == 0
    before = path.read_text()
    project.add("0003", "broken", "SELECT 1/0;", "SELECT 1;")
    done = project.mg("apply")
    assert done.returncode == 1
    assert project.statuses()["0002"] == "applied"  # committed before 0003 failed
    assert path.read_text() == before
    assert project.mg("schema", "dump", "-o", "db/schema.sql").returncode == 0
    assert "CREATE INDEX users_email" in path.read_text()


def test_a_schema_file_that_cannot_be_written_never_loses_a_migration(project: Project) -> None:
    (project.root / "blocker").write_text("a file, not a directory\n")
    project.configure(extra="schema_file: blocker/schema.sql\n")
    done = project.mg("apply")
    assert done.returncode == 1  # the command failed, though nothing is lost
    lines = done.stderr.splitlines()
    assert "mg: warning" not in done.stderr, done.stderr
    [error] = [line for line in lines if line.startswith("mg: error:")]
    assert "blocker/schema.sql" in error and "committed" in error
    assert "blocker is a file, not a directory" in error  # not mkdir's "File exists"
    assert lines[-1].startswith("  hint: fix the cause"), done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert project.mg("status", "--exit-code").returncode == 0
    assert not os.path.isdir(project.root / "blocker")


@pytest.mark.parametrize(
    ("schema_file", "reason"),
    [("blocker/schema.sql", "blocker is a file"), ("full.sql", "No space left on device")],
)
def test_a_schema_file_not_written_ends_the_json_log_with_command_failed(
    project: Project, schema_file: str, reason: str
) -> None:
    (project.root / "blocker").write_text("a file, not a directory\n")
    (project.root / "full.sql").symlink_to("/dev/full")
    project.configure(extra=f"schema_file: {schema_file}\n")
    logged = project.mg("--json-log", "apply")
    assert logged.returncode == 1, logged.stderr
    events = [json.loads(line) for line in logged.stderr.splitlines()]
    [not_written] = [e for e in events if e["event"] == "schema.not_written"]
    assert not_written["level"] == "error" and not_written["path"].endswith(schema_file)
    last = events[-1]
    assert last["event"] == "command.failed" and last["exit_code"] == 1, events
    assert "committed" in last["error"] and schema_file in last["error"]
    assert reason in last["error"]
    assert last["hint"].startswith("fix the cause and run `mg schema dump -o ")
    assert last["hint"].endswith(f"{schema_file}`")
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("[db/schema.sql]", "schema_file: expected a file path, got a list"),
        ("{path: db/schema.sql}", "schema_file: expected a file path, got a mapping"),
        ("migrations", "schema_file: migrations is a directory, not a file"),
    ],
)
def test_a_schema_file_that_is_no_file_path_is_refused_before_anything_runs(
    project: Project, value: str, said: str
) -> None:
    project.configure(extra=f"schema_file: {value}\n")
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert f"mg: error: mg.yaml: {said}" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert project.statuses() == {}  # refused before the first migration, not after the last


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("migrations/0002_email_idx.sql", "is in the migrations directory"),
        ("migrations/0003_next.sql", "is in the migrations directory"),
        ("./seeds/../seeds/demo.sql", "is in the seeds directory"),
        ("mg.yaml", "is the configuration file"),
        ("link.sql", "is the configuration file"),
        (".env", "is the .env file beside the configuration"),
    ],
)
def test_a_schema_file_that_is_a_file_of_the_project_is_refused_before_anything_runs(
    project: Project, value: str, said: str
) -> None:
    project.configure(extra=f"schema_file: {value}\n")
    (project.root / "link.sql").symlink_to("mg.yaml")
    (project.root / ".env").write_text("DB_PASSWORD=secret\n")
    before = {p: p.read_bytes() for p in project.root.rglob("*") if p.is_file()}

    done = project.mg("apply")

    # before: the apply ran, then the dump replaced the file: a migration's SQL, mg.yaml or
    # .env lost (and a dump under migrations/ broke every later command)
    assert done.returncode == 2, done.stderr
    assert f"mg: error: mg.yaml: schema_file: {value} {said}" in done.stderr
    assert "mg would replace it with the schema" in done.stderr
    assert project.statuses() == {}
    assert {p: p.read_bytes() for p in project.root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("migrations/0001_users.sql", "is in the migrations directory"),
        ("mg.yaml", "is the configuration file"),
    ],
)
def test_a_dump_output_that_is_a_file_of_the_project_is_refused(
    project: Project, output: str, said: str
) -> None:
    before = (project.root / output).read_bytes()
    done = project.mg("schema", "dump", "-o", output)
    assert done.returncode == 2, done.stderr
    assert f"mg: error: -o {output}: {said}" in done.stderr
    assert "mg would replace it with the schema" in done.stderr
    assert (project.root / output).read_bytes() == before
    assert project.mg("schema", "dump", "-o", "migrations/schema.txt").returncode == 0


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ("schema:\n  bogus: 1", "schema.bogus: unknown key"),
        ("schema:\n  pg_dump: [pg_dump]", "schema.pg_dump: expected a single value, got a list"),
        ("schema: 5", "schema: expected a mapping of settings"),
    ],
)
def test_a_bad_schema_section_is_refused_before_anything_runs(
    project: Project, section: str, said: str
) -> None:
    project.configure(extra=f"schema_file: db/schema.sql\n{section}\n")
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"mg: error: mg.yaml: {said}"), done.stderr
    assert "committed" not in done.stderr and done.stdout == ""
    assert project.statuses() == {}


def test_a_schema_file_that_is_a_device_is_written_into_not_replaced(project: Project) -> None:
    full = project.root / "full.sql"
    full.symlink_to("/dev/full")
    project.configure(extra="schema_file: full.sql\n")
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert "full.sql" in done.stderr and "committed" in done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert full.is_symlink() and os.readlink(full) == "/dev/full"

    out = project.root / "out.sql"
    out.symlink_to("/dev/stdout")
    done = project.mg("schema", "dump", "-o", "out.sql")
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE public.users" in done.stdout
    assert out.is_symlink() and os.readlink(out) == "/dev/stdout"


def test_a_schema_file_that_is_a_link_to_a_file_stays_a_link(project: Project) -> None:
    shared = project.root / "shared"
    shared.mkdir()
    (shared / "schema.sql").write_text("old\n")
    (project.root / "db").mkdir()
    link = project.root / "db" / "schema.sql"
    link.symlink_to("../shared/schema.sql")
    project.configure(extra="schema_file: db/schema.sql\n")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == "../shared/schema.sql"
    assert "CREATE TABLE public.users" in (shared / "schema.sql").read_text()
    assert project.mg("schema", "dump", "-o", "db/schema.sql").returncode == 0
    assert link.is_symlink()
    assert (shared / "schema.sql").read_text() == project.mg("schema", "dump").stdout
    assert sorted(p.name for p in shared.iterdir()) == ["schema.sql"]  # no temporary left


@pytest.mark.parametrize("mode", [0o600, 0o664])
def test_a_rewritten_schema_file_keeps_its_permissions(project: Project, mode: int) -> None:
    (project.root / "db").mkdir()
    path = project.root / "db" / "schema.sql"
    path.write_text("old\n")
    path.chmod(mode)
    project.configure(extra="schema_file: db/schema.sql\n")
    assert project.mg("up").returncode == 0
    assert "CREATE TABLE public.users" in path.read_text()
    # before: the new file had the umask's 0644, so a schema kept private became readable
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert project.mg("schema", "dump", "-o", "db/schema.sql").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_schema_file_is_on_disk_before_it_replaces_the_old_one(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut just after the rewrite must leave the old dump or the new one, never an
    empty file in place of the old one."""
    from migretti_core.testing import run_cli

    project.configure(extra="schema_file: db/schema.sql\n")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + ("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(source: str | Path, target: str | Path, **kwargs: object) -> None:
        if Path(target).name == "schema.sql":
            events.append("replace")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for args in (["apply"], ["schema", "dump", "-o", "db/schema.sql"]):
        events.clear()
        result = run_cli(args, cwd=project.root)
        assert result.exit_code == 0, result.output
        assert events.count("replace") == 1, events
        at = events.index("replace")
        assert "fsync file" in events[:at], (args, events)
        assert "fsync dir" in events[at:], (args, events)


def test_baseline_rewrites_the_schema_file(project: Project) -> None:
    project.configure(extra="schema_file: db/schema.sql\n")
    project.sql("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
    assert project.mg("baseline", "0001").returncode == 0
    text = (project.root / "db" / "schema.sql").read_text()
    assert "CREATE TABLE public.users" in text and "'0001'" in text and "'0002'" not in text


SPARE_PLUGIN = """
from pathlib import Path

from migretti_core.api import hookimpl


@hookimpl
def mg_spare_program_dirs(config):
    return [Path(config.root) / "tools"]
"""


def test_ctrl_c_during_the_rewrite_says_the_schema_file_is_stale(project: Project) -> None:
    from migretti_core.testing import wait_until

    major = int(project.value("SHOW server_version_num")) // 10000
    started = project.root / "pg_dump_started"
    fake = project.root / "slow_pg_dump"
    fake.write_text(
        f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) {major}.1'; "
        f"exit 0; fi\ntouch {started}\nexec sleep 60\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (project.root / "db").mkdir()
    (project.root / "db" / "schema.sql").write_text("old\n")
    project.configure(extra="schema_file: db/schema.sql\n")
    job = project.spawn("apply", env={"PG_DUMP": str(fake)})
    wait_until(lambda: started.exists() or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()

    done, _ = project.interrupt(job)

    assert done.returncode == 130, done.stderr
    # before: only "mg: interrupted", the schema file silently left behind the database
    assert (
        "mg: error: mg apply is committed, but Ctrl-C stopped the rewrite of the schema file "
        "db/schema.sql: it still shows the schema from before" in done.stderr
    )
    assert "hint: run `mg schema dump -o db/schema.sql`" in done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert (project.root / "db" / "schema.sql").read_text() == "old\n"
    assert sorted(p.name for p in (project.root / "db").iterdir()) == ["schema.sql"]


def test_hook_mg_spare_program_dirs(project: Project) -> None:
    # Without a pg_dump on PATH, the one in a plugin's spare directory of the server's major
    # version runs; one of another version there is skipped and named in the error.
    import sys

    assert project.mg("apply").returncode == 0
    major = int(project.value("SHOW server_version_num")) // 10000
    tools = project.root / "tools"
    tools.mkdir()
    fake = tools / "pg_dump"
    script = "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) {v}.1'; "
    script += "else echo 'CREATE TABLE from_the_spare_pg_dump ();'; fi\n"
    fake.write_text(script.format(v=major))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (project.root / "spare_plugin.py").write_text(SPARE_PLUGIN)
    only_venv = {"PATH": str(Path(sys.executable).parent)}
    done = project.mg("-p", "spare_plugin", "schema", "dump", env=only_venv)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE from_the_spare_pg_dump ();" in done.stdout
    assert "INSERT INTO public._migrations" in done.stdout

    fake.write_text(script.format(v=major - 1))
    done = project.mg("-p", "spare_plugin", "-p", "no:embedded", "schema", "dump", env=only_venv)
    assert done.returncode == 2
    assert f"pg_dump {major - 1}.1 at {fake}" in done.stderr


def test_a_table_kept_locked_ends_the_dump_after_table_lock_timeout(project: Project) -> None:
    """pg_dump waits for each table's lock at most table_lock_timeout, as a migration does,
    instead of holding ``mg schema dump`` (and the schema_file after an apply) for minutes."""
    import time

    import psycopg

    project.configure(extra="table_lock_timeout: 1s\n")
    assert project.mg("apply").returncode == 0
    table = sorted(project.tables())[0]
    holder = psycopg.connect(project.database_url)
    try:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        done = project.mg("schema", "dump", timeout=120)
        assert time.monotonic() - started < 30
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.startswith("mg: error: pg_dump failed: "), done.stderr
        assert "hint: pg_dump waited longer than table_lock_timeout (1s)" in done.stderr
        holder.rollback()
        assert project.mg("schema", "dump").returncode == 0
    finally:
        holder.close()


def test_the_connection_password_never_reaches_the_dump_but_the_schema_stays_as_it_is(
    project: Project,
) -> None:
    """The dump is SQL to keep: what a migration wrote into the schema itself stays as the
    server holds it, a literal equal to the password included; the connection's password, which
    pg_dump gets through PGPASSWORD, is never in it."""
    secret = "Dump-pw-31337"
    url = project.database_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    if url == project.database_url:
        pytest.skip("the test server's URL is not postgresql://postgres@...")
    project.configure({"url": url}, extra="schema_file: db/schema.sql\n")
    project.add(
        "0003",
        "quoted",
        f"CREATE FUNCTION quoted() RETURNS text LANGUAGE sql AS $$ SELECT 'x{secret}x' $$;",
        "DROP FUNCTION quoted();",
    )
    applied = project.mg("apply")
    assert applied.returncode == 0, applied.stderr
    assert secret not in applied.stdout + applied.stderr
    dumped = (project.root / "db" / "schema.sql").read_text()
    assert f"'x{secret}x'" in dumped
    assert dumped.count(secret) == 1
    shown = project.mg("schema", "dump")
    assert shown.stdout == dumped
    assert secret not in shown.stderr
