"""`mg status --exit-code` as a CI gate, and the top-level `ok` of `mg status --format json`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def _gate(project: Project) -> tuple[int, bool]:
    code = project.mg("status", "--exit-code").returncode
    data = json.loads(project.mg("status", "--format", "json").stdout)
    return code, data["ok"]


def test_clean_database_passes_and_each_problem_fails_the_gate(project: Project) -> None:
    project.add_table("0001")
    project.add_table("0002")
    assert _gate(project) == (3, False)  # pending

    assert project.mg("apply").returncode == 0
    assert _gate(project) == (0, True)
    assert project.mg("status").returncode == 0  # without --exit-code: informative only

    path = project.path_of("0002")
    original = path.read_text()
    path.write_text(original + "-- edited\n")
    assert _gate(project) == (3, False)  # changed since applied
    path.unlink()
    assert _gate(project) == (3, False)  # file gone
    path.write_text(original)
    assert _gate(project) == (0, True)

    project.sql("UPDATE _migrations SET status = 'failed' WHERE id = '0002'")
    assert _gate(project) == (3, False)
    project.sql("UPDATE _migrations SET status = 'running' WHERE id = '0002'")
    assert _gate(project) == (3, False)


def test_gate_on_an_empty_project_and_json_together(project: Project) -> None:
    assert _gate(project) == (0, True)
    project.add_table("0001")
    done = project.mg("status", "--exit-code", "--format", "json")
    assert done.returncode == 3
    data = json.loads(done.stdout)
    assert data["ok"] is False and data["counts"]["pending"] == 1
