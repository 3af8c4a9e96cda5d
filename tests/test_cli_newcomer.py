"""What a new user meets first: help, completion, familiar verbs, file names, `mg plugins`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from migretti_core import __version__
from migretti_core.testing import Project, run_mg

# --- mg migrate, mg create --no-transaction ---------------------------------------------------


def test_migrate_is_apply_and_is_listed(tmp_path: Path, database_url: str) -> None:
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    project.add_table("0002")

    done = project.mg("migrate", "--to", "0001")

    assert done.returncode == 0, done.stderr
    assert "applied 0001 create_t_0001" in done.stdout
    assert project.statuses() == {"0001": "applied"}
    assert project.mg("migrate").returncode == 0
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    listed = run_mg(["--help"], tmp_path).stdout
    assert re.search(r"^  migrate +Same as `mg apply`\.$", listed, re.M), listed
    usage = run_mg(["migrate", "--help"], tmp_path).stdout
    assert "--single-transaction" in usage and "--to ID" in usage


def test_create_no_transaction_writes_the_header_that_mg_honours(
    tmp_path: Path, database_url: str
) -> None:
    project = Project(tmp_path / "proj", database_url)

    done = project.mg("create", "--no-transaction", "add index")

    assert done.returncode == 0, done.stderr
    path = project.root / done.stdout.strip()
    text = path.read_text(encoding="utf-8")
    assert "-- migrate: no-transaction\n" in text
    assert text.index("-- migrate: no-transaction") < text.index("-- migrate: up")
    path.write_text(
        text.replace(
            "-- migrate: up\n",
            "-- migrate: up\nCREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
        ),
        encoding="utf-8",
    )
    applied = project.mg("apply")
    assert applied.returncode == 0, applied.stderr
    assert project.value("SELECT count(*) FROM pg_indexes WHERE indexname = 't_id'") == 1


def test_create_help_explains_the_migrate_markers(tmp_path: Path) -> None:
    text = run_mg(["create", "--help"], tmp_path).stdout
    for marker in ("-- migrate: up", "-- migrate: down", "-- migrate: no-transaction"):
        assert marker in text
    assert "--no-transaction" in text


# --- help and completion -------------------------------------------------------------------


def _command_rows(help_text: str) -> list[str]:
    section = help_text.split("\nCommands:\n", 1)[1]
    return [line for line in section.splitlines() if line.strip()]


@pytest.mark.parametrize("columns", ["80", "100"])
def test_help_shows_whole_one_line_summaries(tmp_path: Path, columns: str) -> None:
    done = run_mg(["--help"], tmp_path, env={"COLUMNS": columns})

    assert done.returncode == 0
    rows = _command_rows(done.stdout)
    if columns == "100":  # the widest help mg prints
        assert all(re.match(r"^  \S+ +\S", row) for row in rows), rows  # no wrapped line
    entries: list[str] = []
    for row in rows:
        if re.match(r"^  \S", row):
            entries.append(row)
        else:
            entries[-1] += " " + row.strip()
    assert not any(entry.endswith("...") for entry in entries), entries
    for entry in entries:
        name, summary = entry.split(None, 1)
        if name == "migrate":
            continue
        first = " ".join(run_mg([name, "--help"], tmp_path).stdout.split("\n\n")[1].split())
        assert first.startswith(summary), (name, summary, first)


@pytest.mark.parametrize("group", ["db", "schema", "seed"])
def test_a_command_group_help_shows_whole_summaries_too(tmp_path: Path, group: str) -> None:
    done = run_mg([group, "--help"], tmp_path, env={"COLUMNS": "80"})

    assert done.returncode == 0, done.stderr
    section = done.stdout.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    entries = " ".join(section.split())
    assert "..." not in entries, section
    if group == "db":
        assert "connected to the project's database." in entries, section


@pytest.mark.parametrize(
    "args", [["apply"], ["fix"], ["db", "url"], ["seed", "create"], ["squash"], ["plugins"]]
)
def test_every_command_help_says_where_the_global_options_are(
    tmp_path: Path, args: list[str]
) -> None:
    text = run_mg([*args, "--help"], tmp_path).stdout
    flat = " ".join(text.split())
    assert "Global options (--env, --config, -p, --json-log, -y, -v)" in flat
    assert "`mg --help` lists them" in flat


def _complete(cwd: Path, line: str, shell: str = "bash") -> list[str]:
    """What ``mg``'s click completion offers for ``line`` (the cursor at its end)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    done = run_mg(
        [],
        cwd,
        env={"_MG_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": str(cword)},
    )
    assert done.returncode == 0, done.stderr
    return [item.split(",", 1)[1] for item in done.stdout.splitlines() if "," in item]


def test_completion_offers_global_options_and_migration_ids_without_a_database(
    tmp_path: Path,
) -> None:
    # No server listens on port 1: completing must not need one.
    (tmp_path / "mg.yaml").write_text(
        "database:\n  url: postgresql://nobody@127.0.0.1:1/none\n"
        "envs:\n  prod: {}\n  staging: {}\n",
        encoding="utf-8",
    )
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_users.sql").write_text("-- migrate: up\nSELECT 1;\n")
    (migrations / "0002_posts.sql").write_text("")  # being written: its name says enough

    assert {"--env", "--config", "--json-log", "--verbose", "--yes"} <= set(
        _complete(tmp_path, "mg --")
    )
    assert {"--env", "--to", "--dry-run"} <= set(_complete(tmp_path, "mg apply --"))
    assert _complete(tmp_path, "mg --env ") == ["prod", "staging"]
    assert _complete(tmp_path, "mg fix ") == ["0001", "0002"]
    assert _complete(tmp_path, "mg --env prod -v apply --to ") == ["0001", "0002"]
    assert _complete(tmp_path, "mg rollback --to 0002") == ["0002"]
    # every command that takes a migration: baseline ID, lint MIGRATION...
    assert _complete(tmp_path, "mg baseline ") == ["0001", "0002"]
    assert _complete(tmp_path, "mg lint ") == ["0001", "0002"]
    assert _complete(tmp_path, "mg lint 0001 000") == ["0001", "0002"]
    assert "migrate" in _complete(tmp_path, "mg mi")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(tmp_path: Path, shell: str) -> None:
    done = run_mg([], tmp_path, env={"_MG_COMPLETE": f"{shell}_source"})

    assert done.returncode == 0, done.stderr
    assert "_MG_COMPLETE" in done.stdout


# --- slugs and mg plugins ------------------------------------------------------------------


def test_create_transliterates_accented_names(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  url: postgresql://x@127.0.0.1:1/db\n")

    done = run_mg(["create", "Ünïcode name"], tmp_path)

    assert done.returncode == 0, done.stderr
    path = tmp_path / done.stdout.strip()
    assert path.name.endswith("_unicode_name.sql"), path.name
    assert path.read_text(encoding="utf-8").startswith("-- migration: Ünïcode name\n")
    crème = run_mg(["create", "Crème brûlée"], tmp_path).stdout.strip()
    assert crème.endswith("_creme_brulee.sql")


def test_create_warns_when_the_new_id_sorts_before_an_existing_one(tmp_path: Path) -> None:
    """Ids sort as text: a new ULID (01...) sorts before an old timestamp id (2024...), so
    once that one is applied, mg apply refuses the new file as out of order. Said at once."""
    (tmp_path / "mg.yaml").write_text("database:\n  url: postgresql://x@127.0.0.1:1/db\n")
    (tmp_path / "migrations").mkdir()
    old = tmp_path / "migrations" / "20240101120000_users.sql"
    old.write_text("-- migrate: up\nCREATE TABLE users (id int);\n")

    done = run_mg(["create", "add orders"], tmp_path)

    assert done.returncode == 0, done.stderr
    new = done.stdout.strip()
    assert (tmp_path / new).exists()
    assert f"mg: warning: {new} sorts before migrations/20240101120000_users.sql" in done.stderr, (
        done.stderr
    )
    assert "out of order" in done.stderr

    old.unlink()
    (tmp_path / "migrations" / "0001_users.sql").write_text("-- migrate: up\nSELECT 1;\n")
    quiet = run_mg(["create", "add items"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr


def test_plugins_say_loaded_and_builtins_carry_migrettis_version(tmp_path: Path) -> None:
    done = run_mg(["-p", "no:squash", "plugins"], tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ORIGIN", "VERSION", "HOOKS", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["files"][1:3] == ["builtin", __version__]
    assert rows["files"][-1] == "loaded"
    assert rows["squash"][1:] == ["builtin", __version__, "blocked"]
    listed = json.loads(run_mg(["plugins", "--format", "json"], tmp_path).stdout)
    assert {p["version"] for p in listed if p["origin"] == "builtin"} == {__version__}


@pytest.mark.parametrize(
    "command", [["apply"], ["migrate"], ["rollback"], ["fix"], ["lint"], ["baseline"]]
)
def test_help_says_a_migration_may_be_named_by_prefix_or_name(
    tmp_path: Path, command: list[str]
) -> None:
    usage = " ".join(run_mg([*command, "--help"], tmp_path).stdout.split())
    assert "prefix" in usage and "name" in usage, usage
