"""Running ``mg`` from inside a project: mg.yaml is found in the parent directories, as git
finds ``.git``; without one anywhere mg says so before it tries to connect.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from migretti_core.testing import MG_COMMAND, Project, mg_env


def _mg(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MG_COMMAND, *args],
        cwd=cwd,
        env=mg_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _no_mg_yaml_above(directory: Path) -> None:
    found = [p / "mg.yaml" for p in (directory, *directory.parents) if (p / "mg.yaml").exists()]
    assert not found, f"a stray mg.yaml above the test directory: {found}"


def test_mg_finds_mg_yaml_in_a_parent_directory(tmp_path: Path, database_url: str) -> None:
    project = Project(tmp_path / "proj", database_url)
    (project.root / ".env").write_text("NOTE=from the project's .env\n")
    project.configure(extra='hooks:\n  post_apply: echo "${NOTE}"\n')
    project.add_table("0001")
    deeper = project.root / "src" / "deeper"
    deeper.mkdir(parents=True)

    done = _mg(deeper, "apply")
    assert done.returncode == 0, done.stderr
    assert "from the project's .env" in done.stderr
    assert project.statuses() == {"0001": "applied"}

    listed = _mg(project.migrations_dir, "status")
    assert listed.returncode == 0, listed.stderr
    assert "0001" in listed.stdout


def test_create_inside_migrations_writes_into_the_project_migrations(
    tmp_path: Path, database_url: str
) -> None:
    project = Project(tmp_path / "proj", database_url)
    done = _mg(project.migrations_dir, "create", "from inside")
    assert done.returncode == 0, done.stderr
    assert len(list(project.migrations_dir.glob("*_from_inside.sql"))) == 1
    assert not (project.migrations_dir / "migrations").exists()


def test_errors_name_the_config_file_found_above(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("lock_id: nope\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    done = _mg(sub, "status")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mg: error: ../mg.yaml: lock_id"), done.stderr


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        # the keys of builtin plugins: embedded, seeds, shellhooks, schema, fleets, lint
        ("database:\n  embedded: true\n  host: db\n", ["status"], "database.embedded is true"),
        ("seeds_dir: [a]\n", ["seed"], "seeds_dir: expected a directory path"),
        ("hook_timeout: 0\n", ["apply"], "hook_timeout: must be more than zero"),
        ("schema_file: [a]\n", ["apply"], "schema_file: expected a file path"),
        ("fleets:\n  f:\n    databases: [a]\n    jobs: x\n", ["--fleet", "f", "status"], "jobs"),
        ("lint:\n  on_apply: x\n", ["lint"], "lint.on_apply"),
        ("migrations_dir: nowhere\n", ["status"], "migrations_dir"),
    ],
)
def test_plugin_errors_name_the_config_file_as_found(
    tmp_path: Path, text: str, args: list[str], expected: str
) -> None:
    """Every error about mg.yaml names it as it was found, like the core's own errors:
    ``../mg.yaml`` from a sub-directory, the ``--config`` text as given."""
    _no_mg_yaml_above(tmp_path)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "mg.yaml").write_text(text)
    sub = tmp_path / "sub"
    sub.mkdir()
    done = _mg(sub, *args)
    assert done.returncode == 2, done.stderr
    assert "../mg.yaml" in done.stderr and expected in done.stderr, done.stderr

    (tmp_path / "conf").mkdir()
    (tmp_path / "mg.yaml").rename(tmp_path / "conf" / "app.yaml")
    done = _mg(tmp_path, "--config", "conf/app.yaml", *args)
    assert done.returncode == 2, done.stderr
    assert "conf/app.yaml" in done.stderr and expected in done.stderr, done.stderr


def test_errors_about_dotenv_name_it_beside_mg_yaml_as_found(tmp_path: Path) -> None:
    _no_mg_yaml_above(tmp_path)
    (tmp_path / "mg.yaml").write_text("database:\n  host: ${DB_HOST:-localhost}\n")
    (tmp_path / ".env").write_text("A=1\nDB_HOST='unterminated\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    said = "2: not a NAME=value line python-dotenv can read"
    for cwd, args, shown in [
        (tmp_path, [], ".env"),
        (sub, [], "../.env"),
        (sub, ["--config", "../mg.yaml"], "../.env"),
    ]:
        done = _mg(cwd, *args, "status")
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"mg: error: {shown}:{said}"), done.stderr


def test_without_any_mg_yaml_mg_says_so_before_connecting(tmp_path: Path) -> None:
    _no_mg_yaml_above(tmp_path)
    for args in (["status"], ["apply"], ["list"]):
        done = _mg(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        first = done.stderr.splitlines()[0]
        assert first == f"mg: error: no mg.yaml in {tmp_path} or its parents", done.stderr
        assert "Traceback" not in done.stderr


def test_create_inside_a_bare_migrations_directory_never_nests_one(tmp_path: Path) -> None:
    _no_mg_yaml_above(tmp_path)
    bare = tmp_path / "migrations"
    bare.mkdir()
    done = _mg(bare, "create", "lost")
    assert done.returncode == 2, done.stderr
    assert "no mg.yaml in" in done.stderr and "Traceback" not in done.stderr
    assert not (bare / "migrations").exists()
    assert list(bare.iterdir()) == []
