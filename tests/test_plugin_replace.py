"""Replacing builtins: a plugin's statement splitter and lock are used instead of the defaults.

Two ways, both documented in docs/plugins/replacing-builtins.md: answer the hook (the
builtins are ``trylast``, so any plugin that answers wins), or block the builtin with
``-p no:NAME`` and provide the hook.
"""

from __future__ import annotations

import fcntl
import re
from pathlib import Path
from typing import Any

import pytest

from migretti_core import hookimpl
from migretti_core.errors import LockTimeout
from migretti_core.testing import make_project, run_cli, write_migration
from migretti_core.types import Session, Statement

# Statements separated by a line holding only GO: the default splitter would send this as one
# statement and the server would refuse it.
GO_SCRIPT = """CREATE TABLE events (id int, at timestamptz)
GO
CREATE INDEX CONCURRENTLY events_at ON events (at)
GO
COMMENT ON TABLE events IS 'GO; is not a separator here'
"""


class GoSplitter:
    """Splits on ``GO`` lines, as SQL Server tools do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def mg_split_statements(self, sql: str) -> list[Statement]:
        self.calls.append(sql)
        statements: list[Statement] = []
        line = 1
        for chunk in re.split(r"(?m)^GO[ \t]*$\n?", sql):
            if chunk.strip():
                leading = len(chunk) - len(chunk.lstrip("\n"))
                statements.append(Statement(chunk.strip(), line + leading))
            line += chunk.count("\n") + 1
        return statements


def objects(database_url: str) -> set[str]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchall()
    return {row[0] for row in rows}


def test_the_default_splitter_cannot_split_go_scripts(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "events", GO_SCRIPT, transactional=False)

    result = run_cli(["apply"], cwd=tmp_path)

    assert result.exit_code == 1
    assert "events" not in objects(database_url)


@pytest.mark.parametrize("block_builtin", [False, True], ids=["override", "block-and-replace"])
def test_a_plugin_splitter_is_used_instead_of_the_default(
    tmp_path: Path, database_url: str, block_builtin: bool
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "events", GO_SCRIPT, transactional=False)
    splitter = GoSplitter()
    args = ["-p", "no:split", "apply"] if block_builtin else ["apply"]

    result = run_cli(args, cwd=tmp_path, plugins=[splitter])

    assert result.exit_code == 0, result.stderr
    # mg apply lints the file too; every split, its own and lint's, goes through the plugin
    assert splitter.calls and set(splitter.calls) == {GO_SCRIPT}
    assert {"events", "events_at"} <= objects(database_url)


def test_a_plugin_splitters_line_numbers_reach_the_error(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    script = "CREATE TABLE a (id int)\nGO\nCREATE TABL b (id int)\n"
    write_migration(tmp_path, "0001", "typo", script, transactional=False)

    result = run_cli(["apply"], cwd=tmp_path, plugins=[GoSplitter()])

    assert result.exit_code == 1
    # header (2 lines), no-transaction, blank, up marker: the script starts on line 6
    assert "0001_typo.sql:8:" in result.stderr
    assert "statement 2 of 2 (CREATE) failed" in result.stderr


ADVISORY_LOCKS_HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
)


class FileLock:
    """One deployment at a time per machine: an flock on a file instead of an advisory lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[tuple[str, Any]] = []
        self.handle: Any = None

    @hookimpl
    def mg_lock_acquire(self, session: Session, conn: Any, timeout: float) -> bool:
        self.handle = self.path.open("w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise LockTimeout(f"{self.path} is locked by another run") from None
        self.events.append(("acquire", timeout))
        return True

    @hookimpl
    def mg_lock_release(self, session: Session, conn: Any) -> bool:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.events.append(("release", None))
        return True


class AdvisoryLockProbe:
    """Counts, from inside each migration's transaction, the advisory locks its session holds."""

    def __init__(self) -> None:
        self.held: list[int] = []

    @hookimpl
    def mg_history_sql(self) -> str:
        return ""  # record through mg_history_write, inside the transaction, where we look

    @hookimpl
    def mg_history_write(self, session: Session, conn: Any) -> None:
        rows = session.hooks.query(session, conn, ADVISORY_LOCKS_HELD)
        self.held.append(int(rows[0][0]))


def test_the_default_lock_is_an_advisory_lock(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")
    probe = AdvisoryLockProbe()

    result = run_cli(["apply"], cwd=tmp_path, plugins=[probe])

    assert result.exit_code == 0, result.stderr
    assert probe.held == [1]


@pytest.mark.parametrize("block_builtin", [False, True], ids=["override", "block-and-replace"])
def test_a_plugin_lock_is_used_instead_of_the_default(
    tmp_path: Path, database_url: str, block_builtin: bool
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")
    write_migration(tmp_path, "0002", "posts", "CREATE TABLE posts (id int);")
    lock = FileLock(tmp_path / "deploy.lock")
    probe = AdvisoryLockProbe()
    args = ["-p", "no:lock"] if block_builtin else []

    result = run_cli([*args, "apply", "--lock-timeout", "7s"], cwd=tmp_path, plugins=[probe, lock])

    assert result.exit_code == 0, result.stderr
    assert lock.events == [("acquire", 7.0), ("release", None)]
    assert probe.held == [0, 0]


def test_a_plugin_lock_refusing_stops_the_run(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")
    lock_file = tmp_path / "deploy.lock"

    with lock_file.open("w") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX)
        result = run_cli(["apply"], cwd=tmp_path, plugins=[FileLock(lock_file)])

    assert result.exit_code == 4
    assert "deploy.lock is locked by another run" in result.stderr
    assert "users" not in objects(database_url)


def test_blocking_the_lock_without_a_replacement_is_a_clear_error(
    tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = run_cli(["-p", "no:lock", "apply"], cwd=tmp_path)

    assert result.exit_code == 2
    assert "no plugin provides locking (hook mg_lock_acquire)" in result.stderr
    assert "users" not in objects(database_url)
