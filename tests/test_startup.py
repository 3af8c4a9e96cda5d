"""Startup: the entry-point group is looked for without importlib_metadata when it can be.

Installed plugins themselves are covered by test_plugin_packages.py (real pip installs);
here the shortcut's answers are checked on distributions laid out the way pip leaves them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from migretti_core.entrypoints import may_have_entry_points
from migretti_core.testing import Project, mg_env


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter, with the environment ``mg`` gets."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=mg_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def dist_info(site: Path, name: str, entry_points: str | None, suffix: str = ".dist-info") -> None:
    info = site / f"{name}-1.0{suffix}"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def only_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [str(site)])
    return site


def test_no_distribution_declares_the_group(only_path: Path) -> None:
    dist_info(only_path, "tool", "[console_scripts]\ntool = tool:main\n")
    dist_info(only_path, "lib", None)
    dist_info(only_path, "old", "[pytest11]\nx = old\n", suffix=".egg-info")
    (only_path / "legacy.egg-info").write_text("Metadata-Version: 1.0\n")
    assert may_have_entry_points("migretti") is False


@pytest.mark.parametrize("suffix", [".dist-info", ".egg-info"])
def test_a_distribution_declaring_the_group_is_seen(only_path: Path, suffix: str) -> None:
    dist_info(only_path, "tool", "[console_scripts]\ntool = tool:main\n")
    dist_info(only_path, "mg-audit", "[migretti]\naudit = mg_audit\n", suffix=suffix)
    assert may_have_entry_points("migretti") is True
    assert may_have_entry_points("other") is False


def test_a_zip_on_the_path_is_left_to_importlib_metadata(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("p-1.0.dist-info/entry_points.txt", "[migretti]\np = p\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert may_have_entry_points("migretti") is True


def test_help_without_plugins_does_not_import_importlib_metadata(tmp_path: Path) -> None:
    code = """
        import sys
        from migretti_core.entrypoints import may_have_entry_points
        from migretti_core.cli import run
        code = run(["--help"])
        group = may_have_entry_points("migretti")
        print("RESULT", code, group, "importlib_metadata" in sys.modules)
    """
    result = run_python(code, tmp_path)
    last = result.stdout.strip().splitlines()[-1]
    # With a plugin installed in this environment the group must be read; without, not.
    assert last in ("RESULT 0 False False", "RESULT 0 True True"), result.stdout + result.stderr


def test_help_does_not_import_the_running_machinery(tmp_path: Path) -> None:
    """`mg --help` lists every command, plugins' included, without importing what runs them."""
    import subprocess

    code = (
        "import sys\n"
        "from migretti_core.cli import run\n"
        "code = run(['--help'])\n"
        "heavy = ['migretti_core.planning', 'migretti_core.running', 'migretti_core.views',"
        " 'migretti_core.state', 'psycopg', 'shutil', 'pathlib', 'urllib.parse']\n"
        "print('RESULT', code, [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert "RESULT 0 []" in result.stdout, result.stdout + result.stderr
    for command in ("apply", "status", "seed", "squash", "lint", "check", "baseline", "schema"):
        assert f"\n  {command} " in result.stdout, result.stdout


def test_status_imports_only_what_it_uses(tmp_path: Path, database_url: str) -> None:
    """`mg status` runs before every deploy: no subprocess, no did-you-mean machinery, no
    psycopg (libpq is called directly), no parser for lint, unless something needs them."""
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    assert project.mg("apply").returncode == 0
    code = """
        import sys
        from migretti_core.cli import run
        code = run(["status"])
        unused = ["subprocess", "difflib", "psycopg", "importlib_metadata", "sqlparse",
                  "pglast", "shutil", "tempfile", "getpass", "json"]
        print("RESULT", code, [m for m in unused if m in sys.modules])
    """
    result = run_python(code, project.root)
    assert "RESULT 0 []" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("columns", ["60", "200", "", "x"])
def test_help_is_as_wide_as_click_would_make_it(columns: str) -> None:
    """The help width mg computes (to spare click importing shutil) is the one click picks."""
    from click import formatting

    from migretti_core.cli import HELP_MAX_WIDTH, help_width

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", columns)
        expected = formatting.HelpFormatter(max_width=HELP_MAX_WIDTH).width
        assert help_width(HELP_MAX_WIDTH) == expected


def test_builtins_pass_the_hook_checks() -> None:
    """Third-party plugins are checked when they load; the builtins here, once (see plugins.py)."""
    import importlib

    from migretti_core.plugins import BUILTINS, PluginLoader

    warned: list[str] = []
    loader = PluginLoader(warn=warned.append)
    for name, module_name, _keys in BUILTINS:
        assert loader._check_hooks(importlib.import_module(module_name), name) is None, name
    assert warned == []


_CTRL_C_WHILE_IMPORTING = """
import sys

class CtrlC:
    # Ctrl-C arriving while Python imports the command line: click's import raises it.
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["mg", *{args!r}]
from migretti_core.console import main
main()
"""


@pytest.mark.parametrize("json_log", [False, True])
def test_ctrl_c_while_importing_ends_as_any_ctrl_c(tmp_path: Path, json_log: bool) -> None:
    args = ["--json-log", "status"] if json_log else ["status"]
    result = run_python(_CTRL_C_WHILE_IMPORTING.format(args=args), tmp_path)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    if json_log:
        record = json.loads(result.stderr)
        assert (record["level"], record["message"], record["exit_code"]) == (
            "error",
            "interrupted",
            130,
        )
    else:
        assert result.stderr == "mg: interrupted\n"
    assert result.stdout == ""


def test_usage_names_the_command_it_was_run_as(tmp_path: Path) -> None:
    scripts = Path(sys.executable).parent
    for name in ("mg", "migretti"):
        result = subprocess.run(
            [str(scripts / name), "--help"],
            cwd=tmp_path,
            env=mg_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0
        assert result.stdout.startswith(f"Usage: {name} [OPTIONS] COMMAND")
