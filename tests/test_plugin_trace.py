"""MG_TRACE_PLUGINS=1: every hook call on stderr with the plugins called and the duration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from migretti_core import hookimpl
from migretti_core.testing import (
    make_config,
    make_hooks,
    make_migration,
    make_project,
    make_session,
    run_cli,
    write_migration,
)
from migretti_core.types import MigrationResult, Plan

TRACE = re.compile(r"^mg: trace: (?P<hook>mg_\w+) \[(?P<plugins>[^\]]*)\] (?P<ms>\d+\.\d\d) ms$")


def traces(stderr: str) -> list[tuple[str, list[str], float]]:
    found = []
    for line in stderr.splitlines():
        match = TRACE.match(line)
        if match:
            plugins = [p for p in match["plugins"].split(", ") if p and p != "-"]
            found.append((match["hook"], plugins, float(match["ms"])))
    return found


def hooks_traced(stderr: str) -> list[str]:
    return [hook for hook, _, _ in traces(stderr)]


def test_help_traces_the_startup_hooks(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env["MG_TRACE_PLUGINS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "migretti_core", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    found = {hook: plugins for hook, plugins, _ in traces(result.stderr)}
    assert {"seeds", "squash"} <= set(found["mg_register_commands"])
    assert "Usage:" in result.stdout
    assert "mg: trace:" not in result.stdout


def test_no_trace_without_the_variable(tmp_path: Path) -> None:
    result = run_cli(["plugins"], cwd=tmp_path, env={"MG_TRACE_PLUGINS": None})

    assert result.exit_code == 0
    assert "mg: trace:" not in result.stderr


class Notifier:
    name = "notifier"

    @hookimpl
    def mg_after_apply(self, plan: Plan) -> None:
        pass


class Broken:
    name = "broken"

    @hookimpl
    def mg_after_apply(self, plan: Plan) -> None:
        raise RuntimeError("boom")


def test_hooks_called_one_implementation_at_a_time_are_traced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hooks = make_hooks(Notifier(), Broken(), builtins=["output"], trace=True)
    session = make_session(hooks, make_config(Path("/project")), command="apply")
    migration = make_migration("0001", "users")
    plan = Plan("up", (migration,))

    hooks.after_apply(session, plan, [MigrationResult(migration, "up", True, 1)])

    found = traces(capsys.readouterr().err)
    # the failure is reported through mg_report (traced itself) before mg_after_apply ends
    assert [hook for hook, _, _ in found] == ["mg_report", "mg_after_apply"]
    assert found[1][1] == ["broken (failed)", "notifier"]
    assert found[0][1] == ["output"]


def test_relay_hooks_are_traced_with_every_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    hooks = make_hooks(builtins=["split"], trace=True)

    statements = hooks.split_statements("SELECT 1; SELECT 2;")

    assert len(statements) == 2
    [(hook, plugins, ms)] = traces(capsys.readouterr().err)
    assert (hook, plugins) == ("mg_split_statements", ["split"])
    assert 0 <= ms < 5000


def test_a_whole_apply_is_traced_in_call_order(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = run_cli(["apply"], cwd=tmp_path, env={"MG_TRACE_PLUGINS": "1"}, plugins=[Notifier()])

    assert result.exit_code == 0, result.stderr
    order = hooks_traced(result.stderr)
    for earlier, later in [
        ("mg_load_config", "mg_configure"),
        ("mg_configure", "mg_connect"),
        ("mg_connect", "mg_lock_acquire"),
        ("mg_lock_acquire", "mg_before_apply"),
        ("mg_before_apply", "mg_before_migration"),
        ("mg_before_migration", "mg_history_sql"),
        ("mg_history_sql", "mg_execute_transaction"),
        ("mg_execute_transaction", "mg_after_migration"),
        ("mg_after_migration", "mg_after_apply"),
        ("mg_after_apply", "mg_lock_release"),
        ("mg_lock_release", "mg_disconnect"),
    ]:
        assert order.index(earlier) < order.index(later), (earlier, later, order)
    after_apply = [
        plugins for hook, plugins, _ in traces(result.stderr) if hook == "mg_after_apply"
    ]
    assert after_apply == [["notifier", "shellhooks"]]
    after_command = [
        plugins for hook, plugins, _ in traces(result.stderr) if hook == "mg_after_command"
    ]
    assert len(after_command) == 1 and "schema" in after_command[0]
    assert "applied 0001 users" in result.stdout
