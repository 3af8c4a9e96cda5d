"""Every commented example in the mg.yaml files ``mg init`` writes works once uncommented.

Each example is uncommented on its own, exactly as written, and mg is run with the result:
against the suite's server for ``mg init`` (reached through the template's own ``DB_*``
variables), against a fresh embedded server for ``mg init --embedded``. A profile pointing at
a host of example.com must get as far as trying to connect to that host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from migretti_core.testing import run_mg
from migretti_plugins.embedded.server import EmbeddedServer

# A commented line holding a YAML key (prose starts with a capital or has spaces before ":").
_EXAMPLE_LINE = re.compile(r"^(\s*)# (\s*[a-z_]+:(\s|$).*)$")


def examples(text: str) -> list[list[int]]:
    """Line numbers of each commented example: consecutive commented key lines."""
    blocks: list[list[int]] = []
    previous = -2
    for number, line in enumerate(text.splitlines()):
        if _EXAMPLE_LINE.match(line):
            if number == previous + 1:
                blocks[-1].append(number)
            else:
                blocks.append([number])
            previous = number
    return blocks


def uncommented(text: str, block: list[int]) -> str:
    lines = text.splitlines()
    for number in block:
        lines[number] = _EXAMPLE_LINE.sub(r"\1\2", lines[number])
    return "\n".join(lines) + "\n"


def profiles(text: str) -> list[str]:
    match = re.search(r"(?ms)^envs:\n(.*)", text)
    return re.findall(r"(?m)^  ([a-z]+):$", match.group(1)) if match else []


def template(directory: Path, *args: str) -> str:
    done = run_mg(["init", *args], directory)
    assert done.returncode == 0, done.stderr
    return (directory / "mg.yaml").read_text(encoding="utf-8")


def _first_lines(text: str) -> list[str]:
    lines = text.splitlines()
    return [lines[block[0]].strip() for block in examples(text)]


def test_the_examples_are_found(tmp_path: Path) -> None:
    (tmp_path / "embedded").mkdir()
    assert _first_lines(template(tmp_path)) == [
        "# sslmode: require",
        "# lock_timeout: 10m",
        "# hooks:",
        "# envs:",
    ]
    assert _first_lines(template(tmp_path / "embedded", "--embedded")) == [
        "# lock_timeout: 10m",
        "# hooks:",
        "# envs:",
    ]


def _check_example(
    root: Path, text: str, block: list[int], env: Mapping[str, str], number: int
) -> None:
    """Write the example's mg.yaml, apply one new migration, try every profile it defines."""
    config = uncommented(text, block)
    (root / "mg.yaml").write_text(config, encoding="utf-8")
    created = run_mg(["create", f"step {number}", "--up", f"CREATE TABLE t{number} ();"], root)
    assert created.returncode == 0, (config, created.stderr)
    applied = run_mg(["apply"], root, env=env)
    assert applied.returncode == 0, (config, applied.stderr)
    assert f"applied {created.stdout.strip().split('/')[-1].split('_')[0]}" in applied.stdout
    for name in profiles(config):
        done = run_mg(["--env", name, "status"], root, env={**env, "PGCONNECT_TIMEOUT": "3"})
        # Nothing listens there: mg got as far as connecting to the profile's host.
        assert done.returncode == 1, (config, done.stderr)
        assert "cannot connect to app@db.example.com" in done.stderr or (
            f"@{name}.example.com" in done.stderr
        ), done.stderr


def _template_env(db_conninfo: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The server template reads its connection from DB_* variables; pg_dump must match."""
    import os

    return {
        "DB_HOST": db_conninfo["host"],
        "DB_PORT": db_conninfo["port"],
        "DB_USER": db_conninfo["user"],
        "DB_NAME": db_conninfo["dbname"],
        "DB_PASSWORD": db_conninfo.get("password", ""),
        "PATH": f"{EmbeddedServer.bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def test_mg_init_examples_work_uncommented(tmp_path: Path, db_conninfo: dict[str, str]) -> None:
    text = template(tmp_path)
    blocks = examples(text)
    assert blocks
    env = _template_env(db_conninfo)
    for number, block in enumerate(blocks, start=1):
        _check_example(tmp_path, text, block, env, number)
    assert (tmp_path / "backup-before-apply.sql").is_file()


def test_mg_init_embedded_examples_work_uncommented(server_tmp_path: Path) -> None:
    text = template(server_tmp_path, "--embedded")
    blocks = examples(text)
    assert blocks
    # A system pg_dump of another major would refuse the server: the hook must get its own.
    env = {"PATH": "/usr/bin:/bin", "DB_PASSWORD": "not-used"}
    for number, block in enumerate(blocks, start=1):
        _check_example(server_tmp_path, text, block, env, number)
    assert "PostgreSQL database dump" in (server_tmp_path / "backup-before-apply.sql").read_text()
