"""Every hook, seen from a plugin: when it is called, with what, and what its answer does.

A spy plugin implementing every hook specification (and answering None, so the builtins
still do the work) is loaded into a sequence of real ``mg`` runs against a fresh database;
each ``test_hook_<name>`` then checks its hook's calls. Other tests answer a hook and check
the effect. tests/test_meta_hooks.py makes sure no hook is left without a test here.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest

from migretti_core import hookimpl, hookspecs
from migretti_core.errors import HookFailed
from migretti_core.testing import (
    CliResult,
    fresh_database,
    make_config,
    make_project,
    registered,
    run_cli,
    write_migration,
)
from migretti_core.types import (
    Config,
    ConfigRequest,
    HistoryChange,
    LockHolder,
    Migration,
    MigrationResult,
    Plan,
    Target,
)

SPEC_NAMES = sorted(name for name in dir(hookspecs) if name.startswith("mg_"))
NO_TX_UP = "CREATE TABLE tags (id int);\nCREATE INDEX CONCURRENTLY tags_id ON tags (id);"

Call = tuple[str, dict[str, Any]]


def spy_plugin(calls: list[Call]) -> types.SimpleNamespace:
    """An implementation of every hook, with the spec's argument names, recording each call."""
    impls: dict[str, Any] = {}
    for name in SPEC_NAMES:
        params = list(inspect.signature(getattr(hookspecs, name)).parameters)
        record = ", ".join(f"{p!r}: {p}" for p in params)
        namespace: dict[str, Any] = {"calls": calls}
        source = f"def {name}({', '.join(params)}):\n    calls.append(({name!r}, {{{record}}}))\n"
        exec(source, namespace)
        impls[name] = namespace[name]
    return types.SimpleNamespace(**impls)


@dataclass
class Step:
    result: CliResult
    calls: list[Call] = field(default_factory=list)

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def index(self, hook: str, last: bool = False) -> int:
        names = self.names()
        if last:
            return len(names) - 1 - names[::-1].index(hook)
        return names.index(hook)


@dataclass
class Scenario:
    root: Path
    database_url: str
    steps: dict[str, Step]
    holder_pid: int


@pytest.fixture(scope="module")
def scenario(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    import psycopg

    calls: list[Call] = []
    root = tmp_path_factory.mktemp("hooks")
    steps: dict[str, Step] = {}

    def step(label: str, *args: str) -> Step:
        start = len(calls)
        result = run_cli(list(args), cwd=root, env={"MG_DATABASE_URL": None})
        steps[label] = Step(result, calls[start:])
        return steps[label]

    with fresh_database(pg_url) as url, registered(spy_plugin(calls), "spy"):
        make_project(root, url, settings={"envs": {"prod": {"lock_timeout": "10m"}}})
        write_migration(root, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
        write_migration(root, "0002", "tags", NO_TX_UP, "DROP TABLE tags;", transactional=False)
        step("apply", "apply")
        step("status", "status", "--format", "json")
        write_migration(root, "0003", "posts", "CREATE TABLE posts (id int);", "DROP TABLE posts;")
        step("dry-run", "apply", "--dry-run")
        step("rollback", "rollback")
        step("protected", "--env", "prod", "--yes", "apply")
        write_migration(root, "0004", "broken", "CREATE TABLE broken (id int);\nSELEC 1;")
        step("failure", "apply")
        with psycopg.connect(url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(894321)")
            step("lock-wait", "apply", "--lock-timeout", "1s")
            holder_pid = holder.info.backend_pid
        step("create", "create", "later")
        yield Scenario(root, url, steps, holder_pid)


def test_the_scenario_ran_as_planned(scenario: Scenario) -> None:
    codes = {label: step.result.exit_code for label, step in scenario.steps.items()}
    assert codes == {
        "apply": 0,
        "status": 0,
        "dry-run": 0,
        "rollback": 0,
        "protected": 0,
        "failure": 1,
        "lock-wait": 4,
        "create": 0,
    }, {label: step.result.stderr for label, step in scenario.steps.items()}


# --- configuration -------------------------------------------------------------------------


def test_hook_mg_config_sections(scenario: Scenario) -> None:
    for step in scenario.steps.values():
        assert step.of("mg_config_sections")
        assert step.index("mg_config_sections") < step.index("mg_load_config")


class SlackSection:
    @hookimpl
    def mg_config_sections(self) -> list[str]:
        return ["slack"]


def test_config_sections_let_mg_yaml_hold_a_plugins_section(tmp_path: Path) -> None:
    make_project(tmp_path, settings={"slack": {"channel": "#deploys"}})

    refused = run_cli(["create", "first"], cwd=tmp_path)
    accepted = run_cli(["create", "first"], cwd=tmp_path, plugins=[SlackSection()])

    assert refused.exit_code == 2
    assert "slack" in refused.stderr
    assert accepted.exit_code == 0, accepted.stderr


def test_hook_mg_load_config(scenario: Scenario) -> None:
    requests: list[ConfigRequest] = [
        c["request"] for c in scenario.steps["protected"].of("mg_load_config")
    ]
    assert requests
    assert all(r.cwd == scenario.root and r.env_name == "prod" for r in requests)
    assert requests[-1].check_unknown
    assert "envs" not in requests[-1].known_sections  # plugin sections only


class FixedConfig:
    """Configuration from somewhere other than mg.yaml."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @hookimpl
    def mg_load_config(self, request: ConfigRequest) -> Config:
        return make_config(self.root, migrations_dir=self.root / "db" / "changes")


def test_a_plugin_can_provide_the_configuration(tmp_path: Path) -> None:
    result = run_cli(["create", "first"], cwd=tmp_path, plugins=[FixedConfig(tmp_path)])

    assert result.exit_code == 0, result.stderr
    created = list((tmp_path / "db" / "changes").glob("*_first.sql"))
    assert len(created) == 1
    assert not (tmp_path / "mg.yaml").exists()


def test_hook_mg_configure(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    configs: list[Config] = [c["config"] for c in step.of("mg_configure")]
    assert len(configs) == 1
    assert configs[0].root == scenario.root
    assert configs[0].database == {"url": scenario.database_url}
    assert step.index("mg_configure") < step.index("mg_connect")


# --- migration files -----------------------------------------------------------------------


def test_hook_mg_discover_migrations(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_discover_migrations")
    assert len(calls) == 1
    assert calls[0]["config"].migrations_dir == scenario.root / "migrations"


def test_hook_mg_parse_migration(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_parse_migration")
    by_name = {c["path"].name: c["raw"] for c in calls}
    assert sorted(by_name) == ["0001_users.sql", "0002_tags.sql"]
    path = scenario.root / "migrations" / "0001_users.sql"
    assert by_name["0001_users.sql"] == path.read_bytes()


def test_hook_mg_validate_migration(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    validated = [c["migration"].id for c in step.of("mg_validate_migration")]
    assert validated[:2] == ["0001", "0002"]
    assert step.index("mg_validate_migration") < step.index("mg_execute")


class RequireComment:
    """A house rule: every migration says what it is for."""

    @hookimpl
    def mg_validate_migration(self, migration: Migration) -> list[str]:
        if "-- why:" not in migration.text:
            return [f"{migration.filename}:1: say why with a '-- why:' comment"]
        return []


def test_validation_problems_stop_everything_before_any_change(
    tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "-- why: logins\nCREATE TABLE users (id int);")
    write_migration(tmp_path, "0002", "posts", "CREATE TABLE posts (id int);")

    result = run_cli(["apply"], cwd=tmp_path, plugins=[RequireComment()])

    assert result.exit_code == 2
    assert "0002_posts.sql:1: say why" in result.stderr
    status = run_cli(["status", "--format", "json"], cwd=tmp_path)
    assert json.loads(status.stdout)["counts"]["applied"] == 0


def test_hook_mg_create_migration(scenario: Scenario) -> None:
    step = scenario.steps["create"]
    calls = step.of("mg_create_migration")
    assert len(calls) == 1
    assert calls[0]["title"] == "later"
    assert calls[0]["up_sql"] == "" and calls[0]["down_sql"] == ""
    assert step.result.stdout.strip().endswith("_later.sql")


def test_hook_mg_split_statements(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_split_statements")
    # the no-transaction migration's up section: once for lint (a plugin from outside
    # migretti implements the hook, so lint checks the statements it cuts), once to run it;
    # never for transactional ones
    assert [c["sql"].strip() for c in calls] == [NO_TX_UP, NO_TX_UP]


# --- connection, locking, execution ---------------------------------------------------------


def test_hook_mg_connection_params(scenario: Scenario) -> None:
    for label in ("apply", "status", "rollback"):
        assert scenario.steps[label].of("mg_connection_params")
    assert scenario.steps["create"].of("mg_connection_params") == []


def test_hook_mg_connect(scenario: Scenario) -> None:
    for label in ("apply", "status", "rollback", "failure"):
        assert len(scenario.steps[label].of("mg_connect")) == 1
    assert scenario.steps["create"].of("mg_connect") == []


def test_hook_mg_disconnect(scenario: Scenario) -> None:
    for label in ("apply", "failure", "lock-wait"):
        step = scenario.steps[label]
        assert len(step.of("mg_disconnect")) == 1
        assert step.index("mg_disconnect") == step.index("mg_disconnect", last=True)
        assert step.names()[-1] != "mg_connect"


def test_hook_mg_describe_target(scenario: Scenario) -> None:
    step = scenario.steps["protected"]
    assert step.of("mg_describe_target")
    assert step.index("mg_describe_target") < step.index("mg_confirm")


def test_hook_mg_lock_acquire(scenario: Scenario) -> None:
    apply = scenario.steps["apply"]
    assert [c["timeout"] for c in apply.of("mg_lock_acquire")] == [600.0]
    assert apply.index("mg_lock_acquire") < apply.index("mg_history_prepare")
    assert apply.index("mg_lock_acquire") < apply.index("mg_before_apply")
    assert [c["timeout"] for c in scenario.steps["lock-wait"].of("mg_lock_acquire")] == [1.0]
    assert scenario.steps["status"].of("mg_lock_acquire") == []  # read-only


class NoLock:
    """A lock plugin that could not take its lock and says so with False."""

    @hookimpl
    def mg_lock_acquire(self) -> bool:
        return False


def test_a_lock_not_taken_changes_nothing(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = run_cli(["apply"], cwd=tmp_path, plugins=[NoLock()])

    assert result.exit_code == 2, result.stderr
    assert "plugin 'nolock' returned bool False instead of True from mg_lock_acquire" in (
        result.stderr
    )
    assert "a lock that cannot be had raises, e.g. LockTimeout" in result.stderr
    status = run_cli(["status", "--format", "json"], cwd=tmp_path)
    assert json.loads(status.stdout)["counts"]["applied"] == 0


def test_hook_mg_lock_release(scenario: Scenario) -> None:
    apply = scenario.steps["apply"]
    assert len(apply.of("mg_lock_release")) == 1
    assert apply.index("mg_lock_release") > apply.index("mg_after_apply")
    failure = scenario.steps["failure"]
    assert failure.index("mg_lock_release") > failure.index("mg_on_failure")


def test_hook_mg_lock_check_sql(scenario: Scenario) -> None:
    apply = scenario.steps["apply"]
    assert len(apply.of("mg_lock_check_sql")) == 2  # once per migration
    assert apply.index("mg_lock_check_sql") > apply.index("mg_lock_acquire")
    # the builtin's check opens each migration's query, after the transactional one's
    # timeouts (and its commit without waiting for the disk: 0002 follows it)
    head = apply.of("mg_execute_transaction")[0]["parts"][0]
    assert head.startswith(
        "SET LOCAL lock_timeout = '5000ms'; SET LOCAL synchronous_commit = off; SELECT "
    )
    assert "pg_try_advisory_xact_lock" in head
    sent = [c["sql"] for c in apply.of("mg_execute")]
    assert sent[1].startswith("SELECT ")  # after the no-transaction one's timeouts
    assert "pg_try_advisory_xact_lock" in sent[1].split(";\n")[0]
    assert scenario.steps["dry-run"].of("mg_lock_check_sql") == []


def test_hook_mg_execute(scenario: Scenario) -> None:
    sent = [c["sql"] for c in scenario.steps["apply"].of("mg_execute")]
    # the transactional migration went through mg_execute_transaction; the other goes
    # statement by statement, after the lock check and its `running` row, with the same
    # lock timeout for its history writes and each statement, reset afterwards
    assert sent[0] == "SET lock_timeout = '5000ms'"
    assert "pg_try_advisory_xact_lock" in sent[1] and "'running'" in sent[1]
    assert sent[2:] == [
        "CREATE TABLE tags (id int)",
        "CREATE INDEX CONCURRENTLY tags_id ON tags (id)",
        "RESET lock_timeout; RESET statement_timeout",
    ]


def test_hook_mg_execute_transaction(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_execute_transaction")
    # one call for the transactional migration: the lock check, the SQL as written, its
    # history row, which the builtin sends between BEGIN and COMMIT in one round trip
    assert len(calls) == 1
    check, sql, record = calls[0]["parts"]
    assert "pg_try_advisory_xact_lock" in check and check.endswith(";\n")
    assert sql.startswith("CREATE TABLE users (id int);\n")
    # the history tables under the schema they were found in (docs/history.md)
    assert "INSERT INTO public._migrations" in record and "'0001'" in record
    assert scenario.steps["dry-run"].of("mg_execute_transaction") == []
    # a failing migration: nothing of it stays, and the next run works
    failure = scenario.steps["failure"]
    assert failure.result.exit_code == 1
    assert "0004_broken.sql:6: syntax error" in failure.result.output
    assert len(failure.of("mg_execute_transaction")) == 1


def test_hook_mg_execute_each(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_execute_each")
    # the no-transaction migration's statements are offered together; the builtin leaves
    # them (a concurrent index build must run alone, and one statement gains nothing), so
    # each went through mg_execute (test_hook_mg_execute)
    assert [list(c["batch"].statements) for c in calls] == [
        ["CREATE TABLE tags (id int)", "CREATE INDEX CONCURRENTLY tags_id ON tags (id)"]
    ]
    assert calls[0]["batch"].committed == 0
    assert scenario.steps["dry-run"].of("mg_execute_each") == []
    # batches that run: tests/test_no_transaction_batches.py


def test_hook_mg_transaction(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    calls = step.of("mg_transaction")
    # preparing the history tables; migrations go through mg_execute_transaction
    assert calls and all(c["rollback"] is False for c in calls)
    assert step.index("mg_transaction") < step.index("mg_execute_transaction")


def test_hook_mg_timeout_sql(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_timeout_sql")
    # per migration: SET LOCAL inside the transactional one; SET and RESET around the other
    assert [(c["lock_timeout"], c["statement_timeout"], c["local"]) for c in calls] == [
        (5.0, 0.0, True),
        (5.0, 0.0, False),
        (0, 0, False),
    ]
    # a dry run sets them once, inside the transaction it rolls back
    dry = scenario.steps["dry-run"].of("mg_timeout_sql")
    assert [(c["lock_timeout"], c["statement_timeout"], c["local"]) for c in dry] == [
        (5.0, 0.0, True)
    ]


def test_hook_mg_unflushed_commit_sql(scenario: Scenario) -> None:
    apply = scenario.steps["apply"]
    # asked once per run; the builtin's answer starts the query of 0001, which 0002 follows
    assert len(apply.of("mg_unflushed_commit_sql")) == 1
    (check, _, _) = apply.of("mg_execute_transaction")[0]["parts"]
    assert "SET LOCAL synchronous_commit = off" in check
    # the last migration of a run commits as the session would: it flushes them all
    for label in ("protected", "failure"):
        (last,) = scenario.steps[label].of("mg_execute_transaction")
        assert "synchronous_commit" not in last["parts"][0], label
    # a dry run commits nothing
    assert scenario.steps["dry-run"].of("mg_unflushed_commit_sql") == []


class FlushWatcher:
    def __init__(self) -> None:
        self.waits = 0

    @hookimpl
    def mg_wait_flushed(self, session: Any, conn: Any) -> bool:
        assert session.hooks.query(session, conn, "SELECT 1") == [(1,)]
        self.waits += 1
        return True


def test_hook_mg_wait_flushed(pg_url: str, tmp_path: Path) -> None:
    watcher = FlushWatcher()
    with fresh_database(pg_url) as url:
        make_project(tmp_path, url)
        write_migration(tmp_path, "0001", "a", "CREATE TABLE a (id int);")
        write_migration(tmp_path, "0002", "b", "CREATE TABLE b (id int);")
        # a finished run: its last COMMIT waited for the disk, nothing to wait for
        assert run_cli(["apply"], cwd=tmp_path, plugins=[watcher]).exit_code == 0
        assert watcher.waits == 0
        write_migration(tmp_path, "0003", "c", "CREATE TABLE c (id int);")
        write_migration(tmp_path, "0004", "broken", "SELECT 1 / 0;")
        # stopped after 0003 committed without waiting: mg waits before it exits
        failed = run_cli(["apply"], cwd=tmp_path, plugins=[watcher])
        assert failed.exit_code == 1 and "division by zero" in failed.stderr
        assert watcher.waits == 1
        # a run stopped at its first migration left nothing unflushed
        assert run_cli(["apply"], cwd=tmp_path, plugins=[watcher]).exit_code == 1
        assert watcher.waits == 1


class CtrlCAfterCommit:
    """Ctrl-C landing once the first migration's COMMIT is done, before mg hears of it."""

    @hookimpl(wrapper=True)
    def mg_execute_transaction(self, session: Any, conn: Any, parts: Any) -> Any:
        yield
        raise KeyboardInterrupt


def test_mg_wait_flushed_follows_a_ctrl_c_that_lands_after_a_commit(
    pg_url: str, tmp_path: Path
) -> None:
    watcher = FlushWatcher()
    with fresh_database(pg_url) as url:
        make_project(tmp_path, url)
        write_migration(tmp_path, "0001", "a", "CREATE TABLE a (id int);")
        write_migration(tmp_path, "0002", "b", "CREATE TABLE b (id int);")
        stopped = run_cli(["apply"], cwd=tmp_path, plugins=[CtrlCAfterCommit(), watcher])
        assert stopped.exit_code == 130, stopped.stderr
        assert watcher.waits == 1


class CrashingFlush:
    @hookimpl(tryfirst=True)
    def mg_wait_flushed(self, session: Any, conn: Any) -> bool:
        raise RuntimeError("flush service unreachable")


def test_a_crashing_mg_wait_flushed_is_named_and_the_runs_error_stands(
    pg_url: str, tmp_path: Path
) -> None:
    with fresh_database(pg_url) as url:
        make_project(tmp_path, url)
        write_migration(tmp_path, "0001", "a", "CREATE TABLE a (id int);")
        write_migration(tmp_path, "0002", "broken", "SELECT 1 / 0;")
        failed = run_cli(["apply"], cwd=tmp_path, plugins=[CrashingFlush()])
        assert failed.exit_code == 1
        assert "division by zero" in failed.stderr
        assert "mg_wait_flushed" in failed.stderr and "flush service unreachable" in failed.stderr


def test_hook_mg_lock_blockers(scenario: Scenario) -> None:
    calls = scenario.steps["apply"].of("mg_lock_blockers")
    # one watcher per transactional migration, per no-transaction statement and per
    # no-transaction history write (its `running` row and its last one), probing halfway
    # through the table-lock timeout
    assert [c["after"] for c in calls] == [2.5, 2.5, 2.5, 2.5, 2.5]


def test_hook_mg_query(scenario: Scenario) -> None:
    queries = [c["sql"] for c in scenario.steps["apply"].of("mg_query")]
    assert any("pg_try_advisory_lock" in q for q in queries)
    assert any("_migrations" in q for q in queries)


def test_hook_mg_dry_run(scenario: Scenario) -> None:
    step = scenario.steps["dry-run"]
    calls = step.of("mg_dry_run")
    assert len(calls) == 1
    assert calls[0]["plan"].ids == ("0003",)
    assert step.of("mg_history_write") == []
    assert step.of("mg_before_apply") == []
    assert "ok: 0003 posts" in step.result.stdout


# --- history -------------------------------------------------------------------------------


def test_hook_mg_history_read(scenario: Scenario) -> None:
    assert scenario.steps["status"].of("mg_history_read")
    assert scenario.steps["status"].of("mg_history_prepare") == []


def test_hook_mg_history_prepare(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    assert len(step.of("mg_history_prepare")) == 1
    assert step.index("mg_history_prepare") < step.index("mg_history_write")


def test_hook_mg_history_write(scenario: Scenario) -> None:
    applied: list[HistoryChange] = [
        c["change"] for c in scenario.steps["apply"].of("mg_history_write")
    ]
    # 0001's row rides in its own query, and 0002's `running` row in the query that checks
    # the lock (mg_history_sql); 0002 is recorded as applied after its statements ran.
    assert [(c.migration_id, c.action, c.status) for c in applied] == [
        ("0002", "UP", "applied"),
    ]
    rolled: list[HistoryChange] = [
        c["change"] for c in scenario.steps["rollback"].of("mg_history_write")
    ]
    assert [(c.migration_id, c.action, c.status) for c in rolled][-1] == ("0002", "DOWN", None)


def test_hook_mg_history_sql(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    changes: list[HistoryChange] = [c["change"] for c in step.of("mg_history_sql")]
    assert [(c.migration_id, c.action, c.status, c.duration_ms) for c in changes] == [
        ("0001", "UP", "applied", None),
        ("0002", "UP", "running", None),
    ]
    executed = ["".join(c["parts"]) for c in step.of("mg_execute_transaction")]
    assert any("CREATE TABLE users" in sql and "_migrations" in sql for sql in executed)


# --- lifecycle -----------------------------------------------------------------------------


def test_hook_mg_before_apply(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    calls = step.of("mg_before_apply")
    assert [c["plan"].ids for c in calls] == [("0001", "0002")]
    assert step.index("mg_before_apply") < step.index("mg_execute")


class Freeze:
    """Refuses deployments during a change freeze."""

    @hookimpl
    def mg_before_apply(self, plan: Plan) -> None:
        raise HookFailed(f"change freeze: not applying {len(plan.steps)} migrations")


def test_before_apply_can_abort_before_any_change(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = run_cli(["apply"], cwd=tmp_path, plugins=[Freeze()])

    assert result.exit_code == 1
    assert "change freeze: not applying 1 migrations" in result.stderr
    status = run_cli(["status", "--format", "json"], cwd=tmp_path)
    assert json.loads(status.stdout)["counts"] == {
        "applied": 0,
        "pending": 1,
        "failed": 0,
        "running": 0,
    }


class Refuses:
    """Answers a gate with False, as if that vetoed (only raising does)."""

    def __init__(self, hook: str) -> None:
        setattr(self, hook, hookimpl(specname=hook)(lambda: False))


@pytest.mark.parametrize(
    ("hook", "command"),
    [
        ("mg_before_apply", ["apply"]),
        ("mg_before_migration", ["apply"]),
        ("mg_before_rollback", ["rollback"]),
    ],
)
def test_a_gate_that_answers_fails_closed(
    tmp_path: Path, database_url: str, hook: str, command: list[str]
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    if command == ["rollback"]:
        assert run_cli(["apply"], cwd=tmp_path).exit_code == 0

    result = run_cli(command, cwd=tmp_path, plugins=[Refuses(hook)])

    assert result.exit_code == 2, result.stderr
    assert f"returned bool False instead of None from {hook}" in result.stderr
    assert "a gate stops the command by raising, e.g. HookFailed" in result.stderr
    status = run_cli(["status", "--format", "json"], cwd=tmp_path)
    applied = 1 if command == ["rollback"] else 0
    assert json.loads(status.stdout)["counts"]["applied"] == applied


def test_hook_mg_after_apply(scenario: Scenario) -> None:
    step = scenario.steps["apply"]
    calls = step.of("mg_after_apply")
    assert len(calls) == 1
    results: list[MigrationResult] = list(calls[0]["results"])
    assert [(r.migration.id, r.direction, r.ok) for r in results] == [
        ("0001", "up", True),
        ("0002", "up", True),
    ]
    assert step.index("mg_after_apply") > step.index("mg_history_write", last=True)
    assert scenario.steps["failure"].of("mg_after_apply") == []


def test_hook_mg_before_rollback(scenario: Scenario) -> None:
    step = scenario.steps["rollback"]
    calls = step.of("mg_before_rollback")
    assert [(c["plan"].direction, c["plan"].ids) for c in calls] == [("down", ("0002",))]
    assert step.index("mg_before_rollback") < step.index("mg_execute")


def test_hook_mg_after_rollback(scenario: Scenario) -> None:
    step = scenario.steps["rollback"]
    calls = step.of("mg_after_rollback")
    assert [[r.migration.id for r in c["results"]] for c in calls] == [["0002"]]
    assert scenario.steps["apply"].of("mg_after_rollback") == []


def test_hook_mg_before_migration(scenario: Scenario) -> None:
    calls = scenario.steps["protected"].of("mg_before_migration")
    assert [(c["migration"].id, c["direction"]) for c in calls] == [
        ("0002", "up"),
        ("0003", "up"),
    ]


def test_hook_mg_after_migration(scenario: Scenario) -> None:
    calls = scenario.steps["rollback"].of("mg_after_migration")
    assert [(c["result"].migration.id, c["result"].direction) for c in calls] == [("0002", "down")]
    failed = scenario.steps["failure"].of("mg_after_migration")
    assert [c["result"].migration.id for c in failed] == []


def test_hook_mg_on_failure(scenario: Scenario) -> None:
    step = scenario.steps["failure"]
    calls = step.of("mg_on_failure")
    assert len(calls) == 1
    assert calls[0]["migration"].id == "0004"
    assert calls[0]["plan"].ids == ("0004",)
    assert "syntax error" in calls[0]["error"]
    assert "0004_broken.sql:6" in step.result.stderr
    assert scenario.steps["apply"].of("mg_on_failure") == []


def test_hook_mg_on_lock_wait(scenario: Scenario) -> None:
    step = scenario.steps["lock-wait"]
    calls = step.of("mg_on_lock_wait")
    assert calls
    holder: LockHolder = calls[0]["holder"]
    assert holder.pid == scenario.holder_pid
    assert calls[0]["waited"] >= 0
    assert f"pid {scenario.holder_pid}" in step.result.stderr


# --- confirmation --------------------------------------------------------------------------


def test_hook_mg_is_protected(scenario: Scenario) -> None:
    assert scenario.steps["apply"].of("mg_is_protected")
    assert scenario.steps["apply"].of("mg_confirm") == []
    assert scenario.steps["protected"].of("mg_confirm")


class Protected:
    @hookimpl
    def mg_is_protected(self) -> bool:
        return True


def test_is_protected_asks_for_confirmation(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    refused = run_cli(["apply"], cwd=tmp_path, plugins=[Protected()])
    confirmed = run_cli(["apply", "--yes"], cwd=tmp_path, plugins=[Protected()])

    assert refused.exit_code == 5
    assert "protected" in refused.stderr
    assert confirmed.exit_code == 0, confirmed.stderr


def test_hook_mg_confirm(scenario: Scenario) -> None:
    calls = scenario.steps["protected"].of("mg_confirm")
    assert len(calls) == 1
    target: Target = calls[0]["target"]
    assert target.dbname == scenario.database_url.split("/")[3].split("?")[0]
    assert calls[0]["plan"].ids == ("0002", "0003")


class Veto:
    @hookimpl
    def mg_confirm(self, target: Target, plan: Plan | None) -> bool:
        return False


def test_confirm_can_veto_even_with_yes(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url, settings={"protected": True})
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = run_cli(["apply", "--yes"], cwd=tmp_path, plugins=[Veto()])

    assert result.exit_code == 5
    assert "plugin 'veto' refused the command" in result.stderr


class ConfirmWrapper:
    @hookimpl(wrapper=True)
    def mg_confirm(self) -> Any:
        return (yield)


def test_a_veto_is_named_through_a_wrapper_of_mg_confirm(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url, settings={"protected": True})
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")

    result = run_cli(["apply", "--yes"], cwd=tmp_path, plugins=[Veto(), ConfirmWrapper()])

    assert result.exit_code == 5
    assert "plugin 'veto' refused the command" in result.stderr
    assert "confirmwrapper" not in result.stderr


# --- output and CLI ------------------------------------------------------------------------


def test_hook_mg_report(scenario: Scenario) -> None:
    events = [c["event"] for c in scenario.steps["apply"].of("mg_report")]
    applied = [e for e in events if e.name == "migration.applied"]
    assert [e.fields["migration_id"] for e in applied] == ["0001", "0002"]
    assert all(c["options"].command == "apply" for c in scenario.steps["apply"].of("mg_report"))


def test_hook_mg_format_result(scenario: Scenario) -> None:
    calls = scenario.steps["status"].of("mg_format_result")
    assert [(c["kind"], c["fmt"]) for c in calls] == [("status", "json")]
    assert calls[0]["data"]["counts"]["applied"] == 2


class Markdown:
    @hookimpl
    def mg_format_result(self, kind: str, data: Any, fmt: str) -> str | None:
        if kind != "plugins" or fmt != "text":
            return None
        return "\n".join(f"- **{p['name']}** ({p['origin']})" for p in data)


def test_format_result_can_render_a_result_differently(tmp_path: Path) -> None:
    result = run_cli(["plugins"], cwd=tmp_path, plugins=[Markdown()])

    assert result.exit_code == 0, result.stderr
    assert "- **config** (builtin)" in result.stdout
    assert "- **markdown** (command line)" in result.stdout


def test_hook_mg_register_commands(scenario: Scenario) -> None:
    for step in scenario.steps.values():
        clis = [c["cli"] for c in step.of("mg_register_commands")]
        assert len(clis) == 1
        assert isinstance(clis[0], click.Group)
        assert "apply" in clis[0].commands


class Hello:
    @hookimpl
    def mg_register_commands(self, cli: click.Group) -> None:
        @cli.command()
        @click.argument("who")
        def hello(who: str) -> None:
            """Say hello."""
            click.echo(f"hello, {who}")


def test_register_commands_adds_a_command(tmp_path: Path) -> None:
    result = run_cli(["hello", "world"], cwd=tmp_path, plugins=[Hello()])
    help_text = run_cli(["--help"], cwd=tmp_path, plugins=[Hello()])

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "hello, world\n"
    assert "Say hello." in help_text.stdout
