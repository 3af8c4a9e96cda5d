"""A failing notification plugin never hides the migration's result or error, never stops the
other notifiers, and is reported with its name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migretti_core import hookimpl
from migretti_core.errors import HookFailed
from migretti_core.testing import (
    make_config,
    make_hooks,
    make_migration,
    make_project,
    make_session,
    run_cli,
    write_migration,
)
from migretti_core.types import (
    Event,
    LockHolder,
    Migration,
    MigrationResult,
    Plan,
    Session,
)


class Recorder:
    """A notifier that works: remembers what it was told."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.heard: list[tuple[str, Any]] = []

    @hookimpl
    def mg_after_apply(self, plan: Plan) -> None:
        self.heard.append(("after_apply", plan.ids))

    @hookimpl
    def mg_after_rollback(self, plan: Plan) -> None:
        self.heard.append(("after_rollback", plan.ids))

    @hookimpl
    def mg_after_migration(self, result: MigrationResult) -> None:
        self.heard.append(("after_migration", result.migration.id))

    @hookimpl
    def mg_on_failure(self, migration: Migration | None, error: str) -> None:
        self.heard.append(("on_failure", migration.id if migration else None))

    @hookimpl
    def mg_on_lock_wait(self, waited: float) -> None:
        self.heard.append(("on_lock_wait", waited))


class Crashing:
    """A notifier with a bug: every hook raises."""

    name = "crashing"

    def _boom(self) -> None:
        raise ConnectionError("chat server unreachable")

    @hookimpl
    def mg_after_apply(self) -> None:
        self._boom()

    @hookimpl
    def mg_after_rollback(self) -> None:
        self._boom()

    @hookimpl
    def mg_after_migration(self) -> None:
        self._boom()

    @hookimpl
    def mg_on_failure(self) -> None:
        self._boom()

    @hookimpl
    def mg_on_lock_wait(self) -> None:
        self._boom()


class Collect:
    """Collects every reported event."""

    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def mg_report(self, event: Event) -> None:
        self.events.append(event)


def session_with(*plugins: object) -> tuple[Session, Collect]:
    collect = Collect()
    hooks = make_hooks(collect, *plugins)
    return make_session(hooks, make_config(Path("/project"))), collect


def plan_and_results() -> tuple[Plan, list[MigrationResult]]:
    migration = make_migration("0001", "users", "CREATE TABLE users (id int);")
    return Plan("up", (migration,)), [MigrationResult(migration, "up", True, 3)]


# --- the facade, without a database ---------------------------------------------------------


@pytest.mark.parametrize("order", ["crashing-first", "crashing-last"])
def test_a_crashing_notifier_does_not_stop_the_others(order: str) -> None:
    recorder = Recorder()
    plugins = [recorder, Crashing()] if order == "crashing-first" else [Crashing(), recorder]
    session, collect = session_with(*plugins)
    plan, results = plan_and_results()
    holder = LockHolder(123, "migretti", None)

    session.hooks.after_migration(session, results[0])
    session.hooks.after_apply(session, plan, results)
    session.hooks.after_rollback(session, plan, results)
    session.hooks.on_failure(session, plan, plan.steps[0], "boom")
    session.hooks.on_lock_wait(session, holder, 1.5)

    assert [name for name, _ in recorder.heard] == [
        "after_migration",
        "after_apply",
        "after_rollback",
        "on_failure",
        "on_lock_wait",
    ]
    failures = [e for e in collect.events if e.name == "plugin.failed"]
    assert [e.fields["plugin"] for e in failures] == ["crashing"] * 5
    assert all(e.level == "warning" for e in failures)
    assert (
        "plugin 'crashing' failed in mg_after_apply: ConnectionError: chat server unreachable"
        in [e.message for e in failures]
    )


def test_a_crashing_lock_wait_listener_is_reported_once_while_the_wait_goes_on() -> None:
    """The lock is polled for minutes: the same crash every few seconds would bury the
    waiting messages users need."""
    session, collect = session_with(Crashing())
    holder = LockHolder(123, "migretti", None)

    for waited in (0.0, 5.0, 10.0, 15.0):
        session.hooks.on_lock_wait(session, holder, waited)

    names = [e.name for e in collect.events]
    assert names.count("lock.waiting") == 4
    assert names.count("plugin.failed") == 1


class Refusing:
    """A post-apply check that fails the command on purpose (an MgError)."""

    name = "refusing"

    @hookimpl
    def mg_after_apply(self) -> None:
        raise HookFailed("post-apply smoke test failed; the migrations stay applied")

    @hookimpl
    def mg_on_failure(self) -> None:
        raise HookFailed("pager is down")


def test_an_after_apply_error_still_lets_every_notifier_run() -> None:
    recorder = Recorder()
    session, _ = session_with(recorder, Refusing())  # Refusing is called first
    plan, results = plan_and_results()

    with pytest.raises(HookFailed, match="smoke test failed"):
        session.hooks.after_apply(session, plan, results)

    assert recorder.heard == [("after_apply", ("0001",))]


def test_a_second_after_apply_error_is_reported_not_lost() -> None:
    session, collect = session_with(Refusing(), ("refusing_too", Refusing()))
    plan, results = plan_and_results()

    with pytest.raises(HookFailed):
        session.hooks.after_apply(session, plan, results)

    failures = [e for e in collect.events if e.name == "plugin.failed"]
    assert [e.fields["plugin"] for e in failures] == ["refusing"]


def test_an_error_raised_on_failure_is_only_a_warning() -> None:
    recorder = Recorder()
    session, collect = session_with(recorder, Refusing())
    plan, _ = plan_and_results()

    session.hooks.on_failure(session, plan, plan.steps[0], "syntax error")

    assert recorder.heard == [("on_failure", "0001")]
    assert [e.message for e in collect.events] == [
        "plugin 'refusing' failed in mg_on_failure: HookFailed: pager is down"
    ]


def test_a_failing_reporter_does_not_silence_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    class BadReporter:
        name = "bad_reporter"

        @hookimpl
        def mg_report(self, event: Event) -> None:
            raise ValueError("cannot format")

    session, collect = session_with(BadReporter())

    session.hooks.report(session.options, Event("x.happened", "info", "it happened"))

    assert [e.message for e in collect.events] == ["it happened"]
    assert "plugin 'bad_reporter' failed in mg_report: ValueError" in capsys.readouterr().err


# --- through mg, against a database --------------------------------------------------------


def failing_project(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")
    write_migration(tmp_path, "0002", "broken", "SELEC 1;")


def applied_count(tmp_path: Path) -> int:
    status = run_cli(["status", "--format", "json"], cwd=tmp_path)
    counts: dict[str, int] = json.loads(status.stdout)["counts"]
    return counts["applied"]


def test_the_migration_error_stands_when_a_notifier_crashes(
    tmp_path: Path, database_url: str
) -> None:
    failing_project(tmp_path, database_url)
    recorder = Recorder()

    result = run_cli(["apply"], cwd=tmp_path, plugins=[recorder, Crashing()])

    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("mg: error:")]
    assert len(errors) == 1
    assert "0002_broken.sql:5: syntax error" in errors[0]
    assert "plugin 'crashing' failed in mg_on_failure" in result.stderr
    assert ("on_failure", "0002") in recorder.heard
    assert applied_count(tmp_path) == 1


def test_the_success_stands_when_a_notifier_crashes(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")
    recorder = Recorder()

    result = run_cli(["apply"], cwd=tmp_path, plugins=[Crashing(), recorder])

    assert result.exit_code == 0, result.stderr
    assert "applied 0001 users" in result.stdout
    assert "plugin 'crashing' failed in mg_after_apply" in result.stderr
    assert "plugin 'crashing' failed in mg_after_migration" in result.stderr
    assert recorder.heard == [("after_migration", "0001"), ("after_apply", ("0001",))]
    assert applied_count(tmp_path) == 1


def test_an_after_apply_error_fails_the_command_but_keeps_the_migrations(
    tmp_path: Path, database_url: str
) -> None:
    make_project(tmp_path, database_url)
    write_migration(tmp_path, "0001", "users", "CREATE TABLE users (id int);")
    recorder = Recorder()

    result = run_cli(["apply"], cwd=tmp_path, plugins=[recorder, Refusing()])

    assert result.exit_code == 1
    assert "smoke test failed; the migrations stay applied" in result.stderr
    assert "applied 0001 users" in result.stdout
    assert ("after_apply", ("0001",)) in recorder.heard
    assert applied_count(tmp_path) == 1
