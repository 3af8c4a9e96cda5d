"""mg.yaml as the ``mg`` command sees it: precedence, profiles, interpolation, errors.

The configuration is observed through an in-house plugin adding ``mg show-config``, so no
database is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from migretti_core.testing import assert_clean_error, run_mg, write_text

if TYPE_CHECKING:
    from conftest import ShowConfig

# No server listens on port 1: reaching it fails with exit 1, never 2.
UNREACHABLE_URL = "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2"

PROFILES = """
    database:
      host: top.example.com
      port: 5432
      user: app
      password: toppass
      dbname: appdb
    lock_id: 11
    envs:
      staging:
        database:
          host: staging.example.com
        lock_id: 22
      qa:
        database:
          host: qa.example.com
          dbname: qadb
        migrations_dir: qa_migrations
"""


@pytest.fixture
def project(show_config: ShowConfig, tmp_path: Path) -> Path:
    write_text(tmp_path / "mg.yaml", PROFILES)
    show_config.install(tmp_path)
    return tmp_path


def test_top_level_without_profile(show_config: ShowConfig, project: Path) -> None:
    config = show_config(project)
    assert config["env"] is None
    assert config["database"] == {
        "host": "top.example.com",
        "port": "5432",
        "user": "app",
        "password": "toppass",
        "dbname": "appdb",
    }
    assert config["lock_id"] == 11
    assert config["migrations_dir"] == str(project / "migrations")
    assert config["seeds_dir"] == str(project / "seeds")


def test_profile_is_deep_merged_over_top_level(show_config: ShowConfig, project: Path) -> None:
    config = show_config(project, "--env", "staging")
    assert config["env"] == "staging"
    assert config["database"] == {
        "host": "staging.example.com",
        "port": "5432",
        "user": "app",
        "password": "toppass",
        "dbname": "appdb",
    }
    assert config["lock_id"] == 22


def test_profile_overrides_nested_and_plain_keys(show_config: ShowConfig, project: Path) -> None:
    config = show_config(project, "--env", "qa")
    assert config["database"]["host"] == "qa.example.com"
    assert config["database"]["dbname"] == "qadb"
    assert config["database"]["user"] == "app"
    assert config["lock_id"] == 11
    assert config["migrations_dir"] == str(project / "qa_migrations")


def test_mg_env_selects_the_profile(show_config: ShowConfig, project: Path) -> None:
    config = show_config(project, env={"MG_ENV": "staging"})
    assert config["env"] == "staging"
    assert config["database"]["host"] == "staging.example.com"


def test_env_flag_beats_mg_env(show_config: ShowConfig, project: Path) -> None:
    config = show_config(project, "--env", "qa", env={"MG_ENV": "staging"})
    assert config["env"] == "qa"
    assert config["database"]["host"] == "qa.example.com"


def test_env_flag_after_the_subcommand(project: Path) -> None:
    before = run_mg(["-p", "show_config", "--env", "qa", "show-config"], project)
    after = run_mg(["-p", "show_config", "show-config", "--env", "qa"], project)
    inline = run_mg(["show-config", "--env=qa", "-pshow_config"], project)
    assert before.returncode == after.returncode == inline.returncode == 0, (
        before.stderr + after.stderr + inline.stderr
    )
    assert before.stdout == after.stdout == inline.stdout
    assert '"env": "qa"' in before.stdout


def test_mg_database_url_beats_profile_database(show_config: ShowConfig, project: Path) -> None:
    url = "postgresql://other@envhost:6543/envdb"
    config = show_config(project, "--env", "staging", env={"MG_DATABASE_URL": url})
    assert config["database"] == {"url": url}
    assert config["lock_id"] == 22


def test_mg_database_url_skips_interpolation_of_file_database(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  password: ${NOT_SET_ANYWHERE}\n")
    url = "postgresql://u@h/d"
    config = show_config(tmp_path, env={"MG_DATABASE_URL": url})
    assert config["database"] == {"url": url}


def test_mg_lock_id_beats_profile_and_top_level(show_config: ShowConfig, project: Path) -> None:
    assert show_config(project, "--env", "staging", env={"MG_LOCK_ID": "99"})["lock_id"] == 99
    assert show_config(project, env={"MG_LOCK_ID": "-5"})["lock_id"] == -5


def test_invalid_mg_lock_id_is_a_clean_error(project: Path) -> None:
    result = run_mg(["-p", "show_config", "show-config"], project, env={"MG_LOCK_ID": "abc"})
    assert_clean_error(result, "MG_LOCK_ID")


def test_config_flag_beats_mg_config(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "lock_id: 1\n")
    write_text(tmp_path / "a" / "mg.yaml", "lock_id: 2\n")
    write_text(tmp_path / "b" / "mg.yaml", "lock_id: 3\n")
    assert show_config(tmp_path)["lock_id"] == 1
    assert show_config(tmp_path, env={"MG_CONFIG": "a/mg.yaml"})["lock_id"] == 2
    flagged = show_config(tmp_path, "--config", "b/mg.yaml", env={"MG_CONFIG": "a/mg.yaml"})
    assert flagged["lock_id"] == 3


def test_paths_are_relative_to_the_config_file(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "conf" / "mg.yaml", "migrations_dir: sql\nseeds_dir: ../data\n")
    config = show_config(tmp_path, "--config", "conf/mg.yaml")
    assert config["migrations_dir"] == str(tmp_path / "conf" / "sql")
    assert config["seeds_dir"] == str(tmp_path / "data")
    assert config["root"] == str(tmp_path / "conf")


# --- scalars and interpolation -------------------------------------------------------------


def test_scalars_keep_the_text_as_written(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(
        tmp_path / "mg.yaml",
        """
        database:
          host: 010.1
          port: 05432
          user: no
          password: 0123
          dbname: 1e3
          application_name: on
          options: null
        """,
    )
    database = show_config(tmp_path)["database"]
    assert database == {
        "host": "010.1",
        "port": "05432",
        "user": "no",
        "password": "0123",
        "dbname": "1e3",
        "application_name": "on",
        "options": "null",
    }


@pytest.mark.parametrize("password", ["yes", "0123", "pa$$word", "p@ss:w/rd?#", "${Y}", "~"])
def test_password_from_environment_is_taken_literally(
    show_config: ShowConfig, tmp_path: Path, password: str
) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  password: ${DB_PASSWORD}\n")
    database = show_config(tmp_path, env={"DB_PASSWORD": password, "Y": "expanded"})["database"]
    assert database["password"] == password


def test_literal_dollars_in_the_file_are_kept(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  password: pa$$word\n  user: $USER\n")
    database = show_config(tmp_path, env={"USER": "someone"})["database"]
    assert database == {"password": "pa$$word", "user": "$USER"}


def test_environment_value_cannot_inject_yaml(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  host: safe\n  password: ${DB_PASSWORD}\n")
    injected = "x\nhost: evil\nlock_id: 7"
    config = show_config(tmp_path, env={"DB_PASSWORD": injected})
    assert config["database"] == {"host": "safe", "password": injected}
    assert config["lock_id"] != 7


def test_default_applies_when_unset_or_empty(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(
        tmp_path / "mg.yaml",
        """
        database:
          host: ${X:-d}
          dbname: ${EMPTY:-fallback}
          user: ${X:-}
          port: ${PORT:-5432}
        """,
    )
    database = show_config(tmp_path, env={"EMPTY": ""})["database"]
    assert database == {"host": "d", "dbname": "fallback", "user": "", "port": "5432"}


def test_set_variable_beats_default(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  host: ${X:-d}\n")
    assert show_config(tmp_path, env={"X": "real"})["database"]["host"] == "real"


def test_escaped_reference_is_literal(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  password: a$${X}b\n  user: pre-${X}-post\n")
    database = show_config(tmp_path, env={"X": "mid"})["database"]
    assert database == {"password": "a${X}b", "user": "pre-mid-post"}


def test_interpolation_applies_in_lists_and_other_keys(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    write_text(tmp_path / "mg.yaml", "migrations_dir: ${DIR:-migs}\nlock_id: ${LOCK:-5}\n")
    config = show_config(tmp_path, env={"LOCK": "42"})
    assert config["migrations_dir"] == str(tmp_path / "migs")
    assert config["lock_id"] == 42


def test_dotenv_beside_config_is_loaded(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(
        tmp_path / "conf" / "mg.yaml", "database:\n  password: ${DB_PASSWORD}\n  host: ${H}\n"
    )
    write_text(tmp_path / "conf" / ".env", "DB_PASSWORD=from-dotenv\nH=dotenv-host\n")
    config = show_config(tmp_path, "--config", "conf/mg.yaml", env={"H": "real-host"})
    assert config["database"] == {"password": "from-dotenv", "host": "real-host"}


def test_a_dotenv_reference_to_a_variable_already_set_uses_the_set_value(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    # as python-dotenv's load_dotenv(override=False): the environment wins inside .env's own
    # ${...} references too, so a URL built from DB_HOST points where DB_HOST says
    write_text(tmp_path / "mg.yaml", "database:\n  url: ${APP_URL}\n")
    write_text(
        tmp_path / ".env",
        "DB_HOST=localhost\nAPP_URL=postgresql://app@${DB_HOST}/app\n",
    )
    config = show_config(tmp_path, env={"DB_HOST": "ci-db"})
    assert config["database"] == {"url": "postgresql://app@ci-db/app"}
    assert show_config(tmp_path)["database"] == {"url": "postgresql://app@localhost/app"}


@pytest.mark.parametrize("character", ["\0", "\x07", "\x7f"])
def test_a_control_character_in_mg_yaml_is_an_error_naming_its_line(
    tmp_path: Path, character: str
) -> None:
    (tmp_path / "mg.yaml").write_text(
        f"database:\n  host: h\n  password: a{character}b\n", encoding="utf-8"
    )
    done = run_mg(["status"], tmp_path)
    assert done.returncode == 2, done.stderr
    code = f"#x{ord(character):04x}"
    assert done.stderr == (
        f"mg: error: mg.yaml: invalid YAML at line 3: character {code} is not allowed "
        "(a YAML file cannot hold control characters)\n"
    )


def test_mg_env_in_the_dotenv_selects_the_profile(show_config: ShowConfig, tmp_path: Path) -> None:
    # .env is loaded first, as MG_DATABASE_URL and MG_LOCK_ID from it already were: its
    # MG_ENV is no exception, never silently the top-level database instead
    write_text(
        tmp_path / "mg.yaml",
        "database:\n  host: top\nenvs:\n  local:\n    database:\n      host: local-db\n",
    )
    write_text(tmp_path / ".env", "MG_ENV=local\n")
    config = show_config(tmp_path)
    assert (config["env"], config["database"]["host"]) == ("local", "local-db")
    # the environment and --env still win over it
    assert show_config(tmp_path, env={"MG_ENV": ""})["database"]["host"] == "top"
    write_text(tmp_path / ".env", "MG_ENV=nope\n")
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "profile 'nope' is not defined in mg.yaml (defined: local)")
    assert show_config(tmp_path, "--env", "local")["env"] == "local"


def test_unset_variable_in_unused_profile_is_no_error(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    write_text(
        tmp_path / "mg.yaml",
        """
        database:
          host: localhost
        envs:
          prod:
            database:
              password: ${PROD_PASSWORD}
        """,
    )
    assert show_config(tmp_path)["database"] == {"host": "localhost"}


def test_unset_variable_in_selected_profile_names_key(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    write_text(
        tmp_path / "mg.yaml",
        """
        database:
          host: localhost
        envs:
          prod:
            database:
              password: ${PROD_PASSWORD}
        """,
    )
    show_config.install(tmp_path)
    result = run_mg(["-p", "show_config", "show-config", "--env", "prod"], tmp_path)
    stderr = assert_clean_error(result, "PROD_PASSWORD", "database.password", "mg.yaml")
    assert "not set" in stderr


def test_unset_variable_stops_status_before_connecting(tmp_path: Path) -> None:
    write_text(
        tmp_path / "mg.yaml",
        f"database:\n  url: {UNREACHABLE_URL}\n  password: ${{NOPE}}\n",
    )
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "NOPE", "database.password")


# --- bad configuration ----------------------------------------------------------------------


def test_invalid_yaml_names_file_and_line(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  host: a\n  port: [1, 2\nlock_id: 3\n")
    show_config.install(tmp_path)
    for args in (["status"], ["-p", "show_config", "show-config"], ["create", "x"]):
        result = run_mg(args, tmp_path)
        stderr = assert_clean_error(result, "mg.yaml", "line")
        assert "invalid YAML" in stderr


def test_invalid_yaml_in_config_flag_file(tmp_path: Path) -> None:
    write_text(tmp_path / "other.yaml", "a: b\n c: d\n")
    result = run_mg(["--config", "other.yaml", "status"], tmp_path)
    assert_clean_error(result, "other.yaml", "line 2")


def test_missing_profile_is_an_error_not_a_fallback(project: Path) -> None:
    for args, env in (
        (["--env", "prodd", "status"], {}),
        (["status"], {"MG_ENV": "prodd"}),
        (["-p", "show_config", "show-config", "--env", "prodd"], {}),
    ):
        result = run_mg(args, project, env=env)
        stderr = assert_clean_error(result, "prodd")
        assert "staging" in stderr  # the profiles that do exist


def test_an_empty_database_in_the_selected_profile_is_an_error_not_libpq_defaults(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    write_text(
        tmp_path / "mg.yaml",
        PROFILES + "      dev:\n        database:\n        lock_id: 33\n",
    )
    show_config.install(tmp_path)
    for args in (["--env", "dev", "status"], ["-p", "show_config", "show-config", "--env", "dev"]):
        stderr = assert_clean_error(run_mg(args, tmp_path), "envs.dev.database")
        assert "empty" in stderr
    # Only the selected profile is looked at.
    assert show_config(tmp_path, "--env", "staging")["lock_id"] == 22


def test_profile_without_config_file_is_an_error(show_config: ShowConfig, tmp_path: Path) -> None:
    show_config.install(tmp_path)
    result = run_mg(["-p", "show_config", "show-config", "--env", "dev"], tmp_path)
    assert_clean_error(result, "dev")


def test_missing_config_flag_file(tmp_path: Path) -> None:
    result = run_mg(["status", "--config", "nowhere.yaml"], tmp_path)
    assert_clean_error(result, "nowhere.yaml", "does not exist")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "databse:\n  host: x\n")
    result = run_mg(["status"], tmp_path)
    stderr = assert_clean_error(result, "mg.yaml", "databse")
    assert "database" in stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("lock_id: twelve\n", "lock_id"),
        ("database: localhost\n", "database"),
        ("envs: [a, b]\n", "envs"),
        ("database:\n  host: [a, b]\n", "database.host"),
        ("lock_timeout: soon\n", "lock_timeout"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    write_text(tmp_path / "mg.yaml", text)
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "mg.yaml", key)


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("lock_id: twelve", "envs.staging.lock_id: expected an integer"),
        ("lock_timeout: soon", "envs.staging.lock_timeout: invalid duration 'soon'"),
        ("protected: maybe", "envs.staging.protected: expected true or false"),
        ("seeds_dir: [a]", "envs.staging.seeds_dir: expected a directory path"),
        ("lint: {on_apply: x}", "envs.staging.lint.on_apply: expected one of warn"),
        ("hooks: {pre_apply: [a]}", "envs.staging.hooks.pre_apply: expected a shell command"),
        ("database: {host: '${NOPE}'}", "envs.staging.database.host: environment variable NOPE"),
    ],
)
def test_a_wrong_value_in_a_profile_is_named_where_it_is_written(
    tmp_path: Path, line: str, said: str
) -> None:
    """Not `mg.yaml: lock_id: ...`, which sends the user to a top-level key that is fine."""
    base = "" if line.startswith("database") else "database:\n  host: h.invalid\n"
    write_text(tmp_path / "mg.yaml", f"{base}lock_id: 7\nenvs:\n  staging:\n    {line}\n")
    result = run_mg(["--env", "staging", "status"], tmp_path)
    assert_clean_error(result, f"mg: error: mg.yaml: {said}")
    # the same value at the top level is named there, as before
    write_text(tmp_path / "mg.yaml", f"{base}{line}\nenvs:\n  staging: {{}}\n")
    result = run_mg(["--env", "staging", "status"], tmp_path)
    assert_clean_error(result, f"mg: error: mg.yaml: {said.removeprefix('envs.staging.')}")


@pytest.mark.parametrize(
    ("database", "said"),
    [
        ("port: 99999", "database.port: '99999' is not a port number (1 to 65535)"),
        ("port: 0", "database.port: '0' is not a port number (1 to 65535)"),
        ("sslmode: required", "database.sslmode: 'required' is not an sslmode"),
        ("sslmode: verify_full", "did you mean verify-full?"),
    ],
)
def test_a_port_or_sslmode_libpq_refuses_is_a_configuration_error(
    tmp_path: Path, database: str, said: str
) -> None:
    """Exit 2 naming the key before connecting, not "cannot connect" (exit 1)."""
    write_text(tmp_path / "mg.yaml", f"database:\n  host: h.invalid\n  {database}\n")
    result = run_mg(["status"], tmp_path)
    stderr = assert_clean_error(result, "mg: error: mg.yaml: ", said)
    assert "cannot connect" not in stderr


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  host: a\n  host: b\n")
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "mg.yaml", "host")


def test_config_error_keeps_password_out_of_output(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n  password: s3cr3t-${X\n")
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "database.password")
    assert "s3cr3t" not in result.stderr + result.stdout


def test_bom_and_crlf_config_file(show_config: ShowConfig, tmp_path: Path) -> None:
    text = "database:\r\n  host: h\r\n  password: ${P:-0123}\r\nlock_id: 9\r\n"
    (tmp_path / "mg.yaml").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    config = show_config(tmp_path)
    assert config["database"] == {"host": "h", "password": "0123"}
    assert config["lock_id"] == 9


@pytest.mark.parametrize("args", [["--env", ""], ["--env="]])
def test_empty_env_flag_is_not_a_silent_fallback(project: Path, args: list[str]) -> None:
    """``mg apply --env "$DEPLOY_ENV"`` with the variable unset must not hit the default DB."""
    result = run_mg(["-p", "show_config", "show-config", *args], project)
    assert_clean_error(result, "profile")
