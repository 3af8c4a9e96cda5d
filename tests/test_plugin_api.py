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


# --- 1: a blocked or failed plugin's section --------------------------------------------------


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


def test_blocking_a_builtin_leaves_other_unknown_keys_errors(tmp_path: Path) -> None:
    # a blocked builtin's own keys are ignored; the package the builtins live in is no
    # section of any of them
    root = project(tmp_path, "output:\n  x: 1\n")
    result = run_cli(["-p", "no:output", "-p", "no:jsonlog", "create", "first"], cwd=root)
    assert result.exit_code == 0, result.stderr
    assert "section 'output' is ignored: plugin 'output' is blocked" in result.stderr
    for key in ("migretti_plugins", "migretti_plugins.jsonlog"):
        root = project(tmp_path / key, f"{key}:\n  x: 1\n")
        result = run_cli(["-p", "no:jsonlog", "create", "first"], cwd=root)
        assert result.exit_code == 2, result.stderr
        assert f"unknown key '{key}'" in result.stderr
        assert "is ignored" not in result.stderr


def test_a_plugin_that_failed_to_load_leaves_its_section_ignored(tmp_path: Path) -> None:
    root = project(tmp_path, "notify:\n  url: https://chat\n")
    broken = types.ModuleType("notify")

    @hookimpl
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


# --- 9: typed plugin settings -----------------------------------------------------------------


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


# --- helpers for the calling policies ---------------------------------------------------------


def plugin(name: str, **functions: Any) -> types.ModuleType:
    """A plugin module holding ``functions`` (marked with ``@hookimpl`` unless already)."""
    module = types.ModuleType(name)
    for attr, function in functions.items():
        if not hasattr(function, "migretti_impl"):
            function = hookimpl(function)
        setattr(module, attr, function)
    return module


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def mg_report(self, event: Any) -> None:
        self.events.append(event)


def session_with(*plugins: object, builtins: Any = (), **options: Any) -> Any:
    hooks = make_hooks(*plugins, builtins=builtins)
    return make_session(hooks, make_config(Path("/project")), **options)


def a_migration() -> Any:
    from migretti_core.testing import make_migration

    return make_migration("0001", "users", "CREATE TABLE users (id int);")


def db_project(tmp_path: Path, url: str, *migrations: tuple[str, str, str]) -> Path:
    from migretti_core.testing import make_project, write_migration

    make_project(tmp_path, url)
    for ident, name, sql in migrations:
        write_migration(tmp_path, ident, name, sql, f"-- undo {name}")
    return tmp_path


def applied_ids(tmp_path: Path) -> list[str]:
    result = run_cli(["list", "--format", "json"], cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    return [row["id"] for row in json.loads(result.stdout) if row["status"] == "applied"]


UNREACHABLE = "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2"


# --- 2: a fatal error is never silent ---------------------------------------------------------


def test_a_fatal_error_is_printed_when_the_output_plugin_is_blocked(tmp_path: Path) -> None:
    from migretti_core.testing import make_project

    make_project(tmp_path, UNREACHABLE)
    result = run_cli(["-p", "no:output", "status"], cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("mg: error: cannot connect to nouser@127.0.0.1:1/none")
    (tmp_path / "mg.yaml").write_text("lock_id: [1]\n", encoding="utf-8")
    result = run_cli(["-p", "no:output", "create", "x"], cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("mg: error: mg.yaml: lock_id: expected an integer") == 1


def test_a_fatal_error_is_printed_once_with_the_output_plugin(tmp_path: Path) -> None:
    (tmp_path / "mg.yaml").write_text("lock_id: [1]\n", encoding="utf-8")
    result = run_cli(["create", "x"], cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("mg: error:") == 1


# --- 3: results are type-checked --------------------------------------------------------------


def test_a_string_from_validate_migration_is_an_error_naming_the_plugin() -> None:
    from migretti_core.errors import PluginError

    session = session_with(plugin("checker", mg_validate_migration=lambda migration: "bad"))
    with pytest.raises(PluginError) as caught:
        session.hooks.validate_migration(session, a_migration())
    assert str(caught.value) == (
        "plugin 'checker' returned str 'bad' instead of a list of str from mg_validate_migration"
    )
    assert caught.value.exit_code == 2


REPORT_ANSWERING_TEXT = """
    from migretti_core.api import hookimpl

    @hookimpl
    def mg_report(event):
        return "sent" if event.name == "migration.applied" else None
"""


@pytest.mark.parametrize("wrapper", [False, True], ids=["plain", "wrapper"])
def test_a_wrong_answer_from_a_notification_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, database_url: str, wrapper: bool
) -> None:
    # mg_report is a notification: a wrong answer is named in a warning (once) and does not
    # stop an apply half-way or hide what was applied
    from migretti_core.testing import Project, write_text

    source = REPORT_ANSWERING_TEXT
    if wrapper:
        source = source.replace(
            "@hookimpl\n    def mg_report(event):\n        return",
            "@hookimpl(wrapper=True)\n    def mg_report(event):\n        yield\n        return",
        )
    project = Project(tmp_path / "app", database_url)
    project.add_table("0001")
    project.add_table("0002")
    write_text(project.root / "texty.py", textwrap.dedent(source))
    try:
        done = project.mg("-p", "texty", "apply")
        assert done.returncode == 0, done.stderr
        assert project.statuses() == {"0001": "applied", "0002": "applied"}
        assert "applied 0001 " in done.stdout and "applied 0002 " in done.stdout
        expected = "a list of answers" if wrapper else "bool"
        warning = (
            f"mg: warning: plugin 'texty' returned str 'sent' instead of {expected} from mg_report"
        )
        assert done.stderr.count(warning) == 1, done.stderr
        assert "mg: error" not in done.stderr
    finally:
        project.close()


BARE_WRAPPERS = """
    from migretti_core.api import hookimpl

    @hookimpl(wrapper=True)
    def mg_is_protected(session):
        yield

    @hookimpl(wrapper=True)
    def mg_validate_migration(migration):
        yield

    @hookimpl(wrapper=True)
    def mg_report(event):
        yield
"""


def test_a_wrapper_that_returns_nothing_leaves_the_answers_it_wrapped(
    tmp_path: Path, database_url: str
) -> None:
    # `yield` without `return` in a wrapper of a hook that collects answers: the answers of
    # the implementations it wraps stand (protection, validation problems, reporting)
    from migretti_core.testing import Project, write_text

    project = Project(tmp_path / "app", database_url)
    project.add_table("0001")
    write_text(project.root / "bare.py", textwrap.dedent(BARE_WRAPPERS))
    try:
        done = project.mg("-p", "bare", "apply")
        assert done.returncode == 0, done.stderr
        assert "applied 0001 " in done.stdout
        assert project.statuses() == {"0001": "applied"}
        project.add("0002", "concurrently", "CREATE INDEX CONCURRENTLY i ON t_0001 (id);")
        refused = project.mg("-p", "bare", "apply")
        assert refused.returncode == 2, refused.stderr
        assert "CONCURRENTLY" in refused.stderr and "unexpected error" not in refused.stderr
        project.path_of("0002").unlink()
        project.add_table("0003")
        project.configure(extra="protected: true\n")
        asked = project.mg("-p", "bare", "apply")
        assert asked.returncode == 5, asked.stderr  # still protected: no terminal to confirm on
    finally:
        project.close()


def test_a_string_from_config_sections_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, "notify:\n  url: x\n")
    sections = plugin("notify", mg_config_sections=lambda: "notify")
    result = run_cli(["create", "first"], cwd=root, plugins=[sections])
    assert result.exit_code == 2
    assert (
        "mg: error: plugin 'notify' returned str 'notify' instead of a list of str or Key "
        "from mg_config_sections" in result.stderr
    )
    assert not list((root / "migrations").iterdir())


# A command that renders its result through mg_format_result without a database. (`mg plugins`
# does not stop for such a plugin: it names it in a warning and lists every plugin itself.)
RENDERING = ["lint", "--all", "--server-version", "16", "--format", "json"]


def rendering_project(tmp_path: Path) -> Path:
    return project(tmp_path, "database:\n  url: postgresql://nouser@127.0.0.1:1/none\n")


def test_a_dict_from_format_result_is_refused(tmp_path: Path) -> None:
    fmt = plugin("fmt", mg_format_result=lambda data: {"oops": 1})
    result = run_cli(RENDERING, cwd=rendering_project(tmp_path), plugins=[fmt])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "plugin 'fmt' returned dict {'oops': 1} instead of str from mg_format_result" in (
        result.stderr
    )


# --- 4: a plugin's exception names plugin and hook --------------------------------------------


def _crash(*_: Any) -> None:
    raise ValueError("cannot reach postgresql://deploy:pw-s3cret@db/app")


def test_an_exception_in_format_result_names_plugin_and_hook(tmp_path: Path) -> None:
    crashing = plugin("fancy", mg_format_result=lambda kind: _crash())
    result = run_cli(RENDERING, cwd=rendering_project(tmp_path), plugins=[crashing])
    assert result.exit_code == 1
    assert "mg: error: plugin 'fancy' failed in mg_format_result: ValueError:" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pw-s3cret" not in result.output


@pytest.mark.parametrize("how", ["-v", "MG_TRACE_PLUGINS"])
def test_a_plugins_traceback_follows_with_v_or_trace_masked(tmp_path: Path, how: str) -> None:
    crashing = plugin("fancy", mg_format_result=lambda kind: _crash())
    args = RENDERING + (["-v"] if how == "-v" else [])
    env = {"MG_TRACE_PLUGINS": "1"} if how == "MG_TRACE_PLUGINS" else {}
    result = run_cli(args, cwd=rendering_project(tmp_path), plugins=[crashing], env=env)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "in _crash" in result.stderr
    assert "pw-s3cret" not in result.output
    assert "rerun with -v" not in result.stderr
    if how == "MG_TRACE_PLUGINS":
        assert "mg: trace: mg_format_result [fancy (failed), " in result.stderr


def test_a_crashing_notifier_is_named_and_its_traceback_shown_with_v() -> None:
    collect = Collect()
    session = session_with(
        plugin("pager", mg_after_migration=lambda result: _crash()), collect, verbose=True
    )
    from migretti_core.types import MigrationResult

    session.hooks.after_migration(session, MigrationResult(a_migration(), "up", True, 3))
    [event] = [e for e in collect.events if e.name == "plugin.failed"]
    assert event.message.startswith("plugin 'pager' failed in mg_after_migration: ValueError")
    assert "pw-s3cret" not in event.message
    assert "Traceback" in event.fields["traceback"]
    assert "pw-s3cret" not in event.fields["traceback"]


RELEASE_CRASH_PLUGIN = """
    from migretti_core.api import hookimpl


    @hookimpl
    def mg_lock_release(conn):
        raise ValueError("cannot unlock postgresql://deploy:pw-s3cret@db/app")


    @hookimpl
    def mg_disconnect(conn):
        raise RuntimeError("bastion gone")
"""


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failed migration"])
def test_a_crash_in_lock_release_or_disconnect_is_named_and_the_result_stands(
    tmp_path: Path, database_url: str, fails: bool
) -> None:
    from migretti_core.testing import Project, write_text

    project = Project(tmp_path / "app", database_url)
    project.add_table("0001")
    if fails:
        project.add("0002", "bad", "SELECT 1/0;")
    write_text(project.root / "unlock.py", textwrap.dedent(RELEASE_CRASH_PLUGIN))
    try:
        done = project.mg("-p", "unlock", "apply")
        assert done.returncode == (1 if fails else 0), done.stderr
        assert project.statuses()["0001"] == "applied"
        warnings = [line for line in done.stderr.splitlines() if line.startswith("mg: warning:")]
        assert (
            "mg: warning: plugin 'unlock' failed in mg_lock_release: ValueError: cannot unlock "
            "postgresql://deploy:****@db/app" in warnings
        )
        assert (
            "mg: warning: plugin 'unlock' failed in mg_disconnect: RuntimeError: bastion gone"
            in (warnings)
        )
        assert "pw-s3cret" not in done.stderr
        if fails:
            assert done.stderr.rstrip().splitlines()[-1].startswith("mg: error: migrations/")
            assert "division by zero" in done.stderr
    finally:
        project.close()


# --- 5: wrappers work on every hook -----------------------------------------------------------


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
def test_wrappers_run_on_notification_setup_and_gate_hooks(style: str) -> None:
    from migretti_core.types import Event, Plan

    seen: list[str] = []

    def wrap(name: str) -> Any:
        if style == "wrapper":

            def new_style(**kwargs: Any) -> Any:
                seen.append(f"{name}:before")
                result = yield
                seen.append(f"{name}:after")
                return result

            return hookimpl(wrapper=True)(new_style)

        def old_style(**kwargs: Any) -> Any:
            seen.append(f"{name}:before")
            yield
            seen.append(f"{name}:after")

        return hookimpl(hookwrapper=True)(old_style)

    wrappers = types.ModuleType("wrappers")
    for name in ("mg_report", "mg_configure", "mg_before_apply"):
        function = wrap(name)
        function.__name__ = name
        setattr(wrappers, name, function)
    collect = Collect()
    hooks = make_hooks(collect, wrappers)
    config = make_config(Path("/project"))
    session = make_session(hooks, config)
    hooks.report(session.options, Event("x.y", "info", "hello"))
    hooks.configure(config)
    hooks.before_apply(session, Plan("up", (a_migration(),)))
    assert seen == [
        "mg_report:before",
        "mg_report:after",
        "mg_configure:before",
        "mg_configure:after",
        "mg_before_apply:before",
        "mg_before_apply:after",
    ]
    assert [e.message for e in collect.events] == ["hello"]


def test_a_wrapped_hook_keeps_its_policy() -> None:
    from migretti_core.types import MigrationResult

    collect = Collect()

    @hookimpl(wrapper=True)
    def mg_after_migration() -> Any:
        return (yield)

    wrapper = plugin("wrapping", mg_after_migration=mg_after_migration)
    session = session_with(collect, plugin("pager", mg_after_migration=_crash), wrapper)
    session.hooks.after_migration(session, MigrationResult(a_migration(), "up", True, 3))
    assert any(e.name == "plugin.failed" for e in collect.events)


BROKEN_WRAPPERS = """
    import os

    from migretti_core.api import hookimpl

    @hookimpl(wrapper=True)
    def mg_after_migration(result):
        yield
        raise ValueError("timer broke")

    @hookimpl(hookwrapper=True)
    def mg_before_apply(session):
        yield
        if os.environ.get("BREAK_GATE"):
            raise ValueError("gate wrapper broke")

    @hookimpl(wrapper=True)
    def mg_validate_migration(migration):
        problems = yield
        return "bad" if os.environ.get("BAD_ANSWER") else problems
"""


def test_a_wrappers_own_failure_follows_the_hooks_policy(tmp_path: Path, database_url: str) -> None:
    from migretti_core.testing import Project, assert_clean_error, write_text

    project = Project(tmp_path / "app", database_url)
    write_text(project.root / "wrappers.py", BROKEN_WRAPPERS)
    project.configure(extra="plugins: [wrappers.py]\n")
    project.add("0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;")
    project.add("0002", "orders", "CREATE TABLE orders (id bigint);", "DROP TABLE orders;")

    wrong = project.mg("apply", env={"BAD_ANSWER": "1"})
    assert_clean_error(
        wrong,
        "plugin 'wrappers' returned str 'bad' instead of a list of answers from "
        "mg_validate_migration",
        code=2,
    )
    gate = project.mg("apply", env={"BREAK_GATE": "1"})
    assert_clean_error(
        gate, "plugin 'wrappers' failed in mg_before_apply: ValueError: gate wrapper broke", code=1
    )
    assert project.statuses() == {}
    # a notification: isolated, the deploy goes on
    told = project.mg("apply")
    assert told.returncode == 0, told.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    warning = "mg: warning: plugin 'wrappers' failed in mg_after_migration: ValueError: timer broke"
    assert told.stderr.count(warning) == 2


# --- 6: gates fail closed ---------------------------------------------------------------------


def test_a_crashing_validator_is_exit_2_naming_it() -> None:
    from migretti_core.errors import PluginFailed

    session = session_with(plugin("checker", mg_validate_migration=_crash))
    with pytest.raises(PluginFailed) as caught:
        session.hooks.validate_migration(session, a_migration())
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("plugin 'checker' failed in mg_validate_migration")


def test_a_crashing_before_apply_stops_the_deploy(tmp_path: Path, database_url: str) -> None:
    root = db_project(tmp_path, database_url, ("0001", "users", "CREATE TABLE users (id int);"))
    gate = plugin("safety", mg_before_apply=_crash)
    result = run_cli(["apply"], cwd=root, plugins=[gate])
    assert result.exit_code == 1
    assert "mg: error: plugin 'safety' failed in mg_before_apply: ValueError" in result.stderr
    assert applied_ids(root) == []


def test_a_crashing_validator_stops_the_deploy(tmp_path: Path, database_url: str) -> None:
    root = db_project(tmp_path, database_url, ("0001", "users", "CREATE TABLE users (id int);"))
    gate = plugin("checker", mg_validate_migration=_crash)
    result = run_cli(["apply"], cwd=root, plugins=[gate])
    assert result.exit_code == 2
    assert "plugin 'checker' failed in mg_validate_migration" in result.stderr
    assert applied_ids(root) == []


def test_a_crashing_before_rollback_keeps_everything(tmp_path: Path, database_url: str) -> None:
    root = db_project(tmp_path, database_url, ("0001", "users", "CREATE TABLE users (id int);"))
    assert run_cli(["apply"], cwd=root).exit_code == 0
    gate = plugin("safety", mg_before_rollback=_crash)
    result = run_cli(["rollback"], cwd=root, plugins=[gate])
    assert result.exit_code == 1
    assert "plugin 'safety' failed in mg_before_rollback" in result.stderr
    assert applied_ids(root) == ["0001"]


# --- 7: stdout belongs to the document --------------------------------------------------------


def test_a_plugins_print_does_not_break_json_output(tmp_path: Path, database_url: str) -> None:
    root = db_project(tmp_path, database_url, ("0001", "users", "CREATE TABLE users (id int);"))
    chatty = plugin(
        "chatty",
        mg_configure=lambda config: print("configured!"),
        mg_format_result=lambda kind: print(f"formatting {kind}"),
    )
    result = run_cli(["status", "--format", "json"], cwd=root, plugins=[chatty])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["pending"] == 1
    assert "configured!" in result.stderr
    assert "formatting status" in result.stderr
    text = run_cli(["status"], cwd=root, plugins=[chatty])
    assert "configured!" in text.stdout


CHATTY_MODULE = """
    from migretti_core.api import hookimpl

    print("chatty: imported")


    @hookimpl
    def mg_register_commands(cli):
        print("chatty: commands")


    @hookimpl
    def mg_output_formats():
        print("chatty: formats")
        return []


    @hookimpl
    def mg_command_options(command):
        print("chatty: options for", command)


    @hookimpl
    def mg_configure(config):
        print("chatty: configured")


    @hookimpl
    def mg_report(event):
        print("chatty: event", event.name)
"""


def _document(stdout: str) -> Any:
    """The one JSON document on stdout (fails on anything else there)."""
    return json.loads(stdout)


def test_what_a_plugin_prints_while_it_loads_stays_out_of_json_output(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project, write_text

    project = Project(tmp_path / "app", database_url)
    write_text(project.root / "chatty.py", CHATTY_MODULE)
    project.configure(extra="plugins: [chatty.py]\n")
    project.add("0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;")
    for args in (
        ["status", "--format", "json"],
        ["status", "--format=json"],
        ["plugins", "--format", "json"],
    ):
        result = project.mg(*args)
        assert result.returncode == 0, result.stderr
        _document(result.stdout)
        assert "chatty: imported" in result.stderr
        assert "chatty: options for status" in result.stderr
    text = project.mg("status")
    assert "chatty: imported" in text.stdout  # a text result: stdout is shared as before


def test_what_a_plugin_prints_stays_out_of_dry_run_and_lint_documents(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project, write_text

    project = Project(tmp_path / "app", database_url)
    write_text(project.root / "chatty.py", CHATTY_MODULE)
    project.configure(extra="plugins: [chatty.py]\n")
    project.add("0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")

    dry = project.mg("apply", "--dry-run", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    assert [m["id"] for m in _document(dry.stdout)["migrations"]] == ["0001"]
    assert "chatty: event dryrun.finished" in dry.stderr

    lint = project.mg("lint", "--format", "json")
    assert lint.returncode == 0, lint.stderr
    assert [f["rule"] for f in _document(lint.stdout)["findings"]] == ["prefer-bigint-over-int"]
    assert "chatty: configured" in lint.stderr

    github = project.mg("lint", "--format", "github")
    assert github.returncode == 0, github.stderr
    assert github.stdout.startswith("::warning file=migrations/0001_users.sql")
    assert "chatty" not in github.stdout


@pytest.mark.parametrize(
    ("body", "needle", "code"),
    [
        (
            "def mg_output_formats():\n    return 'markdown'\n",
            "plugin 'broken' returned str 'markdown' instead of a list of str from "
            "mg_output_formats",
            2,
        ),
        (
            "def mg_command_options(command):\n    raise ValueError('no options today')\n",
            "plugin 'broken' failed in mg_command_options: ValueError: no options today",
            1,
        ),
    ],
    ids=["wrong answer", "exception"],
)
def test_help_and_plugins_work_when_a_plugin_breaks_the_command_line(
    tmp_path: Path, body: str, needle: str, code: int
) -> None:
    from migretti_core.testing import assert_clean_error, run_mg, write_text

    write_text(tmp_path / "mg.yaml", "plugins: [broken.py]\n")
    (tmp_path / "broken.py").write_text(
        "from migretti_core.api import hookimpl\n\n@hookimpl\n" + body, encoding="utf-8"
    )
    helped = run_mg(["--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "Commands:" in helped.stdout
    listed = run_mg(["plugins", "--format", "json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {p["name"]: p["status"] for p in json.loads(listed.stdout)}["broken"] == "loaded"
    # where people look for what is wrong, they are told, not only by the next command
    for shown in (helped, listed):
        assert f"mg: warning: {needle}" in shown.stderr
        assert "every command but mg --help, mg plugins and mg init stops" in shown.stderr
        assert "Traceback" not in shown.stderr
    assert_clean_error(run_mg(["status"], tmp_path), needle, code=code)


CRASHING_COMMANDS = """
    import click

    from migretti_core.api import HookFailed, hookimpl


    @hookimpl
    def mg_register_commands(cli):
        @cli.command()
        def crash():
            \"\"\"Crash.\"\"\"
            raise ValueError("no such table: reports")

        @cli.command()
        def refuse():
            \"\"\"Refuse.\"\"\"
            raise HookFailed("reports are frozen")

        @cli.group()
        def report():
            \"\"\"Reports.\"\"\"

        @report.command()
        def weekly():
            \"\"\"Weekly.\"\"\"
            raise KeyError("week")
"""


def test_a_plugin_command_that_crashes_names_the_plugin(tmp_path: Path) -> None:
    from migretti_core.testing import assert_clean_error, run_mg, write_text

    write_text(tmp_path / "mg.yaml", "plugins: [reports.py]\n")
    write_text(tmp_path / "reports.py", CRASHING_COMMANDS)
    assert_clean_error(
        run_mg(["crash"], tmp_path),
        "plugin 'reports' failed in mg crash: ValueError: no such table: reports",
        code=1,
    )
    assert_clean_error(
        run_mg(["report", "weekly"], tmp_path),
        "plugin 'reports' failed in mg report weekly: KeyError: 'week'",
        code=1,
    )
    # an MgError stays the plugin's own message
    assert_clean_error(run_mg(["refuse"], tmp_path), "mg: error: reports are frozen", code=1)
    verbose = run_mg(["-v", "crash"], tmp_path)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert 'raise ValueError("no such table: reports")' in verbose.stderr


def test_a_failing_reporter_is_a_json_line_under_json_log(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project, write_text

    project = Project(tmp_path / "app", database_url)
    for name in ("pager", "siren"):
        write_text(
            project.root / f"{name}.py",
            f"""
            from migretti_core.api import hookimpl

            @hookimpl
            def mg_report(event):
                raise ValueError("{name} is down")
            """,
        )
    project.configure(extra="plugins: [pager.py, siren.py]\n")
    project.add("0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;")
    result = project.mg("--json-log", "apply")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    failures = {(r["plugin"], r["message"]) for r in records if r["event"] == "plugin.failed"}
    assert failures == {
        ("pager", "plugin 'pager' failed in mg_report: ValueError: pager is down"),
        ("siren", "plugin 'siren' failed in mg_report: ValueError: siren is down"),
    }
    assert "migration.applied" in {r["event"] for r in records}
    # A reporter that fails for every event is reported once per run, not once per event.
    assert sorted(r["plugin"] for r in records if r["event"] == "plugin.failed") == [
        "pager",
        "siren",
    ]
    text = project.mg("rollback")
    assert "mg: warning: plugin 'pager' failed in mg_report: ValueError: pager is down" in (
        text.stderr
    )
    assert text.stderr.count("plugin 'pager' failed in mg_report") == 1, text.stderr
    assert "rolled back 0001 users" in text.stdout


def test_a_plugin_calling_sys_exit_is_a_plugin_failure(tmp_path: Path, database_url: str) -> None:
    from migretti_core.testing import Project, assert_clean_error, write_text

    project = Project(tmp_path / "app", database_url)
    write_text(
        project.root / "quitter.py",
        """
        import os
        import sys

        from migretti_core.api import hookimpl

        @hookimpl
        def mg_after_migration(result):
            sys.exit("metrics are down")

        @hookimpl
        def mg_before_apply(session):
            if os.environ.get("QUIT_GATE"):
                sys.exit(0)
        """,
    )
    project.configure(extra="plugins: [quitter.py]\n")
    project.add("0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;")
    project.add("0002", "orders", "CREATE TABLE orders (id bigint);", "DROP TABLE orders;")
    gate = project.mg("apply", env={"QUIT_GATE": "1"})
    assert_clean_error(gate, "plugin 'quitter' failed in mg_before_apply: SystemExit: 0", code=1)
    assert project.statuses() == {}
    told = project.mg("apply")
    assert told.returncode == 0, told.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    warning = "mg: warning: plugin 'quitter' failed in mg_after_migration: SystemExit: metrics"
    assert told.stderr.count(warning) == 2


def test_a_failing_mg_config_sections_warns_once_and_its_section_is_unknown(
    tmp_path: Path,
) -> None:
    from migretti_core.testing import run_mg, write_text

    write_text(
        tmp_path / "sections.py",
        """
        from migretti_core.api import hookimpl

        @hookimpl
        def mg_config_sections():
            raise ValueError("no sections today")
        """,
    )
    write_text(tmp_path / "mg.yaml", "plugins: [sections.py]\nsections:\n  a: 1\n")
    result = run_mg(["status"], tmp_path)
    assert result.returncode == 2
    warning = "mg: warning: plugin 'sections' failed in mg_config_sections: ValueError: no sections"
    assert result.stderr.count(warning) == 1, result.stderr
    assert "mg: error: mg.yaml: unknown key 'sections'" in result.stderr


# --- 10: a wrong argument name ----------------------------------------------------------------


def test_a_wrong_argument_name_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "typo_args.py").write_text(
        "from migretti_core import hookimpl\n\n"
        "@hookimpl\ndef mg_after_apply(session, reslts):\n    pass\n",
        encoding="utf-8",
    )
    project(tmp_path, "plugins: [typo_args.py]\n")
    result = run_cli(["create", "first"], cwd=tmp_path)
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if "mg_after_apply" in line]
    assert line.startswith("mg: error: plugin 'typo_args'")
    assert "mg_after_apply takes no argument 'reslts' (did you mean 'results'?)" in line
    assert "hookimpl definition" not in result.stderr


# --- 11: small things -------------------------------------------------------------------------


def test_a_replaced_lock_is_not_taken_as_the_builtin_one(tmp_path: Path, database_url: str) -> None:
    from migretti_core.testing import Project, write_text

    project = Project(tmp_path / "app", database_url)
    write_text(
        project.root / "file_lock.py",
        """
        import fcntl

        from migretti_core.api import hookimpl

        _held = {}

        @hookimpl
        def mg_lock_acquire(session, conn, timeout):
            handle = open(session.config.root / ".mg-deploy.lock", "w")
            fcntl.flock(handle, fcntl.LOCK_EX)
            _held[id(conn)] = handle
            return True

        @hookimpl
        def mg_lock_release(conn):
            handle = _held.pop(id(conn), None)
            if handle is None:
                return None
            handle.close()
            return True
        """,
    )
    project.add("0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;")
    replaced = project.mg("-v", "-p", "no:lock", "-p", "file_lock", "apply")
    assert replaced.returncode == 0, replaced.stderr
    assert "took the migration lock\n" in replaced.stderr
    assert "894321" not in replaced.stderr
    builtin = project.mg("-v", "rollback")
    assert "took the migration lock 894321" in builtin.stderr


def test_a_replaced_lock_is_not_described_as_the_builtin_one() -> None:
    from migretti_core.types import LockHolder

    collect = Collect()
    session = session_with(collect)
    session.hooks.on_lock_wait(session, LockHolder(42, "deployer", None), 5.0)
    session.hooks.on_lock_wait(
        session, LockHolder(42, None, None, lock="the Redis lock deploy:app"), 5.0
    )
    first, second = (e.message for e in collect.events)
    assert first.startswith("waiting for the migration lock, held by pid 42 (deployer)")
    assert "894321" not in first
    assert second.startswith("waiting for the Redis lock deploy:app, held by pid 42")


def test_v_does_not_suggest_rerunning_with_v(tmp_path: Path) -> None:
    import click

    def explode(ctx: click.Context, param: click.Parameter, value: object) -> None:
        raise RuntimeError("bug in an option")

    def mg_command_options(command: str) -> list[click.Parameter]:
        return [click.Option(["--boom"], is_flag=True, callback=explode)]

    commands = plugin("boomer", mg_command_options=mg_command_options)
    quiet = run_cli(["list"], cwd=tmp_path, plugins=[commands])
    assert quiet.exit_code == 1
    assert "unexpected error: RuntimeError: bug in an option" in quiet.stderr
    assert "rerun with -v" in quiet.stderr
    loud = run_cli(["list", "-v"], cwd=tmp_path, plugins=[commands])
    assert loud.exit_code == 1
    assert "Traceback" in loud.stderr
    assert "rerun with -v" not in loud.stderr


def test_an_after_apply_error_exits_with_its_own_code(tmp_path: Path, database_url: str) -> None:
    from migretti_core.errors import StateError

    def mg_after_apply() -> None:
        raise StateError("replica lag too high")

    root = db_project(tmp_path, database_url, ("0001", "users", "CREATE TABLE users (id int);"))
    result = run_cli(["apply"], cwd=root, plugins=[plugin("lag", mg_after_apply=mg_after_apply)])
    assert result.exit_code == 3
    assert "replica lag too high" in result.stderr
    assert applied_ids(root) == ["0001"]


# --- 12: options on existing commands, output formats -----------------------------------------


def test_hook_mg_command_options(tmp_path: Path, database_url: str) -> None:
    import click

    seen: dict[str, Any] = {}

    def mg_command_options(command: str) -> list[click.Parameter] | None:
        if command != "apply":
            return None
        return [click.Option(["--allow-unsafe"], is_flag=True, help="Skip the safety review.")]

    def mg_before_apply(session: Any) -> None:
        seen["allow_unsafe"] = session.options.extra["allow_unsafe"]
        seen["via_option"] = session.options.option("allow_unsafe")

    unsafe = plugin(
        "unsafe", mg_command_options=mg_command_options, mg_before_apply=mg_before_apply
    )
    root = db_project(tmp_path, database_url, ("0001", "users", "CREATE TABLE users (id int);"))
    helptext = run_cli(["apply", "--help"], cwd=root, plugins=[unsafe])
    assert "--allow-unsafe" in helptext.stdout
    assert "Skip the safety review." in helptext.stdout
    assert "--allow-unsafe" not in run_cli(["up", "--help"], cwd=root, plugins=[unsafe]).stdout
    result = run_cli(["apply", "--allow-unsafe"], cwd=root, plugins=[unsafe])
    assert result.exit_code == 0, result.stderr
    assert seen == {"allow_unsafe": True, "via_option": True}
    # Another run in the same process without the plugin has no such option.
    assert run_cli(["apply", "--allow-unsafe"], cwd=root).exit_code == 2


def test_an_option_on_seed_works_where_seed_help_shows_it(
    tmp_path: Path, database_url: str
) -> None:
    import click

    seen: list[Any] = []
    asked: list[str] = []

    def mg_command_options(command: str) -> list[click.Parameter] | None:
        asked.append(command)
        if command != "seed":
            return None
        return [click.Option(["--no-notify"], is_flag=True, help="Send no message.")]

    def mg_after_command(session: Any, command: str) -> None:
        seen.append((command, session.options.option("no_notify")))

    quiet = plugin(
        "quiet", mg_command_options=mg_command_options, mg_after_command=mg_after_command
    )
    root = db_project(tmp_path, database_url)
    (root / "seeds").mkdir()
    (root / "seeds" / "0001_users.sql").write_text("SELECT 1;\n", encoding="utf-8")
    assert "--no-notify" in run_cli(["seed", "--help"], cwd=root, plugins=[quiet]).stdout
    result = run_cli(["seed", "--no-notify", "--all"], cwd=root, plugins=[quiet])
    assert result.exit_code == 0, result.stderr
    assert seen == [("seed", True)]
    assert "seed run" not in asked  # plugins know the command as `seed`
    assert (
        "--no-notify" not in run_cli(["seed", "create", "--help"], cwd=root, plugins=[quiet]).stdout
    )


def test_an_option_clashing_with_an_existing_one_is_refused(tmp_path: Path) -> None:
    import click

    def mg_command_options(command: str) -> list[click.Parameter]:
        return [click.Option(["--dry-run/--no-dry-run"])] if command == "apply" else []

    clash = plugin("clash", mg_command_options=mg_command_options)
    result = run_cli(["apply"], cwd=tmp_path, plugins=[clash])
    assert result.exit_code == 2
    assert "plugin 'clash' adds option 'dry_run' to mg apply, which already has one" in (
        result.stderr
    )
    assert "disable it with -p no:clash" in result.stderr
    # help still works (SPEC 14), without the plugin's options
    helped = run_cli(["apply", "--help"], cwd=tmp_path, plugins=[clash])
    assert helped.exit_code == 0, helped.stderr
    assert "--no-dry-run" not in helped.stdout


def test_hook_mg_output_formats(tmp_path: Path) -> None:
    def mg_format_result(kind: str, data: Any, fmt: str) -> str | None:
        if fmt != "markdown" or kind != "plugins":
            return None
        return "\n".join(f"- **{p['name']}** ({p['origin']})" for p in data)

    markdown = plugin(
        "markdown",
        mg_output_formats=lambda: ["markdown"],
        mg_format_result=mg_format_result,
    )
    result = run_cli(["plugins", "--format", "markdown"], cwd=tmp_path, plugins=[markdown])
    assert result.exit_code == 0, result.stderr
    assert "- **output** (builtin)" in result.stdout.splitlines()
    assert "markdown" in run_cli(["status", "--help"], plugins=[markdown]).stdout
    unknown = run_cli(["plugins", "--format", "markdown"], cwd=tmp_path)
    assert unknown.exit_code == 2
    assert "'markdown' is not one of 'text', 'json'" in unknown.stderr


def test_a_format_nobody_renders_for_a_kind_is_a_clear_error(tmp_path: Path) -> None:
    markdown = plugin("markdown", mg_output_formats=lambda: ["markdown"])
    result = run_cli(["plugins", "--format", "markdown"], cwd=tmp_path, plugins=[markdown])
    assert result.exit_code == 2
    assert "no plugin provides markdown output for plugins" in result.stderr
    # No builtin was blocked: the error says so rather than suggesting it.
    assert "was a builtin blocked" not in result.stderr
    assert "does not render plugins; use --format text or json" in result.stderr
    assert result.stderr.count("mg: error:") == 1 and "Traceback" not in result.stderr


# --- 13: more events --------------------------------------------------------------------------


class Listener:
    name = "listener"

    def __init__(self) -> None:
        self.commands: list[tuple[str, list[str], dict[str, Any]]] = []
        self.failures: list[list[tuple[str, int]]] = []

    @hookimpl
    def mg_after_command(self, command: str, results: Any, details: Any) -> None:
        self.commands.append((command, [r.migration.id for r in results], dict(details)))

    @hookimpl
    def mg_on_failure(self, results: Any) -> None:
        self.failures.append([(r.migration.id, r.duration_ms) for r in results])


def test_hook_mg_after_command(tmp_path: Path, database_url: str) -> None:
    listener = Listener()
    root = db_project(
        tmp_path,
        database_url,
        ("0001", "users", "CREATE TABLE users (id int);"),
        ("0002", "posts", "CREATE TABLE posts (id int);"),
    )
    assert run_cli(["apply"], cwd=root, plugins=[listener]).exit_code == 0
    assert run_cli(["down"], cwd=root, plugins=[listener]).exit_code == 0
    assert run_cli(["fix", "0001", "--applied"], cwd=root, plugins=[listener]).exit_code == 0
    seeds = root / "seeds"
    seeds.mkdir()
    (seeds / "01_admin.sql").write_text("INSERT INTO users VALUES (1);\n", encoding="utf-8")
    assert run_cli(["seed"], cwd=root, plugins=[listener]).exit_code == 0
    assert run_cli(["seed"], cwd=root, plugins=[listener]).exit_code == 0
    assert listener.commands[:3] == [
        ("apply", ["0001", "0002"], {"direction": "up"}),
        ("down", ["0002"], {"direction": "down"}),
        ("fix", [], {"migration_id": "0001", "mode": "applied"}),
    ]
    command, ran, details = listener.commands[3]
    assert (command, details) == ("seed", {"ran": ["01_admin.sql"], "skipped": []})
    assert len(ran) == 1
    assert len(listener.commands) == 4  # nothing ran the second time: no event


def test_after_command_follows_squash(tmp_path: Path, database_url: str) -> None:
    listener = Listener()
    root = db_project(
        tmp_path,
        database_url,
        ("0001", "users", "CREATE TABLE users (id int);"),
        ("0002", "posts", "CREATE TABLE posts (id int);"),
    )
    result = run_cli(["squash", "base"], cwd=root, plugins=[listener])
    assert result.exit_code == 0, result.stderr
    [(command, ran, details)] = listener.commands
    assert (command, ran) == ("squash", [])
    assert details["removed"] == ["0001", "0002"]
    assert Path(details["path"]).is_file()


def test_on_failure_receives_what_succeeded_before(tmp_path: Path, database_url: str) -> None:
    listener = Listener()
    root = db_project(
        tmp_path,
        database_url,
        ("0001", "users", "CREATE TABLE users (id int);"),
        ("0002", "posts", "CREATE TABLE posts (id int);"),
        ("0003", "broken", "CREATE TABLE nope (;"),
    )
    result = run_cli(["apply"], cwd=root, plugins=[listener])
    assert result.exit_code == 1
    [failure] = listener.failures
    assert [ident for ident, _ in failure] == ["0001", "0002"]
    assert all(isinstance(ms, int) and ms >= 0 for _, ms in failure)


# --- commands of your own: the shared options ---------------------------------------------------

SHARED_OPTIONS_COMMAND = """
    import click

    from migretti_core.api import (
        app_of, connected, dry_run_option, hookimpl, lock_timeout_option, locked, report,
    )


    @hookimpl
    def mg_register_commands(cli):
        @cli.command("touch")
        @dry_run_option
        @lock_timeout_option
        @click.pass_context
        def touch(ctx, dry_run, lock_timeout):
            \"\"\"Change the database under the migration lock.\"\"\"
            session = app_of(ctx).session("touch")
            report(session, "touch.options", "warning",
                   f"dry_run={session.options.dry_run} lock_timeout={session.options.lock_timeout}")
            with connected(session) as conn, locked(session, conn):
                pass
"""


def test_a_plugin_commands_shared_options_reach_its_session(
    tmp_path: Path, database_url: str
) -> None:
    # dry_run_option and lock_timeout_option are the shared --dry-run and --lock-timeout: the
    # session of the command that uses them has their values, so locked() waits at most
    # --lock-timeout as it does for mg apply
    from migretti_core.testing import AdvisoryLockHolder, Project, write_text

    project = Project(tmp_path / "app", database_url)
    write_text(project.root / "touch.py", textwrap.dedent(SHARED_OPTIONS_COMMAND))
    try:
        done = project.mg("-p", "touch", "touch", "--dry-run", "--lock-timeout", "7s")
        assert done.returncode == 0, done.stderr
        assert "dry_run=True lock_timeout=7.0" in done.stderr
        plain = project.mg("-p", "touch", "touch")
        assert "dry_run=False lock_timeout=None" in plain.stderr
        bad = project.mg("-p", "touch", "touch", "--lock-timeout", "soon")
        assert bad.returncode == 2 and "--lock-timeout" in bad.stderr, bad.stderr
        with AdvisoryLockHolder(project.database_url):
            job = project.spawn("-p", "touch", "touch", "--lock-timeout", "1s")
            done = project.finish(job, timeout=30)
        assert done.returncode == 4, done.stderr
    finally:
        project.close()


# --- statement kinds in messages (sqlparse, off the hot path) -----------------------------------


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (x);", "CREATE INDEX CONCURRENTLY"),
        ("-- why\n  alter table users add column x int", "ALTER TABLE"),
        ("VACUUM t", "VACUUM"),
        ("DROP TABLE IF EXISTS t", "DROP TABLE"),
        ("CREATE OR REPLACE FUNCTION f() ...", "CREATE OR REPLACE FUNCTION"),
        ("  -- only a comment\n", None),
    ],
)
def test_statement_kinds_for_messages(sql: str, kind: str | None) -> None:
    from migretti_plugins.postgres import statement_kind

    assert statement_kind(sql) == kind


def test_a_failed_no_transaction_statement_is_named(tmp_path: Path, database_url: str) -> None:
    from migretti_core.testing import make_project, write_migration

    make_project(tmp_path, database_url)
    sql = "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON missing (x);\n"
    write_migration(tmp_path, "0001", "index", sql, transactional=False)
    result = run_cli(["apply"], cwd=tmp_path)
    assert result.exit_code == 1
    assert "statement 2 of 2 (CREATE INDEX CONCURRENTLY) failed" in result.stderr


def test_declared_keys_are_read_with_types_and_defaults(tmp_path: Path) -> None:
    from migretti_core.api import ConfigError, Key, plugin_settings

    keys = (
        Key("url", "text", "", "the webhook URL"),
        Key("timeout", "duration", 5.0, "how long to wait"),
        Key("enabled", "boolean", True, "send at all"),
        Key("events", "strings", ("apply",), "which events"),
        Key("headers", "mapping", None, "extra headers"),
    )
    config = make_config(tmp_path, {"notify": {"url": "https://x", "timeout": "2m"}})
    values = plugin_settings(config, "notify").read(keys)
    assert values == {
        "url": "https://x",
        "timeout": 120.0,
        "enabled": True,
        "events": ["apply"],
        "headers": {},
    }
    assert keys[1].describe() == "timeout (duration, default 5.0): how long to wait"
    typo = make_config(tmp_path, {"notify": {"timout": "2m"}})
    with pytest.raises(ConfigError, match=r"notify.timout: unknown key; did you mean 'timeout'"):
        plugin_settings(typo, "notify").read(keys)


def test_a_crashing_configuration_plugin_is_exit_2_naming_it(tmp_path: Path) -> None:
    project(tmp_path, "")
    loader = plugin("vault", mg_load_config=_crash)
    result = run_cli(["create", "first"], cwd=tmp_path, plugins=[loader])
    assert result.exit_code == 2
    assert "mg: error: plugin 'vault' failed in mg_load_config: ValueError" in result.stderr
    assert "pw-s3cret" not in result.output


def test_option_values_reach_hooks_that_get_no_session(tmp_path: Path) -> None:
    import click

    seen: list[Any] = []

    def mg_command_options(command: str) -> list[click.Parameter] | None:
        return [click.Option(["--compact"], is_flag=True)] if command == "plugins" else None

    def mg_format_result(options: Any, fmt: str) -> str | None:
        seen.append(options.option("compact"))
        return "compact" if fmt == "text" and options.option("compact") else None

    compact = plugin(
        "compact", mg_command_options=mg_command_options, mg_format_result=mg_format_result
    )
    result = run_cli(["plugins", "--compact"], cwd=tmp_path, plugins=[compact])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "compact\n"
    assert seen == [True]


def test_after_command_follows_baseline(tmp_path: Path, database_url: str) -> None:
    listener = Listener()
    root = db_project(
        tmp_path,
        database_url,
        ("0001", "users", "CREATE TABLE users (id int);"),
        ("0002", "posts", "CREATE TABLE posts (id int);"),
    )
    result = run_cli(["baseline", "0001"], cwd=root, plugins=[listener])
    assert result.exit_code == 0, result.stderr
    assert listener.commands == [("baseline", [], {"recorded": ["0001"]})]
