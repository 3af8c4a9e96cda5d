"""The advice for a failed or interrupted no-transaction migration, in every later command.

A rollback that failed part way is resolved the other way round from an apply: finishing it
by hand means the migration is no longer applied (`--remove`). The commands run after the
failure (status, apply, fix) tell which of the two failed from ``_migrations_log``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migretti_core.testing import Project

UP_ADVICE = "`mg fix 0001 --applied` if you completed it by hand"
DOWN_ADVICE = "`mg fix 0001 --remove` if you completed its rollback by hand"
BOTH_WAYS = "if it was being rolled back"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    proj = Project(tmp_path / "proj", database_url)
    proj.add(
        "0001",
        "two_tables",
        "CREATE TABLE nt_a (id int);\nCREATE TABLE nt_b (id int);",
        "DROP TABLE nt_b;\nDROP TABLE nosuch;",
        no_transaction=True,
    )
    return proj


def failed_rollback(project: Project) -> None:
    assert project.mg("apply").returncode == 0
    down = project.mg("down")
    assert down.returncode == 1, down.stderr
    assert project.statuses() == {"0001": "failed"}


def problems(project: Project) -> list[str]:
    done = project.mg("status", "--format", "json")
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout)["problems"]
    return found


def test_status_after_a_failed_rollback_gives_the_rollback_advice(project: Project) -> None:
    failed_rollback(project)

    status = project.mg("status")

    assert status.returncode == 0, status.stderr
    assert DOWN_ADVICE in status.stdout, status.stdout
    assert "`mg fix 0001 --applied` if you restored what the rollback undid" in status.stdout
    assert UP_ADVICE not in status.stdout
    assert "failed: 0001 two_tables (statement 2)" in status.stdout
    (problem,) = problems(project)
    assert "it was being rolled back; resolve it with " + DOWN_ADVICE in problem


def test_apply_and_down_blocked_by_a_failed_rollback_give_the_rollback_advice(
    project: Project,
) -> None:
    failed_rollback(project)

    for args in (["apply"], ["down"]):
        blocked = project.mg(*args)
        assert blocked.returncode == 3, blocked.stderr
        assert DOWN_ADVICE in blocked.stderr, blocked.stderr
        assert UP_ADVICE not in blocked.stderr


def test_an_interrupted_rollback_gives_the_rollback_advice(project: Project) -> None:
    failed_rollback(project)
    project.sql("UPDATE _migrations SET status = 'running', error = NULL")

    (problem,) = problems(project)

    assert problem.startswith("running: 0001 two_tables"), problem
    assert DOWN_ADVICE in problem and UP_ADVICE not in problem


def test_a_failed_apply_keeps_the_apply_advice(project: Project) -> None:
    project.add(
        "0001",
        "two_tables",
        "CREATE TABLE nt_a (id int);\nCREATE TABLE nosuch.nt_b (id int);",
        "DROP TABLE nt_a;",
        no_transaction=True,
    )
    assert project.mg("apply").returncode == 1

    (problem,) = problems(project)

    assert UP_ADVICE in problem and DOWN_ADVICE not in problem and BOTH_WAYS not in problem


def test_the_advice_follows_the_last_fix(project: Project) -> None:
    # fix --applied, then the rollback fails again: a rollback's advice
    failed_rollback(project)
    project.sql("CREATE TABLE nt_b (id int)")  # restored by hand
    assert project.mg("fix", "0001", "--applied").returncode == 0
    assert project.mg("down").returncode == 1
    (problem,) = problems(project)
    assert DOWN_ADVICE in problem and UP_ADVICE not in problem
    # fix --remove, then the apply fails: an apply's advice
    assert project.mg("fix", "0001", "--remove").returncode == 0
    project.sql("DROP TABLE nt_a")
    project.sql("CREATE TABLE nt_b (id int)")  # in the way of the apply's second statement
    assert project.mg("apply").returncode == 1
    (problem,) = problems(project)
    assert UP_ADVICE in problem and DOWN_ADVICE not in problem


def test_without_the_log_both_ways_out_are_named(project: Project) -> None:
    failed_rollback(project)
    project.sql("DROP TABLE _migrations_log")

    (problem,) = problems(project)

    assert UP_ADVICE in problem, problem
    assert BOTH_WAYS in problem and DOWN_ADVICE in problem


def test_fix_without_a_flag_names_the_one_that_fits(project: Project) -> None:
    failed_rollback(project)

    done = project.mg("fix", "two_tables")

    assert done.returncode == 2, done.stderr
    assert "say how it was resolved: --applied or --remove" in done.stderr
    assert "it was being rolled back; resolve it with " + DOWN_ADVICE in done.stderr
    assert project.statuses() == {"0001": "failed"}
    helped = project.mg("fix", "--help")
    assert "completed its failed rollback" in " ".join(helped.stdout.split())


def test_fix_without_a_flag_and_no_database_is_still_a_usage_error(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj", "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2")
    done = proj.mg("fix", "0001")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mg: error: say how it was resolved: --applied or --remove")
    assert "Traceback" not in done.stderr
