"""`mg drift`: the target's schema against the one its applied migrations produce."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str, pg_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    project.configure(extra=f"check:\n  database_url: {json.dumps(pg_url)}\n")
    project.add(
        "0001",
        "users",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, nickname text);",
        "DROP TABLE users;",
    )
    project.add("0002", "pending", "CREATE TABLE later (id int);", "DROP TABLE later;")
    yield project
    project.close()


def _history(project: Project) -> list[tuple[object, ...]]:
    return project.sql("SELECT * FROM _migrations_log ORDER BY id")


def test_a_hand_made_hotfix_is_drift(project: Project) -> None:
    assert project.mg("up").returncode == 0
    done = project.mg("drift")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no drift: the schema matches the 1 applied migration\n"

    project.sql("CREATE TABLE hotfix (id bigint)")
    done = project.mg("drift")
    assert done.returncode == 3
    assert done.stderr.endswith("drift: 1 object differs\n")
    project.sql("DROP TABLE hotfix")

    # Someone fixed production by hand.
    project.sql("CREATE INDEX users_email_idx ON users (email)")
    project.sql("ALTER TABLE users DROP COLUMN nickname")
    project.sql("ALTER TABLE users ALTER COLUMN email DROP NOT NULL")
    log_before = _history(project)

    done = project.mg("drift")
    assert done.returncode == 3
    lines = done.stdout.splitlines()
    assert "index public.users_email_idx: in the database, not produced by the migrations" in lines
    assert "column public.users.nickname: produced by the migrations, not in the database" in lines
    assert (
        "column public.users.email: not null is false in the database, true from the migrations"
        in lines
    )
    assert "later" not in done.stdout  # pending migrations are not part of the comparison
    assert done.stderr.endswith("drift: 3 objects differ\n")
    logged = project.mg("--json-log", "drift")
    assert logged.returncode == 3
    events = [json.loads(line) for line in logged.stderr.splitlines()]
    # (A role another test creates on the shared server meanwhile is a warning of its own.)
    (found,) = [e for e in events if e["event"] != "scratch.roles_left"]
    assert (found["event"], found["count"]) == ("drift.found", 3)

    data = json.loads(project.mg("drift", "--format", "json").stdout)
    assert data["ok"] is False and data["applied"] == 1
    where = {d["object"]: d["where"] for d in data["differences"]}
    assert where == {
        "column public.users.email": "both",
        "column public.users.nickname": "migrations",
        "index public.users_email_idx": "database",
    }
    # Nothing changed on the target.
    assert _history(project) == log_before
    assert project.tables() == {"users"}


def test_an_object_named_with_control_characters_is_shown_escaped(project: Project) -> None:
    """A table made by hand whose name holds a line break and a terminal escape sequence:
    one escaped line, never a raw sequence or a line of its own; JSON keeps the name."""
    assert project.mg("up").returncode == 0
    project.sql('CREATE TABLE "x\x1b]0;pwned\x07\nno drift" (id bigint)')
    done = project.mg("drift")
    assert done.returncode == 3, done.stderr
    assert done.stdout == (
        'table public."x\\x1b]0;pwned\\x07\\nno drift": in the database, not produced by '
        "the migrations\n"
    ), done.stdout
    done = project.mg("drift", "--format", "json")
    (difference,) = json.loads(done.stdout)["differences"]
    assert difference["object"] == 'table public."x\x1b]0;pwned\x07\nno drift"'


def test_drift_reads_a_010_database_without_changing_it(project: Project, ddl_010: str) -> None:
    import hashlib

    project.sql(ddl_010)
    checksum = hashlib.sha256(project.path_of("0001").read_bytes()).hexdigest()
    project.sql(
        "INSERT INTO _migrations (id, name, checksum) VALUES ('0001', 'users', %s)", (checksum,)
    )
    project.sql("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
    done = project.mg("drift")
    assert done.returncode == 3
    assert done.stdout.strip() == (
        "column public.users.nickname: produced by the migrations, not in the database"
    )
    columns = project.sql(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = '_migrations'::regclass "
        "AND attnum > 0 AND NOT attisdropped"
    )
    assert columns == [(5,)]  # the 0.10 table is left as it is


def test_an_applied_migration_whose_file_is_gone_stops_drift(project: Project) -> None:
    assert project.mg("up").returncode == 0
    project.path_of("0001").unlink()
    done = project.mg("drift")
    assert done.returncode == 3
    assert "file gone" in done.stderr and "0001" in done.stderr


def test_an_applied_migration_that_cannot_run_on_the_scratch_database_exits_1(
    project: Project,
) -> None:
    # Applied on a table made by hand, which the scratch database does not have.
    project.sql("CREATE TABLE made_by_hand (id int)")
    project.add("0003", "on_hand", "ALTER TABLE made_by_hand ADD COLUMN x int;", "SELECT 1;")
    project.path_of("0002").unlink()
    assert project.mg("apply").returncode == 0
    done = project.mg("drift")
    assert done.returncode == 1, done.stderr
    assert "cannot rebuild the schema" in done.stderr
    assert 'relation "made_by_hand" does not exist' in done.stderr


def test_ignore_that_is_a_mapping_is_named_as_such(project: Project, pg_url: str) -> None:
    project.configure(
        extra=f"check:\n  database_url: {json.dumps(pg_url)}\n  ignore: {{table: x}}\n"
    )
    done = project.mg("drift")
    assert done.returncode == 2
    assert "check.ignore: expected a list of names, got a mapping" in done.stderr
    assert "[0]" not in done.stderr


def test_ignored_objects_are_left_out(project: Project, pg_url: str) -> None:
    assert project.mg("up").returncode == 0
    project.sql("CREATE SCHEMA ops; CREATE TABLE ops.jobs (id int); CREATE EXTENSION citext")
    project.sql("CREATE INDEX users_email_idx ON users (email)")
    done = project.mg("drift")
    assert done.returncode == 3
    assert "extension citext" in done.stdout and "schema ops" in done.stdout
    project.configure(
        extra=f"check:\n  database_url: {json.dumps(pg_url)}\n"
        "  ignore: ['extension citext', 'schema ops', 'table ops.*']\n"
    )
    done = project.mg("drift")
    assert done.returncode == 3
    assert done.stdout.splitlines() == [
        "index public.users_email_idx: in the database, not produced by the migrations"
    ]


def test_comments_go_with_the_object_they_describe(project: Project, pg_url: str) -> None:
    assert project.mg("up").returncode == 0
    project.sql(
        "CREATE SCHEMA ops; CREATE TABLE ops.jobs (id int PRIMARY KEY, cmd text);"
        "COMMENT ON TABLE ops.jobs IS 'jobs'; COMMENT ON COLUMN ops.jobs.cmd IS 'what';"
        "CREATE TABLE hand (x int); COMMENT ON TABLE hand IS 'by hand';"
        "COMMENT ON COLUMN hand.x IS 'x'; ALTER TABLE users ADD note text;"
        "COMMENT ON COLUMN users.note IS 'n'; COMMENT ON COLUMN users.email IS 'mail'"
    )
    project.configure(
        extra=f"check:\n  database_url: {json.dumps(pg_url)}\n"
        "  ignore: ['schema ops', 'table ops.*']\n"
    )
    done = project.mg("drift")
    assert done.returncode == 3
    # An ignored table takes its comments with it; a table or column on one side only is
    # named once, without its comments; a comment on an object both sides have is named.
    assert done.stdout.splitlines() == [
        "column public.users.note: in the database, not produced by the migrations",
        "comment on table column public.users.email: in the database, not produced by the "
        "migrations",
        "table public.hand: in the database, not produced by the migrations",
    ]
    project.sql(
        "DROP TABLE hand; ALTER TABLE users DROP note; COMMENT ON COLUMN users.email IS NULL"
    )
    done = project.mg("drift")
    assert done.returncode == 0, done.stdout


def test_a_false_flag_or_a_zero_is_shown_as_such_not_as_none(
    tmp_path: Path, database_url: str, pg_url: str
) -> None:
    project = Project(tmp_path / "zeros", database_url)
    try:
        project.configure(extra=f"check:\n  database_url: {json.dumps(pg_url)}\n")
        project.add(
            "0001",
            "cache",
            "CREATE TABLE cache (k text);\nCREATE SEQUENCE ticket MINVALUE 0 START 0;",
            "DROP SEQUENCE ticket;\nDROP TABLE cache;",
        )
        assert project.mg("apply").returncode == 0
        project.sql("ALTER TABLE cache SET UNLOGGED")
        project.sql("ALTER SEQUENCE ticket MINVALUE 1 START 1 RESTART 1")
        done = project.mg("drift")
        assert done.returncode == 3, done.stderr
        lines = done.stdout.splitlines()
        unlogged = "table public.cache: unlogged is true in the database, false from the migrations"
        assert unlogged in lines
        assert (
            "sequence public.ticket: minimum is 1 in the database, 0 from the migrations; "
            "start is 1 in the database, 0 from the migrations"
        ) in lines
        assert "(none)" not in done.stdout
        data = json.loads(project.mg("drift", "--format", "json").stdout)
        changes = {
            (d["object"], c["property"]): (c["database"], c["migrations"])
            for d in data["differences"]
            for c in d["changes"]
        }
        assert changes[("table public.cache", "unlogged")] == (True, False)
        assert changes[("sequence public.ticket", "minimum")] == (1, 0)
    finally:
        project.close()


@contextlib.contextmanager
def _project_as_a_role(root: Path, pg_url: str) -> Iterator[tuple[Project, str]]:
    """A project on a fresh database, connected as a new superuser role named ``app_...``;
    the scratch server is ``pg_url`` (reached as its own user)."""
    import uuid

    import psycopg
    from psycopg import sql

    from migretti_core.testing import fresh_database

    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD 'app'").format(sql.Identifier(role))
        )
    try:
        with fresh_database(pg_url) as url:
            parts = urlsplit(url)
            host = parts.netloc.rpartition("@")[2]
            as_role = urlunsplit(parts._replace(netloc=f"{role}:app@{host}"))
            project = Project(root, as_role)
            try:
                project.configure(extra=f"check:\n  database_url: {json.dumps(pg_url)}\n")
                yield project, role
            finally:
                project.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_unqualified_names_resolve_as_on_the_target_whose_user_is_a_schema(
    tmp_path: Path, pg_url: str
) -> None:
    # The target's role is "app_..." and a migration creates the schema of that name: there,
    # "$user" in search_path puts the unqualified table into it. The scratch database is
    # reached as another user; it must resolve names as the target does, or drift reports a
    # table "moved" to public that nobody touched.
    with _project_as_a_role(tmp_path / "user_schema", pg_url) as (project, role):
        project.add(
            "0001",
            "own_schema",
            f"CREATE SCHEMA {role};\nCREATE TABLE jobs (id bigint PRIMARY KEY);",
            f"DROP TABLE jobs;\nDROP SCHEMA {role};",
        )
        assert project.mg("apply").returncode == 0
        where = "SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = %s"
        assert project.value(where, ("jobs",)) == role
        done = project.mg("drift")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout == "no drift: the schema matches the 1 applied migration\n"


def test_a_search_path_whose_schemas_the_migrations_do_not_create_is_still_compared(
    tmp_path: Path, pg_url: str
) -> None:
    # The role's search_path names only its own schema, made by hand before mg ever ran: the
    # history and the table live there on the target. On the scratch database that schema
    # does not exist; mg's tables go to public and the hand-made schema is drift, not an
    # error about where to create them.
    with _project_as_a_role(tmp_path / "only_user", pg_url) as (project, role):
        project.sql(f"CREATE SCHEMA {role}")
        project.sql(f'ALTER ROLE {role} SET search_path = "$user"')
        project.add("0001", "jobs", "CREATE TABLE jobs (id bigint);", "DROP TABLE jobs;")
        assert project.mg("apply").returncode == 0
        done = project.mg("drift")
        assert done.returncode == 3, done.stdout + done.stderr
        assert f"schema {role}: in the database, not produced by the migrations" in done.stdout


def test_a_label_added_by_hand_is_named_in_plain_words(project: Project) -> None:
    project.add("0003", "mood", "CREATE TYPE mood AS ENUM ('happy', 'sad');", "DROP TYPE mood;")
    assert project.mg("apply").returncode == 0
    project.sql("ALTER TYPE mood ADD VALUE 'meh'")
    done = project.mg("drift")
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [
        'type public.mood: labels are ["happy", "sad", "meh"] in the database, '
        '["happy", "sad"] from the migrations'
    ]


def test_a_disabled_trigger_and_a_policy_command_are_said_in_words(project: Project) -> None:
    project.add(
        "0003",
        "hooks",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;\n"
        "CREATE TRIGGER users_touch BEFORE UPDATE ON users\n"
        "  FOR EACH ROW EXECUTE FUNCTION touch();\n"
        "CREATE POLICY own ON users USING (true);",
    )
    assert project.mg("apply").returncode == 0
    project.sql("ALTER TABLE users DISABLE TRIGGER users_touch")
    project.sql("DROP POLICY own ON users; CREATE POLICY own ON users FOR SELECT USING (true)")
    done = project.mg("drift")
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [
        "policy public.users.own: command is SELECT in the database, ALL from the migrations",
        "trigger public.users.users_touch: enabled is no in the database, yes from the migrations",
    ]
