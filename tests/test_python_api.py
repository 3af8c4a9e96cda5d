"""The Python API (docs/python-api.md): ``Migretti`` against a real PostgreSQL.

Where the CLI has a ``--format json`` document, the API's result must hold the same data, so
several tests compare the two directly.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migretti_core import (
    ConfirmationRequired,
    LockTimeout,
    MgError,
    MigrationFileError,
    Migretti,
    SqlError,
    StateError,
    UsageError,
)
from migretti_core.testing import AdvisoryLockHolder, Project, mg_env, wait_until


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API reads MG_* like the CLI; none of the runner's own may leak into these tests."""
    for key in list(os.environ):
        if key.startswith("MG_") and key != "MG_TEST_DATABASE_URL":
            monkeypatch.delenv(key)


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def three_tables(project: Project) -> None:
    for ident in ("0001", "0002", "0003"):
        project.add_table(ident)


def cli_json(project: Project, *args: str) -> Any:
    done = project.mg(*args, "--format", "json")
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


def test_apply_returns_what_ran_and_reads_match_the_cli_json(project: Project) -> None:
    three_tables(project)
    mg = Migretti(config=project.root / "mg.yaml")

    result = mg.apply(to="0002")

    assert result.command == "apply"
    assert result.ids == ("0001", "0002")
    assert [m.file for m in result.migrations] == [
        str(project.path_of("0001")),
        str(project.path_of("0002")),
    ]
    assert all(m.ok and m.direction == "up" and m.duration_ms >= 0 for m in result.migrations)
    assert project.tables() == {"t_0001", "t_0002"}
    assert mg.status().as_dict() == cli_json(project, "status")
    assert [row.as_dict() for row in mg.list()] == cli_json(project, "list")
    head = mg.head()
    assert head is not None
    assert head.as_dict() == cli_json(project, "head")
    assert mg.verify().as_dict() == cli_json(project, "verify")
    assert mg.status().pending == 1

    assert mg.apply().ids == ("0003",)
    assert mg.apply().ids == ()


def test_up_down_and_rollback_mirror_the_commands(project: Project) -> None:
    three_tables(project)
    mg = Migretti(config=project.root / "mg.yaml")
    assert mg.up().ids == ("0001",)
    mg.apply()
    down = mg.down()
    assert down.ids == ("0003",)
    assert down.direction == "down"
    assert mg.rollback(to="0001").ids == ("0002",)
    assert project.tables() == {"t_0001"}
    mg.apply()
    assert mg.rollback(2).ids == ("0003", "0002")
    with pytest.raises(MgError) as bad:
        mg.rollback(0)
    assert bad.value.exit_code == 2


def test_dry_run_changes_nothing_and_reports_each_migration(project: Project) -> None:
    project.add_table("0001")
    project.add("0002", "broken", "INSERT INTO nowhere VALUES (1);")
    mg = Migretti(config=project.root / "mg.yaml")

    with pytest.raises(MgError) as failed:
        mg.apply(dry_run=True)

    assert failed.value.exit_code == 1
    result = failed.value.result
    assert result is not None
    assert result.dry_run is True  # type: ignore[attr-defined]
    outcomes = {m.id: m for m in result.migrations}  # type: ignore[attr-defined]
    assert outcomes["0001"].ok
    assert not outcomes["0002"].ok
    assert "nowhere" in (outcomes["0002"].error or "")
    assert project.tables() == set()

    project.path_of("0002").unlink()
    ok = mg.apply(dry_run=True)
    assert ok.dry_run and ok.ids == ("0001",) and ok.ok
    assert project.tables() == set()


def test_the_api_never_prints(project: Project, capfd: pytest.CaptureFixture[str]) -> None:
    three_tables(project)
    mg = Migretti(config=project.root / "mg.yaml")
    mg.apply(dry_run=True)
    mg.apply()
    mg.status()
    mg.list()
    mg.rollback(3)
    with pytest.raises(MgError):
        mg.apply(to="9999")
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


def test_events_go_to_the_migretti_logger_with_the_json_log_fields(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    project.add_table("0001")
    mg = Migretti(config=project.root / "mg.yaml")
    with caplog.at_level(logging.DEBUG, logger="migretti"):
        mg.apply()
    records = [r for r in caplog.records if r.name == "migretti"]
    applied = [r for r in records if getattr(r, "event", None) == "migration.applied"]
    assert len(applied) == 1
    record = applied[0]
    assert record.levelno == logging.INFO
    assert record.migration_id == "0001"  # type: ignore[attr-defined]
    assert record.migration_name == "create_t_0001"  # type: ignore[attr-defined]
    assert record.direction == "up"  # type: ignore[attr-defined]
    assert isinstance(record.duration_ms, int)  # type: ignore[attr-defined]
    assert record.dry_run is False  # type: ignore[attr-defined]
    assert "applied 0001" in record.getMessage()
    events = [getattr(r, "event", None) for r in records]
    assert "lock.acquired" in events
    assert "apply.finished" in events


def test_sql_error_names_file_line_and_sqlstate(project: Project) -> None:
    project.add_table("0001")
    path = project.add("0002", "typo", "CREATE TABLE ok (id int);\n\nSELEC 1;")
    mg = Migretti(config=project.root / "mg.yaml")

    with pytest.raises(SqlError) as failed:
        mg.apply()

    error = failed.value
    assert error.exit_code == 1
    assert error.file == str(path)
    assert error.line == 4
    assert error.migration_id == "0002"
    assert error.sqlstate == "42601"
    assert f"{path}:4:" in str(error)
    result = error.result
    assert result is not None and result.ids == ("0001",)  # type: ignore[attr-defined]
    assert project.statuses() == {"0001": "applied"}
    # whole across a process boundary (multiprocessing, concurrent.futures pickle it)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is SqlError and str(copy) == str(error)
    assert (copy.file, copy.line, copy.sqlstate, copy.exit_code) == (str(path), 4, "42601", 1)
    assert copy.result == result


def test_state_errors_carry_exit_code_3_and_fix_resolves_them(project: Project) -> None:
    project.add("0001", "half", "CREATE TABLE a (id int);\nSELECT 1/0;", no_transaction=True)
    mg = Migretti(config=project.root / "mg.yaml")
    with pytest.raises(SqlError):
        mg.apply()
    with pytest.raises(StateError) as blocked:
        mg.apply()
    assert blocked.value.exit_code == 3
    assert "mg fix 0001" in str(blocked.value)
    assert mg.status().failed == 1

    fixed = mg.fix("0001", applied=False)
    assert fixed.id == "0001" and fixed.resolution == "removed"
    assert project.statuses() == {}


def test_verify_raises_state_error_with_the_result(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)  # files are shown relative to the working directory
    project.add_table("0001")
    mg = Migretti(config=project.root / "mg.yaml")
    mg.apply()
    project.path_of("0001").write_text("-- migrate: up\nCREATE TABLE other (id int);\n")
    with pytest.raises(StateError) as mismatch:
        mg.verify()
    assert mismatch.value.exit_code == 3
    result = mg.verify(raise_on_mismatch=False)
    assert mismatch.value.result == result
    assert not result.ok
    assert [m.id for m in result.mismatches] == ["0001"]
    assert result.as_dict() == cli_json(project, "verify")


def test_bad_migration_files_raise_before_anything_runs(project: Project) -> None:
    project.add_table("0001")
    (project.migrations_dir / "0002_bad.sql").write_text("SELECT 1;\n")
    mg = Migretti(config=project.root / "mg.yaml")
    with pytest.raises(MigrationFileError) as bad:
        mg.apply()
    assert bad.value.exit_code == 2
    assert project.tables() == set()
    copy = pickle.loads(pickle.dumps(bad.value))
    assert type(copy) is MigrationFileError and str(copy) == str(bad.value)
    assert copy.exit_code == 2


def test_lock_timeout_raises_lock_timeout(project: Project) -> None:
    project.add_table("0001")
    mg = Migretti(config=project.root / "mg.yaml", lock_timeout="1s")
    with AdvisoryLockHolder(project.database_url), pytest.raises(LockTimeout) as timed_out:
        mg.apply()
    assert timed_out.value.exit_code == 4
    assert project.tables() == set()
    assert mg.apply().ids == ("0001",)


def test_protected_profile_needs_confirm(project: Project, database_url: str) -> None:
    project.configure(extra=f"envs:\n  prod:\n    database:\n      url: {database_url}\n")
    project.add_table("0001")
    mg = Migretti(config=project.root / "mg.yaml", env="prod")

    with pytest.raises(ConfirmationRequired) as refused:
        mg.apply()
    assert refused.value.exit_code == 5
    assert "confirm=True" in str(refused.value)
    assert project.tables() == set()
    assert mg.status().pending == 1  # reading needs no confirmation

    assert mg.apply(confirm=True).ids == ("0001",)
    confirmed = Migretti(config=project.root / "mg.yaml", env="prod", confirm=True)
    assert confirmed.rollback().ids == ("0001",)


def test_configuration_is_read_as_the_cli_reads_it(
    tmp_path: Path, database_url: str, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Profiles, .env, ${VAR} and MG_* variables; an explicit argument wins over them."""
    from migretti_core.testing import fresh_database

    project = Project(tmp_path / "proj", database_url, configure=False)
    project.add_table("0001")
    (project.root / "mg.yaml").write_text(
        "database:\n  url: postgresql://nobody@127.0.0.1:1/none\n"
        "envs:\n  dev:\n    database:\n      url: ${DEV_URL}\n",
        encoding="utf-8",
    )
    (project.root / ".env").write_text(f"DEV_URL={database_url}\n", encoding="utf-8")
    monkeypatch.chdir(project.root)

    via_env = Migretti(env="dev")
    assert via_env.apply().ids == ("0001",)

    monkeypatch.setenv("MG_ENV", "dev")
    assert Migretti().status().applied == 1

    with fresh_database(pg_url) as other_url:
        monkeypatch.setenv("MG_DATABASE_URL", other_url)
        assert Migretti().status().applied == 0  # MG_DATABASE_URL wins over the profile
        assert Migretti(database_url=database_url).status().applied == 1  # the argument wins

    with pytest.raises(MgError) as missing:
        Migretti(env="staging")
    assert missing.value.exit_code == 2


def test_from_url_needs_no_config_file(tmp_path: Path, database_url: str) -> None:
    migrations = tmp_path / "db" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "0001_users.sql").write_text(
        "-- migrate: up\nCREATE TABLE users (id int);\n-- migrate: down\nDROP TABLE users;\n"
    )
    (tmp_path / "db" / "seeds").mkdir()
    (tmp_path / "db" / "seeds" / "0001_admin.sql").write_text("INSERT INTO users VALUES (1);\n")

    mg = Migretti.from_url(database_url, migrations)

    assert mg.config.path is None
    assert mg.apply().ids == ("0001",)
    seeded = mg.seed()
    assert [s.name for s in seeded.ran] == ["0001_admin.sql"]
    again = mg.seed()
    assert again.ran == () and again.skipped == ("0001_admin.sql",)
    assert [s.name for s in mg.seed(all=True).ran] == ["0001_admin.sql"]


def test_plugins_belong_to_their_instance(tmp_path: Path, database_url: str, pg_url: str) -> None:
    """Two instances against two databases in one process, each with its own plugin."""
    from migretti_core.testing import fresh_database

    class Counter:
        def __init__(self) -> None:
            self.applied: list[str] = []

        def mg_after_migration(self, result: Any) -> None:
            self.applied.append(result.migration.id)

    first, second = Counter(), Counter()
    project = Project(tmp_path / "proj", database_url)
    project.add_table("0001")
    with fresh_database(pg_url) as other_url:
        a = Migretti(config=project.root / "mg.yaml", plugins=[first])
        b = Migretti(config=project.root / "mg.yaml", database_url=other_url, plugins=[second])
        a.apply()
        assert b.status().pending == 1
        b.apply()
        assert a.rollback().ids == ("0001",)
        assert b.status().applied == 1
    assert first.applied == ["0001", "0001"]
    assert second.applied == ["0001"]


def test_threads_with_an_instance_each_apply_every_migration_once(project: Project) -> None:
    project.add("0001", "runs", "CREATE TABLE runs (id text);\nINSERT INTO runs VALUES ('0001');")
    for n in range(2, 21):
        ident = f"{n:04d}"
        project.add(ident, f"step_{n}", f"INSERT INTO runs VALUES ('{ident}');")
    results: list[tuple[str, ...]] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            mg = Migretti(config=project.root / "mg.yaml")
            results.append(mg.apply().ids)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    expected = [f"{n:04d}" for n in range(1, 21)]
    assert sorted(ident for ids in results for ident in ids) == expected
    assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == expected
    ups = project.sql("SELECT migration_id FROM _migrations_log WHERE action = 'UP'")
    assert sorted(r[0] for r in ups) == expected


def test_processes_calling_apply_at_start_up_apply_each_migration_once(project: Project) -> None:
    """Application replicas: separate processes, each calling apply() as it starts."""
    for n in range(1, 16):
        project.add_table(f"{n:04d}")
    script = (
        "import sys\n"
        "from migretti_core import Migretti\n"
        "print(','.join(Migretti(config=sys.argv[1]).apply().ids))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(project.root / "mg.yaml")],
            env=mg_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    applied = sorted(i for out, _ in outputs for i in out.strip().split(",") if i)
    assert applied == [f"{n:04d}" for n in range(1, 16)]
    assert [err for _, err in outputs] == [""] * 4


def test_importing_the_cli_does_not_load_the_api() -> None:
    code = (
        "import sys, migretti_core.cli\n"
        "assert 'migretti_core.application' not in sys.modules\n"
        "from migretti_core import Migretti, RunResult\n"
        "assert Migretti.__module__ == 'migretti_core.application'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=mg_env(), capture_output=True)
    assert done.returncode == 0, done.stderr


def test_check_round_trips_on_a_scratch_database(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)  # files are shown relative to the working directory
    project.add("0001", "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    mg = Migretti(config=project.root / "mg.yaml")
    good = mg.check(database_url=pg_url)
    assert good.ok and [m.id for m in good.migrations] == ["0001"]
    assert project.tables() == set()  # the project's own database is never touched

    project.add("0002", "forgets", "CREATE TABLE audit (id int);", "SELECT 1;")
    with pytest.raises(StateError) as problems:
        mg.check(database_url=pg_url)
    assert problems.value.exit_code == 3
    assert "0002" in str(problems.value)
    result = mg.check(database_url=pg_url, raise_on_problems=False)
    assert problems.value.result.migrations == result.migrations  # type: ignore[attr-defined]
    assert [m.id for m in result.migrations if not m.ok] == ["0002"]
    done = project.mg("check", "--database-url", pg_url, "--format", "json")
    assert result.as_dict() | {"database": ""} == json.loads(done.stdout) | {"database": ""}


def test_lint_returns_findings_and_raises_on_errors(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)  # files are shown relative to the working directory
    project.add("0001", "accounts", "CREATE TABLE accounts (id bigint, old text);")
    project.add("0002", "posts", "CREATE TABLE posts (id integer);")  # a warning
    mg = Migretti(config=project.root / "mg.yaml")

    warned = mg.lint()
    assert warned.ok and warned.linted == 2
    assert [f.rule for f in warned.findings] == ["prefer-bigint-over-int"]
    with pytest.raises(StateError):
        mg.lint(strict=True)

    mg.apply()
    project.add("0003", "drop", "ALTER TABLE accounts DROP COLUMN old;")
    with pytest.raises(StateError) as failed:
        mg.lint()
    assert failed.value.exit_code == 3
    assert "ban-drop-column" in str(failed.value)
    result = mg.lint(raise_on_errors=False)
    assert result.linted == 1 and result.errors == 1
    done = project.mg("lint", "--format", "json")
    assert result.as_dict() == json.loads(done.stdout)
    assert mg.lint(all=True, raise_on_errors=False).linted == 3
    assert mg.lint(["0002"]).linted == 1


def test_a_failed_single_transaction_apply_reports_nothing_applied(project: Project) -> None:
    project.add_table("0001")
    project.add("0002", "broken", "INSERT INTO nowhere VALUES (1);")
    mg = Migretti(config=project.root / "mg.yaml")
    with pytest.raises(SqlError) as failed:
        mg.apply(single_transaction=True)
    assert failed.value.result.ids == ()  # type: ignore[attr-defined]
    assert project.tables() == set()


def test_a_dry_run_reports_the_locks_the_cli_json_reports(project: Project) -> None:
    project.add_table("0001")
    Migretti(config=project.root / "mg.yaml").apply()
    project.add("0002", "add_c", "ALTER TABLE t_0001 ADD COLUMN c int;")

    (outcome,) = Migretti(config=project.root / "mg.yaml").apply(dry_run=True).migrations

    assert ("public.t_0001", "AccessExclusiveLock") in outcome.locks
    assert outcome.rewrites == ()
    assert [relation for relation, _rows, _size in outcome.tables] == ["public.t_0001"]
    cli = project.mg("apply", "--dry-run", "--format", "json", "--no-lint")
    (document,) = json.loads(cli.stdout)["migrations"]
    api = outcome.as_dict()
    assert {key: api[key] for key in ("locks", "rewrites", "tables")} == {
        key: document[key] for key in ("locks", "rewrites", "tables")
    }


def test_status_lists_invalid_indexes_read_only(project: Project) -> None:
    project.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (1)")
    project.add(
        "001", "unique", "CREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id);", no_transaction=True
    )
    assert project.mg("apply").returncode == 1

    status = Migretti(config=project.root / "mg.yaml").status()

    (index,) = status.invalid_indexes
    assert dict(index) == {
        "index": "public.t_id",
        "table": "public.t",
        "drop": "DROP INDEX CONCURRENTLY public.t_id;",
    }
    assert status.as_dict()["invalid_indexes"] == cli_json(project, "status")["invalid_indexes"]
    with pytest.raises(TypeError):
        index["drop"] = "DROP TABLE t;"  # type: ignore[index]


def test_wrong_argument_types_raise_usage_errors_before_anything_runs(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong type is a ``UsageError`` (exit code 2) naming the argument, never an
    ``AttributeError`` from inside, and never a truthy string taken as True."""
    three_tables(project)
    monkeypatch.chdir(project.root)
    mg = Migretti()
    calls: list[tuple[str, Any]] = [
        ("apply: to must be a str naming a migration, not 5", lambda: mg.apply(to=5)),
        ("apply: dry_run must be True or False, not 'no'", lambda: mg.apply(dry_run="no")),
        ("rollback: to must be a str naming a migration", lambda: mg.rollback(to=3)),
        ("fix: id must be a str naming a migration, not None", lambda: mg.fix(None)),
        ("fix: applied must be True or False, not 'no'", lambda: mg.fix("0001", "no")),
        ("seed: each of names must be a str naming a seed, not 1", lambda: mg.seed([1])),
        ("config must be a path (str or os.PathLike), not int", lambda: Migretti(123)),
        ("database_url must be a str, not bytes", lambda: Migretti(database_url=b"x")),
        ("plugins: 5 is not a plugin", lambda: Migretti(plugins=[5])),
    ]
    for message, call in calls:
        with pytest.raises(MgError) as raised:
            call()
        assert raised.value.exit_code == 2
        assert str(raised.value).startswith(message), str(raised.value)
    assert mg.list()[0].status == "pending"  # nothing ran
    assert mg.apply(to="0001").ids == ("0001",)


def test_an_empty_profile_or_path_is_refused_not_taken_as_absent(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``env=""`` is an explicit argument, refused as ``mg --env ''`` refuses it: taken as
    "not given", it selected MG_ENV's profile, another database. The same for ``config=""``
    and ``from_url``'s directories (``""`` was the current directory)."""
    three_tables(project)
    project.configure(
        extra="envs:\n  staging:\n    database:\n      url: postgresql://x@127.0.0.1:1/x\n"
    )
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("MG_ENV", "staging")
    calls: list[tuple[str, Any]] = [
        ("env needs a profile name, not an empty value", lambda: Migretti(env="")),
        ("config needs a file path, not an empty value", lambda: Migretti(config="")),
        (
            "from_url: migrations_dir needs a directory path, not an empty value",
            lambda: Migretti.from_url(project.database_url, ""),
        ),
        (
            "from_url: seeds_dir needs a directory path, not an empty value",
            lambda: Migretti.from_url(project.database_url, "migrations", seeds_dir=""),
        ),
    ]
    for message, call in calls:
        with pytest.raises(UsageError) as raised:
            call()
        assert raised.value.exit_code == 2
        assert str(raised.value) == message
    assert Migretti(env=None).config.env == "staging"  # None is "not given": MG_ENV


def test_from_url_refuses_a_missing_migrations_directory(tmp_path: Path, database_url: str) -> None:
    """As with ``migrations_dir:`` named in mg.yaml: a typo is an error, not "nothing to do"."""
    mg = Migretti.from_url(database_url, tmp_path / "migratoins")
    with pytest.raises(MgError) as raised:
        mg.apply()
    assert raised.value.exit_code == 2
    assert "migratoins" in str(raised.value) and "does not exist" in str(raised.value)


def with_password(url: str, password: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "" or parts.password is not None:
        pytest.skip("needs a postgresql:// URL without a password")
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{password}@{host}"))


def test_errors_and_results_mask_the_password_as_the_cli_does(
    project: Project, pg_url: str
) -> None:
    """A server error that quotes the password (here a migration casting it) is masked in
    what the API raises and returns, as in what ``mg`` prints: the message, the SqlError's
    fields, the exceptions chained to it (``log.exception`` prints them), a dry run's verdicts
    and ``check()``'s problems. The embedded server trusts local connections: any password
    connects."""
    import traceback

    secret = "Hunter2pw"
    project.configure({"url": with_password(project.database_url, secret)})
    project.add_table("0001")
    project.add("0002", "quotes", f"SELECT '{secret}'::int;")
    mg = Migretti(config=project.root / "mg.yaml")

    with pytest.raises(SqlError) as failed:
        mg.apply()
    error = failed.value
    shown = [str(error), repr(error), error.server_message or "", str(error.hint)]
    shown.append("".join(traceback.format_exception(error)))
    assert '"****"' in str(error)
    assert all(secret not in text for text in shown), shown

    with pytest.raises(MgError) as dry:
        mg.apply(dry_run=True)
    dry_result = dry.value.result
    assert dry_result is not None
    assert secret not in json.dumps(dry_result.as_dict())  # type: ignore[attr-defined]
    assert "****" in json.dumps(dry_result.as_dict())  # type: ignore[attr-defined]
    done = project.mg("apply", "--dry-run", "--format", "json")
    assert secret not in done.stdout + done.stderr and "****" in done.stdout

    checked = mg.check(database_url=pg_url, raise_on_problems=False)
    assert not checked.ok
    assert secret not in json.dumps(checked.as_dict()) and "****" in str(checked.migrations)
    with pytest.raises(MgError) as check_failed:
        mg.check(database_url=pg_url)
    assert secret not in str(check_failed.value)


INTERRUPTED = """
import sys
from migretti_core import Migretti

try:
    Migretti(config=sys.argv[1]).apply()
except KeyboardInterrupt as exc:
    print("KeyboardInterrupt:", exc)
except BaseException as exc:
    print("other:", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("no_transaction", [False, True])
def test_ctrl_c_is_a_keyboard_interrupt_in_every_migration(
    project: Project, no_transaction: bool
) -> None:
    """Ctrl-C during a migration raises KeyboardInterrupt, not an MgError (which
    ``except Exception`` would swallow); for a no-transaction migration its message says
    what state the migration was left in."""
    project.add(
        "0001",
        "slow",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);\nCREATE TABLE after (id int);",
        no_transaction=no_transaction,
    )
    script = project.root / "app.py"
    script.write_text(INTERRUPTED)
    app = subprocess.Popen(
        [sys.executable, str(script), str(project.root / "mg.yaml")],
        env=mg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: project.sql(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
                "AND pid <> pg_backend_pid()"
            ),
            timeout=60,
        )
        app.send_signal(signal.SIGINT)
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert out.startswith("KeyboardInterrupt"), out + err
    assert "after" not in project.tables()
    if no_transaction:
        assert "mg fix 0001" in out
        assert project.statuses() == {"0001": "failed"}
    else:
        assert project.statuses() == {}


def test_a_failing_seed_dry_run_names_the_seed_and_the_error(project: Project) -> None:
    project.add("0001", "users", "CREATE TABLE users (id int);")
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_admin.sql").write_text("INSERT INTO users VALUES (1);\n")
    (seeds / "02_typo.sql").write_text("INSERT INTO userz VALUES (2);\n")
    mg = Migretti(config=project.root / "mg.yaml")
    mg.apply()

    with pytest.raises(MgError) as failed:
        mg.seed(dry_run=True)

    assert failed.value.exit_code == 1
    message = str(failed.value)
    assert "02_typo.sql:1" in message and 'relation "userz" does not exist' in message
    assert "nothing was changed" in message
    assert [s.name for s in failed.value.result.ran] == ["01_admin.sql"]  # type: ignore[attr-defined]
    assert project.value("SELECT count(*) FROM users") == 0


def test_the_configuration_s_repr_masks_passwords(tmp_path: Path) -> None:
    """``print(mg.config)`` or logging it shows no password (nothing connects here)."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "mg.yaml").write_text(
        "database:\n  host: db.example.com\n  user: app\n  password: Pw-in-yaml-1\n"
        "envs:\n  url:\n    database:\n      url: postgresql://app:Pw%40in-url@db.example.com/app\n"
    )
    plain = Migretti(config=tmp_path / "mg.yaml")
    from_url = Migretti(config=tmp_path / "mg.yaml", env="url")

    shown = repr(plain.config) + repr(from_url.config) + str(plain.config)
    assert "Pw-in-yaml-1" not in shown
    assert "Pw%40in-url" not in shown and "Pw@in-url" not in shown
    assert "'password': '****'" in shown and "postgresql://app:****@db.example.com" in shown
    assert plain.config.database["password"] == "Pw-in-yaml-1"  # the value itself is intact


def test_the_configuration_s_repr_masks_the_ssl_key_passphrase(tmp_path: Path) -> None:
    """``sslpassword`` (libpq's passphrase of the client key) is a password too: masked in
    ``repr(mg.config)`` as mg masks it in everything it prints."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "mg.yaml").write_text(
        "database:\n  host: db.example.com\n  user: app\n  sslmode: verify-full\n"
        "  sslpassword: Key-pass-1\n  password: Pw-in-yaml-2\n"
    )
    mg = Migretti(config=tmp_path / "mg.yaml")

    shown = repr(mg.config) + str(mg.config)
    assert "Key-pass-1" not in shown and "Pw-in-yaml-2" not in shown
    assert "'sslpassword': '****'" in shown and "'sslmode': 'verify-full'" in shown
    assert mg.config.database["sslpassword"] == "Key-pass-1"  # the value itself is intact


def test_a_nan_lock_timeout_is_refused(tmp_path: Path) -> None:
    """NaN compares false with every elapsed time: accepted, it would wait for ever."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "mg.yaml").write_text("database:\n  url: postgresql://app@127.0.0.1:1/app\n")
    with pytest.raises(MgError) as raised:
        Migretti(config=tmp_path / "mg.yaml", lock_timeout=float("nan"))
    assert raised.value.exit_code == 2
    assert str(raised.value) == "lock_timeout: invalid duration nan: not a number"
    with pytest.raises(MgError) as raised:
        Migretti(config=tmp_path / "mg.yaml", lock_timeout=float("inf"))
    assert str(raised.value) == "lock_timeout: invalid duration inf: infinite"
    assert Migretti(config=tmp_path / "mg.yaml", lock_timeout=1.5)._lock_timeout == 1.5


def test_lint_rule_options_are_checked_as_the_cli_checks_them(project: Project) -> None:
    """A single rule given as a str is that rule (not its characters, which disabled
    nothing); a misspelt rule or a version that is none is a UsageError, as on the CLI."""
    project.add("0001", "posts", "CREATE TABLE posts (id integer);")  # prefer-bigint-over-int
    mg = Migretti(config=project.root / "mg.yaml")
    assert [f.rule for f in mg.lint().findings] == ["prefer-bigint-over-int"]

    assert mg.lint(disable="prefer-bigint-over-int").findings == ()
    assert mg.lint(disable=["prefer-bigint-over-int"]).findings == ()
    bad: list[tuple[str, Any]] = [
        (
            "lint: disable: unknown lint rule 'prefer-bigint-over-itn' "
            "(did you mean prefer-bigint-over-int?)",
            lambda: mg.lint(disable=["prefer-bigint-over-itn"]),
        ),
        ("lint: enable: unknown lint rule 'nope'", lambda: mg.lint(enable="nope")),
        ("lint: enable must be a rule name or a list of them, not 5", lambda: mg.lint(enable=5)),
        (
            "lint: server_version: 'sixteen' is not a PostgreSQL version",
            lambda: mg.lint(server_version="sixteen"),
        ),
    ]
    for message, call in bad:
        with pytest.raises(MgError) as raised:
            call()
        assert raised.value.exit_code == 2
        assert str(raised.value) == message
    cli = project.mg("lint", "--disable", "prefer-bigint-over-itn")
    assert cli.returncode == 2 and "unknown lint rule" in cli.stderr
    assert mg.lint(server_version="16").linted == 1


def test_verify_and_check_errors_show_migration_names_escaped(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)
    changed = project.add("0001", "ok\x1b[2Jname", "CREATE TABLE a (id int);", "DROP TABLE a;")
    gone = project.add("0002", "gone\rname", "CREATE TABLE b (id int);", "DROP TABLE b;")
    mg = Migretti(config=project.root / "mg.yaml")
    mg.apply()
    changed.write_text("-- migrate: up\nCREATE TABLE other (id int);\n")
    gone.unlink()
    with pytest.raises(StateError) as verify:
        mg.verify()
    message = str(verify.value)
    assert "\x1b" not in message and "\r" not in message, repr(message)
    assert "changed since it ran: migrations/0001_ok\\x1b[2Jname.sql" in message
    assert "file is gone: 0002 (gone\\rname)" in message
    # the result keeps the names as they are
    assert verify.value.result.missing[0].name == "gone\rname"  # type: ignore[attr-defined]

    changed.unlink()
    project.add("0003", "forgets\x07it", "CREATE TABLE audit (id int);", "SELECT 1;")
    with pytest.raises(StateError) as check:
        mg.check(database_url=pg_url)
    message = str(check.value)
    assert "check: 0003 forgets\\x07it: " in message and "\x07" not in message, repr(message)


def test_every_result_type_is_importable_from_the_package() -> None:
    """``from migretti_core import ...`` gives every type a method returns, down to the
    elements of a result (a ``CheckResult``'s migrations are ``MigrationCheckResult``)."""
    import migretti_core
    from migretti_core import results

    for name in results.__all__:
        assert getattr(migretti_core, name) is getattr(results, name), name
        assert name in migretti_core.__all__, name
