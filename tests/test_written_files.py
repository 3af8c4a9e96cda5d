"""The files mg writes for the user are written whole or not at all, and never replace one.

A full disk is stood in for by a file-size limit (``RLIMIT_FSIZE``) on the real ``mg``
process: its writes past the limit fail (``File too large``) as they would on a full disk,
after the bytes that fitted were written.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from migretti_core.testing import MG_COMMAND, mg_env, run_cli, run_mg

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")


def mg_with_size_limit(
    args: Sequence[str], cwd: Path, limit: int
) -> subprocess.CompletedProcess[str]:
    """Run the real ``mg ARGS`` with every file it writes limited to ``limit`` bytes."""
    import resource

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [*MG_COMMAND, *args],
        cwd=cwd,
        env=mg_env({"PYTHONDONTWRITEBYTECODE": "1"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
    )


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_init_on_a_full_disk_leaves_no_truncated_mg_yaml(tmp_path: Path) -> None:
    done = mg_with_size_limit(["init"], tmp_path, 1024)

    assert done.returncode == 1, done.stderr
    assert "mg: error: cannot write mg.yaml: File too large" in done.stderr  # as mg shows paths
    assert "writing the output" not in done.stderr
    # before: the first 1024 bytes of mg.yaml stayed, a config cut off in the middle that
    # every later command read, and `mg init` refused to replace
    assert files_in(tmp_path) == []
    again = run_mg(["init"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "password: ${DB_PASSWORD" in (tmp_path / "mg.yaml").read_text(encoding="utf-8")


def test_init_embedded_that_cannot_extend_gitignore_changes_nothing(tmp_path: Path) -> None:
    gitignore = tmp_path / ".gitignore"
    original = b"#" * 1998 + b"\n"
    gitignore.write_bytes(original)

    done = mg_with_size_limit(["init", "--embedded"], tmp_path, len(original) + 3)

    assert done.returncode == 1, done.stderr
    assert "cannot write .gitignore: File too large; mg init changed nothing" in done.stderr
    # before: ".mg" (of ".mg/\n") was appended without its line end, mg.yaml and migrations/
    # stayed, and `mg init --embedded` refused to run again
    assert gitignore.read_bytes() == original
    assert files_in(tmp_path) == [".gitignore"]
    assert not (tmp_path / "migrations").exists()
    again = run_mg(["init", "--embedded"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert gitignore.read_bytes() == original + b".mg/\n"


@pytest.mark.parametrize(
    ("args", "directory"),
    [(["create", "add users"], "migrations"), (["seed", "create", "demo"], "seeds")],
)
def test_create_on_a_full_disk_names_the_file_and_leaves_nothing(
    tmp_path: Path, args: list[str], directory: str
) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  url: postgresql://u@h/d\n", encoding="utf-8")

    done = mg_with_size_limit(args, tmp_path, 10)

    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mg: error: cannot write {directory}/")
    assert line.endswith(".sql: File too large; nothing was written")
    assert files_in(tmp_path) == ["mg.yaml"]


@pytest.mark.parametrize(
    ("args", "written"),
    [
        (["init"], "mg.yaml"),
        (["create", "add users"], "_add_users.sql"),
        (["seed", "create", "demo"], "_demo.sql"),
    ],
)
def test_a_new_file_is_on_disk_before_it_gets_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], written: str
) -> None:
    """A power cut right after the command must not leave an empty file under the name."""
    if args[0] != "init":
        (tmp_path / "mg.yaml").write_text("database:\n  url: postgresql://u@h/d\n")
    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append("fsync " + ("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def link(source: str | Path, target: str | Path, **kwargs: object) -> None:
        events.append("link " + Path(target).name)
        real_link(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)

    result = run_cli(args, cwd=tmp_path)

    assert result.exit_code == 0, result.output
    named = [e for e in events if e.startswith("link")]
    assert len(named) == 1 and named[0].endswith(written), events
    at = events.index(named[0])
    assert "fsync file" in events[:at], events
    assert "fsync dir" in events[at:], events
    assert [p for p in tmp_path.rglob("*") if "mg-tmp" in p.name] == []


def test_init_names_the_file_it_will_not_replace_as_mg_shows_paths(tmp_path: Path) -> None:
    assert run_mg(["init"], tmp_path).returncode == 0
    done = run_mg(["init"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "mg: error: mg.yaml already exists; not overwriting it\n"
