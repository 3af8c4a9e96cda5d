"""The ``mg`` command itself: entry points, init, create, migration file errors, checksums.

Everything runs the real command in a subprocess (``migretti_core.testing.run_mg``).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from migretti_core import __version__
from migretti_core.testing import assert_clean_error, mg_env, run_mg, write_text

if TYPE_CHECKING:
    from conftest import ShowConfig

# No server listens on port 1: reaching it fails with exit 1, never 2.
UNREACHABLE_URL = "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2"
ULID_RE = r"[0-9A-HJKMNP-TV-Z]{26}"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter, with the environment ``mg`` gets."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=mg_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def unreachable_project(directory: Path) -> Path:
    """A project whose database cannot be reached: any connection attempt exits 1."""
    write_text(directory / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\n")
    (directory / "migrations").mkdir(exist_ok=True)
    return directory


# --- entry points ---------------------------------------------------------------------------


def test_python_m_version(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "migretti_core", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mg {__version__}"


def test_mg_version(tmp_path: Path) -> None:
    result = run_mg(["--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mg {__version__}"


def test_help_lists_commands_and_exits_zero(tmp_path: Path) -> None:
    result = run_mg(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("init", "create", "apply", "rollback", "status", "list", "plugins"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.MULTILINE), result.stdout
    assert "--env" in result.stdout
    assert result.stderr == ""


def test_help_works_with_a_broken_mg_yaml(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database: [unclosed\n")
    result = run_mg(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_subcommand_help(tmp_path: Path) -> None:
    result = run_mg(["apply", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--dry-run" in result.stdout


@pytest.mark.parametrize("command", ["apply", "up", "down", "rollback", "fix", "baseline"])
def test_lock_timeout_help_names_the_setting_its_default_comes_from(
    tmp_path: Path, command: str
) -> None:
    """``lock_timeout:`` in mg.yaml is the default of --lock-timeout, as the help of
    --table-lock-timeout says of ``table_lock_timeout``; 10m is only the built-in one."""
    result = run_mg([command, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "lock (e.g. 30s, 10m). Default: lock_timeout, 10m." in text, result.stdout


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_mg(["aply"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "aply" in result.stderr


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    result = run_mg(["status", "--frobnicate"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--frobnicate" in result.stderr


@pytest.mark.parametrize("option", ["--env", "--config", "-p"])
def test_global_option_without_value(tmp_path: Path, option: str) -> None:
    result = run_mg(["status", option], tmp_path)
    assert_clean_error(result, option)


@pytest.mark.parametrize("args", [["--help"], ["create", "add users"], ["init"], ["plugins"]])
def test_psycopg_is_not_imported(tmp_path: Path, args: list[str]) -> None:
    """Commands that never talk to a database start without loading the driver."""
    code = f"""
        import sys
        from migretti_core.cli import run
        code = run({args!r})
        print("RESULT", code, "psycopg" in sys.modules)
    """
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "RESULT 0 False", result.stdout + result.stderr


def test_psycopg_is_not_imported_by_create_with_a_configured_database(tmp_path: Path) -> None:
    unreachable_project(tmp_path)
    code = """
        import sys
        from migretti_core.cli import run
        code = run(["create", "with config"])
        print("RESULT", code, "psycopg" in sys.modules)
    """
    result = run_python(code, tmp_path)
    assert result.stdout.strip().splitlines()[-1] == "RESULT 0 False", result.stderr


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    code = """
        import sys
        from migretti_core.cli import run
        code = run(["--help"])
        heavy = ["psycopg", "sqlparse", "yaml", "dotenv", "ulid"]
        print("RESULT", code, [m for m in heavy if m in sys.modules])
    """
    result = run_python(code, tmp_path)
    assert result.stdout.strip().splitlines()[-1] == "RESULT 0 []", result.stderr


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "database: [unclosed\n")
    quiet = run_mg(["status"], tmp_path)
    loud = run_mg(["status", "-v"], tmp_path)
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr


# --- init -----------------------------------------------------------------------------------


def test_init_creates_config_and_migrations(tmp_path: Path) -> None:
    result = run_mg(["init"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mg.yaml").is_file()
    assert (tmp_path / "migrations").is_dir()
    text = (tmp_path / "mg.yaml").read_text(encoding="utf-8")
    assert "${DB_PASSWORD" in text
    for line in text.splitlines():
        if re.match(r"\s*password\s*:", line):
            assert "${" in line, f"plaintext password in generated mg.yaml: {line!r}"


def test_init_config_takes_the_password_from_the_environment(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    assert run_mg(["init"], tmp_path).returncode == 0
    config = show_config(tmp_path, env={"DB_PASSWORD": "0123"})
    assert config["database"]["password"] == "0123"
    assert config["migrations_dir"] == str(tmp_path / "migrations")


def test_init_never_overwrites_mg_yaml(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "lock_id: 7  # mine\n")
    result = run_mg(["init"], tmp_path)
    assert_clean_error(result, "mg.yaml")
    assert (tmp_path / "mg.yaml").read_text(encoding="utf-8") == "lock_id: 7  # mine\n"


def test_init_twice_fails_the_second_time(tmp_path: Path) -> None:
    assert run_mg(["init"], tmp_path).returncode == 0
    before = (tmp_path / "mg.yaml").read_bytes()
    assert_clean_error(run_mg(["init"], tmp_path), "mg.yaml", "exists")
    assert (tmp_path / "mg.yaml").read_bytes() == before


def test_init_embedded_says_it_extended_an_existing_gitignore(tmp_path: Path) -> None:
    write_text(tmp_path / ".gitignore", "node_modules/\n")
    result = run_mg(["init", "--embedded"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".gitignore").read_text(encoding="utf-8") == "node_modules/\n.mg/\n"
    assert "added .mg/ to .gitignore" in result.stderr
    assert "created .gitignore" not in result.stderr
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    result = run_mg(["init", "--embedded"], fresh)
    assert "created .gitignore" in result.stderr, result.stderr


def test_init_embedded_extends_a_gitignore_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_bytes(b"# caf\xe9\nbuild/")
    result = run_mg(["init", "--embedded"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".gitignore").read_bytes() == b"# caf\xe9\nbuild/\n.mg/\n"


@pytest.mark.parametrize("embedded", [[], ["--embedded"]])
def test_init_refuses_a_migrations_file_before_writing_anything(
    tmp_path: Path, embedded: list[str]
) -> None:
    write_text(tmp_path / "migrations", "not a directory\n")
    result = run_mg(["init", *embedded], tmp_path)
    assert_clean_error(result, "migrations", "not a directory")
    assert not (tmp_path / "mg.yaml").exists()


def test_init_embedded_refuses_an_unreadable_gitignore_before_writing_anything(
    tmp_path: Path,
) -> None:
    (tmp_path / ".gitignore").mkdir()
    result = run_mg(["init", "--embedded"], tmp_path)
    assert_clean_error(result, ".gitignore")
    assert not (tmp_path / "mg.yaml").exists()


def test_init_embedded_refuses_a_gitignore_that_is_no_regular_file_without_reading_it(
    tmp_path: Path,
) -> None:
    import os

    os.mkfifo(tmp_path / ".gitignore")  # opening it for reading waits for a writer
    result = run_mg(["init", "--embedded"], tmp_path, timeout=30)
    assert_clean_error(result, "mg: error: .gitignore is not a regular file; nothing was written")
    assert not (tmp_path / "mg.yaml").exists()


def test_init_embedded_extends_an_empty_gitignore(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_bytes(b"")
    result = run_mg(["init", "--embedded"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".gitignore").read_bytes() == b".mg/\n"
    assert "added .mg/ to .gitignore" in result.stderr


@pytest.mark.parametrize("line", [b".mg", b".mg/", b"/.mg", b"/.mg/"])
def test_init_embedded_keeps_a_gitignore_that_already_ignores_mg(
    tmp_path: Path, line: bytes
) -> None:
    (tmp_path / ".gitignore").write_bytes(b"build/\n" + line + b"\n")
    result = run_mg(["init", "--embedded"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".gitignore").read_bytes() == b"build/\n" + line + b"\n"
    assert ".gitignore" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--config", "other.yaml", "init"], {}),
        (["init", "--config", "other.yaml"], {}),
        (["init"], {"MG_CONFIG": "other.yaml"}),
    ],
)
def test_init_writes_the_file_config_names_and_never_overwrites_it(
    show_config: ShowConfig, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = run_mg(args, tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "created other.yaml" in result.stderr
    assert (tmp_path / "other.yaml").is_file()
    assert not (tmp_path / "mg.yaml").exists()
    assert (tmp_path / "migrations").is_dir()
    config = show_config(tmp_path, "--config", "other.yaml", env={"DB_PASSWORD": "x"})
    assert config["path"] == str(tmp_path / "other.yaml")

    (tmp_path / "other.yaml").write_text("lock_id: 7  # mine\n", encoding="utf-8")
    again = run_mg(args, tmp_path, env=env)
    assert_clean_error(again, "other.yaml", "already exists")
    assert (tmp_path / "other.yaml").read_text(encoding="utf-8") == "lock_id: 7  # mine\n"
    assert not (tmp_path / "mg.yaml").exists()


def test_init_puts_the_project_beside_the_file_config_names(
    tmp_path: Path, db_conninfo: dict[str, str]
) -> None:
    missing = run_mg(["--config", "nowhere/mg.yaml", "init"], tmp_path)
    assert_clean_error(missing, "nowhere", "does not exist")
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "db").mkdir()
    config = ["--config", "db/x.yaml"]
    assert run_mg([*config, "init"], tmp_path).returncode == 0
    created = run_mg([*config, "create", "first", "--up", "CREATE TABLE t (id bigint);"], tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("db/migrations/")
    env = {
        "DB_HOST": db_conninfo["host"],
        "DB_PORT": db_conninfo["port"],
        "DB_USER": db_conninfo["user"],
        "DB_NAME": db_conninfo["dbname"],
        "DB_PASSWORD": db_conninfo.get("password", ""),
    }
    applied = run_mg([*config, "apply"], tmp_path, env=env)
    assert applied.returncode == 0, applied.stderr
    status = run_mg([*config, "status"], tmp_path, env=env)
    assert "applied: 1  pending: 0" in status.stdout, status.stdout + status.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_init_embedded_puts_the_project_beside_the_file_config_names(
    server_tmp_path: Path,
) -> None:
    (server_tmp_path / "db").mkdir()
    config = ["--config", "db/x.yaml"]
    init = run_mg([*config, "init", "--embedded"], server_tmp_path)
    assert init.returncode == 0, init.stderr
    assert "created db/.gitignore" in init.stderr
    assert (server_tmp_path / "db" / ".gitignore").read_text(encoding="utf-8") == ".mg/\n"
    created = run_mg(
        [*config, "create", "first", "--up", "CREATE TABLE t (id bigint);"], server_tmp_path
    )
    assert created.returncode == 0, created.stderr
    applied = run_mg([*config, "apply"], server_tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert (server_tmp_path / "db" / ".mg" / "pgdata").is_dir()
    status = run_mg([*config, "status"], server_tmp_path)
    assert "applied: 1  pending: 0" in status.stdout, status.stdout + status.stderr
    assert sorted(p.name for p in server_tmp_path.iterdir()) == ["db"]
    assert run_mg([*config, "db", "stop"], server_tmp_path).returncode == 0


# --- create ---------------------------------------------------------------------------------


def test_create_writes_the_template(tmp_path: Path) -> None:
    result = run_mg(["create", "Add Users Table"], tmp_path)
    assert result.returncode == 0, result.stderr
    files = list((tmp_path / "migrations").iterdir())
    assert len(files) == 1
    path = files[0]
    match = re.fullmatch(rf"({ULID_RE})_add_users_table\.sql", path.name)
    assert match, path.name
    assert result.stdout.strip() == f"migrations/{path.name}"
    assert path.read_text(encoding="utf-8") == (
        f"-- migration: Add Users Table\n-- id: {match.group(1)}\n\n"
        "-- migrate: up\n-- Write the migration's SQL here.\n\n-- migrate: down\n"
    )


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("add  users--table!!", "add_users_table"),
        ("Ünïcode name 2", "unicode_name_2"),
        ("  __x__  ", "x"),
        ("CamelCase", "camelcase"),
    ],
)
def test_create_slug(tmp_path: Path, name: str, slug: str) -> None:
    result = run_mg(["create", name], tmp_path)
    assert result.returncode == 0, result.stderr
    [path] = (tmp_path / "migrations").iterdir()
    assert re.fullmatch(rf"{ULID_RE}_{slug}\.sql", path.name), path.name


@pytest.mark.parametrize("name", ["###", "", "  ", "ßß", "日本"])
def test_create_refuses_an_empty_slug(tmp_path: Path, name: str) -> None:
    result = run_mg(["create", name], tmp_path)
    assert_clean_error(result)
    migrations = tmp_path / "migrations"
    assert not migrations.exists() or not any(migrations.iterdir())


@pytest.mark.parametrize(
    ("args", "example"),
    [(["create", "用户表"], "add_users"), (["seed", "create", "данные"], "demo_data")],
)
def test_a_name_with_letters_but_none_of_a_z_is_told_what_file_names_keep(
    tmp_path: Path, args: list[str], example: str
) -> None:
    # "use letters or digits" reads as nonsense to someone who wrote only letters
    result = run_mg(args, tmp_path)
    stderr = assert_clean_error(
        result, "file names keep only the letters a-z and the digits 0-9 of a name"
    )
    assert f"hint: give a name with some of them, such as {example}" in stderr
    assert "use letters or digits" not in stderr
    result = run_mg(["create", "###"], tmp_path)  # no letters at all: as before
    assert "use letters or digits" in assert_clean_error(result)


def test_create_uses_configured_directory(tmp_path: Path) -> None:
    write_text(tmp_path / "conf" / "mg.yaml", "migrations_dir: sql/mig\n")
    result = run_mg(["create", "x", "--config", "conf/mg.yaml"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "conf" / "sql" / "mig").glob("*_x.sql"))) == 1


def test_created_files_sort_in_creation_order(tmp_path: Path) -> None:
    for name in ("first", "second", "third"):
        assert run_mg(["create", name], tmp_path).returncode == 0
    names = sorted(p.name for p in (tmp_path / "migrations").iterdir())
    assert [n.split("_", 1)[1] for n in names] == ["first.sql", "second.sql", "third.sql"]


def test_create_into_a_file_is_a_clean_error(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "migrations_dir: notes.txt\n")
    write_text(tmp_path / "notes.txt", "not a directory\n")
    result = run_mg(["create", "x"], tmp_path)
    assert_clean_error(result, "notes.txt")


# --- migration file errors ------------------------------------------------------------------

BAD_FILES = {
    "sql_before_up": (
        {"1_a.sql": "-- migration: a\n\nCREATE TABLE t (id int);\n-- migrate: up\nSELECT 1;\n"},
        ["migrations/1_a.sql:3:"],
    ),
    "no_up_marker": (
        {"1_a.sql": "-- migration: a\nSELECT 1;\n"},
        ["migrations/1_a.sql:1:"],
    ),
    "empty_up_section": (
        {"1_a.sql": "-- migrate: up\n\n  \n-- migrate: down\nSELECT 1;\n"},
        ["migrations/1_a.sql:1:"],
    ),
    "two_up_markers": (
        {"1_a.sql": "-- migrate: up\nSELECT 1;\n-- migrate: up\nSELECT 2;\n"},
        ["migrations/1_a.sql:3:"],
    ),
    "two_down_markers": (
        {
            "1_a.sql": "-- migrate: up\nSELECT 1;\n-- migrate: down\nSELECT 2;\n"
            "-- migrate: down\nSELECT 3;\n"
        },
        ["migrations/1_a.sql:5:"],
    ),
    "duplicate_id": (
        {"7_a.sql": "-- migrate: up\nSELECT 1;\n", "7_b.sql": "-- migrate: up\nSELECT 2;\n"},
        ["7_a.sql", "7_b.sql", "duplicate"],
    ),
    "bad_name_no_underscore": (
        {"create-users.sql": "-- migrate: up\nSELECT 1;\n"},
        ["migrations/create-users.sql:1:"],
    ),
    "bad_name_empty_id": (
        {"_users.sql": "-- migrate: up\nSELECT 1;\n"},
        ["migrations/_users.sql:1:"],
    ),
    "bad_name_long_id": (
        {"0123456789012345678901234567_x.sql": "-- migrate: up\nSELECT 1;\n"},
        ["migrations/0123456789012345678901234567_x.sql:1:"],
    ),
    "header_id_mismatch": (
        {"01ABC_a.sql": "-- migration: a\n-- id: 01ABD\n\n-- migrate: up\nSELECT 1;\n"},
        ["migrations/01ABC_a.sql:2:", "01ABD"],
    ),
    "not_utf8": (
        {"1_a.sql": "-- migrate: up\nSELECT 'caf\udce9';\n"},
        ["migrations/1_a.sql:2:", "UTF-8"],
    ),
    "crlf_bom_line_numbers": (
        {"1_a.sql": "\ufeff-- migration: a\r\nSELECT 0;\r\n-- migrate: up\r\nSELECT 1;\r\n"},
        ["migrations/1_a.sql:2:"],
    ),
}


@pytest.mark.parametrize("command", ["status", "apply"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_migration_file_errors_before_connecting(tmp_path: Path, case: str, command: str) -> None:
    files, needles = BAD_FILES[case]
    project = unreachable_project(tmp_path)
    write_text(project / "migrations" / "0_good.sql", "-- migrate: up\nSELECT 1;\n")
    for name, text in files.items():
        raw = text.encode("utf-8", errors="surrogateescape")
        (project / "migrations" / name).write_bytes(raw)
    result = run_mg([command], project)
    stderr = assert_clean_error(result, *needles, one_line=False)
    assert "127.0.0.1" not in stderr  # no connection was attempted
    assert "0_good.sql" not in stderr


def test_every_broken_file_is_reported_at_once(tmp_path: Path) -> None:
    project = unreachable_project(tmp_path)
    write_text(project / "migrations" / "1_a.sql", "SELECT 1;\n")
    write_text(project / "migrations" / "2_b.sql", "-- migrate: up\n")
    write_text(project / "migrations" / "bad.sql", "-- migrate: up\nSELECT 1;\n")
    result = run_mg(["apply"], project)
    assert_clean_error(
        result,
        "migrations/1_a.sql:1:",
        "migrations/2_b.sql:1:",
        "migrations/bad.sql:1:",
        one_line=False,
    )


def test_a_duplicate_id_is_reported_when_one_of_the_pair_is_broken(tmp_path: Path) -> None:
    # SPEC §3: every error of the directory up front. The id is the file name's, so the
    # duplicate is known even when the other file's content is broken too.
    project = unreachable_project(tmp_path)
    write_text(project / "migrations" / "7_a.sql", "-- migrate: up\nSELECT 1;\n")
    write_text(project / "migrations" / "7_b.sql", "SELECT 1;\n-- migrate: up\nSELECT 2;\n")
    result = run_mg(["apply"], project)
    assert_clean_error(
        result,
        "migrations/7_b.sql:1: SQL before the",
        "migrations/7_b.sql:1: duplicate id 7: also used by migrations/7_a.sql",
        one_line=False,
    )


def test_other_files_in_migrations_dir_are_ignored(tmp_path: Path) -> None:
    project = unreachable_project(tmp_path)
    write_text(project / "migrations" / "README.md", "notes\n")
    write_text(project / "migrations" / "sub" / "junk.sql", "not a migration\n")
    write_text(project / "migrations" / ".1_hidden.sql", "garbage\n")
    write_text(project / "migrations" / "1_a.sql", "-- migrate: up\nSELECT 1;\n")
    result = run_mg(["status"], project)
    # The files are fine, so mg goes on to connect and fails there (exit 1, not 2).
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_valid_files_reach_the_connection(tmp_path: Path) -> None:
    project = unreachable_project(tmp_path)
    write_text(project / "migrations" / "1_a.sql", "-- migrate: up\nSELECT 1;\n")
    (project / "migrations" / "2_b.sql").write_bytes(
        b"\xef\xbb\xbf-- id: 2\r\n-- migrate: up\r\nSELECT 2;\r\n-- migrate: down\r\n"
    )
    result = run_mg(["status"], project)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- checksums (need a database) ------------------------------------------------------------

MIGRATION_TEXT = (
    "-- migration: Create widgets\n"
    "-- id: 01HZX0000000000000000000AB\n"
    "\n"
    "-- migrate: up\n"
    "CREATE TABLE widgets (\n"
    "    id bigint PRIMARY KEY,\n"
    "    label text NOT NULL DEFAULT 'ä'\n"
    ");\n"
    "\n"
    "-- migrate: down\n"
    "DROP TABLE widgets;\n"
)
MIGRATION_FILE = "01HZX0000000000000000000AB_create_widgets.sql"
LF_BYTES = MIGRATION_TEXT.encode("utf-8")

VARIANTS = {
    "lf": LF_BYTES,
    "crlf": MIGRATION_TEXT.replace("\n", "\r\n").encode("utf-8"),
    "cr": MIGRATION_TEXT.replace("\n", "\r").encode("utf-8"),
    "bom": b"\xef\xbb\xbf" + LF_BYTES,
    "bom_crlf": b"\xef\xbb\xbf" + MIGRATION_TEXT.replace("\n", "\r\n").encode("utf-8"),
}


def db_project(directory: Path, database_url: str) -> Path:
    write_text(directory / "mg.yaml", f"database:\n  url: {database_url}\n")
    (directory / "migrations").mkdir(exist_ok=True)
    return directory


def recorded(database_url: str) -> list[tuple[str, str, str]]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, checksum, status FROM _migrations ORDER BY id").fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def table_exists(database_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def test_lf_checksum_is_sha256_of_the_file_bytes(tmp_path: Path, database_url: str) -> None:
    project = db_project(tmp_path, database_url)
    (project / "migrations" / MIGRATION_FILE).write_bytes(LF_BYTES)
    result = run_mg(["apply"], project)
    assert result.returncode == 0, result.stderr
    assert recorded(database_url) == [
        ("01HZX0000000000000000000AB", hashlib.sha256(LF_BYTES).hexdigest(), "applied")
    ]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_line_endings_and_bom_do_not_change_the_checksum(
    tmp_path: Path, database_url: str, variant: str
) -> None:
    project = db_project(tmp_path, database_url)
    (project / "migrations" / MIGRATION_FILE).write_bytes(VARIANTS[variant])
    result = run_mg(["apply"], project)
    assert result.returncode == 0, result.stderr
    [(_, checksum, status)] = recorded(database_url)
    assert checksum == hashlib.sha256(LF_BYTES).hexdigest()
    assert status == "applied"
    assert table_exists(database_url, "widgets")


def test_list_json_shows_the_applied_migration(tmp_path: Path, database_url: str) -> None:
    project = db_project(tmp_path, database_url)
    (project / "migrations" / MIGRATION_FILE).write_bytes(VARIANTS["bom_crlf"])
    assert run_mg(["apply"], project).returncode == 0
    result = run_mg(["list", "--format", "json"], project)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [("01HZX0000000000000000000AB", "applied")]


def test_converting_line_endings_keeps_verify_green(tmp_path: Path, database_url: str) -> None:
    project = db_project(tmp_path, database_url)
    path = project / "migrations" / MIGRATION_FILE
    path.write_bytes(LF_BYTES)
    assert run_mg(["apply"], project).returncode == 0
    path.write_bytes(VARIANTS["bom_crlf"])
    result = run_mg(["verify"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_bytes(LF_BYTES.replace(b"NOT NULL", b"NULL"))
    result = run_mg(["verify"], project)
    assert result.returncode == 3, result.stdout + result.stderr
    assert MIGRATION_FILE in result.stdout + result.stderr


def test_a_broken_file_stops_apply_before_any_change(tmp_path: Path, database_url: str) -> None:
    project = db_project(tmp_path, database_url)
    (project / "migrations" / MIGRATION_FILE).write_bytes(LF_BYTES)
    write_text(project / "migrations" / "02HZX0000000000000000000AB_bad.sql", "SELECT 1;\n")
    result = run_mg(["apply"], project)
    assert_clean_error(result, "02HZX0000000000000000000AB_bad.sql:1:")
    assert not table_exists(database_url, "widgets")
    assert not table_exists(database_url, "_migrations")


@pytest.mark.parametrize("flags", [[], ["-v"], ["--json-log"]])
@pytest.mark.parametrize(
    "database",
    [
        "  url: postgresql://u:S3cretPw@127.0.0.1:1/x?connect_timeout=2\n",
        "  host: 127.0.0.1\n  port: 1\n  user: u\n  password: ${PW}\n  connect_timeout: 2\n",
    ],
)
def test_connection_errors_never_show_the_password(
    tmp_path: Path, flags: list[str], database: str
) -> None:
    write_text(tmp_path / "mg.yaml", "database:\n" + database)
    result = run_mg(["status", *flags], tmp_path, env={"PW": "S3cretPw"})
    assert result.returncode == 1, result.stderr
    assert "S3cretPw" not in result.stdout + result.stderr
    assert "127.0.0.1" in result.stderr


@pytest.mark.parametrize("psycopg_only", [False, True])
def test_without_a_host_the_error_names_the_socket_directory(
    tmp_path: Path, psycopg_only: bool
) -> None:
    # An empty mg.yaml leaves the host to libpq, which tries its default socket directory.
    write_text(tmp_path / "mg.yaml", "")
    env = {"PGPORT": "1", **({"MG_PSYCOPG_ONLY": "1"} if psycopg_only else {})}
    result = run_mg(["status"], tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    first = result.stderr.splitlines()[0]
    assert re.match(r"mg: error: cannot connect to [^@]+@/[^:@]*:1/\S+: ", first), first
    assert "localhost" not in first
