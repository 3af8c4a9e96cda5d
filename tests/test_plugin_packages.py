"""Installed plugin packages (entry point group ``migretti``), installed with pip.

The packages go into a virtualenv created for this module, so their entry points never
appear in other tests. It sees the test environment's packages (migretti and its
dependencies) through a ``.pth`` file; pip installs with ``--no-deps``. Installed there:

- examples/mg-audit (``audit``): the command ``mg audit`` and an ``mg_after_migration`` hook;
- a package whose import raises (``broken``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sysconfig
import textwrap
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migretti_core.testing import assert_clean_error, make_project, run_mg, write_migration

REPO = Path(__file__).resolve().parents[1]
AUDIT_EXAMPLE = REPO / "examples" / "mg-audit"


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path

    def mg(
        self, cwd: Path, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
        child_env.pop("PYTHONPATH", None)
        child_env.update(env or {})
        return subprocess.run(
            [str(self.python), "-m", "migretti_core", *args],
            cwd=cwd,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def write_broken_package(directory: Path) -> Path:
    package = directory / "broken-mg-plugin"
    (package / "broken_mg_plugin").mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "broken-mg-plugin"
            version = "9.9.9"

            [project.entry-points.migretti]
            broken = "broken_mg_plugin"

            [tool.setuptools]
            packages = ["broken_mg_plugin"]
            """
        )
    )
    (package / "broken_mg_plugin" / "__init__.py").write_text(
        'raise RuntimeError("this plugin cannot start: missing licence key")\n'
    )
    return package


def can_build_without_isolation() -> bool:
    """setuptools can build wheels offline when it has bdist_wheel (>= 70.1, or wheel)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    from importlib.metadata import version

    major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    work = tmp_path_factory.mktemp("plugin-venv")
    root = work / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    paths = {"base": str(root), "platbase": str(root)}
    site_packages = Path(sysconfig.get_path("purelib", vars=paths))
    outer = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), str(REPO)]
    lines = [f"import site; site.addsitedir({path!r})" for path in dict.fromkeys(outer)]
    (site_packages / "_outer_environment.pth").write_text("\n".join(lines) + "\n")
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    sources = work / "src"
    audit = shutil.copytree(AUDIT_EXAMPLE, sources / "mg-audit")
    broken = write_broken_package(sources)
    isolation = ["--no-build-isolation"] if can_build_without_isolation() else []
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-input", "-q", *isolation]
    installed = subprocess.run(
        [*pip, str(audit), str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if installed.returncode != 0:
        pytest.fail(f"pip could not install the plugin packages:\n{installed.stderr}")
    return Venv(root, python)


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


# --- the example package -------------------------------------------------------------------


def test_installed_package_is_listed_with_its_version(plugin_venv: Venv, tmp_path: Path) -> None:
    plugins = listed(plugin_venv.mg(tmp_path, "plugins", "--format", "json"))

    audit = plugins["audit"]
    assert audit["origin"] == "entry point"
    assert audit["version"] == "0.2.0"
    assert audit["status"] == "loaded"
    assert audit["source"] == "mg_audit.plugin"
    assert {"mg_register_commands", "mg_after_migration", "mg_config_sections"} <= set(
        audit["hooks"]
    )


def test_installed_package_adds_its_command(plugin_venv: Venv, tmp_path: Path) -> None:
    result = plugin_venv.mg(tmp_path, "--help")

    assert result.returncode == 0, result.stderr
    assert "audit" in result.stdout
    assert "Show the latest entries of the migration log" in result.stdout


def test_audit_command_prints_the_last_log_rows(
    plugin_venv: Venv, tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    write_migration(tmp_path, "0002", "posts", "CREATE TABLE posts (id int);", "DROP TABLE posts;")

    empty = plugin_venv.mg(tmp_path, "audit")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "no migration log yet"

    assert plugin_venv.mg(tmp_path, "apply").returncode == 0
    assert plugin_venv.mg(tmp_path, "down").returncode == 0

    text = plugin_venv.mg(tmp_path, "audit", "-n", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert "DOWN" in lines[0] and "0002" in lines[0]
    assert "UP" in lines[1] and "0002" in lines[1]

    rows = json.loads(plugin_venv.mg(tmp_path, "audit", "--format", "json").stdout)
    assert [(r["action"], r["migration_id"]) for r in rows] == [
        ("DOWN", "0002"),
        ("UP", "0002"),
        ("UP", "0001"),
    ]


def test_audit_lifecycle_hook_appends_to_its_file(
    plugin_venv: Venv, tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url, settings={"audit": {"file": "logs/audit.jsonl"}})
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")

    assert plugin_venv.mg(tmp_path, "apply").returncode == 0
    assert plugin_venv.mg(tmp_path, "rollback").returncode == 0

    records = [
        json.loads(line) for line in (tmp_path / "logs/audit.jsonl").read_text().splitlines()
    ]
    assert [(r["direction"], r["migration_id"], r["command"]) for r in records] == [
        ("up", "0001", "apply"),
        ("down", "0001", "rollback"),
    ]


def test_audit_section_typo_fails_before_anything_runs(
    plugin_venv: Venv, tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url, settings={"audit": {"fil": "logs/audit.jsonl"}})
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")

    result = plugin_venv.mg(tmp_path, "apply", env={"MG_DISABLE_PLUGINS": "broken"})
    assert_clean_error(result, "audit.fil", "did you mean 'file'?", code=2)
    assert not (tmp_path / "logs").exists()


def test_p_no_blocks_the_installed_package(plugin_venv: Venv, tmp_path: Path) -> None:
    plugins = listed(plugin_venv.mg(tmp_path, "-p", "no:audit", "plugins", "--format", "json"))
    assert plugins["audit"]["status"] == "blocked"
    assert plugins["audit"]["hooks"] == []

    result = plugin_venv.mg(tmp_path, "audit", "-p", "no:audit")
    assert result.returncode == 2
    assert "No such command 'audit': plugin 'audit' is blocked (-p no:audit)" in result.stderr


def test_mg_disable_plugins_blocks_the_installed_package(plugin_venv: Venv, tmp_path: Path) -> None:
    env = {"MG_DISABLE_PLUGINS": "audit"}
    plugins = listed(plugin_venv.mg(tmp_path, "plugins", "--format", "json", env=env))
    assert plugins["audit"]["status"] == "blocked"

    help_text = plugin_venv.mg(tmp_path, "--help", env=env)
    assert help_text.returncode == 0
    assert "audit" not in help_text.stdout


# --- a package whose import raises -----------------------------------------------------------


def test_broken_package_is_listed_as_failed(plugin_venv: Venv, tmp_path: Path) -> None:
    result = plugin_venv.mg(tmp_path, "plugins", "--format", "json")
    plugins = listed(result)

    broken = plugins["broken"]
    assert broken["status"] == "failed"
    assert broken["origin"] == "entry point"
    assert broken["version"] == "9.9.9"
    assert "RuntimeError: this plugin cannot start: missing licence key" in broken["error"]
    assert plugins["audit"]["status"] == "loaded"
    assert "plugin 'broken'" in result.stderr
    assert "-p no:broken" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["plugins"], ["create", "first"], ["audit", "--help"]],
)
def test_every_command_keeps_working_with_a_broken_package(
    plugin_venv: Venv, tmp_path: Path, args: list[str]
) -> None:
    make_project(tmp_path)

    result = plugin_venv.mg(tmp_path, *args)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mg: warning:")]
    assert len(warnings) == 1
    assert "plugin 'broken' (entry point: broken_mg_plugin) failed to load" in warnings[0]


def test_broken_package_with_a_database_command(
    plugin_venv: Venv, tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = plugin_venv.mg(tmp_path, "apply")

    assert result.returncode == 0, result.stderr
    assert "applied 0001 users" in result.stdout
    assert "plugin 'broken'" in result.stderr


def test_blocking_the_broken_package_silences_it(plugin_venv: Venv, tmp_path: Path) -> None:
    result = plugin_venv.mg(tmp_path, "--help", env={"MG_DISABLE_PLUGINS": "broken"})

    assert result.returncode == 0
    assert result.stderr == ""


STRICT = {"MG_STRICT_PLUGINS": "1"}
BROKEN = "plugin 'broken' (entry point: broken_mg_plugin) failed to load"


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["plugins"], ["plugins", "--format", "json"]])
def test_strict_mode_still_shows_help_and_plugins_naming_the_broken_package(
    plugin_venv: Venv, tmp_path: Path, args: list[str]
) -> None:
    make_project(tmp_path)

    result = plugin_venv.mg(tmp_path, *args, env=STRICT)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("mg: ")]
    assert warning.startswith(f"mg: warning: {BROKEN}: RuntimeError: this plugin cannot start")
    assert "MG_STRICT_PLUGINS is set: every other command stops" in warning
    if args[:1] == ["plugins"]:
        if "json" in args:
            plugins = {p["name"]: p for p in json.loads(result.stdout)}
            assert plugins["broken"]["status"] == "failed"
            assert plugins["audit"]["status"] == "loaded"
        else:
            [line] = [line for line in result.stdout.splitlines() if line.startswith("broken ")]
            assert "failed" in line
    else:
        assert "Commands:" in result.stdout


def test_strict_mode_json_log_of_mg_plugins_is_json_lines(
    plugin_venv: Venv, tmp_path: Path
) -> None:
    result = plugin_venv.mg(tmp_path, "--json-log", "plugins", env=STRICT)

    assert result.returncode == 0, result.stderr
    [event] = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "plugin.failed" and event["plugin"] == "broken"


@pytest.mark.parametrize(
    "args", [["create", "first"], ["init"], ["status"], ["apply", "--help"], ["audit", "--help"]]
)
def test_strict_mode_makes_a_broken_package_fatal_for_every_other_command(
    plugin_venv: Venv, tmp_path: Path, args: list[str]
) -> None:
    if args != ["init"]:
        make_project(tmp_path)

    result = plugin_venv.mg(tmp_path, *args, env=STRICT)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"mg: error: {BROKEN}"), result.stderr
    assert "missing licence key" in result.stderr and "MG_STRICT_PLUGINS is set" not in (
        result.stderr
    )
    assert result.stdout == ""
    assert not (tmp_path / "migrations").is_dir() or not list((tmp_path / "migrations").iterdir())


def test_strict_mode_makes_a_broken_package_fatal_for_the_python_api(
    plugin_venv: Venv, tmp_path: Path
) -> None:
    make_project(tmp_path)
    code = (
        "from migretti_core import Migretti, PluginError\n"
        "try:\n    Migretti(config='mg.yaml')\n"
        "except PluginError as exc:\n    print(exc.exit_code, exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")} | STRICT
    done = subprocess.run(
        [str(plugin_venv.python), "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith(f"2 {BROKEN}"), done.stdout + done.stderr
    assert "MG_STRICT_PLUGINS is set" not in done.stdout + done.stderr


def test_strict_mode_accepts_good_packages(plugin_venv: Venv, tmp_path: Path) -> None:
    env = {"MG_STRICT_PLUGINS": "1", "MG_DISABLE_PLUGINS": "broken"}
    plugins = listed(plugin_venv.mg(tmp_path, "plugins", "--format", "json", env=env))

    assert plugins["audit"]["status"] == "loaded"


def test_the_outer_environment_does_not_see_the_packages() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="migretti")}
    assert not {"audit", "broken"} & names


CHATTY_PLUGIN = """
from migretti_core.api import hookimpl


@hookimpl
def mg_configure(config):
    print("chatty: configured")
"""


def test_audit_json_stays_json_while_another_plugin_prints(
    tmp_path: Path, database_url: str
) -> None:
    # mg audit renders through the shared --format: another plugin's print() during the
    # command goes to stderr, and `mg audit --format json` stays one JSON document
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    (tmp_path / "chatty.py").write_text(CHATTY_PLUGIN, encoding="utf-8")
    env = {"PYTHONPATH": str(AUDIT_EXAMPLE / "src")}
    args = ["-p", "mg_audit.plugin", "-p", "chatty", "audit"]

    empty = run_mg([*args, "--format", "json"], tmp_path, env)
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == []
    assert run_mg(["apply"], tmp_path).returncode == 0
    result = run_mg([*args, "--format", "json"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert [(r["action"], r["migration_id"]) for r in json.loads(result.stdout)] == [("UP", "0001")]
    assert "chatty: configured" in result.stderr
    text = run_mg(args, tmp_path, env)
    assert text.returncode == 0, text.stderr
    assert "UP    0001  users" in text.stdout
    assert "--format [text|json]" in run_mg([*args, "--help"], tmp_path, env).stdout
