"""Running the real ``mg`` command in a subprocess, as a user would.

The child gets the test's environment without any ``MG_*`` variable, so a developer's own
settings never leak into what a test observes; tests pass the variables they mean to set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BIN_DIR = Path(sys.executable).parent
MG_SCRIPT = BIN_DIR / "mg"
MG_COMMAND: list[str] = (
    [str(MG_SCRIPT)] if MG_SCRIPT.is_file() else [sys.executable, "-m", "migretti_core"]
)

# No server listens on port 1: reaching it would fail with exit 1, never 2.
UNREACHABLE_URL = "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2"

SHOW_CONFIG_PLUGIN = '''
"""Adds `mg show-config`: the selected profile's configuration as JSON on stdout."""

import json
from collections.abc import Mapping

import click

from migretti_core.cli import app_of


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def mg_register_commands(cli):
    @cli.command("show-config")
    @click.pass_context
    def show_config(ctx):
        config = app_of(ctx).config()
        data = {
            "path": config.path,
            "root": config.root,
            "env": config.env,
            "database": config.database,
            "settings": config.settings,
            "lock_id": config.lock_id,
            "lock_timeout": config.lock_timeout,
            "migrations_dir": config.migrations_dir,
            "seeds_dir": config.seeds_dir,
            "protected": config.protected,
            "plugins": config.plugins,
        }
        click.echo(json.dumps(_plain(data)))
'''


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``mg``: ours minus ``MG_*``, plus ``env``."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    result["PATH"] = str(BIN_DIR) + os.pathsep + result.get("PATH", "")
    result.setdefault("PYTHONIOENCODING", "utf-8")
    result.update(env or {})
    return result


def run_mg(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``mg ARGS`` in ``cwd`` and capture its output as text."""
    return subprocess.run(
        [*MG_COMMAND, *args],
        cwd=cwd,
        env=child_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_python(
    code: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter (for checks on ``sys.modules``)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented) as UTF-8 with LF line ends, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(textwrap.dedent(text).lstrip("\n").encode("utf-8"))
    return path


def write_show_config(directory: Path, name: str = "show_config") -> Path:
    """Put the ``show-config`` plugin in ``directory`` as ``<name>.py``."""
    return write(directory / f"{name}.py", SHOW_CONFIG_PLUGIN)


def show_config(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The configuration ``mg`` sees, via the ``show-config`` plugin loaded with ``-p``."""
    if not (cwd / "show_config.py").exists():
        write_show_config(cwd)
    result = run_mg(["-p", "show_config", "show-config", *args], cwd, env=env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mg: error:")]


def assert_clean_error(
    result: subprocess.CompletedProcess[str],
    *needles: str,
    code: int = 2,
    one_line: bool = True,
) -> str:
    """A failed run: exit ``code``, one ``mg: error:`` line, no traceback; returns stderr.

    With ``one_line``, nothing but an indented hint may follow the error line.
    """
    stderr = result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert len(error_lines(stderr)) == 1, stderr
    if one_line:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines[0].startswith("mg: error:"), stderr
        assert all(line.startswith("  hint:") for line in lines[1:]), stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
    return stderr
