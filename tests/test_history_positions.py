"""Each applied migration's history row: its position (``apply_seq``), which rollback
follows, and the columns written with it, whichever way the row is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def rows(project: Project) -> list[tuple[Any, ...]]:
    return project.sql(
        "SELECT id, status, apply_seq, applied_at IS NOT NULL, duration_ms IS NOT NULL, "
        "error, failed_statement FROM _migrations ORDER BY apply_seq"
    )


def applied(ident: str, seq: int) -> tuple[Any, ...]:
    return (ident, "applied", seq, True, True, None, None)


def test_new_rows_follow_the_highest_position_even_after_a_gap(project: Project) -> None:
    for ident in ("0001", "0002", "0003"):
        project.add_table(ident)
    assert project.mg("apply").returncode == 0
    assert rows(project) == [applied("0001", 1), applied("0002", 2), applied("0003", 3)]
    assert project.mg("rollback").returncode == 0
    project.sql("UPDATE _migrations SET apply_seq = 10 WHERE id = '0002'")
    for ident in ("0004", "0005"):
        project.add_table(ident)

    done = project.mg("apply")

    assert done.returncode == 0, done.stderr
    assert rows(project) == [
        applied("0001", 1),
        applied("0002", 10),
        applied("0003", 11),
        applied("0004", 12),
        applied("0005", 13),
    ]
    assert [m for m, action in project.log() if action == "UP"] == [
        "0001",
        "0002",
        "0003",
        "0003",
        "0004",
        "0005",
    ]
    # rollback follows the positions
    done = project.mg("rollback", "2")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied", "0003": "applied"}


def test_rows_written_around_a_no_transaction_migration_keep_their_order(
    project: Project,
) -> None:
    # A no-transaction migration's row is written first as `running`, then `applied`: the
    # migrations after it still take the next positions.
    project.add_table("0001")
    project.add("0002", "plain", "CREATE TABLE t2 (id int);", no_transaction=True)
    project.add_table("0003")
    project.add_table("0004")

    done = project.mg("apply")

    assert done.returncode == 0, done.stderr
    assert rows(project) == [
        applied("0001", 1),
        applied("0002", 2),
        applied("0003", 3),
        applied("0004", 4),
    ]


def test_a_history_row_the_migration_wrote_itself_is_refused_in_a_later_migration_too(
    project: Project,
) -> None:
    # The second migration of the run, not only the first, is refused when its own SQL
    # records it: the row is checked whatever path wrote the earlier ones.
    project.add_table("0001")
    project.add(
        "0002",
        "sneaky",
        "CREATE TABLE sneaky (id int);\n"
        "INSERT INTO _migrations (id, name, checksum, status, apply_seq)\n"
        "VALUES ('0002', 'sneaky', 'x', 'applied', 99);",
    )
    done = project.mg("apply")
    assert done.returncode == 3, done.stderr
    assert "migration 0002 (sneaky) is already recorded as applied" in done.stderr
    assert "sneaky" not in project.tables()
    assert [r[:3] for r in rows(project)] == [("0001", "applied", 1)]
