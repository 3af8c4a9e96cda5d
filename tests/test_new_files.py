"""Commands that write new files (``mg create``, ``mg seed create``, ``mg squash``) when the
file system does not let them: one clean error line, and nothing half-done left behind."""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from migretti_core.testing import (
    MG_COMMAND,
    AdvisoryLockHolder,
    Project,
    assert_clean_error,
    mg_env,
    run_mg,
)

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def _dropping(*capabilities: int) -> object:
    """In the child, before exec: as root, give up ``capabilities``, so the file permissions
    apply to mg as they do to everyone else (CI runs as root)."""

    def drop() -> None:
        if os.geteuid() != 0:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        pr_capbset_drop = 24
        for capability in capabilities:
            if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def run_without(
    capabilities: Sequence[int], cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MG_COMMAND, *args],
        cwd=cwd,
        env=mg_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_dropping(*capabilities),  # type: ignore[arg-type]
    )


def test_create_and_seed_create_in_a_read_only_directory_say_so_in_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  host: h.invalid\n")
    migrations, seeds = tmp_path / "migrations", tmp_path / "seeds"
    for directory in (migrations, seeds):
        directory.mkdir()
        directory.chmod(0o555)
    try:
        for args, where in (
            (["create", "add users"], "migrations"),
            (["seed", "create", "demo users"], "seeds"),
        ):
            done = run_without([CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH], tmp_path, *args)
            # shown relative to the working directory, as mg shows paths elsewhere
            stderr = assert_clean_error(
                done, f"mg: error: cannot write {where}/", "Permission denied", code=1
            )
            assert "plugin" not in stderr and "-p no:" not in stderr, stderr
            assert done.stdout == ""
        assert list(migrations.iterdir()) == [] and list(seeds.iterdir()) == []
    finally:
        for directory in (migrations, seeds):
            directory.chmod(0o755)


@pytest.mark.parametrize(
    ("args", "setting"),
    [(["create", "add users"], "migrations_dir"), (["seed", "create", "demo"], "seeds_dir")],
)
def test_a_directory_create_cannot_make_is_an_environment_failure_like_the_file(
    tmp_path: Path, args: list[str], setting: str
) -> None:
    # the missing directory that cannot be created exits 1, as a file that cannot be written
    # does (it exited 2, as if the command line were wrong), and is named as mg names paths
    (tmp_path / "mg.yaml").write_text(f"database:\n  host: h.invalid\n{setting}: ro/new/dir\n")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        done = run_without([CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH], tmp_path, *args)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert_clean_error(
        done,
        "mg: error: cannot create ro/new/dir: Permission denied; nothing was written",
        code=1,
    )
    assert str(tmp_path) not in done.stderr and done.stdout == ""
    assert list((tmp_path / "ro").iterdir()) == []

    # a file where a directory must be is the configuration's to correct: exit 2, naming it
    (tmp_path / "ro" / "new").write_text("a file\n")
    done = run_mg(args, tmp_path)
    assert_clean_error(
        done, "mg: error: cannot create ro/new/dir: ro/new is not a directory; nothing was written"
    )
    assert str(tmp_path) not in done.stderr


@pytest.mark.parametrize(
    ("args", "directory"), [(["create"], "migrations"), (["seed", "create"], "seeds")]
)
def test_create_takes_a_name_as_long_as_a_file_name_can_be(
    tmp_path: Path, args: list[str], directory: str
) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  host: h.invalid\n")
    longest = "n" * 224  # <26-character id>_<224>.sql is 255 bytes, the usual limit

    done = run_mg([*args, longest], tmp_path)

    assert done.returncode == 0, done.stderr
    (written,) = (tmp_path / directory).iterdir()
    assert written.name.endswith(f"_{longest}.sql") and len(written.name) == 255
    assert done.stdout.strip() == f"{directory}/{written.name}"


def test_squash_takes_any_name_create_takes_up_to_the_longest_file_name(
    tmp_path: Path, database_url: str
) -> None:
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    project.add_table("0002")
    longest = "n" * 224  # <26-character id>_<224>.sql is 255 bytes, the usual limit
    created = project.mg("create", longest)
    assert created.returncode == 0, created.stderr
    Path(project.root / created.stdout.strip()).unlink()

    done = project.mg("squash", longest)

    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (project.root / "migrations").iterdir())
    assert len(names) == 1 and names[0].endswith(f"_{longest}.sql"), names
    assert len(names[0]) == 255
    applied = project.mg("apply")
    assert applied.returncode == 0, applied.stderr
    project.close()


def _squash_project(tmp_path: Path, database_url: str) -> tuple[Project, dict[str, bytes]]:
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    project.add_table("0002")
    project.add_table("0003")
    before = {p.name: p.read_bytes() for p in project.migrations_dir.iterdir()}
    return project, before


def _directory(project: Project) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in project.migrations_dir.iterdir()}


def test_squash_in_a_read_only_directory_changes_nothing(tmp_path: Path, database_url: str) -> None:
    project, before = _squash_project(tmp_path, database_url)
    project.migrations_dir.chmod(0o555)
    try:
        done = run_without([CAP_DAC_OVERRIDE], project.root, "squash", "all tables")
    finally:
        project.migrations_dir.chmod(0o755)

    assert_clean_error(
        done, "cannot write migrations/", "_all_tables.sql", "Permission denied", code=1
    )
    assert ".tmp" not in done.stderr
    assert _directory(project) == before
    project.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the files to another user")
@pytest.mark.parametrize("removable", [(), ("0001_create_t_0001.sql",)])
def test_squash_that_cannot_remove_an_original_is_undone(
    tmp_path: Path, database_url: str, removable: tuple[str, ...]
) -> None:
    """In a sticky directory (like /tmp) only a file's owner may remove it: the originals
    another user owns stay, so the new file must go, and any original removed must return."""
    project, before = _squash_project(tmp_path, database_url)
    nobody = 65534
    directory = project.migrations_dir
    os.chown(directory, nobody, nobody)
    directory.chmod(0o1777)
    for path in directory.iterdir():
        if path.name not in removable:
            os.chown(path, nobody, nobody)

    done = run_without([CAP_FOWNER], project.root, "squash", "all tables")

    stuck = "0002_create_t_0002.sql" if removable else "0001_create_t_0001.sql"
    assert_clean_error(done, f"cannot remove migrations/{stuck}", "nothing was changed", code=1)
    assert _directory(project) == before
    assert not project.tables() and project.mg("status").returncode == 0
    applied = project.mg("apply")
    assert applied.returncode == 0, applied.stderr
    assert set(project.statuses()) == {"0001", "0002", "0003"}
    project.close()


@pytest.mark.parametrize("name", ["###", "n" * 300])
def test_squash_refuses_a_name_that_gives_no_file_name_before_the_database(
    tmp_path: Path, database_url: str, name: str
) -> None:
    """The name is checked first: never after waiting for the lock, or instead of saying that
    the database cannot be reached."""
    project, before = _squash_project(tmp_path, database_url)
    project.configure(extra="lock_timeout: 2s\n")
    with AdvisoryLockHolder(database_url):
        done = project.mg("squash", name)
    assert_clean_error(done, f"migration name {name!r}", code=2)
    assert "waiting for the migration lock" not in done.stderr

    project.configure({"host": "h.invalid"})
    done = project.mg("squash", name)
    assert_clean_error(done, f"migration name {name!r}", code=2)
    assert _directory(project) == before
    project.close()
