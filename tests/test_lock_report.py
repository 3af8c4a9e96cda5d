"""The dry run measures what lint guesses: the locks each migration takes on existing
relations, the tables it rewrites and their size, on a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    project.sql("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
    project.sql("INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 2000) i")
    project.sql("ANALYZE users")
    yield project
    project.close()


def dry_run_json(project: Project) -> list[dict[str, Any]]:
    done = project.mg("apply", "--dry-run", "--format", "json", "--no-lint")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    migrations: list[dict[str, Any]] = data["migrations"]
    return migrations


def test_text_line_names_locks_rows_size_and_rewrites(project: Project) -> None:
    project.add(
        "001", "add_token", "ALTER TABLE users ADD COLUMN token text DEFAULT md5(random()::text);"
    )
    done = project.mg("apply", "--dry-run", "--no-lint")
    assert done.returncode == 0, done.stderr
    line = next(li for li in done.stdout.splitlines() if li.startswith("001 add_token:"))
    assert line.startswith("001 add_token: AccessExclusiveLock on public.users (~2k rows, ")
    assert line.endswith("; rewrites public.users")
    assert "token" not in {
        r[0]
        for r in project.sql("SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass")
    }


def test_a_rewritten_table_without_indexes_keeps_its_row_estimate(project: Project) -> None:
    # A rewrite resets reltuples to -1 unless an index rebuild counts the rows again.
    project.sql("CREATE TABLE events (id bigint, payload text)")
    project.sql("INSERT INTO events SELECT i, 'e' || i FROM generate_series(1, 3000) i")
    project.sql("ANALYZE events")
    project.add("001", "retype", "ALTER TABLE events ALTER COLUMN id TYPE numeric;")
    (only,) = dry_run_json(project)
    assert only["rewrites"] == ["public.events"]
    (table,) = [t for t in only["tables"] if t["relation"] == "public.events"]
    assert table["rows"] == 3000
    done = project.mg("apply", "--dry-run", "--no-lint")
    assert "AccessExclusiveLock on public.events (~3k rows, " in done.stdout


def test_hook_mg_lock_probe(project: Project) -> None:
    """The builtin probe reads pg_locks of mg's own backend and pg_relation_filenode."""
    project.add("001", "add_email", "ALTER TABLE users ADD COLUMN email text;")
    project.add("002", "index_name", "CREATE INDEX users_name ON users (name);")
    project.add("003", "new_table", "CREATE TABLE tags (id bigint);\nCREATE INDEX ON tags (id);")
    project.add("004", "retype", "ALTER TABLE users ALTER COLUMN name TYPE varchar(200);")
    first, second, third, fourth = dry_run_json(project)

    assert first["id"] == "001" and first["name"] == "add_email"
    assert first["ok"] is True and first["error"] is None and first["executed"] is True
    assert {"relation": "public.users", "mode": "AccessExclusiveLock"} in first["locks"]
    assert first["rewrites"] == []
    (table,) = [t for t in first["tables"] if t["relation"] == "public.users"]
    assert table["rows"] == 2000
    assert table["bytes"] > 0

    # A plain index build blocks writes (ShareLock) but does not rewrite the table.
    assert {"relation": "public.users", "mode": "ShareLock"} in second["locks"]
    assert second["rewrites"] == []

    # Relations the migration creates are not "existing": nothing to report.
    assert third["locks"] == [] and third["rewrites"] == [] and third["tables"] == []

    # A type change rewrites the table (and its primary key index). Its lock on users was
    # already held since 001 in the dry run's transaction; a rewrite shows it all the same.
    assert fourth["rewrites"] == ["public.users"]
    assert {"relation": "public.users_pkey", "mode": "AccessExclusiveLock"} in fourth["locks"]
    assert {"relation": "public.users", "mode": "AccessExclusiveLock"} in fourth["locks"]


def test_no_transaction_and_failed_migrations_are_reported_too(project: Project) -> None:
    project.add("001", "broken", "ALTER TABLE nothing_here ADD COLUMN x int;")
    project.add("002", "later", "CREATE INDEX CONCURRENTLY i ON users (id);", no_transaction=True)
    done = project.mg("apply", "--dry-run", "--format", "json", "--no-lint")
    assert done.returncode == 1
    broken, later = json.loads(done.stdout)["migrations"]
    assert broken["ok"] is False and "nothing_here" in broken["error"]
    assert broken["locks"] == [] and broken["executed"] is True
    assert later["executed"] is False


@pytest.mark.parametrize("command", ["apply", "up"])
def test_format_json_without_a_dry_run_is_refused_before_anything_runs(
    project: Project, command: str
) -> None:
    project.add("001", "add_token", "ALTER TABLE users ADD COLUMN token text;")
    done = project.mg(command, "--format", "json", "--no-lint")
    assert done.returncode == 2, done.stderr
    assert f"mg {command} --format json needs --dry-run or --fleet NAME" in done.stderr
    assert done.stdout == ""
    assert project.statuses() == {}


@pytest.mark.parametrize("command", ["apply", "up"])
def test_format_json_with_nothing_to_do_still_prints_its_document(
    project: Project, command: str
) -> None:
    """A script reading `mg apply --dry-run --format json` gets a document even when
    nothing is pending (none applied yet, then all applied)."""

    def document() -> Any:
        done = project.mg(command, "--dry-run", "--format", "json", "--no-lint")
        assert done.returncode == 0, done.stderr
        assert "nothing to apply" in done.stderr
        return json.loads(done.stdout)

    assert document() == {"migrations": []}
    project.add("001", "add_token", "ALTER TABLE users ADD COLUMN token text;")
    assert project.mg("apply", "--no-lint").returncode == 0
    assert document() == {"migrations": []}


def test_a_rewrite_shows_its_lock_even_when_an_earlier_migration_holds_it(
    project: Project,
) -> None:
    # The dry run's migrations share one transaction: pg_locks shows the lock the first
    # migration took once; the second one's rewrite still takes it when run on its own.
    project.add("001", "add_note", "ALTER TABLE users ADD COLUMN note text;")
    project.add("002", "add_token", "ALTER TABLE users ADD COLUMN token text DEFAULT random();")
    first, second = dry_run_json(project)
    assert first["locks"] == [{"relation": "public.users", "mode": "AccessExclusiveLock"}]
    assert second["rewrites"] == ["public.users"]
    assert {"relation": "public.users", "mode": "AccessExclusiveLock"} in second["locks"]
    assert "public.users" in [t["relation"] for t in second["tables"]]
    done = project.mg("apply", "--dry-run", "--no-lint")
    line = next(li for li in done.stdout.splitlines() if li.startswith("002 add_token:"))
    assert line.startswith("002 add_token: AccessExclusiveLock on public.users (~2k rows, ")


def test_a_relation_name_with_a_line_break_stays_on_the_migrations_line(
    project: Project,
) -> None:
    """The report is one line per migration: a table name holding a line break or an
    escape sequence (anyone with CREATE can make one) is written escaped, as elsewhere in
    mg's output, not as a second line."""
    project.sql('CREATE TABLE "odd\nname\x1b[2J" (id bigint)')
    project.add("001", "add_c", 'ALTER TABLE "odd\nname\x1b[2J" ADD COLUMN c bigint;')
    done = project.mg("apply", "--dry-run", "--no-lint")
    assert done.returncode == 0, done.stderr
    report = done.stdout.split("ok: 001 add_c\n", 1)[1]
    assert report == (
        '001 add_c: AccessExclusiveLock on public."odd\\nname\\x1b[2J" (rows unknown, 0 bytes)\n'
    )
    (only,) = dry_run_json(project)
    assert only["locks"] == [
        {"relation": 'public."odd\nname\x1b[2J"', "mode": "AccessExclusiveLock"}
    ]
