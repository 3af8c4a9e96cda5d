"""In-house plugins through the ``mg`` command: loading, listing, blocking, failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from migretti_core.testing import assert_clean_error, run_mg, write_text

if TYPE_CHECKING:
    from conftest import ShowConfig

# No server listens on port 1: reaching it fails with exit 1, never 2.
UNREACHABLE_URL = "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2"

HELLO_PLUGIN = '''
"""Adds `mg hello`."""

import click

__version__ = "{version}"


def mg_register_commands(cli):
    @cli.command("{command}")
    def hello():
        click.echo("{greeting}")
'''

BROKEN_PLUGIN = """
raise RuntimeError("kaboom at import")
"""

MISSPELLED_PLUGIN = """
from migretti_core import hookimpl


@hookimpl
def mg_after_aply(session, plan, results):
    pass
"""

UNMARKED_NEAR_MISS_PLUGIN = """
from migretti_core.reporting import report as mg_report_event


def mg_after_aply(session, plan, results):
    pass


def mg_url(config):
    return "postgresql://"
"""


def hello_plugin(directory: Path, name: str, command: str, greeting: str) -> Path:
    text = HELLO_PLUGIN.format(version="2.5.0", command=command, greeting=greeting)
    return write_text(directory / f"{name}.py", text)


def plugin_list(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_mg(["plugins", "--format", "json", *args], cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_builtins_are_listed(tmp_path: Path) -> None:
    plugins = plugin_list(tmp_path)
    for name in ("config", "files", "split", "postgres", "output", "jsonlog"):
        assert plugins[name]["origin"] == "builtin"
        assert plugins[name]["status"] == "loaded"
    assert "mg_load_config" in plugins["config"]["hooks"]
    assert "mg_parse_migration" in plugins["files"]["hooks"]


def test_config_and_option_plugins_are_loaded_and_listed(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "plugins:\n  - tools/from_config.py\n")
    hello_plugin(tmp_path / "tools", "from_config", "hello-config", "hi from config")
    hello_plugin(tmp_path, "from_option", "hello-option", "hi from option")

    plugins = plugin_list(tmp_path, "-p", "from_option")
    assert plugins["from_config"]["origin"] == "config"
    assert plugins["from_option"]["origin"] == "command line"
    for name in ("from_config", "from_option"):
        assert plugins[name]["status"] == "loaded"
        assert plugins[name]["version"] == "2.5.0"
        assert plugins[name]["hooks"] == ["mg_register_commands"]

    text = run_mg(["plugins", "-p", "from_option"], tmp_path)
    assert text.returncode == 0, text.stderr
    assert "from_config" in text.stdout and "from_option" in text.stdout

    for command, greeting in (
        ("hello-config", "hi from config"),
        ("hello-option", "hi from option"),
    ):
        result = run_mg(["-p", "from_option", command], tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == greeting

    helped = run_mg(["--help", "-p", "from_option"], tmp_path)
    assert "hello-config" in helped.stdout and "hello-option" in helped.stdout


def test_config_plugin_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    write_text(tmp_path / "conf" / "mg.yaml", "plugins: [local.py]\n")
    hello_plugin(tmp_path / "conf", "local", "hello-local", "local")
    result = run_mg(["--config", "conf/mg.yaml", "hello-local"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "local"


SPLIT_PLUGIN = """
import click

from deploy_words import GREETING


def mg_register_commands(cli):
    @cli.command("hello-split")
    def hello():
        from deploy_words import FAREWELL  # a helper imported when the hook runs, too

        click.echo(GREETING + " " + FAREWELL)
"""


@pytest.mark.parametrize("where", [".", "tools"])
@pytest.mark.parametrize("given", ["config", "option"])
def test_a_py_plugin_imports_the_modules_beside_it(tmp_path: Path, where: str, given: str) -> None:
    # an in-house plugin split in two files: the .py file given by path imports its helper
    # beside it, as it does when given by module name (or run as a script)
    folder = tmp_path / where
    write_text(folder / "split_plug.py", SPLIT_PLUGIN)
    write_text(folder / "deploy_words.py", "GREETING = 'hello'\nFAREWELL = 'bye'\n")
    path = "split_plug.py" if where == "." else f"{where}/split_plug.py"
    plugins = f"plugins: [{path}]\n" if given == "config" else ""
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\n{plugins}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if given == "config":
        result = run_mg(["--config", "../mg.yaml", "hello-split"], elsewhere)
    else:
        result = run_mg(["-p", f"../{path}", "--config", "../mg.yaml", "hello-split"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello bye"
    # a file there named like a module of Python's never takes its place
    write_text(folder / "email.py", "raise RuntimeError('the tools folder shadowed email')\n")
    write_text(
        folder / "deploy_words.py", "import email.message\nGREETING = 'hi'\nFAREWELL = 'ok'\n"
    )
    args = ["-p", f"../{path}"] if given == "option" else []
    result = run_mg([*args, "--config", "../mg.yaml", "hello-split"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hi ok"


def test_config_plugin_by_module_name(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "plugins: [modplug]\n")
    hello_plugin(tmp_path, "modplug", "hello-mod", "mod")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_mg(["--config", "../mg.yaml", "hello-mod"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mod"


@pytest.mark.parametrize("given", ["config", "option"])
def test_a_plugin_named_like_a_loaded_module_is_the_file_beside_mg_yaml(
    tmp_path: Path, given: str
) -> None:
    # `typing` is imported before plugins load; the module beside mg.yaml must still win.
    hello_plugin(tmp_path, "typing", "hello", "hi from the file")
    plugins = ["typing"] if given == "config" else []
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\nplugins: {plugins}\n")
    args = ["-p", "typing"] if given == "option" else []

    listed = plugin_list(tmp_path, *args)["typing"]
    assert (listed["status"], listed["version"]) == ("loaded", "2.5.0"), listed
    assert listed["hooks"] == ["mg_register_commands"]
    result = run_mg([*args, "hello"], tmp_path)
    assert result.stdout == "hi from the file\n", result.stderr


def test_mg_plugins_variable_loads_plugins(tmp_path: Path) -> None:
    hello_plugin(tmp_path, "envplug", "hello-env", "from env")
    hello_plugin(tmp_path, "envplug2", "hello-env2", "from env 2")
    env = {"MG_PLUGINS": "envplug, envplug2"}
    plugins = plugin_list(tmp_path, env=env)
    assert plugins["envplug"]["status"] == plugins["envplug2"]["status"] == "loaded"
    result = run_mg(["hello-env2"], tmp_path, env=env)
    assert result.stdout.strip() == "from env 2"


def test_plugin_given_twice_is_loaded_once(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "plugins: [twice]\n")
    hello_plugin(tmp_path, "twice", "hello-twice", "once")
    result = run_mg(["plugins", "--format", "json", "-p", "twice"], tmp_path)
    assert result.returncode == 0, result.stderr
    names = [p["name"] for p in json.loads(result.stdout)]
    assert names.count("twice") == 1


def test_the_same_file_by_module_name_and_by_path_is_loaded_once(tmp_path: Path) -> None:
    hello_plugin(tmp_path, "twice", "hello-twice", "once")
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\nplugins: [twice.py]\n")
    plugins = plugin_list(tmp_path, env={"MG_PLUGINS": "twice"})
    assert plugins["twice"]["status"] == "loaded"
    assert run_mg(["hello-twice"], tmp_path, env={"MG_PLUGINS": "twice"}).stdout == "once\n"


@pytest.mark.parametrize(
    ("files", "taken_by"),
    [
        (["check.py"], "the builtin plugin 'check'"),
        (["notify.py", "tools/notify.py"], "the plugin from notify.py"),
    ],
)
def test_a_plugin_whose_name_is_taken_is_an_error_not_ignored(
    tmp_path: Path, files: list[str], taken_by: str
) -> None:
    for file in files:
        hello_plugin(tmp_path / Path(file).parent, Path(file).stem, "hi", file)
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\nplugins: {files}\n")
    name = Path(files[-1]).stem

    listed = [p for p in json.loads(run_mg(["plugins", "--format", "json"], tmp_path).stdout)]
    failed = [p for p in listed if p["status"] == "failed"]
    assert [p["name"] for p in failed] == [name], listed
    assert failed[0]["source"] == str(tmp_path / files[-1])
    assert f"the name {name!r} is taken by {taken_by}" in failed[0]["error"]

    result = run_mg(["status"], tmp_path)
    stderr = assert_clean_error(
        result, f"plugin {name!r} (config: ", "failed to load", "rename the file"
    )
    assert "-p no:" not in stderr  # that would block the other plugin of that name too


def test_a_taken_name_says_which_file_holds_it(tmp_path: Path) -> None:
    # two files of one name: the message names the one that holds it, not its file name alone
    hello_plugin(tmp_path, "notify", "hi", "beside mg.yaml")
    hello_plugin(tmp_path / "other", "notify", "hi", "other")
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\nplugins: [notify.py]\n")
    result = run_mg(["-p", "other/notify.py", "plugins", "--format", "json"], tmp_path)
    [failed] = [p for p in json.loads(result.stdout) if p["status"] == "failed"]
    assert failed["source"] == str(tmp_path / "notify.py")
    assert "the name 'notify' is taken by the plugin from other/notify.py" in failed["error"]


def test_option_plugin_can_be_given_after_the_command(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    show_config.install(tmp_path)
    write_text(tmp_path / "mg.yaml", "lock_id: 5\n")
    result = run_mg(["show-config", "-p", "show_config"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["lock_id"] == 5


# --- blocking -------------------------------------------------------------------------------


def test_block_a_builtin_with_p_no(tmp_path: Path) -> None:
    plugins = plugin_list(tmp_path, "-p", "no:shellhooks")
    assert plugins["shellhooks"]["status"] == "blocked"
    assert plugins["shellhooks"]["hooks"] == []
    assert plugins["files"]["status"] == "loaded"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-p", "no:tools/notify.py"], {}),
        (["-p", "no:notify.py"], {}),
        ([], {"MG_DISABLE_PLUGINS": "tools/notify.py"}),
    ],
)
def test_a_plugin_is_blocked_by_the_path_that_loads_it(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    # mg.yaml names it tools/notify.py; blocking it the same way works like -p no:notify.
    hello_plugin(tmp_path / "tools", "notify", "hello", "hi")
    write_text(tmp_path / "mg.yaml", "plugins: [tools/notify.py]\n")
    assert plugin_list(tmp_path, *args, env=env)["notify"]["status"] == "blocked"
    assert "No such command 'hello'" in run_mg([*args, "hello"], tmp_path, env=env).stderr


def test_mg_plugins_blocks_with_no_as_p_does(tmp_path: Path) -> None:
    # MG_PLUGINS is -p in the environment: no:NAME blocks, it is no module named "no:lint"
    env = {"MG_PLUGINS": "no:squash"}
    assert plugin_list(tmp_path, env=env)["squash"]["status"] == "blocked"
    done = run_mg(["squash", "x"], tmp_path, env=env)
    assert done.returncode == 2
    assert "plugin 'squash' is blocked (MG_PLUGINS=no:squash)" in done.stderr
    # mg.yaml lists plugins to load: no:NAME there is refused, saying how to block one
    write_text(tmp_path / "mg.yaml", "database:\n  host: h.invalid\nplugins: ['no:lint']\n")
    done = run_mg(["status"], tmp_path)
    assert_clean_error(done, "mg.yaml: plugins[0]: 'no:lint' would block a plugin")
    assert "hint: block it with -p no:lint or MG_DISABLE_PLUGINS=lint" in done.stderr
    assert "ModuleNotFoundError" not in done.stderr


def test_p_no_with_a_name_no_plugin_has_says_it_blocks_nothing(tmp_path: Path) -> None:
    # A typo must not leave the plugin running without a word.
    result = run_mg(["-p", "no:shelhooks", "plugins"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "mg: warning: -p no:shelhooks blocks nothing: no plugin is named 'shelhooks' "
        "(did you mean shellhooks?)\n"
    )
    assert plugin_list(tmp_path, "-p", "no:shelhooks")["shellhooks"]["status"] == "loaded"
    # a plugin that exists, from mg.yaml too, is blocked without a warning
    hello_plugin(tmp_path / "tools", "notify", "hello", "hi")
    write_text(tmp_path / "mg.yaml", "plugins: [tools/notify.py]\n")
    for spec in ("no:notify", "no:tools/notify.py", "no:shellhooks"):
        assert "blocks nothing" not in run_mg(["-p", spec, "plugins"], tmp_path).stderr
    # MG_DISABLE_PLUGINS may be set once for projects that do not all have the plugin
    quiet = run_mg(["plugins"], tmp_path, env={"MG_DISABLE_PLUGINS": "slack"})
    assert quiet.returncode == 0 and "blocks nothing" not in quiet.stderr


@pytest.mark.parametrize("blocked", [["no:output"], ["no:output", "no:lint"]])
def test_plugins_lists_them_with_the_output_plugin_blocked(
    tmp_path: Path, blocked: list[str]
) -> None:
    # mg plugins is where a blocked or replaced builtin is checked: it works without output
    options = [arg for spec in blocked for arg in ("-p", spec)]
    result = run_mg([*options, "plugins"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ORIGIN", "VERSION", "HOOKS", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["output"][1] == "builtin" and rows["output"][-1] == "blocked"
    assert rows["config"][1] == "builtin" and rows["config"][-1] == "loaded"
    assert "mg_load_config" in rows["config"]
    plugins = plugin_list(tmp_path, *options)
    assert plugins["output"]["status"] == "blocked"
    assert plugins["jsonlog"]["status"] == "loaded"


def test_a_blocked_plugins_command_says_the_plugin_is_blocked(tmp_path: Path) -> None:
    hello_plugin(tmp_path, "hello", "hello", "hi")
    assert run_mg(["-p", "hello", "hello"], tmp_path).stdout == "hi\n"

    result = run_mg(["-p", "hello", "-p", "no:hello", "hello"], tmp_path)
    assert result.returncode == 2
    assert "No such command 'hello': plugin 'hello' is blocked (-p no:hello)" in result.stderr

    env = {"MG_DISABLE_PLUGINS": "hello"}
    result = run_mg(["-p", "hello", "hello"], tmp_path, env=env)
    assert "plugin 'hello' is blocked (MG_DISABLE_PLUGINS)" in result.stderr

    write_text(tmp_path / "hello.py", BROKEN_PLUGIN)
    result = run_mg(["-p", "hello", "hello"], tmp_path)
    assert result.returncode == 2
    assert "No such command 'hello': plugin 'hello' failed to load" in result.stderr
    assert "kaboom at import" in result.stderr and "Traceback" not in result.stderr

    # A command no plugin is named after stays click's plain usage error.
    assert "No such command 'nosuch'." in run_mg(["-p", "no:hello", "nosuch"], tmp_path).stderr


@pytest.mark.parametrize(
    ("plugins", "reason"),
    [
        ("[tools/greet.py]", "plugin 'greet' (config: "),
        ("[no:greet]", "'no:greet' would block a plugin"),
        ("[tools/greet.py]\ndatabase: [1", "mg.yaml"),
    ],
)
def test_a_command_of_a_plugin_that_did_not_load_says_why(
    tmp_path: Path, plugins: str, reason: str
) -> None:
    # `mg hello` comes from tools/greet.py, which mg.yaml names: when the plugin breaks, or
    # mg.yaml cannot be read, the command is missing for that reason, not for a typo.
    write_text(tmp_path / "tools" / "greet.py", BROKEN_PLUGIN)
    write_text(tmp_path / "mg.yaml", f"plugins: {plugins}\n")
    result = run_mg(["hello"], tmp_path)
    assert result.returncode == 2
    assert "No such command 'hello': " in result.stderr
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_path_ending_in_a_slash_is_named_after_its_folder(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    result = run_mg(["-p", "tools/", "status"], tmp_path)
    assert_clean_error(result, "plugin 'tools' (command line: tools/)", "-p no:tools")
    assert plugin_list(tmp_path, "-p", "tools/", "-p", "no:tools/")["tools"]["status"] == (
        "blocked"
    )


def test_block_with_mg_disable_plugins(tmp_path: Path) -> None:
    hello_plugin(tmp_path, "noisy", "hello-noisy", "noise")
    write_text(tmp_path / "mg.yaml", "plugins: [noisy]\n")
    env = {"MG_DISABLE_PLUGINS": "noisy,protect"}
    plugins = plugin_list(tmp_path, env=env)
    assert plugins["noisy"]["status"] == "blocked"
    assert plugins["protect"]["status"] == "blocked"
    result = run_mg(["hello-noisy"], tmp_path, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_blocking_the_builtin_config_is_reported_clearly(
    show_config: ShowConfig, tmp_path: Path
) -> None:
    show_config.install(tmp_path)
    result = run_mg(["-p", "no:config", "-p", "show_config", "show-config"], tmp_path)
    assert_clean_error(result, "configuration")


# --- broken plugins -------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    write_text(tmp_path / "broken_plug.py", BROKEN_PLUGIN)
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\n")
    return tmp_path


def test_help_works_with_a_broken_option_plugin(broken: Path) -> None:
    result = run_mg(["-p", "broken_plug", "--help"], broken)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "status" in result.stdout


def test_plugins_lists_a_broken_plugin_as_failed(broken: Path) -> None:
    result = run_mg(["plugins", "--format", "json", "-p", "broken_plug"], broken)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["broken_plug"]["status"] == "failed"
    assert "kaboom at import" in plugins["broken_plug"]["error"]
    assert plugins["postgres"]["status"] == "loaded"

    text = run_mg(["plugins", "-p", "broken_plug"], broken)
    assert text.returncode == 0, text.stderr
    assert "broken_plug" in text.stdout and "failed" in text.stdout


@pytest.mark.parametrize(
    ("written", "shown"), [("(1, 2)", "1.2"), ("3", "3"), ("'2.0.1'", "2.0.1"), ("None", None)]
)
def test_plugins_lists_a_version_that_is_not_text(
    tmp_path: Path, written: str, shown: str | None
) -> None:
    # __version__ = (1, 2) or 3: mg plugins still lists every plugin, the version as text
    write_text(
        tmp_path / "odd.py", f"__version__ = {written}\n\ndef mg_after_apply(session):\n    pass\n"
    )
    for blocked in ([], ["-p", "no:output"]):
        result = run_mg(["-p", "odd", *blocked, "plugins"], tmp_path)
        assert result.returncode == 0, result.stderr
        [row] = [line.split() for line in result.stdout.splitlines() if line.startswith("odd ")]
        assert row[3:5] == ([shown, "mg_after_apply"] if shown else ["mg_after_apply", "loaded"])
    assert plugin_list(tmp_path, "-p", "odd")["odd"]["version"] == shown


def test_plugins_masks_a_password_in_a_load_error(tmp_path: Path) -> None:
    write_text(
        tmp_path / "leaky.py",
        """
        raise RuntimeError("cannot reach postgresql://deploy:Hunter2secret@db.internal/app")
        """,
    )
    for args in (["plugins"], ["plugins", "--format", "json"]):
        result = run_mg([*args, "-p", "leaky"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Hunter2secret" not in result.stdout + result.stderr
        assert "postgresql://deploy:****@db.internal/app" in result.stdout


@pytest.mark.parametrize("command", [["status"], ["apply"], ["create", "x"]])
def test_command_needing_config_names_the_broken_plugin(broken: Path, command: list[str]) -> None:
    result = run_mg(["-p", "broken_plug", *command], broken)
    stderr = assert_clean_error(result, "broken_plug", "kaboom at import")
    assert "no:broken_plug" in stderr  # tells how to disable it
    assert not (broken / "migrations").exists()


def test_broken_plugin_file_in_config(tmp_path: Path) -> None:
    write_text(tmp_path / "bad.py", BROKEN_PLUGIN)
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\nplugins: [bad.py]\n")
    assert run_mg(["--help"], tmp_path).returncode == 0
    plugins = plugin_list(tmp_path)
    assert plugins["bad"]["status"] == "failed"
    assert plugins["bad"]["origin"] == "config"
    assert_clean_error(run_mg(["status"], tmp_path), "bad", "kaboom at import")


@pytest.mark.parametrize("spec", ["no_such_module_xyz", "plugins/missing.py"])
def test_missing_plugin_in_config(tmp_path: Path, spec: str) -> None:
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\nplugins: [{spec}]\n")
    help_result = run_mg(["--help"], tmp_path)
    assert help_result.returncode == 0, help_result.stderr
    plugins = plugin_list(tmp_path)
    name = Path(spec).stem
    assert plugins[name]["status"] == "failed"
    for command in (["status"], ["apply"], ["create", "x"]):
        result = run_mg(command, tmp_path)
        assert_clean_error(result, name)


def test_missing_option_plugin(tmp_path: Path) -> None:
    result = run_mg(["-p", "nowhere_plugin", "status"], tmp_path)
    assert_clean_error(result, "nowhere_plugin")


def test_a_plugin_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "tools" / "notify.py").mkdir(parents=True)
    result = run_mg(["-p", "tools/notify.py", "status"], tmp_path)
    assert_clean_error(result, "tools/notify.py is a directory, not a .py file")
    assert "no such file" not in result.stderr


def test_misspelled_hook_is_reported(show_config: ShowConfig, tmp_path: Path) -> None:
    write_text(tmp_path / "typo.py", MISSPELLED_PLUGIN)
    plugins = plugin_list(tmp_path, "-p", "typo")
    assert plugins["typo"]["status"] == "failed"
    assert "mg_after_aply" in plugins["typo"]["error"]
    assert "mg_after_apply" in plugins["typo"]["error"]
    show_config.install(tmp_path)
    result = run_mg(["-p", "typo", "-p", "show_config", "show-config"], tmp_path)
    assert_clean_error(result, "typo", "mg_after_apply")


OPTIONAL_HOOK_PLUGIN = """
from migretti_core import hookimpl


@hookimpl(optionalhook=True)
def mg_after_deploy_window(session):
    raise RuntimeError("never called: this migretti has no such hook")


@hookimpl
def mg_output_formats():
    return ["later"]
"""


def test_a_hook_marked_optional_may_be_one_this_version_lacks(tmp_path: Path) -> None:
    # pluggy's optionalhook=True: a plugin written for a later migretti implements a hook
    # this version does not have; it loads, and that implementation is never called
    write_text(tmp_path / "later.py", OPTIONAL_HOOK_PLUGIN)
    result = run_mg(["-p", "later", "plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [later] = [p for p in json.loads(result.stdout) if p["name"] == "later"]
    assert later["status"] == "loaded"
    assert "mg_output_formats" in later["hooks"]
    listed = run_mg(["-p", "later", "status", "--help"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "later" in listed.stdout  # its other hooks work
    # an unknown hook not marked optional is still an error
    write_text(tmp_path / "strict.py", OPTIONAL_HOOK_PLUGIN.replace("optionalhook=True", ""))
    plugins = plugin_list(tmp_path, "-p", "strict")
    assert plugins["strict"]["status"] == "failed"
    assert "unknown hook mg_after_deploy_window" in plugins["strict"]["error"]


def test_unmarked_helpers_are_not_hooks_and_a_near_miss_is_a_warning(tmp_path: Path) -> None:
    write_text(tmp_path / "helpers.py", UNMARKED_NEAR_MISS_PLUGIN)
    result = run_mg(["-p", "helpers", "plugins", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    [helpers] = [p for p in json.loads(result.stdout) if p["name"] == "helpers"]
    assert helpers["status"] == "loaded"
    assert helpers["hooks"] == []
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mg: warning:")]
    assert len(warnings) == 1
    assert "mg_after_aply" in warnings[0]
    assert "did you mean mg_after_apply?" in warnings[0]


def test_plugin_failing_in_register_commands_is_reported(tmp_path: Path) -> None:
    write_text(
        tmp_path / "badcmd.py", "def mg_register_commands(cli):\n    raise ValueError('nope')\n"
    )
    result = run_mg(["-p", "badcmd", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "badcmd" in result.stderr
    assert "Traceback" not in result.stderr


# --- notification plugins against a database ------------------------------------------------

NOTIFY_PLUGIN = """
from pathlib import Path


def mg_after_apply(session, plan, results):
    Path("notified.txt").write_text(",".join(r.migration.id for r in results))


def mg_after_migration(session, result):
    raise RuntimeError("webhook down")
"""


def test_notification_plugin_runs_and_its_failure_does_not_hide_success(
    tmp_path: Path, database_url: str
) -> None:
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {database_url}\nplugins: [notify.py]\n")
    write_text(tmp_path / "notify.py", NOTIFY_PLUGIN)
    write_text(tmp_path / "migrations" / "1_one.sql", "-- migrate: up\nCREATE TABLE one (x int);\n")
    write_text(tmp_path / "migrations" / "2_two.sql", "-- migrate: up\nCREATE TABLE two (x int);\n")
    result = run_mg(["apply"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "notify" in result.stderr and "webhook down" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "notified.txt").read_text() == "1,2"
    assert "1 one" in result.stdout and "2 two" in result.stdout


SECTION_PLUGIN = """
def mg_config_sections():
    return ["notify"]
"""


def test_undeclared_section_is_an_unknown_key_before_its_references(tmp_path: Path) -> None:
    # The tutorial's step 2: the section is in mg.yaml, the plugin does not claim it yet,
    # and the variable it names is not set. The unknown key is the problem to report.
    write_text(tmp_path / "notify.py", "")
    mg_yaml = f"""
        database:
          url: {UNREACHABLE_URL}
        plugins:
          - notify.py
        notify:
          url: ${{DEPLOY_WEBHOOK_URL}}
    """
    write_text(tmp_path / "mg.yaml", mg_yaml)
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "unknown key 'notify'")
    assert "DEPLOY_WEBHOOK_URL" not in result.stderr

    # Once the plugin claims the section, its references are resolved as before.
    write_text(tmp_path / "notify.py", SECTION_PLUGIN)
    result = run_mg(["status"], tmp_path)
    assert_clean_error(result, "notify.url", "DEPLOY_WEBHOOK_URL is not set")


def test_plugin_declares_its_own_config_section(show_config: ShowConfig, tmp_path: Path) -> None:
    show_config.install(tmp_path)
    write_text(tmp_path / "sections.py", SECTION_PLUGIN)
    write_text(
        tmp_path / "mg.yaml",
        "plugins: [sections.py]\nnotify:\n  webhook: ${HOOK_URL:-https://chat.example/hook}\n",
    )
    result = run_mg(["-p", "show_config", "show-config"], tmp_path)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["notify"] == {"webhook": "https://chat.example/hook"}

    write_text(tmp_path / "mg.yaml", "notify:\n  webhook: x\n")
    result = run_mg(["-p", "show_config", "show-config"], tmp_path)
    assert_clean_error(result, "mg.yaml", "notify")


def test_plugin_failing_in_config_sections_does_not_break_help(tmp_path: Path) -> None:
    write_text(
        tmp_path / "secboom.py", "def mg_config_sections():\n    raise RuntimeError('boom')\n"
    )
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\n")
    helped = run_mg(["-p", "secboom", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "status" in helped.stdout
    listed = run_mg(["-p", "secboom", "plugins"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "secboom" in listed.stdout
    status = run_mg(["-p", "secboom", "status"], tmp_path)
    assert "secboom" in status.stderr
    assert "Traceback" not in status.stderr


def test_plugin_failing_in_configure_is_named(tmp_path: Path) -> None:
    write_text(
        tmp_path / "confboom.py", "def mg_configure(config):\n    raise RuntimeError('boom')\n"
    )
    result = run_mg(["-p", "confboom", "create", "x"], tmp_path)
    assert_clean_error(result, "confboom", "boom")


def test_plugin_exiting_at_import_does_not_kill_mg(tmp_path: Path) -> None:
    write_text(
        tmp_path / "needs_dep.py", "raise SystemExit('needs_dep requires the requests package')\n"
    )
    helped = run_mg(["-p", "needs_dep", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "status" in helped.stdout
    plugins = plugin_list(tmp_path, "-p", "needs_dep")
    assert plugins["needs_dep"]["status"] == "failed"
    assert "requests" in plugins["needs_dep"]["error"]


RENDER_PLUGINS = {
    "crash": """
from migretti_core.api import hookimpl


@hookimpl
def mg_format_result(options, kind, data, fmt):
    raise ValueError("renderer down")
""",
    "wrong": """
from migretti_core.api import hookimpl


@hookimpl
def mg_format_result(options, kind, data, fmt):
    return {"not": "text"}
""",
}


@pytest.mark.parametrize("how", sorted(RENDER_PLUGINS))
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_plugins_lists_them_when_a_plugin_breaks_rendering(
    tmp_path: Path, how: str, fmt: str
) -> None:
    # `mg plugins` is where a broken plugin is looked for: a plugin whose mg_format_result
    # raises or answers a wrong type is named in a warning, and the list still shows
    write_text(tmp_path / "render_plug.py", RENDER_PLUGINS[how])
    result = run_mg(["-p", "render_plug", "plugins", "--format", fmt], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "mg: warning: plugin 'render_plug'" in result.stderr
    assert "mg_format_result" in result.stderr
    if fmt == "json":
        plugins = {p["name"]: p for p in json.loads(result.stdout)}
    else:
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["NAME", "ORIGIN", "VERSION", "HOOKS", "STATUS"]
        plugins = {line.split()[0]: {} for line in lines[1:]}
    assert {"render_plug", "output", "config"} <= set(plugins)


FIFO_CREATOR = """
import os


def mg_create_migration(config, title, up_sql, down_sql, transactional):
    path = config.root / "pipe.sql"
    os.mkfifo(path)
    return path
"""


def test_create_never_waits_on_what_a_plugin_created_that_is_no_regular_file(
    tmp_path: Path,
) -> None:
    """mg create reads the new file back to warn of what apply would refuse: a FIFO a plugin
    made is never opened (that would wait for a writer for ever)."""
    write_text(tmp_path / "mg.yaml", "plugins: [fifo.py]\n")
    write_text(tmp_path / "fifo.py", FIFO_CREATOR)
    done = run_mg(["create", "x", "--up", "SELECT 1;"], tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "pipe.sql\n"
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("args", "said"),
    [([], "mg.yaml: invalid YAML"), (["--config", "missing.yaml"], "missing.yaml does not exist")],
)
def test_plugins_says_when_the_configuration_naming_plugins_cannot_be_read(
    tmp_path: Path, args: list[str], said: str
) -> None:
    hello_plugin(tmp_path, "hello", "hello", "hi")
    (tmp_path / "mg.yaml").write_text("plugins: [./hello.py\n", encoding="utf-8")

    result = run_mg([*args, "plugins"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "hello" not in result.stdout
    assert said in result.stderr and "plugins from the configuration are not listed" in (
        result.stderr
    )
    logged = run_mg([*args, "--json-log", "plugins", "--format", "json"], tmp_path)
    assert logged.returncode == 0, logged.stderr
    assert {p["name"] for p in json.loads(logged.stdout)} >= {"config", "postgres"}
    (line,) = [json.loads(text) for text in logged.stderr.splitlines()]
    assert (line["event"], line["level"]) == ("config.plugins_unknown", "warning")
    assert said in line["error"]


def test_with_no_reporter_left_debug_events_need_v(tmp_path: Path, database_url: str) -> None:
    # -p no:output -p no:jsonlog: the core prints the events itself, as output would
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {database_url}\n")
    write_text(
        tmp_path / "migrations" / "0001_users.sql",
        "-- migrate:up\nCREATE TABLE users (id bigint);\n-- migrate:down\nDROP TABLE users;\n",
    )
    quiet = ["-p", "no:output", "-p", "no:jsonlog"]
    applied = run_mg([*quiet, "apply"], tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "applied 1 migration" in applied.stderr
    assert "took the migration lock" not in applied.stderr
    assert "[1/1]" not in applied.stderr
    verbose = run_mg([*quiet, "-v", "rollback"], tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "took the migration lock" in verbose.stderr
    assert "rolled back 1 migration" in verbose.stderr


@pytest.mark.parametrize("args", [["-p", "no:"], ["-p", "no: "], ["-pno:"], ["-p="], ["-p", ""]])
def test_p_needs_a_name_to_load_or_block(tmp_path: Path, args: list[str]) -> None:
    result = run_mg([*args, "plugins"], tmp_path)
    assert_clean_error(result, "option -p needs a plugin name, not an empty value")
    assert "blocks nothing" not in result.stderr


@pytest.mark.parametrize("value", ['"\\0"', '"a\x07"'])
def test_a_nul_or_control_character_stops_commands_but_not_help(tmp_path: Path, value: str) -> None:
    (tmp_path / "mg.yaml").write_text(f"plugins: []\nlock_id: {value}\n", encoding="utf-8")

    assert run_mg(["--help"], tmp_path).returncode == 0
    listed = run_mg(["plugins"], tmp_path)
    assert listed.returncode == 0 and "are not listed" in listed.stderr
    stopped = run_mg(["status"], tmp_path)
    assert stopped.returncode == 2 and "invalid YAML at line 2" in stopped.stderr


MULTILINE_PLUGIN = """
from migretti_core.api import hookimpl

raise_at_import = {at_import}
if raise_at_import:
    raise RuntimeError("import first\\nimport second")


@hookimpl
def mg_configure(config):
    raise ValueError("first\\nsecond")
"""


@pytest.mark.parametrize("at_import", [True, False])
def test_a_plugins_error_text_stays_on_its_line(tmp_path: Path, at_import: bool) -> None:
    # a plugin's exception is foreign text, as a server's message is: its line breaks are
    # written \n, so it never starts a line of mg's output
    write_text(tmp_path / "multi.py", MULTILINE_PLUGIN.format(at_import=at_import))
    write_text(tmp_path / "mg.yaml", f"database:\n  url: {UNREACHABLE_URL}\n")
    result = run_mg(["-p", "multi", "status"], tmp_path)
    needle = "RuntimeError: import first\\nimport second" if at_import else "first\\nsecond"
    assert_clean_error(result, needle)
    if at_import:
        listed = plugin_list(tmp_path, "-p", "multi")
        assert listed["multi"]["error"] == "RuntimeError: import first\nimport second"


def test_a_plugin_command_never_silently_takes_a_name_another_has(tmp_path: Path) -> None:
    write_text(tmp_path / "mg.yaml", "")
    (tmp_path / "migrations").mkdir()
    hello_plugin(tmp_path, "mystatus", "status", "plugin status")
    hello_plugin(tmp_path, "myseed", "seed", "plugin seed")
    hello_plugin(tmp_path, "first", "hi", "first hi")
    hello_plugin(tmp_path, "second", "hi", "second hi")
    plugins = ["-p", "./mystatus.py", "-p", "./myseed.py", "-p", "./first.py", "-p", "./second.py"]

    done = run_mg([*plugins, "hi"], tmp_path)
    assert done.returncode == 0, done.stderr
    # Of two plugins, the one pluggy asks first keeps the name; the other is named.
    winner, loser = ("first", "second") if done.stdout == "first hi\n" else ("second", "first")
    assert done.stdout == f"{winner} hi\n"
    warnings = done.stderr.splitlines()
    assert (
        "mg: warning: plugin 'mystatus' adds a command 'status', which mg itself has: it is "
        "left out (mg's own commands cannot be replaced: give it another name)"
    ) in warnings
    assert (
        "mg: warning: plugin 'myseed' adds a command 'seed', which plugin 'seeds' has: it is "
        "left out (block plugin 'seeds' (-p no:seeds) to replace it)"
    ) in warnings
    assert (
        f"mg: warning: plugin '{loser}' adds a command 'hi', which plugin '{winner}' has: it is "
        f"left out (block plugin '{winner}' (-p no:{winner}) to replace it)"
    ) in warnings
    # mg's own commands and the builtin's stay theirs.
    done = run_mg([*plugins, "seed", "--help"], tmp_path)
    assert done.returncode == 0 and "seed create" in done.stdout, done.stderr
    assert "plugin status" not in run_mg([*plugins, "status", "--help"], tmp_path).stdout
    # Blocking the owner hands the name over.
    done = run_mg(["-p", "./myseed.py", "-p", "no:seeds", "seed"], tmp_path)
    assert (done.returncode, done.stdout) == (0, "plugin seed\n"), done.stderr
    assert "adds a command" not in done.stderr
