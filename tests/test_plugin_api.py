"""What a plugin author relies on: sections, types, calling policies, errors and output.

Each test is named after the promise it keeps; the numbered bugs of the plugin API each have
one here (blocked plugins' sections, plugin exceptions, result types, wrappers, gates, stdout
during machine-readable output, hook marking, settings types, argument names, ...).
"""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from migretti_core import hookimpl
from migretti_core.testing import make_config, make_hooks, make_session, run_cli


def project(directory: Path, yaml: str, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "migrations").mkdir(exist_ok=True)
    (directory / "mg.yaml").write_text(textwrap.dedent(yaml), encoding="utf-8")
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


NOTIFY_PLUGIN = """
    from migretti_core import hookimpl

    @hookimpl
    def mg_config_sections():
        return ["notify"]
"""


# --- 1: a blocked or failed plugin's section --------------------------------------------


@pytest.mark.parametrize(
    "how", [["-p", "no:notify"], ["--env-block"]], ids=["-p no:NAME", "MG_DISABLE_PLUGINS"]
)
def test_a_blocked_plugins_section_is_ignored_with_one_warning(
    tmp_path: Path, how: list[str]
) -> None:
    root = project(
        tmp_path,
        "plugins: [notify.py]\nnotify:\n  url: https://chat\n",
        **{"notify.py": NOTIFY_PLUGIN},
    )
    env = {"MG_DISABLE_PLUGINS": "notify"} if how == ["--env-block"] else {}
    args = [] if how == ["--env-block"] else how
    result = run_cli([*args, "create", "first"], cwd=root, env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("section 'notify' is ignored") == 1
    assert "plugin 'notify' is blocked" in result.stderr


def test_a_plugin_that_failed_to_load_leaves_its_section_ignored(tmp_path: Path) -> None:
    root = project(tmp_path, "notify:\n  url: https://chat\n")
    broken = types.ModuleType("notify")

    def mg_after_aply() -> None: ...

    broken.mg_after_aply = mg_after_aply  # type: ignore[attr-defined]
    # An installed plugin that fails is a warning; its section must not stop the run.
    from migretti_core.plugins import ORIGIN_ENTRY_POINT, PluginInfo, PluginLoader

    loader = PluginLoader(warn=lambda text: None)
    loader._register(broken, PluginInfo("notify", ORIGIN_ENTRY_POINT, "notify"), fatal=False)
    assert loader.infos[-1].status == "failed"
    from migretti_core.app import App
    from migretti_core.argv import GlobalOptions

    app = App(GlobalOptions(), environ={}, cwd=root)
    app.loader.infos.append(loader.infos[-1])
    warnings: list[str] = []
    app.report = lambda name, level, message, **fields: warnings.append(message)  # type: ignore[method-assign]
    config = app.config()
    assert config.settings["notify"] == {"url": "https://chat"}
    assert warnings == ["mg.yaml: section 'notify' is ignored: plugin 'notify' failed to load"]


def test_other_unknown_keys_stay_errors_when_a_plugin_is_blocked(tmp_path: Path) -> None:
    root = project(tmp_path, "notify:\n  url: x\nnotfy:\n  url: y\n")
    result = run_cli(["-p", "no:notify", "create", "first"], cwd=root)
    assert result.exit_code == 2
    assert "unknown key 'notfy'" in result.stderr


# --- 9: typed plugin settings ---------------------------------------------------------------


SEEN: dict[str, Any] = {}


def test_a_plugin_reads_its_section_with_yaml_types_in_a_real_run(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        """
        database:
          password: 0123
        notify:
          enabled: false
          allow: [a, b]
          retries: 3
          timeout: 90s
        """,
    )
    plugin = types.ModuleType("typed_reader")

    @hookimpl
    def mg_config_sections() -> list[str]:
        return ["notify"]

    @hookimpl
    def mg_configure(config: Any) -> None:
        from migretti_core.settings import plugin_settings

        section = plugin_settings(config, "notify")
        SEEN["raw"] = dict(config.settings["notify"])
        SEEN["allow_is_list"] = isinstance(config.settings["notify"]["allow"], list)
        SEEN["timeout"] = section.duration("timeout")
        SEEN["password"] = config.database["password"]

    plugin.mg_config_sections = mg_config_sections  # type: ignore[attr-defined]
    plugin.mg_configure = mg_configure  # type: ignore[attr-defined]
    result = run_cli(["create", "first"], cwd=root, plugins=[plugin])
    assert result.exit_code == 0, result.stderr
    assert SEEN["raw"] == {"enabled": False, "allow": ["a", "b"], "retries": 3, "timeout": "90s"}
    assert SEEN["allow_is_list"] is True
    assert SEEN["timeout"] == 90.0
    assert SEEN["password"] == "0123"


def test_testing_builds_configs_as_a_real_run_does(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        {"notify": {"enabled": False, "allow": ["a"]}, "lock_id": 7},
        database={"host": "db", "password": "s3cret-pw"},
    )
    assert config.settings["notify"] == {"enabled": False, "allow": ["a"]}
    assert isinstance(config.settings["notify"]["allow"], list)
    with pytest.raises(TypeError):
        config.settings["notify"]["allow"].append("b")
    assert config.lock_id == 7
    assert config.settings["lock_id"] == "7"
    hooks = make_hooks(builtins=["output"])
    session = make_session(hooks, config)
    assert session.hooks.redact("login with s3cret-pw failed") == "login with **** failed"
    assert json.dumps(config.settings["notify"]) == '{"enabled": false, "allow": ["a"]}'
