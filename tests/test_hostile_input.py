"""Hostile or broken input through the real ``mg``: values interpolated into shell hooks stay
data, configuration errors never quote a password, and a hostile mg.yaml cannot hang mg.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from mgproject import Project

# --- shell hooks: interpolated values are data, never code ---------------------------------


def test_an_interpolated_value_reaches_the_hook_as_data(tmp_path: Path, database_url: str) -> None:
    pwned = tmp_path / "pwned"
    project = Project(tmp_path / "proj", database_url)
    project.configure(
        extra=(
            "hooks:\n"
            '  pre_apply: echo "deploying ${DEPLOY_NOTE}"\n'
            "  post_apply: echo done ${UNQUOTED} ${MISSING:-fallback $$} $${MG_ENV:-no profile}\n"
        )
    )
    project.add_table("0001")
    (project.root / ".env").write_text(f"UNQUOTED='$(touch {pwned}) `touch {pwned}`'\n")
    note = f'x"; touch {shlex.quote(str(pwned))}; echo "'

    done = project.mg("apply", env={"DEPLOY_NOTE": note})

    assert done.returncode == 0, done.stderr
    assert not pwned.exists()
    assert f"deploying {note}" in done.stderr
    assert f"done $(touch {pwned}) `touch {pwned}` fallback $$ no profile" in done.stderr
    assert project.statuses() == {"0001": "applied"}


# --- configuration errors never quote a password ---------------------------------------------


def test_a_broken_reference_in_a_password_is_reported_without_its_value(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", "postgresql://unused.invalid/db", configure=False)
    cases = {
        "password: s3cr3tpart${X": "database.password",
        "password: s3cr3tpart${X:-more${Y}}": "database.password",
        'url: "postgresql://u:s3cr3tpart${X@host/db"': "database.url",
    }
    for line, key in cases.items():
        (project.root / "mg.yaml").write_text(f"database:\n  {line}\n")
        done = project.mg("status")
        assert done.returncode == 2, (line, done.stderr)
        assert done.stderr.startswith(f"mg: error: mg.yaml: {key}: invalid reference"), done.stderr
        assert "s3cr3t" not in done.stderr and "${X" not in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
