"""examples/app, the sample application, runs its own pytest suite with ``mg_database``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from migretti_core.testing import mg_env

APP = Path(__file__).resolve().parents[1] / "examples" / "app"


def test_the_sample_application_passes_its_own_tests(tmp_path: Path, pg_url: str) -> None:
    # Its own temp root, so the nested run leaves the shared /tmp/pytest-of-USER alone.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'basetemp'}",
        ],
        cwd=APP,
        env=mg_env({"MG_TEST_DATABASE_URL": pg_url}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
