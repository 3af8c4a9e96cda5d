"""No password in any output: successes, SQL errors, connection errors, lock timeouts, JSON
logs and ``-v`` tracebacks, with the password configured in each way a user can.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from migretti_core import hookimpl
from migretti_core.testing import AdvisoryLockHolder, Project, make_hooks
from migretti_core.types import Event, Options

TOKEN = uuid.uuid4().hex
# Characters that need quoting in a URL and in a key=value string, around a unique token.
PASSWORD = f"Pw@{TOKEN}:/ ?'x"


@pytest.fixture
def role(database_url: str) -> Iterator[str]:
    """A login role with PASSWORD that may create tables in the test database."""
    name = f"mg_secret_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(PASSWORD)
            )
        )
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _server(database_url: str) -> dict[str, str]:
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    return {k: params[k] for k in ("host", "port", "dbname") if k in params}


def _url(server: dict[str, str], user: str, dbname: str) -> str:
    query = "&".join(f"{k}={quote(server[k], safe='/')}" for k in ("host", "port") if k in server)
    return f"postgresql://{user}:{quote(PASSWORD, safe='')}@/{dbname}" + (
        f"?{query}" if query else ""
    )


def _assert_secret_kept(results: list[subprocess.CompletedProcess[str]], project: Project) -> None:
    for done in results:
        for text in (done.stdout, done.stderr):
            assert TOKEN not in text, (done.args, text)
    for text in project.transcript:
        assert TOKEN not in text


def _exercise(project: Project, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """A range of commands, succeeding and failing; each result is checked to be what it is."""
    runs: list[subprocess.CompletedProcess[str]] = []

    def mg(*args: str, code: int) -> subprocess.CompletedProcess[str]:
        done = project.mg(*args, env=env)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        runs.append(done)
        return done

    mg("status", code=0)
    mg("-v", "apply", code=0)
    mg("list", "--format", "json", code=0)
    mg("verify", "-v", code=0)
    project.add("0002", "broken", "CREATE TABLE broken (id int);\nSELECT no_such_column;")
    mg("apply", code=1)
    mg("--json-log", "apply", code=1)
    verbose = mg("apply", "-v", code=1)
    assert "42703" in verbose.stderr
    project.path_of("0002").unlink()
    with AdvisoryLockHolder(project.database_url) as holder:
        waited = mg("down", "--lock-timeout", "1s", "--json-log", code=4)
    assert str(holder.pid) in waited.stderr
    mg("down", "-v", code=0)
    return runs


def test_password_from_an_environment_variable_never_shows(
    tmp_path: Path, database_url: str, role: str
) -> None:
    project = Project(tmp_path / "proj", database_url, configure=False)
    server = _server(database_url)
    settings = {**server, "user": role, "password": "${DB_PASSWORD}"}
    project.configure(settings)
    project.add_table("0001")
    env = {"DB_PASSWORD": PASSWORD}
    runs = _exercise(project, env)

    project.configure({**settings, "dbname": server["dbname"] + "_nosuch"})
    for args in (["status"], ["-v", "apply"], ["--json-log", "apply"], ["-v", "--json-log", "up"]):
        done = project.mg(*args, env=env)
        assert done.returncode == 1, (args, done.stderr)
        assert "does not exist" in done.stderr
        runs.append(done)
    assert "Traceback" in runs[-3].stderr
    _assert_secret_kept(runs, project)


def test_password_in_a_url_never_shows(tmp_path: Path, database_url: str, role: str) -> None:
    project = Project(tmp_path / "proj", database_url, configure=False)
    server = _server(database_url)
    project.configure({"url": _url(server, role, server["dbname"])})
    project.add_table("0001")
    runs = _exercise(project, {})

    project.configure({"url": _url(server, role, server["dbname"] + "_nosuch")})
    for args in (["-v", "status"], ["--json-log", "apply"]):
        done = project.mg(*args)
        assert done.returncode == 1, (args, done.stderr)
        runs.append(done)
    good = _url(server, role, server["dbname"])
    joiner = "&" if "?" in good else "?"
    for broken in (good + joiner + "nosuchparam=1", good + joiner + "port=notaport"):
        project.configure({"url": broken})
        for args in (["-v", "status"], ["--json-log", "apply"]):
            done = project.mg(*args)
            assert done.returncode in (1, 2), (args, done.stderr)
            assert "mg: error" in done.stderr or '"level": "error"' in done.stderr
            runs.append(done)
    _assert_secret_kept(runs, project)


def test_password_in_mg_database_url_never_shows(
    tmp_path: Path, database_url: str, role: str
) -> None:
    project = Project(tmp_path / "proj", database_url, configure=False)
    server = _server(database_url)
    project.configure({"host": "ignored.invalid"})
    project.add_table("0001")
    url = _url(server, role, server["dbname"])
    runs = _exercise(project, {"MG_DATABASE_URL": url})
    for args in (["-v", "status"], ["--json-log", "apply"]):
        wrong = url.replace(f"/{server['dbname']}", f"/{server['dbname']}_nosuch")
        done = project.mg(*args, env={"MG_DATABASE_URL": wrong})
        assert done.returncode == 1, (args, done.stderr)
        runs.append(done)
    _assert_secret_kept(runs, project)


def test_check_and_drift_mask_a_password_a_scratch_error_quotes(
    tmp_path: Path, database_url: str, role: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(role)))
    project = Project(tmp_path / "proj", database_url, configure=False)
    server = _server(database_url)
    url = _url(server, role, server["dbname"])
    project.configure({"url": url}, extra=f"check:\n  database_url: {json.dumps(url)}\n")
    literal = PASSWORD.replace("'", "''")
    project.add("0001", "quote", f"SELECT '{literal}'::int;", "SELECT 1;")
    runs = []
    for args in (["check"], ["check", "--format", "json"], ["--json-log", "check"]):
        done = project.mg(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert "22P02" in done.stdout + done.stderr
        runs.append(done)
    project.add(
        "0001",
        "quote",
        "CREATE TABLE noted (id bigint);\nCOMMENT ON TABLE noted IS 'plain';",
        "DROP TABLE noted;",
    )
    assert project.mg("apply").returncode == 0
    project.sql(f"COMMENT ON TABLE noted IS '{literal}'")  # a hand-made change quoting it
    for args in (["drift"], ["drift", "--format", "json"]):
        done = project.mg(*args)
        assert done.returncode == 3, (args, done.stderr)
        assert "comment on table public.noted" in done.stdout and "****" in done.stdout
        runs.append(done)
    _assert_secret_kept(runs, project)


# --- one redaction rule: values, never parts of words ----------------------------------------


def _make_role(database_url: str, password: str) -> str:
    name = f"mg_short_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(name)))
    return name


def _drop_role(database_url: str, name: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def app_role(database_url: str) -> Iterator[str]:
    """A login role whose password is the short word ``app``."""
    name = _make_role(database_url, "app")
    try:
        yield name
    finally:
        _drop_role(database_url, name)


def test_a_short_password_is_masked_as_a_value_never_inside_words(
    tmp_path: Path, database_url: str, app_role: str
) -> None:
    project = Project(tmp_path / "proj", database_url, configure=False)
    server = _server(database_url)
    project.configure(
        {**server, "user": app_role, "password": "${DB_PASSWORD}"},
        extra='hooks:\n  post_apply: echo "app applied; happy apps; app"\n',
    )
    project.add_table("0001")
    env = {"DB_PASSWORD": "app"}

    done = project.mg("apply", env=env)
    assert done.returncode == 0, done.stderr
    assert "applied" in done.stderr
    assert "****lied" not in done.stderr
    # The hook's own output follows the same rule as every other line.
    assert "**** applied; happy apps; ****" in done.stderr, done.stderr

    listed = project.mg("--json-log", "status", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "applied" in listed.stdout and "****lied" not in listed.stdout + listed.stderr

    # Where it stands as a value (a quoted literal in the server's error), it is masked.
    project.add("0002", "quote_it", "SELECT 'app'::int;")
    failed = project.mg("apply", env=env)
    assert failed.returncode == 1, failed.stderr
    assert '"****"' in failed.stderr, failed.stderr
    assert '"app"' not in failed.stderr and "'app'" not in failed.stderr


def test_verbose_traceback_masks_the_password(tmp_path: Path, database_url: str) -> None:
    password = f"tb{TOKEN}"
    name = _make_role(database_url, password)
    try:
        project = Project(tmp_path / "proj", database_url, configure=False)
        server = _server(database_url)
        project.configure({**server, "user": name, "password": "${DB_PASSWORD}"})
        project.add("0001", "leak", f"SELECT '{password}'::int;")
        env = {"DB_PASSWORD": password}
        for args in (["-v", "apply"], ["-v", "--json-log", "apply"]):
            done = project.mg(*args, env=env)
            assert done.returncode == 1, (args, done.stderr)
            assert "Traceback" in done.stderr, done.stderr
            assert "22P02" in done.stderr
            assert TOKEN not in done.stdout + done.stderr, done.stderr
    finally:
        _drop_role(database_url, name)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("applied 0001", "applied 0001"),
        ("user app logged in", "user **** logged in"),
        (
            'invalid input syntax for type integer: "app"',
            'invalid input syntax for type integer: "****"',
        ),
        ("postgresql://u:app@h/db", "postgresql://u:****@h/db"),
        ("happy apps app_x", "happy apps app_x"),
        (
            "CREATE ROLE r ENCRYPTED PASSWORD 'it''s x' LOGIN",
            "CREATE ROLE r ENCRYPTED PASSWORD '****' LOGIN",
        ),
        ("ALTER ROLE r PASSWORD NULL", "ALTER ROLE r PASSWORD NULL"),
        # the other ways SQL writes a string literal
        ("CREATE ROLE r PASSWORD E'se\\'cret';", "CREATE ROLE r PASSWORD E'****';"),
        ("CREATE ROLE r PASSWORD U&'secr\\0065t';", "CREATE ROLE r PASSWORD U&'****';"),
        ("CREATE ROLE r PASSWORD $$sec'ret$$ LOGIN;", "CREATE ROLE r PASSWORD $$****$$ LOGIN;"),
        ("ALTER ROLE r PASSWORD $pw$se$$cret$pw$;", "ALTER ROLE r PASSWORD $pw$****$pw$;"),
        ("ALTER ROLE r PASSWORD $$never closed", "ALTER ROLE r PASSWORD $$****"),
        ("SELECT $$password$$, $$kept$$;", "SELECT $$password$$, $$kept$$;"),
    ],
)
def test_redact_masks_a_password_only_where_it_stands_as_a_value(text: str, masked: str) -> None:
    from migretti_core.redact import redact

    assert redact(text, ["app"]) == masked


def test_a_long_password_is_masked_even_inside_a_word_and_percent_encoded() -> None:
    """A password of eight characters or more cannot stand in ordinary text by chance: it
    is masked wherever it appears, and so is the form a URL holds it in."""
    from migretti_core.redact import redact

    secret = "Tr0ub4dor&3x"
    assert redact(f"token=abc{secret}xyz", [secret]) == "token=abc****xyz"
    assert redact("url=postgresql://u:Tr0ub4dor%263x@h/db", [secret]) == (
        "url=postgresql://u:****@h/db"
    )
    assert redact("dsn user=u pw:Tr0ub4dor%263x", [secret]) == "dsn user=u pw:****"
    # A short one still only where it stands as a value.
    assert redact("applied apps app", ["app"]) == "applied apps ****"


def test_a_masked_url_named_in_a_sentence_keeps_the_sentence() -> None:
    """A fleet member's URL, masked once, followed by ``: ok``: masking again keeps the
    colon; an unmasked value is still masked whole, colon included."""
    from migretti_core.redact import redact

    shown = "postgresql:///t?host=/s&password=****: ok in 3 ms"
    assert redact(shown) == shown
    assert redact("host=/s password=****: ok") == "host=/s password=****: ok"
    assert redact("host=/s password=hunter2: ok") == "host=/s password=**** ok"


def test_redact_masks_a_password_with_symbols_and_the_longest_match_first() -> None:
    from migretti_core.redact import redact

    assert redact("x=p@ss! y=p@ss!word", ["p@ss!"]) == "x=**** y=****word"
    assert redact("secret secret2", ["secret", "secret2"]) == "**** ****"


def test_a_server_error_quoting_the_password_is_masked_when_stored_and_shown(
    tmp_path: Path, database_url: str
) -> None:
    password = f"Srv{TOKEN[:12]}"
    name = _make_role(database_url, password)
    server = _server(database_url)
    project = Project(tmp_path / "proj", database_url)
    try:
        project.configure({**server, "user": name, "password": "${DB_PASSWORD}"})
        env = {"DB_PASSWORD": password}
        project.add("0001", "leak", f"SELECT '{password}'::int;", no_transaction=True)
        runs = [project.mg("apply", env=env), project.mg("--json-log", "apply", env=env)]
        assert runs[0].returncode == 1, runs[0].stderr
        assert "invalid input syntax for type integer" in runs[0].stderr
        stored = project.value("SELECT error FROM _migrations WHERE id = '0001'")
        assert password not in stored and "****" in stored, stored
        # A row stored before masking (or by hand) is masked when printed.
        project.sql(
            "UPDATE _migrations SET error = %s WHERE id = '0001'", (f"line 3: bad {password}",)
        )
        for args in (("status",), ("status", "--format", "json"), ("--json-log", "status")):
            done = project.mg(*args, env=env)
            assert done.returncode == 0, done.stderr
            assert "0001" in done.stdout and "****" in done.stdout, done.stdout
            runs.append(done)
        blocked = project.mg("apply", env=env)
        assert blocked.returncode == 3 and "****" in blocked.stderr
        for done in [*runs, blocked]:
            assert password not in done.stdout + done.stderr
    finally:
        project.close()
        _drop_role(database_url, name)


def test_a_password_from_a_password_file_is_masked_when_stored_and_shown(
    tmp_path: Path, database_url: str
) -> None:
    # mg.yaml names no password: libpq reads it from PGPASSFILE (as from ~/.pgpass)
    password = f"File{TOKEN[:12]}"
    name = _make_role(database_url, password)
    server = _server(database_url)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{name}:{password}\n")
    passfile.chmod(0o600)
    project = Project(tmp_path / "proj", database_url)
    try:
        project.configure({**server, "user": name})
        env = {"PGPASSFILE": str(passfile)}
        project.add("0001", "leak", f"SELECT '{password}'::int;", no_transaction=True)
        runs = [project.mg("apply", env=env), project.mg("--json-log", "apply", env=env)]
        assert runs[0].returncode == 1, runs[0].stderr
        assert "invalid input syntax for type integer" in runs[0].stderr
        stored = project.value("SELECT error FROM _migrations WHERE id = '0001'")
        assert password not in stored and "****" in stored, stored
        for args in (("status",), ("status", "--format", "json"), ("--json-log", "status")):
            for psycopg_only in ("", "1"):
                done = project.mg(*args, env={**env, "MG_PSYCOPG_ONLY": psycopg_only})
                assert done.returncode == 0, done.stderr
                assert "0001" in done.stdout, done.stdout
                runs.append(done)
        # a row stored before masking is masked when printed, on both connection paths
        project.sql("UPDATE _migrations SET error = %s WHERE id = '0001'", (f"bad {password}",))
        for psycopg_only in ("", "1"):
            done = project.mg("status", env={**env, "MG_PSYCOPG_ONLY": psycopg_only})
            assert done.returncode == 0 and "bad ****" in done.stdout, done.stdout
            runs.append(done)
        for done in runs:
            assert password not in done.stdout + done.stderr
    finally:
        project.close()
        _drop_role(database_url, name)


def test_a_role_password_a_migration_sets_is_masked_in_errors_and_dry_runs(
    tmp_path: Path, database_url: str
) -> None:
    secret = f"Role{TOKEN[:12]}"
    role = f"mg_role_{TOKEN[:8]}"
    project = Project(tmp_path / "proj", database_url)
    try:
        # the server quotes the EXECUTEd statement in its CONTEXT
        create = f"CREATE ROLE {role} PASSWORD ''{secret}''"
        project.add("0001", "role", f"DO $$ BEGIN EXECUTE '{create}'; EXECUTE '{create}'; END $$;")
        runs = [project.mg("apply"), project.mg("--json-log", "apply"), project.mg("apply", "-v")]
        for done in runs:
            assert done.returncode == 1 and "already exists" in done.stderr, done.stderr
        assert "CONTEXT: SQL statement" in runs[0].stderr and "PASSWORD '****'" in runs[0].stderr
        runs.append(project.mg("apply", "--dry-run"))
        assert "PASSWORD ''****''" in runs[-1].stdout, runs[-1].stdout
        for done in runs:
            assert secret not in done.stdout + done.stderr
    finally:
        project.close()  # the failed migration's transaction took its role with it


def test_a_role_password_in_any_literal_form_is_masked_in_a_dry_run(
    tmp_path: Path, database_url: str
) -> None:
    secret = f"Role{TOKEN[:12]}"
    forms = [f"$${secret}$$", f"$pw${secret}$pw$", f"E'{secret}'", f"U&'{secret}'"]
    project = Project(tmp_path / "proj", database_url)
    try:
        sql = "\n".join(
            f"CREATE ROLE mg_role_{n}_{TOKEN[:8]} PASSWORD {form};" for n, form in enumerate(forms)
        )
        project.add("0001", "roles", sql)
        for args in (
            ("apply", "--dry-run"),
            ("--json-log", "apply", "--dry-run", "--format", "json"),
        ):
            done = project.mg(*args)
            assert done.returncode == 0, done.stderr
            assert secret not in done.stdout + done.stderr
        assert "PASSWORD $$****$$;" in project.mg("apply", "--dry-run").stdout
    finally:
        project.close()  # the dry run rolled the roles back


class _Reporter:
    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def mg_report(self, event: Any) -> bool:
        self.events.append(event)
        return True


@pytest.mark.parametrize(
    ("message", "fields", "shown_message", "shown_fields"),
    [
        ("applied 0001 init (3 ms)", {"migration_id": "0001", "index": 1}, None, None),
        (
            "cannot connect to postgresql://app:s3cret@db/prod",
            {"hint": "check PASSWORD = 'x y'", "n": 2},
            "cannot connect to postgresql://app:****@db/prod",
            {"hint": "check PASSWORD = ****", "n": 2},
        ),
        (
            "a plain message",
            {"dsn": "host=db password=s3cret", "url": "postgres://u:p@h/d", "nested": ["x"]},
            None,
            {"dsn": "host=db password=****", "url": "postgres://u:****@h/d", "nested": ["x"]},
        ),
    ],
)
def test_events_are_masked_with_no_password_known(
    message: str,
    fields: dict[str, Any],
    shown_message: str | None,
    shown_fields: dict[str, Any] | None,
) -> None:
    """Whatever looks like a password in an event's message or text fields is masked before
    any reporter sees it, and the rest of the event goes through as it is (a copy)."""
    reporter = _Reporter()
    hooks = make_hooks(reporter)
    assert not hooks.secrets
    hooks.report(Options(), Event("test.event", "info", message, fields))
    [event] = reporter.events
    assert event.message == (shown_message or message)
    assert event.fields == (shown_fields or fields)
    assert event.fields is not fields


def test_the_ssl_key_passphrase_is_a_password_too(
    tmp_path: Path, database_url: str, db_conninfo: dict[str, str]
) -> None:
    """``sslpassword`` (the client key's passphrase) is masked like ``password``: a hook that
    prints it, or an error quoting it, shows ``****``."""
    passphrase = "Key-Passphr4se-91"
    project = Project(tmp_path / "proj", database_url, configure=False)
    database = {key: db_conninfo[key] for key in ("host", "port", "user", "dbname")}
    database["sslpassword"] = passphrase
    project.configure(database, extra=f"hooks:\n  pre_apply: echo {passphrase}\n")
    project.add_table("0001")
    try:
        done = project.mg("apply", "--no-lint")
        assert done.returncode == 0, done.stderr
        assert passphrase not in done.stdout + done.stderr, done.stderr
        assert "****" in done.stderr
    finally:
        project.close()


def test_a_password_file_is_read_as_libpq_reads_it(tmp_path: Path) -> None:
    """The target's line of ~/.pgpass, found without connecting (for ``mg check``); a FIFO in
    its place is skipped, as libpq skips it, rather than blocking the command."""
    import os

    from migretti_core.pgservice import passfile_passwords

    passfile = tmp_path / "pgpass"
    passfile.write_text(
        "# comment\n"
        "other:5432:*:app:not-this\n"
        "localhost:5433:shop:app:sock\\:et-pw\n"
        "db.internal:*:*:app:tcp-pw:tail\n",
        encoding="utf-8",
    )
    env = {"PGPASSFILE": str(passfile)}
    params = {"host": "/run/postgresql", "port": "5433", "dbname": "shop", "user": "app"}
    assert passfile_passwords(params, env) == ["sock:et-pw"]
    assert passfile_passwords({"host": "db.internal", "user": "app"}, env) == ["tcp-pw"]
    assert passfile_passwords({"host": "nowhere", "user": "app"}, env) == []
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert passfile_passwords(params, {"PGPASSFILE": str(fifo)}) == []
