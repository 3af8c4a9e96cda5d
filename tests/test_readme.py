"""README.md's quick start, run as written: its set-up command and its pytest example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from migretti_plugins.embedded.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def setup_command() -> str:
    """The set-up line's project part: from ``mg init --embedded`` to its end."""
    lines = [line.strip() for line in README.splitlines() if "&& mg init --embedded" in line]
    assert len(lines) == 1, lines
    return lines[0][lines[0].index("mg init --embedded") :]


def pytest_example() -> str:
    found = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "mg_database" in b]
    assert len(found) == 1, found
    return found[0]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def test_the_quick_start_and_its_pytest_example_work_as_written(
    server_tmp_path: Path, pg_url: str
) -> None:
    project = server_tmp_path / "quickstart"
    project.mkdir()
    try:
        done = subprocess.run(
            ["sh", "-c", setup_command()],
            cwd=project,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"(?m)^applied \w+ add_users \(\d+ ms\)$", done.stdout), done.stdout
        assert "applied: 1  pending: 0  failed: 0  running: 0" in done.stdout, done.stdout

        # The pytest example beside it, against the table the quick start created.
        (project / "test_signup.py").write_text(pytest_example(), encoding="utf-8")
        tested = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--basetemp={project / 'basetemp'}",
                "test_signup.py",
            ],
            cwd=project,
            env=clean_env(MG_TEST_DATABASE_URL=pg_url),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "1 passed" in tested.stdout, tested.stdout
    finally:
        for pidfile in project.rglob("postmaster.pid"):
            EmbeddedServer(pidfile.parent).stop()
