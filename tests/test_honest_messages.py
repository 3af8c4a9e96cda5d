"""What ``mg`` says matches what it did and what the user can do next."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    for ident in ("0001", "0002", "0003", "0004", "0005"):
        project.add_table(ident)
    yield project
    project.close()


def test_apply_to_an_applied_migration_counts_the_later_pending_ones(project: Project) -> None:
    assert project.mg("apply", "--to", "0002").returncode == 0
    done = project.mg("apply", "--to", "0002")
    assert done.returncode == 0, done.stderr
    assert "nothing to apply up to 0002; 3 later migrations pending" in done.stderr
    assert "already up to date" not in done.stderr
    assert project.tables() == {"t_0001", "t_0002"}

    assert project.mg("apply", "--to", "0004").returncode == 0
    done = project.mg("apply", "--to", "0003")
    assert "nothing to apply up to 0003; 1 later migration pending" in done.stderr
    assert project.mg("apply").returncode == 0
    done = project.mg("apply")
    assert "nothing to apply: already up to date" in done.stderr


def test_a_changed_applied_file_blocks_even_with_nothing_pending_and_names_fix(
    project: Project,
) -> None:
    assert project.mg("apply").returncode == 0
    path = project.path_of("0003")
    path.write_text(path.read_text() + "-- reviewed\n")

    for args in (("apply",), ("up",), ("rollback", "3")):
        done = project.mg(*args)
        assert done.returncode == 3, done.stderr
        assert "0003_create_t_0003.sql" in done.stderr
        assert "mg fix 0003 --applied" in done.stderr
        assert "--no-verify" in done.stderr

    fixed = project.mg("fix", "0003", "--applied")
    assert fixed.returncode == 0, fixed.stderr
    assert project.mg("verify").returncode == 0
    done = project.mg("apply")
    assert done.returncode == 0 and "already up to date" in done.stderr


def test_a_no_transaction_migration_that_cannot_record_its_end_says_what_ran(
    project: Project,
) -> None:
    import uuid

    role = f"mg_role_{uuid.uuid4().hex[:8]}"
    project.add(
        "0009",
        "as_role",
        f"CREATE ROLE {role};\nCREATE TABLE owned (id bigint);\nSET ROLE {role};",
        no_transaction=True,
    )
    try:
        done = project.mg("apply", "--no-lint")
        assert done.returncode == 1, done.stderr
        (first,) = [line for line in done.stderr.splitlines() if line.startswith("mg: error")]
        assert first.startswith("mg: error: recording migration 0009 (as_role) in the history")
        assert "permission denied" in first and "42501" in first
        assert "all 3 of its statements ran" in done.stderr
        assert "mg fix 0009 --applied" in done.stderr
        assert project.statuses()["0009"] == "running"
        assert project.mg("fix", "0009", "--applied").returncode == 0
        assert project.statuses()["0009"] == "applied"
    finally:
        project.sql(f"DROP OWNED BY {role}")
        project.sql(f"DROP ROLE IF EXISTS {role}")


def test_verify_counts_one_migration_in_the_singular(project: Project) -> None:
    assert project.mg("apply", "--to", "0001").returncode == 0
    one = project.mg("verify")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "ok: 1 applied migration matches its file"
    assert project.mg("apply").returncode == 0
    assert project.mg("verify").stdout.strip() == "ok: 5 applied migrations match their files"
