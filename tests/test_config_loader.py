"""mg.yaml loading: profiles, interpolation, .env, overrides, errors, redaction."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from migretti_core.errors import ConfigError
from migretti_core.redact import redact_text, redact_url
from migretti_core.testing import make_hooks, make_session
from migretti_core.types import DEFAULT_LOCK_ID, Config, ConfigRequest
from migretti_plugins.config.loader import load_config, parse_duration
from migretti_plugins.seeds import seeds_dir
from migretti_plugins.shellhooks import hook_timeout
from migretti_plugins.shellhooks.commands import hook_commands

# The builtins, loaded as in a run: they declare their keys (seeds_dir, hook_timeout,
# protected) and check them once the configuration is loaded.
BUILTINS = make_hooks(builtins=True)


def load(
    cwd: Path,
    yaml_text: str | None = None,
    *,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    known_sections: frozenset[str] = frozenset(),
    check_unknown: bool = True,
) -> Config:
    if yaml_text is not None:
        (cwd / "mg.yaml").write_text(yaml_text, encoding="utf-8")
    request = ConfigRequest(
        cwd=cwd,
        config_path=config_path,
        env_name=env,
        environ=dict(environ or {}),
        known_sections=known_sections | BUILTINS.config_sections(),
        check_unknown=check_unknown,
        written_sections=BUILTINS.written_sections(),
    )
    config = load_config(request)
    BUILTINS.configure(config)
    return config


def is_protected(config: Config) -> bool:
    return BUILTINS.is_protected(make_session(BUILTINS, config))


def load_error(cwd: Path, yaml_text: str | None = None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(cwd, yaml_text, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


BASE = """\
database:
  host: localhost
  port: 5432
  user: app
  password: ${DB_PASSWORD:-devpass}
  dbname: app
envs:
  staging:
    database:
      host: staging.internal
  prod:
    lock_id: 7
    database:
      host: prod.internal
      password: ${PROD_PASSWORD}
"""


# --- profiles ----------------------------------------------------------------------------


def test_no_profile_uses_top_level_only(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    assert config.env is None
    assert dict(config.database) == {
        "host": "localhost",
        "port": "5432",
        "user": "app",
        "password": "devpass",
        "dbname": "app",
    }
    assert config.lock_id == DEFAULT_LOCK_ID


def test_profile_deep_merges_over_top_level(tmp_path: Path) -> None:
    config = load(tmp_path, BASE, env="staging")
    assert config.env == "staging"
    assert config.database["host"] == "staging.internal"
    assert config.database["user"] == "app"
    assert config.database["port"] == "5432"
    assert config.database["password"] == "devpass"


def test_profile_replaces_non_mapping_values(tmp_path: Path) -> None:
    config = load(tmp_path, BASE, env="prod", environ={"PROD_PASSWORD": "s3cret"})
    assert config.lock_id == 7
    assert config.database["password"] == "s3cret"
    assert config.database["dbname"] == "app"


def test_unknown_profile_lists_defined_ones(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE, env="production")
    assert message == "profile 'production' is not defined in mg.yaml (defined: staging, prod)"


def test_unknown_profile_without_any_envs(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database: {host: h}\n", env="dev")
    assert "profile 'dev' is not defined in mg.yaml" in message
    assert "no profiles defined" in message


def test_profile_selected_without_config_file_is_an_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, env="prod")
    assert "profile 'prod' is not defined" in message
    assert "mg.yaml" in message


def test_profile_url_replaces_top_level_parameters(tmp_path: Path) -> None:
    text = BASE + "  remote:\n    database:\n      url: postgresql://u@remote/db\n"
    config = load(tmp_path, text, env="remote")
    assert dict(config.database) == {"url": "postgresql://u@remote/db"}


def test_empty_hook_in_profile_disables_top_level_hook(tmp_path: Path) -> None:
    text = """\
hooks:
  pre_apply: pg_dump -Fc -f backup.dump
  post_apply: echo done
envs:
  dev:
    hooks:
      pre_apply:
"""
    assert set(hook_commands(load(tmp_path, text))) == {"pre_apply", "post_apply"}
    hooks = hook_commands(load(tmp_path, text, env="dev"))
    assert {name: hook.command for name, hook in hooks.items()} == {"post_apply": "echo done"}


def test_yaml_merge_keys_work(tmp_path: Path) -> None:
    text = """\
x-common: &common
  user: app
  port: 6543
database:
  <<: *common
  host: h
  port: 5432
"""
    config = load(tmp_path, text, known_sections=frozenset({"x-common"}))
    assert dict(config.database) == {"user": "app", "port": "5432", "host": "h"}


# --- scalars as written ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("0123", "0123"),
        ("yes", "yes"),
        ("no", "no"),
        ("1e3", "1e3"),
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        ("~", "~"),
        ("pa$$word", "pa$$word"),
        ("a$b$", "a$b$"),
    ],
)
def test_scalars_keep_the_text_the_user_wrote(tmp_path: Path, written: str, expected: str) -> None:
    config = load(tmp_path, f"database:\n  password: {written}\n  dbname: {written}\n")
    assert config.database["password"] == expected
    assert config.database["dbname"] == expected


def test_port_stays_a_string(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  port: 5432\n")
    assert config.database["port"] == "5432"


# --- interpolation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, "fallback"), ({"X": ""}, "fallback"), ({"X": "given"}, "given")],
)
def test_default_is_used_when_unset_or_empty(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    config = load(tmp_path, "database:\n  host: ${X:-fallback}\n", environ=environ)
    assert config.database["host"] == expected


def test_set_but_empty_variable_without_default_is_empty(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  password: ${X}\n", environ={"X": ""})
    assert config.database["password"] == ""


def test_dollar_dollar_brace_is_a_literal(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  password: a$${HOME}b\n", environ={"HOME": "/root"})
    assert config.database["password"] == "a${HOME}b"


def test_interpolation_inside_text_and_several_references(tmp_path: Path) -> None:
    text = "database:\n  url: postgresql://${U}:${P}@${H:-localhost}/db\n"
    config = load(tmp_path, text, environ={"U": "me", "P": "pw"})
    assert config.database["url"] == "postgresql://me:pw@localhost/db"


def test_interpolated_value_is_not_interpolated_again(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  password: ${P}\n", environ={"P": "x${Y}"})
    assert config.database["password"] == "x${Y}"


def test_unset_variable_in_unused_profile_is_no_error(tmp_path: Path) -> None:
    config = load(tmp_path, BASE, env="staging")
    assert config.database["host"] == "staging.internal"


def test_unset_variable_in_selected_profile_names_the_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE, env="prod")
    assert message == (
        "mg.yaml: envs.prod.database.password: environment variable PROD_PASSWORD is not set"
    )


def test_unset_variable_in_list_names_the_index(tmp_path: Path) -> None:
    message = load_error(tmp_path, "plugins:\n  - a\n  - ${PLUGIN}\n")
    assert message == "mg.yaml: plugins[1]: environment variable PLUGIN is not set"


def test_lists_and_plugin_sections_are_interpolated_but_keys_are_not(tmp_path: Path) -> None:
    text = 'notify:\n  ${KEY}: ${URL}\n  channels: ["${CHAN}", b]\n'
    config = load(
        tmp_path,
        text,
        environ={"KEY": "k", "URL": "https://hooks.example", "CHAN": "a"},
        known_sections=frozenset({"notify"}),
    )
    assert config.settings["notify"] == {
        "${KEY}": "https://hooks.example",
        "channels": ["a", "b"],
    }


def test_invalid_reference_is_an_error_naming_the_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database:\n  host: ${not valid}\n")
    assert message.startswith("mg.yaml: database.host: invalid reference")


def test_typed_keys_can_be_interpolated(tmp_path: Path) -> None:
    text = "lock_id: ${LOCK:-12}\nprotected: ${PROT:-no}\nlock_timeout: ${LT:-5s}\n"
    config = load(tmp_path, text, environ={"PROT": "yes"})
    assert (config.lock_id, is_protected(config), config.lock_timeout) == (12, True, 5.0)


# --- .env and environment overrides ------------------------------------------------------


def test_dotenv_beside_config_fills_unset_variables_only(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB_PASSWORD=from-dotenv\nDB_HOST=dotenv-host\n")
    text = "database:\n  host: ${DB_HOST}\n  password: ${DB_PASSWORD}\n"
    before = dict(os.environ)
    config = load(tmp_path, text, environ={"DB_HOST": "real-host"})
    assert config.database["host"] == "real-host"
    assert config.database["password"] == "from-dotenv"
    assert dict(os.environ) == before


def test_dotenv_is_read_beside_the_given_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "deploy"
    sub.mkdir()
    (sub / "mg.yaml").write_text("database:\n  password: ${PW}\n")
    (sub / ".env").write_text("PW=beside\n")
    (tmp_path / ".env").write_text("PW=cwd\n")
    config = load(tmp_path, config_path=Path("deploy/mg.yaml"))
    assert config.database["password"] == "beside"


def test_mg_database_url_replaces_database_whole(tmp_path: Path) -> None:
    url = "postgresql://ci@db/ci"
    config = load(tmp_path, BASE, env="prod", environ={"MG_DATABASE_URL": url})
    assert dict(config.database) == {"url": url}
    assert config.settings["database"] == {"url": url}


def test_mg_database_url_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MG_DATABASE_URL=postgresql://a@b/c\n")
    config = load(tmp_path)
    assert dict(config.database) == {"url": "postgresql://a@b/c"}


def test_mg_lock_id_overrides_lock_id(tmp_path: Path) -> None:
    config = load(tmp_path, "lock_id: 5\n", environ={"MG_LOCK_ID": "-42"})
    assert config.lock_id == -42


@pytest.mark.parametrize("value", ["abc", "1.5", str(2**63)])
def test_invalid_mg_lock_id_is_an_error(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, environ={"MG_LOCK_ID": value})
    assert message.startswith("MG_LOCK_ID: ")


# --- validation --------------------------------------------------------------------------


def test_unknown_top_level_key_names_file_key_and_valid_keys(tmp_path: Path) -> None:
    message = load_error(tmp_path, "databse:\n  host: h\n")
    assert message.startswith("mg.yaml: unknown key 'databse'; did you mean 'database'?")
    assert "database, envs, fleets, hook_timeout, hooks, lint, lock_id" in message


def test_sections_declared_by_plugins_are_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, "slack:\n  url: x\n", known_sections=frozenset({"slack"}))
    assert config.settings["slack"] == {"url": "x"}
    assert "slack" in load_error(tmp_path, "slack:\n  url: x\n")


def test_unknown_keys_pass_when_check_is_off(tmp_path: Path) -> None:
    config = load(tmp_path, "later_plugin: {a: b}\n", check_unknown=False)
    assert config.settings["later_plugin"] == {"a": "b"}


def test_unknown_key_in_a_profile(tmp_path: Path) -> None:
    message = load_error(tmp_path, "envs:\n  dev:\n    lockid: 3\n")
    assert message.startswith("mg.yaml: envs.dev: unknown key 'lockid'")


def test_profile_cannot_define_envs(tmp_path: Path) -> None:
    message = load_error(tmp_path, "envs:\n  dev:\n    envs: {}\n")
    assert message == "mg.yaml: envs.dev: a profile cannot define 'envs'"


def test_unknown_hook_name(tmp_path: Path) -> None:
    message = load_error(tmp_path, "hooks:\n  pre_aply: echo\n")
    assert message.startswith("mg.yaml: hooks: unknown hook 'pre_aply'")
    assert "pre_apply" in message


def test_unknown_hook_name_in_a_profile_not_selected(tmp_path: Path) -> None:
    # The shellhooks plugin checks every profile, so a typo for prod stops every command.
    text = "hooks:\n  pre_apply: echo\nenvs:\n  prod:\n    hooks:\n      post_aply: echo\n"
    message = load_error(tmp_path, text)
    assert message == (
        "mg.yaml: envs.prod.hooks: unknown hook 'post_aply' "
        "(valid hooks: pre_apply, post_apply, pre_rollback, post_rollback, on_failure)"
    )


def test_hook_commands_refer_to_environment_variables(tmp_path: Path) -> None:
    # The command keeps a reference; the value (here .env's) travels as a variable.
    (tmp_path / ".env").write_text("NOTE='x\"; touch pwned; echo \"'\n")
    text = 'hooks:\n  pre_apply: echo "${NOTE}" "${NOTE:-a}" $${HOME}\n  post_apply: ""\n'
    hooks = hook_commands(load(tmp_path, text))
    assert list(hooks) == ["pre_apply"]
    assert hooks["pre_apply"].command == 'echo "${MG_VAR_NOTE}" "${MG_VAR_NOTE}" ${HOME}'
    assert dict(hooks["pre_apply"].environment) == {"MG_VAR_NOTE": 'x"; touch pwned; echo "'}
    assert "pwned" not in repr(load(tmp_path, text))  # source and environ stay out of repr


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("database:\n  host: h\n  port: 5432\n bad: x\n", 4),
        ("database: {host: h\n", 2),
        ("a: b: c\n", 1),
        ("database:\n  host: h\n  host: i\n", 3),
    ],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"mg.yaml: invalid YAML at line {line}: ")


def test_duplicate_key_is_reported(tmp_path: Path) -> None:
    message = load_error(tmp_path, "database:\n  host: h\n  host: i\n")
    assert message == "mg.yaml: invalid YAML at line 3: duplicate key 'host'"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "- a\n- b\n")
    assert message.startswith("mg.yaml: the top level must be a mapping")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("lock_id: abc\n", "lock_id"),
        ("lock_id: [1]\n", "lock_id"),
        ("lock_timeout: soon\n", "lock_timeout"),
        ("hook_timeout: 0\n", "hook_timeout"),
        ("protected: maybe\n", "protected"),
        ("plugins: {a: b}\n", "plugins"),
        ("plugins: [[a]]\n", "plugins[0]"),
        ("database: postgresql://x\n", "database"),
        ("database:\n  options: [a]\n", "database.options"),
        ("hooks: echo hi\n", "hooks"),
        ("hooks:\n  pre_apply: [a, b]\n", "hooks.pre_apply"),
        ("migrations_dir: [a]\n", "migrations_dir"),
        ("envs: [a]\n", "envs"),
        ("envs:\n  dev: x\n", "envs.dev"),
    ],
)
def test_wrong_types_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"mg.yaml: {key}: ")


def test_custom_config_name_appears_in_errors(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("lock_id: x\n")
    message = load_error(tmp_path, config_path=Path("other.yaml"))
    assert message.startswith("other.yaml: lock_id: ")


def test_given_config_path_that_does_not_exist(tmp_path: Path) -> None:
    message = load_error(tmp_path, config_path=Path("conf/missing.yaml"))
    assert "conf/missing.yaml" in message
    assert "does not exist" in message


# --- typed keys and defaults -------------------------------------------------------------


def test_no_config_file_gives_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.path is None
    assert config.root == tmp_path
    assert dict(config.database) == {}
    assert dict(config.settings) == {"database": {}}
    assert config.migrations_dir == tmp_path / "migrations"
    assert seeds_dir(config) == tmp_path / "seeds"
    assert (config.lock_timeout, hook_timeout(config)) == (600.0, 600.0)
    assert config.plugins == ()
    assert hook_commands(config) == {}
    assert is_protected(config) is False


def test_empty_config_file_gives_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "# nothing yet\n")
    assert config.path == tmp_path / "mg.yaml"
    assert dict(config.database) == {}


def test_relative_paths_resolve_against_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "db"
    sub.mkdir()
    (sub / "mg.yaml").write_text(
        "migrations_dir: sql/up\nseeds_dir: ../seeds\nplugins:\n  - acme.notify\n  - ./local.py\n"
    )
    config = load(tmp_path, config_path=Path("db/mg.yaml"))
    assert config.path == sub / "mg.yaml"
    assert config.root == sub
    assert config.migrations_dir == sub / "sql" / "up"
    assert seeds_dir(config) == tmp_path / "seeds"
    assert config.plugins == ("acme.notify", str(sub / "local.py"))


def test_plugins_may_be_a_single_string(tmp_path: Path) -> None:
    assert load(tmp_path, "plugins: acme.notify\n").plugins == ("acme.notify",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("0", 0.0),
    ],
)
def test_lock_timeout_durations(tmp_path: Path, text: str, seconds: float) -> None:
    assert load(tmp_path, f"lock_timeout: {text}\n").lock_timeout == seconds
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "5x", "s", "5 minutes", "1.2.3"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("Yes", True), ("ON", True), ("false", False), ("no", False), ("Off", False)],
)
def test_protected_accepts_yaml_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    assert is_protected(load(tmp_path, f"protected: {text}\n")) is expected


@pytest.mark.parametrize("name", ["prod", "Production", "LIVE"])
def test_profiles_with_production_names_are_protected(tmp_path: Path, name: str) -> None:
    text = f"envs:\n  {name}:\n    protected: false\n  qa:\n    protected: true\n"
    assert is_protected(load(tmp_path, text, env=name)) is True
    assert is_protected(load(tmp_path, text, env="qa")) is True
    assert is_protected(load(tmp_path, text)) is False


def test_embedded_database_flag_is_a_bool(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  embedded: true\n")
    assert config.database["embedded"] is True


def test_settings_are_read_only(tmp_path: Path) -> None:
    text = "plugins: [a]\ndatabase:\n  host: h\nnotify:\n  to: [x]\n"
    config = load(tmp_path, text, known_sections=frozenset({"notify"}))
    with pytest.raises(TypeError):
        config.settings["database"]["host"] = "evil"
    with pytest.raises(TypeError):
        config.database["host"] = "evil"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.source["plugins"] = "rm -rf /"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.environ["PATH"] = "/tmp"  # type: ignore[index]
    assert config.settings["notify"]["to"] == ["x"]
    with pytest.raises(TypeError):
        config.settings["notify"]["to"].append("evil")
    with pytest.raises(TypeError):
        config.settings["notify"]["extra"] = "evil"
    assert "envs" not in config.settings


def test_a_plugin_section_keeps_its_yaml_types(tmp_path: Path) -> None:
    text = (
        "database:\n  password: 0123\n  application_name: yes\n"
        "notify:\n  enabled: false\n  quoted: 'false'\n  retries: 3\n  ratio: 0.5\n"
        "  to: [a, b]\n  extra: {on: yes}\n  unset:\n  when: 2024-01-01\n"
    )
    config = load(tmp_path, text, known_sections=frozenset({"notify"}))
    assert config.database == {"password": "0123", "application_name": "yes"}
    assert config.settings["database"]["password"] == "0123"
    notify = config.settings["notify"]
    assert notify == {
        "enabled": False,
        "quoted": "false",
        "retries": 3,
        "ratio": 0.5,
        "to": ["a", "b"],
        "extra": {"on": True},
        "unset": None,
        "when": "2024-01-01",
    }
    assert isinstance(notify, dict)
    assert isinstance(notify["to"], list)
    assert type(notify["enabled"]) is bool


def test_typed_readers_name_section_and_key(tmp_path: Path) -> None:
    from migretti_core.errors import ConfigError
    from migretti_core.settings import plugin_settings

    text = "notify:\n  timeout: 2m\n  on: 'yes'\n  to: one\n  bad: [1]\n  flag: maybe\n"
    config = load(tmp_path, text, known_sections=frozenset({"notify"}))
    section = plugin_settings(config, "notify")
    assert section.duration("timeout") == 120.0
    assert section.duration("missing", 5.0) == 5.0
    assert section.boolean("on") is True
    assert section.strings("to") == ["one"]
    with pytest.raises(ConfigError, match=r"^mg.yaml: notify.bad: expected a duration"):
        section.duration("bad")
    with pytest.raises(ConfigError, match=r"^mg.yaml: notify.flag: expected true or false"):
        section.boolean("flag")
    with pytest.raises(ConfigError, match=r"notify.to: expected an integer"):
        section.integer("to")


# --- redaction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:****@host/db"),
        ("postgres://user:p@ss@host:5432/db", "postgres://user:****@host:5432/db"),
        ("postgresql://:secret@host", "postgresql://:****@host"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db?password=x&sslmode=require", "postgresql://host/db?password=****&sslmode=require"),
        ("postgresql://u:a@h1,h2/db?sslpassword=k", "postgresql://u:****@h1,h2/db?sslpassword=****"),
        ("host=h password=secret dbname=d", "host=h password=**** dbname=d"),
        ("host=h password = 'se cret' user=u", "host=h password = **** user=u"),
        ("embedded:", "embedded:"),
    ],
)  # fmt: skip
def test_redact_url(raw: str, redacted: str) -> None:
    assert redact_url(raw) == redacted


def test_redact_text_hides_urls_and_pairs_inside_messages() -> None:
    text = "cannot reach postgresql://u:hunter2@db/app (password=hunter2)"
    redacted = redact_text(text)
    assert "hunter2" not in redacted
    assert "postgresql://u:****@db/app" in redacted


def test_a_file_of_comments_is_read_as_yaml_reads_it_without_pyyaml() -> None:
    # Every text of up to five of these characters: where the shortcut answers, YAML (both
    # parsers) reads an empty document; the rest goes to YAML as before.
    import itertools

    import yaml

    from migretti_plugins.config.loader import _only_comments, parse_text

    answered = 0
    for size in range(6):
        for chars in itertools.product("# \t\n\ra:\x07", repeat=size):
            text = "".join(chars)
            if not _only_comments(text):
                continue
            answered += 1
            assert parse_text(text) == {}
            for loader in (yaml.BaseLoader, getattr(yaml, "CBaseLoader", yaml.BaseLoader)):
                assert yaml.compose(text, Loader=loader) is None, repr(text)
    assert answered > 1000
    assert not _only_comments("# é\n")  # non-ASCII: YAML decides
    assert not _only_comments("---\n# x\n")
    assert not _only_comments("\t# x\n")  # YAML refuses a tab there
