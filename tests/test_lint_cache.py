"""Findings are kept per plan and context: a fleet's members, each with its own session,
lint an identical plan once; anything that changes the answer changes the key."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from migretti_core.errors import MigrationFileError
from migretti_core.testing import make_config, make_hooks, make_migration, make_session
from migretti_core.types import FileText, LintFinding, LintRequest, Migration
from migretti_plugins.files.parse import parse_migration
from migretti_plugins.lint import linter

SQL = "ALTER TABLE accounts DROP COLUMN old;\nCREATE TABLE posts (id integer);"


def lint(
    migration: Migration, settings: dict[str, Any] | None = None, version: int | None = None
) -> list[LintFinding]:
    """As one fleet member would: its own plugin manager, configuration and session."""
    session = make_session(make_hooks(builtins=True), make_config(Path("."), settings or {}))
    request = LintRequest((migration,), server_version=version, apply=True)
    return session.hooks.lint(session, request)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the linter really ran (the cache emptied first)."""
    runs: list[int] = []
    real = linter._lint

    def counting(*args: Any) -> list[LintFinding]:
        runs.append(1)
        return real(*args)

    monkeypatch.setattr(linter, "_lint", counting)
    monkeypatch.setattr(linter, "_CACHE", type(linter._CACHE)())
    return runs


def test_members_of_a_fleet_lint_an_identical_plan_once(counted: list[int]) -> None:
    migration = make_migration("001", "m", SQL)
    answers: list[list[LintFinding]] = []
    members = [threading.Thread(target=lambda: answers.append(lint(migration))) for _ in range(8)]
    for member in members:
        member.start()
    for member in members:
        member.join()
    assert len(counted) == 1
    assert len(answers) == 8 and all(answer == answers[0] for answer in answers)
    assert sorted(f.rule for f in answers[0]) == ["ban-drop-column", "prefer-bigint-over-int"]
    answers[0].clear()  # each caller gets its own list
    assert lint(migration) == answers[1]


def test_what_changes_the_findings_changes_the_key(counted: list[int]) -> None:
    migration = make_migration("001", "m", SQL)
    first = lint(migration)
    assert lint(migration) == first and len(counted) == 1
    severity = {"lint": {"severity": {"ban-drop-column": "warning"}}}
    assert {f.severity for f in lint(migration, severity)} == {"warning"}
    disabled = lint(migration, {"lint": {"disable": ["prefer-bigint-over-int"]}})
    assert [f.rule for f in disabled] == ["ban-drop-column"]
    edited = make_migration("001", "m", SQL.replace("integer", "bigint"))
    assert [f.rule for f in lint(edited)] == ["ban-drop-column"]
    # The same text for another server version: before 11, any DEFAULT rewrites the table.
    volatile = make_migration("002", "v", "ALTER TABLE a ADD COLUMN b int DEFAULT 0;")
    assert lint(volatile, version=10) != lint(volatile, version=16)
    assert len(counted) == 6


def test_a_large_text_is_keyed_by_checksum_but_compared_whole(counted: list[int]) -> None:
    rows = "\n".join(f"INSERT INTO t (id, a) VALUES ({i}, 'row {i}');" for i in range(5000))
    migration = make_migration("001", "m", rows + "\n" + SQL)
    assert len(migration.text) >= linter._HASHED_WHOLE
    first = lint(migration)
    assert sorted(f.rule for f in first) == ["ban-drop-column", "prefer-bigint-over-int"]
    text, up_sql = (migration.text + " ")[:-1], (migration.up_sql + " ")[:-1]
    assert text is not migration.text and up_sql is not migration.up_sql
    again = dataclasses.replace(migration, text=text, up_sql=up_sql)
    assert lint(again) == first and len(counted) == 1  # equal texts, other objects: cached
    # An edited text of the same length that kept the old checksum (the key's hash) still
    # gets its own lint.
    edited = make_migration("001", "m", rows + "\n" + SQL.replace("integer", " bigint"))
    assert len(edited.text) == len(migration.text)
    stale = dataclasses.replace(edited, checksum=migration.checksum)
    assert [f.rule for f in lint(stale)] == ["ban-drop-column"]
    assert len(counted) == 2


def test_the_key_of_a_file_read_on_demand_reads_nothing(tmp_path: Path) -> None:
    rows = "\n".join(
        f"INSERT INTO t (id, a) VALUES ({i}, 'row {i} {'x' * 90}');" for i in range(12_000)
    )
    path = tmp_path / "0001_big.sql"
    data = f"-- migration: big\n\n-- migrate: up\n{rows}\n".encode()
    path.write_bytes(data)
    migration = parse_migration(path, data)
    assert isinstance(migration.kept("text"), FileText)
    path.write_bytes(data + b"-- edited\n")  # from now on, reading the file again fails
    key = linter._migration_key(migration)
    assert key == linter._migration_key(migration) and hash(key) == hash(
        linter._migration_key(migration)
    )
    with pytest.raises(MigrationFileError):
        migration.text  # noqa: B018
