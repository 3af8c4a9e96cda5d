"""Hostile or broken input through the real ``mg``: values interpolated into shell hooks stay
data, configuration errors never quote a password, and a hostile mg.yaml cannot hang mg.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from mgproject import MG_COMMAND, Project, mg_env

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


# --- a hostile mg.yaml cannot hang mg ------------------------------------------------------

# Nine levels of nested aliases: a few hundred bytes that expand to 9**9 values.
ALIAS_BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]\n" for level in range(1, 9)
)
# Far more than any real run takes; the old behaviour ran for minutes or forever.
HANG = 20


def _refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mg: error: "), done.stderr
    for word in words:
        assert word in lines[0], done.stderr


def _run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MG_COMMAND, *args],
        cwd=cwd,
        env=mg_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG,
    )


def test_nested_yaml_aliases_are_refused_past_a_budget(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 600
    (tmp_path / "mg.yaml").write_text(ALIAS_BOMB)
    _refused(_run(tmp_path, "status"), "mg.yaml", "aliases")
    (tmp_path / "mg.yaml").write_text(ALIAS_BOMB + "plugins: []\n")
    for args in (["--help"], ["status"], ["plugins"]):
        _refused(_run(tmp_path, *args), "mg.yaml", "aliases")


def test_ordinary_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    base = "database: &base\n  host: h.invalid\n  user: u\n  sslmode: disable\n"
    profiles = "".join(
        f"  p{n}:\n    database:\n      <<: *base\n      dbname: d{n}\n" for n in range(50)
    )
    (tmp_path / "mg.yaml").write_text(base + "plugins: []\nenvs:\n" + profiles)
    done = _run(tmp_path, "--env", "p49", "create", "first")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "migrations").glob("*_first.sql"))) == 1


def test_a_config_that_is_no_regular_file_is_refused_without_reading(tmp_path: Path) -> None:
    for args in (["--config", "/dev/zero", "status"], ["--config", "/dev/zero", "--help"]):
        _refused(_run(tmp_path, *args), "/dev/zero", "not a regular file")
    _refused(_run(tmp_path, "status", env={"MG_CONFIG": "/dev/zero"}), "/dev/zero")
    config = tmp_path / "mg.yaml"
    os.mkfifo(config)
    _refused(_run(tmp_path, "status"), "mg.yaml", "not a regular file")
    config.unlink()
    config.mkdir()
    _refused(_run(tmp_path, "status"), "mg.yaml", "directory")


def test_a_config_of_one_mib_or_more_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "mg.yaml"
    config.write_text("# plugins\n" + "#" * (1024 * 1024) + "\n")
    for args in (["status"], ["--help"]):
        _refused(_run(tmp_path, *args), "mg.yaml", "1 MiB")
    config.write_text("migrations_dir: migrations\n# padding\n" + "#" * (1000 * 1024) + "\n")
    done = _run(tmp_path, "create", "first")
    assert done.returncode == 0, done.stderr
