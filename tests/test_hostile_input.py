"""Hostile or broken input through the real ``mg``: values interpolated into shell hooks stay
data, configuration errors never quote a password, and a hostile mg.yaml cannot hang mg.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from migretti_core.testing import MG_COMMAND, Project, mg_env

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


# --- clear errors: one line, no traceback ---------------------------------------------------


def _without_root_privileges() -> None:
    """In the child, before exec: as root, give up the capabilities that bypass file
    permissions, so an unreadable file is unreadable to mg too (CI runs as root)."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_unprivileged(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args],
        cwd=cwd,
        env=mg_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG,
        preexec_fn=_without_root_privileges,
    )


def _assert_unreadable(path: Path) -> None:
    """The premise of a test: mg's process really cannot read ``path``."""
    probe = "import os, sys; p = sys.argv[1]; os.listdir(p) if os.path.isdir(p) else open(p).read()"
    done = _run_unprivileged(path.parent, sys.executable, "-c", probe, str(path))
    assert "PermissionError" in done.stderr, f"{path} is still readable: {done.stderr}"


def _one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mg: error: "), done.stderr
    assert "Traceback" not in done.stderr and "unexpected error" not in done.stderr
    for word in words:
        assert word in lines[0], done.stderr


def test_unreadable_migrations_dir_env_and_config_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  host: h.invalid\n")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_a.sql").write_text("-- migrate: up\nSELECT 1;\n")
    migrations.chmod(0)
    try:
        _assert_unreadable(migrations)
        for args in (["list"], ["apply"], ["status"]):
            done = _run_unprivileged(tmp_path, *MG_COMMAND, *args)
            _one_line_error(done, 2, "migrations", "Permission denied")
    finally:
        migrations.chmod(0o755)

    env_file = tmp_path / ".env"
    env_file.write_text("X=1\n")
    env_file.chmod(0)
    _assert_unreadable(env_file)
    _one_line_error(_run_unprivileged(tmp_path, *MG_COMMAND, "status"), 2, ".env", "Permission")
    env_file.unlink()

    (tmp_path / "mg.yaml").chmod(0)
    _assert_unreadable(tmp_path / "mg.yaml")
    _one_line_error(_run_unprivileged(tmp_path, *MG_COMMAND, "status"), 2, "mg.yaml", "Permission")


def test_symbolic_link_loops_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  host: h.invalid\n")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_loop.sql").symlink_to("0001_loop.sql")
    _one_line_error(_run(tmp_path, "list"), 2, "0001_loop.sql", "symbolic links")
    (migrations / "0001_loop.sql").unlink()
    migrations.rmdir()
    migrations.symlink_to("migrations")
    _one_line_error(_run(tmp_path, "list"), 2, "migrations", "symbolic links")
    migrations.unlink()
    migrations.mkdir()
    (tmp_path / ".env").symlink_to(".env")
    _one_line_error(_run(tmp_path, "status"), 2, ".env", "symbolic links")


def test_a_dotenv_line_python_dotenv_cannot_read_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  host: ${DB_HOST:-h.invalid}\n")
    (tmp_path / "migrations").mkdir()
    (tmp_path / ".env").write_text("A=1\nDB_PASSWORD='unterminated\n")
    _one_line_error(_run(tmp_path, "list"), 2, ".env:2:")
    # With --json-log, stderr stays one JSON object per line (python-dotenv's own warning
    # would be a plain line among them).
    done = _run(tmp_path, "--json-log", "list")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert ".env:2:" in json.loads(line)["message"]
    (tmp_path / ".env").write_bytes(b"DB_HOST=h.invalid\0other\n")
    _one_line_error(_run(tmp_path, "list"), 2, ".env", "DB_HOST", "NUL")


def test_arguments_that_are_not_utf8_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("database:\n  host: h.invalid\n")
    (tmp_path / "migrations").mkdir()
    for args in ([b"create", b"bad\xffname"], [b"create", b"ok", b"--up", b"SELECT \xff;"]):
        done = subprocess.run(
            [*MG_COMMAND, *args],
            cwd=tmp_path,
            env=mg_env(),
            capture_output=True,
            text=True,
            timeout=HANG,
        )
        _one_line_error(done, 2, "not valid UTF-8", "\\xff")
    assert list((tmp_path / "migrations").iterdir()) == []


def test_output_to_a_full_disk_is_a_one_line_error(tmp_path: Path, database_url: str) -> None:
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    for args in (["list"], ["status", "--format", "json"], ["status"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [*MG_COMMAND, *args],
                cwd=project.root,
                env=mg_env(),
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        _one_line_error(done, 1, "No space left on device")
    assert project.statuses() == {"0001": "applied"}


def test_output_to_a_closed_stdout_is_a_one_line_error(tmp_path: Path, database_url: str) -> None:
    # `mg list >&-`: Python starts with sys.stdout None, and printing to None prints nothing
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    for args in (["list"], ["status", "--format", "json"], ["--version"]):
        done = subprocess.run(
            [*MG_COMMAND, *args],
            cwd=project.root,
            env=mg_env(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.close(1),
        )
        _one_line_error(done, 1, "writing the output", "standard output is closed")
        assert "unexpected" not in done.stderr
    assert project.statuses() == {"0001": "applied"}


def test_a_closed_stderr_keeps_diagnostics_out_of_stdout(tmp_path: Path, database_url: str) -> None:
    # `mg ... 2>&-`: a warning or an error has nowhere to go; it must not land among the
    # results on stdout (Python prints to stdout what is printed to a None stderr)
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    project.path_of("0001").unlink()  # warned about on every run: recorded, file gone

    def closed_stderr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MG_COMMAND, *args],
            cwd=project.root,
            env=mg_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.close(2),
        )

    done = closed_stderr("status", "--format", "json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["ok"] is False, done.stdout
    done = closed_stderr("apply", "--to", "nosuch")
    assert done.returncode == 2
    assert done.stdout == ""


def test_apply_to_a_full_disk_applies_and_exits_1(tmp_path: Path, database_url: str) -> None:
    # The report of what was applied cannot be written: the migration stays applied (nothing
    # lost), but the command does not claim success.
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*MG_COMMAND, "apply"],
            cwd=project.root,
            env=mg_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "mg: error: writing the output: No space left on device", done.stderr
    assert "failed in mg_report" not in done.stderr and "Traceback" not in done.stderr
    assert project.statuses() == {"0001": "applied"}


def test_apply_to_a_closed_stdout_applies_and_exits_1(tmp_path: Path, database_url: str) -> None:
    # `mg apply >&-`: as with a full disk, the migration stays applied and the command does
    # not claim success; the builtin output plugin is not blamed as a failing plugin.
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    for args in (["apply"], ["rollback"]):
        done = subprocess.run(
            [*MG_COMMAND, *args],
            cwd=project.root,
            env=mg_env(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.close(1),
        )
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last == "mg: error: writing the output: standard output is closed", done.stderr
        assert "failed in mg_report" not in done.stderr and "Traceback" not in done.stderr
        expected = {"0001": "applied"} if args == ["apply"] else {}
        assert project.statuses() == expected


@pytest.mark.parametrize(
    "line",
    [
        'migrations_dir: "mig\\0rations"',
        'hooks:\n  pre_apply: "echo a\\0b"',
        'database:\n  host: h.invalid\n  password: "se\\0cret"',
    ],
)
def test_a_nul_in_an_mg_yaml_value_is_a_one_line_config_error(tmp_path: Path, line: str) -> None:
    # YAML's "\0" escape: no path, hook command or connection setting can carry it.
    (tmp_path / "mg.yaml").write_text("database:\n  host: h.invalid\n" + line + "\n")
    if line.startswith("database:"):
        (tmp_path / "mg.yaml").write_text(line + "\n")
    _one_line_error(_run(tmp_path, "status"), 2, "mg.yaml", "NUL")
    assert "cret" not in _run(tmp_path, "status").stderr
