"""A no-transaction migration may group statements in BEGIN ... COMMIT blocks of its own;
one that opens a block and never ends it is refused before anything runs, since mg would
record it inside that block and the session's end would roll both back."""

from __future__ import annotations

from pathlib import Path

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return Project(tmp_path / "proj", database_url)


@pytest.mark.parametrize(
    ("body", "line", "name"),
    [
        ("BEGIN;\nCREATE TABLE a (id int);", 3, "BEGIN"),
        ("CREATE TABLE a (id int);\nstart transaction;\nINSERT INTO a VALUES (1);", 4,
         "START TRANSACTION"),
        ("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\nBEGIN;\nINSERT INTO a VALUES (1);", 6,
         "BEGIN"),
        ("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT AND CHAIN;", 5, "COMMIT AND CHAIN"),
    ],
)  # fmt: skip
def test_a_block_left_open_is_refused_before_anything_runs(
    project: Project, body: str, line: int, name: str
) -> None:
    project.add_table("0001")
    project.add("0002", "open", body, no_transaction=True)  # line 3 is the body's first
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert f"0002_open.sql:{line}: {name} opens a transaction block" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert "t_0001" not in project.tables() and "a" not in project.tables()


@pytest.mark.parametrize(
    "body",
    [
        "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\nCREATE INDEX CONCURRENTLY ON a (id);",
        "START TRANSACTION;\nCREATE TABLE a (id int);\nEND;",
        "BEGIN;\nCREATE TABLE a (id int);\nCOMMIT AND NO CHAIN;",
        "BEGIN;\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;",
        "CREATE TABLE a (id int);\nDO $$ BEGIN PERFORM 1; END $$;",
    ],
)
def test_blocks_that_end_are_run(project: Project, body: str) -> None:
    project.add("0001", "blocks", body, no_transaction=True)
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied"}
    assert "a" in project.tables()
