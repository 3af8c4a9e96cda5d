"""The plugins the documentation shows, copied as written, run through the real ``mg``.

A reader copies a ```python block whose first line names its file (``# deploy_note.py``)
into that file beside mg.yaml; these tests do the same and check what the text promises.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from migretti_core.testing import Project

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
FENCE = re.compile(r"```python\n(# (\w+\.py)\b.*?)```", re.S)


def snippet(doc: str, filename: str) -> str:
    """The ```python block of ``doc`` (relative to the repository) that starts ``# FILE``."""
    found = [code for code, name in FENCE.findall((ROOT / doc).read_text()) if name == filename]
    assert len(found) == 1, f"{doc} should show {filename} once, found {len(found)}"
    return found[0]


def project_with(tmp_path: Path, database_url: str, doc: str, filename: str) -> Project:
    project = Project(tmp_path / "app", database_url)
    (project.root / filename).write_text(snippet(doc, filename))
    return project


@pytest.mark.parametrize("doc", ["README.md", "docs/plugins/README.md"])
def test_the_ten_line_plugin_reports_the_deployment(
    tmp_path: Path, database_url: str, doc: str
) -> None:
    project = project_with(tmp_path, database_url, doc, "deploy_note.py")
    project.configure(extra="plugins:\n  - deploy_note.py\n")
    project.add("0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;")
    try:
        listed = project.mg("plugins")
        assert re.search(r"(?m)^deploy_note +config .*loaded$", listed.stdout), listed.stdout

        done = project.mg("apply")
        assert done.returncode == 0, done.stderr
        notes = [line for line in done.stderr.splitlines() if "0001" in line]
        assert notes, done.stderr
        # No profile selected: the note says so in words, not with Python's None.
        assert "None" not in notes[0], notes[0]

        blocked = project.mg("-p", "no:deploy_note", "rollback")
        assert blocked.returncode == 0, blocked.stderr
        assert "0001" not in blocked.stderr
    finally:
        project.close()


def test_the_ten_line_plugin_of_the_readme_reports_a_failure(
    tmp_path: Path, database_url: str
) -> None:
    project = project_with(tmp_path, database_url, "README.md", "deploy_note.py")
    project.configure(extra="plugins:\n  - deploy_note.py\n")
    project.add("0001", "users", "CREATE TABLE users (id bigint);")
    project.add("0002", "broken", "SELECT 1/0;")
    try:
        failed = project.mg("apply")
        assert failed.returncode == 1
        assert "FAILED 0002 (done before: 0001)" in failed.stderr
        assert "None" not in failed.stderr
        assert failed.stderr.rstrip().splitlines()[-1].startswith("mg: error:")
    finally:
        project.close()


def test_the_go_splitter_replaces_the_builtin(tmp_path: Path, database_url: str) -> None:
    project = project_with(
        tmp_path, database_url, "docs/plugins/replacing-builtins.md", "go_splitter.py"
    )
    project.configure(extra="plugins:\n  - go_splitter.py\n")
    project.add(
        "0001",
        "go",
        "CREATE TABLE a (id bigint)\nGO\nCREATE TABLE b (id bigint)\nGO\nSELECT 1/0\nGO\n",
        no_transaction=True,
    )
    try:
        result = project.mg("apply")
        assert result.returncode == 1
        # The third statement starts on line 7 of the file (two directive lines first).
        assert "0001_go.sql:7: division by zero" in result.stderr
        assert project.tables() == {"a", "b"}
    finally:
        project.close()


def test_the_file_lock_replaces_the_builtin(tmp_path: Path, database_url: str) -> None:
    project = project_with(
        tmp_path, database_url, "docs/plugins/replacing-builtins.md", "file_lock.py"
    )
    project.add("0001", "users", "CREATE TABLE users (id bigint);")
    try:
        done = project.mg("-p", "no:lock", "-p", "file_lock", "apply")
        assert done.returncode == 0, done.stderr
        assert project.tables() == {"users"}

        project.add("0002", "orders", "CREATE TABLE orders (id bigint);")
        with open(project.root / ".mg-deploy.lock", "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            waited = project.mg("-p", "no:lock", "-p", "file_lock", "apply", "--lock-timeout", "1s")
        assert waited.returncode == 4
        assert "another deployment holds .mg-deploy.lock" in waited.stderr
        assert project.tables() == {"users"}
    finally:
        project.close()


def test_the_testing_guides_examples_pass_as_written(tmp_path: Path, pg_url: str) -> None:
    """docs/plugins/testing.md: its conftest.py and its three levels of tests, copied into a
    project beside the notifier they test, pass under pytest."""
    blocks = PYTHON_BLOCK.findall((ROOT / "docs/plugins/testing.md").read_text())
    conftest = [b for b in blocks if b.startswith("# conftest.py")]
    tests = [b for b in blocks if "def test_" in b]
    assert len(conftest) == 1 and len(tests) == 3
    project = tmp_path / "plugin"
    project.mkdir()
    shutil.copy(ROOT / "examples/notify_webhook/notify_webhook.py", project)
    (project / "conftest.py").write_text(conftest[0])
    for level, code in enumerate(tests, start=1):
        (project / f"test_level{level}.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env["MG_TEST_DATABASE_URL"] = pg_url

    # its own temp root: the shared /tmp/pytest-of-USER would be reset to mode 0700
    basetemp = f"--basetemp={tmp_path / 'basetemp'}"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", basetemp, str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout
