"""Migration and seed files that would make the server run something else than they say.

libpq sends a query as a C string: a NUL byte cuts it short, so ``DELETE ... \\0 WHERE`` would
delete every row and the history statements after it would never arrive. Such files are
refused before anything runs, through the real ``mg`` and against the suite's PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mgproject import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def with_rows(project: Project) -> None:
    project.add(
        "0001",
        "t",
        "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t SELECT generate_series(1, 5);",
        "DROP TABLE t;",
    )
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr


def write_raw(project: Project, name: str, data: bytes) -> Path:
    path = project.migrations_dir / name
    path.write_bytes(data)
    return path


def file_error(done: object, where: str) -> str:
    stderr: str = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 2, stderr  # type: ignore[attr-defined]
    assert where in stderr, stderr
    assert "NUL" in stderr, stderr
    assert "Traceback" not in stderr
    return stderr


# --- NUL bytes -----------------------------------------------------------------------------


def test_nul_in_a_transactional_migration_is_a_file_error_and_deletes_nothing(
    project: Project,
) -> None:
    with_rows(project)
    write_raw(project, "0002_delete_one.sql", b"-- migrate: up\nDELETE FROM t\0 WHERE id = 1;\n")

    file_error(project.mg("apply"), "0002_delete_one.sql:2:")
    file_error(project.mg("apply", "--dry-run"), "0002_delete_one.sql:2:")
    file_error(project.mg("up"), "0002_delete_one.sql:2:")

    assert project.value("SELECT count(*) FROM t") == 5
    assert project.statuses() == {"0001": "applied"}
    assert project.log() == [("0001", "UP")]


def test_nul_in_a_no_transaction_migration_runs_no_statement(project: Project) -> None:
    with_rows(project)
    write_raw(
        project,
        "0002_two.sql",
        b"-- migrate: no-transaction\n-- migrate: up\nINSERT INTO t VALUES (6);\n"
        b"INSERT INTO t VALUES (7)\0;\nINSERT INTO t VALUES (8);\n",
    )
    file_error(project.mg("apply"), "0002_two.sql:4:")
    assert project.value("SELECT count(*) FROM t") == 5
    assert project.statuses() == {"0001": "applied"}


def test_a_nul_anywhere_in_the_directory_stops_every_migration(project: Project) -> None:
    project.add_table("0001")
    write_raw(project, "0002_down.sql", b"-- migrate: up\nSELECT 1;\n-- migrate: down\nSELECT\0;\n")
    stderr = file_error(project.mg("apply"), "0002_down.sql:4:")
    assert "column" in stderr
    assert project.all_tables() == set()  # 0001 did not run either: checked before anything


def test_nul_in_a_down_section_blocks_the_rollback(project: Project) -> None:
    with_rows(project)
    path = project.path_of("0001")
    path.write_bytes(path.read_bytes().replace(b"DROP TABLE t;", b"DROP TABLE t\0 CASCADE;"))
    file_error(project.mg("rollback", "--no-verify"), "0001_t.sql:5:")
    assert project.value("SELECT count(*) FROM t") == 5


def test_utf16_file_is_refused_with_a_hint(project: Project) -> None:
    write_raw(project, "0001_wide.sql", "-- migrate: up\nSELECT 1;\n".encode("utf-16-le"))
    stderr = file_error(project.mg("apply"), "0001_wide.sql:1:")
    assert "UTF-16" in stderr
    assert project.all_tables() == set()


def test_nul_in_a_seed_is_a_file_error_and_no_seed_runs(project: Project) -> None:
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_first.sql").write_bytes(b"CREATE TABLE seeded (id int);\n")
    (seeds / "02_cut.sql").write_bytes(b"INSERT INTO seeded\0 VALUES (1);\n")
    for args in (("seed",), ("seed", "--dry-run"), ("seed", "02_cut")):
        file_error(project.mg(*args), "02_cut.sql:1:")
    assert project.all_tables() == set()
