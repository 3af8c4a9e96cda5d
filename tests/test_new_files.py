"""Commands that write new files (``mg create``, ``mg seed create``, ``mg squash``) when the
file system does not let them: one clean error line, and nothing half-done left behind."""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from migretti_core.testing import MG_COMMAND, Project, assert_clean_error, mg_env

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


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
            (["create", "add users"], "migrations/"),
            (["seed", "create", "demo users"], "seeds/"),
        ):
            done = run_without([CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH], tmp_path, *args)
            stderr = assert_clean_error(done, f"cannot write {where}", "Permission denied", code=1)
            assert "plugin" not in stderr and "-p no:" not in stderr, stderr
            assert done.stdout == ""
        assert list(migrations.iterdir()) == [] and list(seeds.iterdir()) == []
    finally:
        for directory in (migrations, seeds):
            directory.chmod(0o755)


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
