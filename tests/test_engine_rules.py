"""The engine's rules with an in-memory backend plugin and no database.

The backend keeps history rows and executed SQL in memory and honours transactions by
snapshotting, so atomicity of "migration + history row" is observable here too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from migretti_core import hookimpl, hookspecs, planning, running, views
from migretti_core.errors import MigrationFailed, MigrationFileError, StateError, UsageError
from migretti_core.hooks import Hooks
from migretti_core.plugins import MgPluginManager
from migretti_core.types import (
    Config,
    HistoryChange,
    HistoryEntry,
    Options,
    Session,
    Target,
)
from migretti_plugins import files, output, protect, split


class MemoryBackend:
    """Connection, lock, execution and history hooks over Python dicts."""

    def __init__(self) -> None:
        self.rows: dict[str, HistoryEntry] = {}
        self.log: list[tuple[str, str]] = []
        self.executed: list[str] = []
        self.fail_on: set[str] = set()
        self.seq = 0

    @hookimpl
    def mg_connect(self) -> Any:
        return self

    @hookimpl
    def mg_describe_target(self) -> Target:
        return Target("memory", None, "db", "me")

    @hookimpl
    def mg_lock_acquire(self) -> bool:
        return True

    @hookimpl
    def mg_lock_release(self) -> bool:
        return True

    @hookimpl
    def mg_execute(self, sql: str) -> bool:
        from migretti_core.errors import SqlError

        for marker in self.fail_on:
            if marker in sql:
                raise SqlError("boom", sqlstate="XX000", position=sql.index(marker) + 1)
        self.executed.append(sql)
        return True

    @hookimpl
    def mg_transaction(self, rollback: bool) -> Any:
        @contextmanager
        def tx() -> Iterator[None]:
            saved = (copy.deepcopy(self.rows), list(self.log), list(self.executed), self.seq)
            try:
                yield
            except BaseException:
                self.rows, self.log, self.executed, self.seq = saved
                raise
            if rollback:
                self.rows, self.log, self.executed, self.seq = saved

        return tx()

    @hookimpl
    def mg_history_read(self) -> list[HistoryEntry]:
        return list(self.rows.values())

    @hookimpl
    def mg_history_prepare(self) -> bool:
        return True

    @hookimpl
    def mg_history_write(self, change: HistoryChange) -> bool:
        existing = self.rows.get(change.migration_id)
        if change.status is None:
            self.rows.pop(change.migration_id, None)
        else:
            seq = existing.seq if existing else None
            if seq is None:
                self.seq += 1
                seq = self.seq
            self.rows[change.migration_id] = HistoryEntry(
                change.migration_id,
                change.name,
                change.status,
                change.checksum,
                seq=seq,
                error=change.error,
                failed_statement=change.failed_statement,
            )
        if change.log:
            self.log.append((change.migration_id, change.action))
        return True


def write(
    directory: Path, ident: str, up: str, down: str | None = "SELECT 1;", header: str = ""
) -> Path:
    text = f"-- migration: {ident}\n{header}\n-- migrate: up\n{up}\n"
    if down is not None:
        text += f"\n-- migrate: down\n{down}\n"
    path = directory / f"{ident}_m.sql"
    path.write_text(text)
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Session, MemoryBackend, Path]:
    pm = MgPluginManager("migretti")
    pm.add_hookspecs(hookspecs)
    for name, module in (("files", files), ("split", split), ("protect", protect)):
        pm.register(module, name=name)
    pm.register(output, name="output")
    backend = MemoryBackend()
    pm.register(backend, name="memory")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    config = Config(
        path=None,
        root=tmp_path,
        env=None,
        settings={},
        database={},
        migrations_dir=migrations,
    )
    return Session(config, Options(), Hooks(pm)), backend, migrations


def applied_ids(backend: MemoryBackend) -> list[str]:
    rows = sorted(backend.rows.values(), key=lambda e: e.seq or 0)
    return [e.id for e in rows if e.status == "applied"]


def test_apply_runs_pending_in_id_order_and_records_each(setup: Any) -> None:
    session, backend, d = setup
    write(d, "002", "CREATE TABLE b();")
    write(d, "001", "CREATE TABLE a();")
    assert running.apply(session, planning.ApplyRequest()) == 0
    assert applied_ids(backend) == ["001", "002"]
    assert backend.log == [("001", "UP"), ("002", "UP")]
    assert running.apply(session, planning.ApplyRequest()) == 0
    assert backend.log == [("001", "UP"), ("002", "UP")]


def test_failed_transactional_migration_leaves_no_row_and_names_file_and_line(setup: Any) -> None:
    session, backend, d = setup
    write(d, "001", "CREATE TABLE a();")
    write(d, "002", "CREATE TABLE b();\nSELECT broken;")
    write(d, "003", "CREATE TABLE c();")
    backend.fail_on.add("SELECT broken")
    with pytest.raises(MigrationFailed) as info:
        running.apply(session, planning.ApplyRequest())
    assert "002_m.sql:5:" in info.value.message
    assert "XX000" in info.value.message
    assert applied_ids(backend) == ["001"]
    assert "002" not in backend.rows


def test_no_transaction_failure_marks_failed_and_blocks_until_fixed(setup: Any) -> None:
    session, backend, d = setup
    write(
        d,
        "001",
        "CREATE TABLE a();\nSELECT broken;\nCREATE TABLE c();",
        header="-- migrate: no-transaction",
    )
    backend.fail_on.add("SELECT broken")
    with pytest.raises(MigrationFailed) as info:
        running.apply(session, planning.ApplyRequest())
    assert "statement 2 of 3" in info.value.message
    row = backend.rows["001"]
    assert row.status == "failed" and row.failed_statement == 2
    backend.fail_on.clear()
    with pytest.raises(StateError) as blocked:
        running.apply(session, planning.ApplyRequest())
    assert blocked.value.exit_code == 3
    assert "mg fix 001 --applied" in blocked.value.message
    assert "mg fix 001 --remove" in blocked.value.message
    with pytest.raises(StateError):
        running.rollback(session, planning.RollbackRequest())
    running.fix(session, "001", "applied")
    assert backend.rows["001"].status == "applied"
    assert backend.log[-1] == ("001", "FIX")


def test_fix_applied_keeps_the_original_position(setup: Any) -> None:
    session, backend, d = setup
    write(d, "001", "SELECT 1;")
    write(d, "002", "SELECT 2;")
    running.apply(session, planning.ApplyRequest())
    seq = backend.rows["001"].seq
    running.fix(session, "001", "applied")
    assert backend.rows["001"].seq == seq


def test_rollback_follows_application_order_not_ids(setup: Any) -> None:
    session, backend, d = setup
    write(d, "002", "SELECT 2;", down="SELECT 'down 2';")
    running.apply(session, planning.ApplyRequest())
    write(d, "001", "SELECT 1;", down="SELECT 'down 1';")
    with pytest.raises(StateError):
        running.apply(session, planning.ApplyRequest())
    running.apply(session, planning.ApplyRequest(allow_out_of_order=True))
    assert applied_ids(backend) == ["002", "001"]
    running.rollback(session, planning.RollbackRequest(count=1))
    assert applied_ids(backend) == ["002"]
    assert backend.executed[-1].strip() == "SELECT 'down 1';"


def test_apply_to_and_rollback_to_stop_at_the_given_migration(setup: Any) -> None:
    session, backend, d = setup
    for ident in ("001", "002", "003"):
        write(d, ident, f"SELECT {ident};")
    running.apply(session, planning.ApplyRequest(to="002"))
    assert applied_ids(backend) == ["001", "002"]
    running.apply(session, planning.ApplyRequest())
    running.rollback(session, planning.RollbackRequest(to="001"))
    assert applied_ids(backend) == ["001"]
    with pytest.raises(UsageError):
        running.apply(session, planning.ApplyRequest(to="999"))


def test_edited_applied_migration_blocks_unless_no_verify(setup: Any) -> None:
    session, backend, d = setup
    path = write(d, "001", "SELECT 1;")
    running.apply(session, planning.ApplyRequest())
    write(d, "002", "SELECT 2;")
    path.write_text(path.read_text().replace("SELECT 1", "SELECT 11"))
    with pytest.raises(StateError) as info:
        running.apply(session, planning.ApplyRequest())
    assert info.value.exit_code == 3 and "001_m.sql" in info.value.message
    running.apply(session, planning.ApplyRequest(verify=False))
    assert applied_ids(backend) == ["001", "002"]


def test_crlf_conversion_is_not_a_mismatch(setup: Any) -> None:
    session, _backend, d = setup
    path = write(d, "001", "SELECT 1;")
    running.apply(session, planning.ApplyRequest())
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    state = views.current_state(session)
    assert views.verify_data(state)["ok"] is True


def test_statement_refused_in_transaction_is_rejected_before_anything_runs(setup: Any) -> None:
    session, backend, d = setup
    write(d, "001", "CREATE TABLE a();")
    write(d, "002", "CREATE INDEX CONCURRENTLY i ON a (x);")
    with pytest.raises(MigrationFileError) as info:
        running.apply(session, planning.ApplyRequest())
    assert "no-transaction" in info.value.message and "002_m.sql:4" in info.value.message
    assert backend.executed == [] and backend.rows == {}


def test_single_transaction_refuses_no_transaction_migrations(setup: Any) -> None:
    session, backend, d = setup
    write(d, "001", "SELECT 1;", header="-- migrate: no-transaction")
    with pytest.raises(UsageError):
        running.apply(session, planning.ApplyRequest(single_transaction=True))
    assert backend.rows == {}


def test_single_transaction_rolls_back_the_whole_plan(setup: Any) -> None:
    session, backend, d = setup
    write(d, "001", "SELECT 1;")
    write(d, "002", "SELECT broken;")
    backend.fail_on.add("broken")
    with pytest.raises(MigrationFailed):
        running.apply(session, planning.ApplyRequest(single_transaction=True))
    assert backend.rows == {}


def test_rollback_refusals(setup: Any) -> None:
    session, backend, d = setup
    path = write(d, "001", "SELECT 1;", down=None)
    running.apply(session, planning.ApplyRequest())
    with pytest.raises(StateError) as info:
        running.rollback(session, planning.RollbackRequest())
    assert "--allow-missing-down" in (info.value.hint or "")
    running.rollback(session, planning.RollbackRequest(allow_missing_down=True))
    assert backend.rows == {}
    running.apply(session, planning.ApplyRequest())
    path.unlink()
    with pytest.raises(StateError) as gone:
        running.rollback(session, planning.RollbackRequest())
    assert "file is gone" in gone.value.message


def test_state_rows_show_every_status(setup: Any) -> None:
    session, backend, d = setup
    write(d, "002", "SELECT 2;")
    running.apply(session, planning.ApplyRequest())
    write(d, "001", "SELECT 1;")
    write(d, "003", "SELECT 3;")
    backend.rows["0009"] = HistoryEntry("0009", "gone", "applied", "x", seq=0)
    statuses = {row.id: row.status for row in views.current_state(session).rows()}
    assert statuses == {
        "001": "out-of-order",
        "002": "applied",
        "003": "pending",
        "0009": "missing",
    }


@pytest.mark.parametrize(
    "body",
    ["BEGIN;\nCREATE TABLE a();\nCOMMIT;", "CREATE TABLE a();\nCOMMIT;", "END;", "ROLLBACK;"],
)
def test_transaction_control_in_a_transactional_migration_is_refused(setup: Any, body: str) -> None:
    session, backend, d = setup
    write(d, "001", body)
    with pytest.raises(MigrationFileError) as info:
        running.apply(session, planning.ApplyRequest())
    assert "would end or nest the transaction" in info.value.message
    assert backend.executed == [] and backend.rows == {}


def test_savepoints_and_atomic_bodies_are_not_transaction_control(setup: Any) -> None:
    session, backend, d = setup
    write(
        d,
        "001",
        "SAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n"
        "DO $$ BEGIN PERFORM 1; END $$;",
    )
    assert running.apply(session, planning.ApplyRequest()) == 0
    assert applied_ids(backend) == ["001"]
