"""An unusable connection setting is named where the user set it.

A bad ``MG_DATABASE_URL`` is reported as ``MG_DATABASE_URL``, not as mg.yaml's
``database.url`` (which its user may never have written); a bad ``database.url`` names the
file and, in a profile, the profile's key. Never the password. Through the real ``mg``; no
database is needed: the setting is refused before any connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migretti_core.testing import assert_clean_error, run_mg, write_text

PASSWORD = "s3cret-Passw0rd"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "migrations").mkdir()
    return tmp_path


def test_a_bad_mg_database_url_is_named_as_the_variable(project: Path) -> None:
    done = run_mg(["status"], project, env={"MG_DATABASE_URL": "not-a-url"})
    stderr = assert_clean_error(done, "MG_DATABASE_URL is not a valid connection URL", code=2)
    assert "database.url" not in stderr

    # with an mg.yaml whose own database.url is fine, the variable is still the culprit
    write_text(project / "mg.yaml", "database:\n  url: postgresql://app@db.example.com/app\n")
    done = run_mg(["apply"], project, env={"MG_DATABASE_URL": "not-a-url"})
    stderr = assert_clean_error(done, "MG_DATABASE_URL is not a valid connection URL", code=2)
    assert "database.url" not in stderr


def test_a_bad_port_in_mg_database_url_is_named_as_the_variable_without_the_password(
    project: Path,
) -> None:
    for url in (
        f"postgresql://app:{PASSWORD}@db.example.com:abc/app",
        f"host=db.example.com password={PASSWORD} port=abc",
    ):
        done = run_mg(["status"], project, env={"MG_DATABASE_URL": url})
        stderr = assert_clean_error(done, "MG_DATABASE_URL: port 'abc' is not a port number")
        assert "database.port" not in stderr and PASSWORD not in stderr

    url = f"postgresql://app:{PASSWORD}@db.example.com/app?nonsense=1"
    done = run_mg(["status"], project, env={"MG_DATABASE_URL": url})
    stderr = assert_clean_error(done, "MG_DATABASE_URL is not a valid connection URL")
    assert PASSWORD not in stderr


def test_a_bad_database_url_in_mg_yaml_names_the_file_and_the_key(project: Path) -> None:
    write_text(project / "mg.yaml", "database:\n  url: not-a-url\n")
    assert_clean_error(
        run_mg(["status"], project), "mg.yaml: database.url is not a valid connection URL"
    )
    (project / "mg.yaml").rename(project / "other.yaml")
    assert_clean_error(
        run_mg(["--config", "other.yaml", "status"], project),
        "other.yaml: database.url is not a valid connection URL",
    )


def test_a_bad_connection_setting_names_the_file_as_it_was_found(project: Path) -> None:
    """As every other configuration error does: ../mg.yaml from a subdirectory, the
    --config text as given, never only the file's bare name."""
    write_text(project / "mg.yaml", "database:\n  url: not-a-url\n")
    (project / "sub").mkdir()
    assert_clean_error(
        run_mg(["status"], project / "sub"),
        "../mg.yaml: database.url is not a valid connection URL",
    )
    (project / "conf").mkdir()
    write_text(project / "conf" / "other.yaml", "database:\n  host: h\n  prot: 5432\n")
    assert_clean_error(
        run_mg(["--config", "conf/other.yaml", "status"], project),
        "conf/other.yaml: database.prot: not a libpq connection parameter (did you mean port?)",
    )
    write_text(project / "conf" / "other.yaml", "database:\n  host: h\n  port: 99999\n")
    done = run_mg(["--config", "conf/other.yaml", "status"], project)
    assert done.returncode == 2 and done.stderr.startswith(
        "mg: error: conf/other.yaml: database.port"
    ), done.stderr


def test_a_bad_setting_of_a_profile_names_the_profile_s_key(project: Path) -> None:
    write_text(
        project / "mg.yaml",
        f"""
        database:
          host: db.example.com
        envs:
          broken:
            database:
              url: not-a-url
          prod:
            database:
              url: postgresql://app:{PASSWORD}@db.example.com:abc/app
          qa:
            database:
              port: nope
        """,
    )
    assert_clean_error(
        run_mg(["--env", "broken", "status"], project),
        "mg.yaml: envs.broken.database.url is not a valid connection URL",
    )
    stderr = assert_clean_error(
        run_mg(["--env", "prod", "status"], project),
        "mg.yaml: envs.prod.database.url: port 'abc' is not a port number",
    )
    assert PASSWORD not in stderr
    assert_clean_error(
        run_mg(["--env", "qa", "status"], project),
        "mg.yaml: envs.qa.database.port: 'nope' is not a port number",
    )


@pytest.mark.parametrize(
    "url",
    [
        f"app:{PASSWORD}@db.example.com/app",
        f"//app:{PASSWORD}@db.example.com:5432/app",
        "app:short@db.example.com/app",
    ],
    ids=["no-scheme", "no-scheme-slashes", "short-password"],
)
@pytest.mark.parametrize("where", ["variable", "mg.yaml"])
def test_a_url_without_its_scheme_is_refused_without_showing_its_password(
    project: Path, url: str, where: str
) -> None:
    """Forgetting ``postgresql://`` makes libpq read the URL as key=value text; its reason
    quotes the text whole, and the password in it must not show."""
    secret = url.split(":", 1)[1].split("@", 1)[0]
    env = {}
    if where == "variable":
        env["MG_DATABASE_URL"] = url
    else:
        write_text(project / "mg.yaml", f'database:\n  url: "{url}"\n')
    for args in (["status"], ["apply"], ["--json-log", "status"]):
        done = run_mg(args, project, env=env)
        assert done.returncode == 2, done.stderr
        assert "not a valid connection URL" in done.stderr
        assert secret not in done.stdout + done.stderr, done.stderr
        assert "****@db.example.com" in done.stderr


def test_a_scratch_url_without_its_scheme_is_refused_without_showing_its_password(
    project: Path,
) -> None:
    write_text(project / "mg.yaml", "database:\n  url: postgresql://app@db.example.com/app\n")
    url = f"app:{PASSWORD}@db.example.com/postgres"
    done = run_mg(["check", "--database-url", url], project)
    stderr = assert_clean_error(done, "--database-url is not a valid connection URL")
    assert PASSWORD not in done.stdout + stderr and "app:****@db.example.com" in stderr


@pytest.mark.parametrize("command", ["check", "drift"])
def test_an_empty_scratch_url_is_refused_not_read_as_the_embedded_server(
    project: Path, command: str
) -> None:
    """`--database-url "$SCRATCH_URL"` with the variable unset: refused at once (exit 2),
    instead of quietly starting a temporary embedded server."""
    write_text(project / "mg.yaml", "database:\n  url: postgresql://app@db.example.com/app\n")
    done = run_mg([command, "--database-url", ""], project, timeout=30)
    stderr = assert_clean_error(done, "--database-url needs a connection URL, not an empty value")
    assert "embedded" not in stderr.splitlines()[0]


def test_mg_db_names_mg_database_url_when_it_is_what_is_not_embedded(project: Path) -> None:
    """mg.yaml asks for the embedded server, but MG_DATABASE_URL (which wins) names another:
    `mg db` must not blame mg.yaml, nor advise editing it."""
    write_text(project / "mg.yaml", "database:\n  embedded: true\n")
    url = f"postgresql://app:{PASSWORD}@db.example.com/app"
    done = run_mg(["db", "url"], project, env={"MG_DATABASE_URL": url})
    stderr = assert_clean_error(done, "is not embedded (MG_DATABASE_URL)")
    assert "hint: set MG_DATABASE_URL=embedded:, or unset it" in stderr
    assert "mg.yaml" not in stderr.splitlines()[0] and PASSWORD not in stderr


def test_a_raw_slash_in_a_url_password_shows_no_piece_of_it(project: Path) -> None:
    """``/`` unencoded in the password ends the URL's host part early, so the first piece of
    the password reads as a port: the error must not show it."""
    url = "postgresql://app:s3cretPiece/Passw0rdTail@db.example.com/app"
    done = run_mg(["status"], project, env={"MG_DATABASE_URL": url})
    stderr = assert_clean_error(done, "MG_DATABASE_URL")
    assert "s3cretPiece" not in stderr and "Passw0rdTail" not in stderr, stderr


@pytest.mark.parametrize("key", ["host", "dbname"])
def test_a_url_pasted_into_another_connection_key_shows_no_password(
    project: Path, key: str
) -> None:
    """``host: app:secret@db`` (user and password pasted into the host) is quoted in the
    connection error: the password in it must not show."""
    write_text(
        project / "mg.yaml",
        f'database:\n  {key}: "app:{PASSWORD}@db.invalid"\n  port: 1\n  connect_timeout: 2\n',
    )
    done = run_mg(["status"], project, timeout=60)
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize("where", ["no file", "mg.yaml", "MG_DATABASE_URL"])
def test_a_bad_database_url_argument_of_the_api_is_named_as_the_argument(
    project: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Migretti(database_url=...)`` hands its URL on as ``MG_DATABASE_URL`` would; a bad one
    is reported as the argument the application passed, never as a variable it did not set
    nor as mg.yaml's key. Never with its password."""
    from migretti_core import ConfigError, Migretti

    if where == "mg.yaml":
        write_text(project / "mg.yaml", "database:\n  url: postgresql://app@db.example.com/app\n")
    elif where == "MG_DATABASE_URL":  # the environment's URL is replaced by the argument
        monkeypatch.setenv("MG_DATABASE_URL", "postgresql://app@db.example.com/app")
    monkeypatch.chdir(project)
    cases = {
        "not a url": "database_url is not a valid connection URL",
        f"postgresql://app:{PASSWORD}@db.example.com/app?nonsense=1": (
            "database_url is not a valid connection URL"
        ),
        f"postgresql://app:{PASSWORD}@db.example.com:abc/app": (
            "database_url: port 'abc' is not a port number"
        ),
        f"app:{PASSWORD}@db.example.com/app": "database_url is not a valid connection URL",
    }
    for url, expected in cases.items():
        with pytest.raises(ConfigError) as raised:
            Migretti(database_url=url).status()
        message = str(raised.value)
        assert message.startswith(expected), message
        assert "MG_DATABASE_URL" not in message and "database.url" not in message, message
        assert PASSWORD not in message + str(raised.value.hint or ""), message


def test_the_api_without_database_url_still_names_mg_database_url(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from migretti_core import ConfigError, Migretti

    monkeypatch.setenv("MG_DATABASE_URL", "not-a-url")
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError, match=r"^MG_DATABASE_URL is not a valid connection URL"):
        Migretti().status()


def test_a_bad_scratch_url_given_to_the_api_s_check_is_named_as_its_argument(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Migretti.check(database_url=...)`` names its argument, not the command line's
    ``--database-url`` or mg.yaml's ``check.database_url``; never with the password."""
    from migretti_core import ConfigError, Migretti, UsageError

    monkeypatch.chdir(project)
    mg = Migretti(database_url="postgresql://app@db.example.com/app")
    cases: dict[str, tuple[type[Exception], str]] = {
        "not a url": (ConfigError, "check: database_url is not a valid connection URL"),
        f"postgresql://app:{PASSWORD}@db.example.com/postgres?nonsense=1": (
            ConfigError,
            "check: database_url is not a valid connection URL",
        ),
        f"app:{PASSWORD}@db.example.com/postgres": (
            ConfigError,
            "check: database_url is not a valid connection URL",
        ),
        "embedded:": (ConfigError, "check: database_url cannot be embedded"),
        " ": (UsageError, "check: database_url needs a connection URL"),
    }
    for url, (kind, expected) in cases.items():
        with pytest.raises(kind) as raised:
            mg.check(database_url=url)
        message = str(raised.value)
        assert message.startswith(expected), message
        assert "--database-url" not in message and "check.database_url" not in message, message
        assert PASSWORD not in message + str(raised.value.hint or ""), message


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "port '99999' is not a port number (1 to 65535)"),
        ("?sslmode=requier", "sslmode 'requier' is not one of disable, allow, prefer"),
        ("?connect_timeout=abc", "connect_timeout 'abc' is not a number of seconds"),
        ("?target_session_attrs=primray", "target_session_attrs 'primray' is not one of any"),
        ("?keepalives_idle=30s", "keepalives_idle '30s' is not a whole number (seconds)"),
        ("?tcp_user_timeout=1.5", "tcp_user_timeout '1.5' is not a whole number (millisec"),
    ],
    ids=[
        "port-out-of-range",
        "sslmode",
        "connect-timeout",
        "target-session-attrs",
        "keepalives-idle",
        "tcp-user-timeout",
    ],
)
def test_a_value_libpq_refuses_only_when_connecting_is_a_configuration_error(
    project: Path, query: str, expected: str
) -> None:
    """A port out of range or an sslmode that is none, inside the URL, is the configuration
    error it is in mg.yaml (exit 2, naming where it was set), not a failure to connect
    (exit 1); never with the password."""
    port = "99999" if not query else "5432"
    url = f"postgresql://app:{PASSWORD}@db.example.com:{port}/app{query}"
    done = run_mg(["status"], project, env={"MG_DATABASE_URL": url})
    stderr = assert_clean_error(done, f"mg: error: MG_DATABASE_URL: {expected}")
    assert "cannot connect" not in stderr and PASSWORD not in stderr

    write_text(project / "mg.yaml", "database:\n  url: postgresql://app@db.example.com/app\n")
    done = run_mg(["check", "--database-url", url], project)
    stderr = assert_clean_error(done, f"--database-url: {expected}")
    assert "scratch server" not in stderr and PASSWORD not in stderr


def test_a_port_of_digits_from_a_raw_slash_in_the_password_is_not_shown(project: Path) -> None:
    url = "postgresql://app:123456/Passw0rdTail@db.example.com/app"
    done = run_mg(["status"], project, env={"MG_DATABASE_URL": url})
    stderr = assert_clean_error(done, "MG_DATABASE_URL: port")
    assert "123456" not in stderr and "Passw0rdTail" not in stderr, stderr


def test_a_host_list_may_leave_a_port_empty(project: Path) -> None:
    """``host1:5432,host2`` gives host2 the default port, as libpq reads it: no error about
    the port (the hosts do not exist: a connection failure, exit 1)."""
    url = "postgresql://app@db1.invalid:5432,db2.invalid/app?connect_timeout=2"
    done = run_mg(["status"], project, env={"MG_DATABASE_URL": url}, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "port" not in done.stderr.split("cannot connect")[0], done.stderr


def test_a_connect_timeout_that_is_no_number_names_the_file_and_key(project: Path) -> None:
    write_text(
        project / "mg.yaml",
        "database:\n  host: db.example.com\n  connect_timeout: abc\n"
        "envs:\n  qa:\n    database:\n      connect_timeout: soon\n",
    )
    assert_clean_error(
        run_mg(["status"], project),
        "mg: error: mg.yaml: database.connect_timeout: 'abc' is not a number of seconds",
    )
    assert_clean_error(
        run_mg(["--env", "qa", "status"], project),
        "mg: error: mg.yaml: envs.qa.database.connect_timeout: 'soon' is not a number of seconds",
    )
    write_text(project / "mg.yaml", "database:\n  host: db.example.com\n")
    assert_clean_error(
        run_mg(["status"], project, env={"PGCONNECT_TIMEOUT": "abc"}),
        "mg: error: PGCONNECT_TIMEOUT: 'abc' is not a number of seconds",
    )
