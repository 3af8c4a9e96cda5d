"""The sample application's own tests: each one gets a fresh, migrated, seeded database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from todo import INBOX, TodoList


def test_the_inbox_is_seeded(mg_database: Any) -> None:
    with mg_database.connect() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM lists")]
    assert names == [INBOX]


def test_done_items_leave_the_open_list(mg_database: Any) -> None:
    with mg_database.connect() as conn:
        todos = TodoList(conn)
        first = todos.add("write the migration")
        todos.add("review it")
        todos.finish(first)
        assert [item.title for item in todos.open()] == ["review it"]


def test_every_test_starts_from_the_same_state(mg_database: Any) -> None:
    with mg_database.connect() as conn:
        assert TodoList(conn).open() == []


def test_an_empty_title_is_refused(mg_database: Any) -> None:
    with mg_database.connect() as conn, pytest.raises(psycopg.errors.CheckViolation):
        TodoList(conn).add("")


def test_the_last_migration_rolls_back_cleanly(mg_database: Any) -> None:
    mg = mg_database.migretti()
    assert mg.status().pending == 0
    rolled_back = mg.rollback()
    assert [m.name for m in rolled_back.migrations] == ["items_done_at"]
    with mg_database.connect() as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'items'"
            )
        ]
    assert "done_at" not in columns
    assert mg.apply().ids == ("01JDA0C1B2C3D4E5F6G7H8J9K0",)
