"""A tiny to-do list over psycopg: the code the sample application's tests exercise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

INBOX = "Inbox"


@dataclass(frozen=True)
class Item:
    id: int
    title: str
    done_at: datetime | None


class TodoList:
    """One list (the Inbox by default) on an open connection."""

    def __init__(self, conn: psycopg.Connection[Any], name: str = INBOX) -> None:
        self.conn = conn
        row = conn.execute("SELECT id FROM lists WHERE name = %s", (name,)).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO lists (name) VALUES (%s) RETURNING id", (name,)
            ).fetchone()
        assert row is not None
        self.list_id: int = row[0]

    def add(self, title: str) -> int:
        row = self.conn.execute(
            "INSERT INTO items (list_id, title) VALUES (%s, %s) RETURNING id",
            (self.list_id, title),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def finish(self, item_id: int) -> None:
        self.conn.execute(
            "UPDATE items SET done_at = now() WHERE id = %s AND list_id = %s",
            (item_id, self.list_id),
        )

    def open(self) -> list[Item]:
        rows = self.conn.execute(
            "SELECT id, title, done_at FROM items "
            "WHERE list_id = %s AND done_at IS NULL ORDER BY id",
            (self.list_id,),
        ).fetchall()
        return [Item(*row) for row in rows]


def migrate() -> None:
    """Bring the schema up to date, as the application does when it starts."""
    from migretti_core import Migretti

    Migretti().apply()
