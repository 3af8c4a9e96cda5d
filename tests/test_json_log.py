"""``--json-log`` (docs/logging.md) through the real ``mg`` command against PostgreSQL.

Every line ``mg`` writes to stderr must be one JSON object a log shipper can parse, carrying
the fields and event names docs/logging.md promises, and never the database password.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from migretti_core.testing import Project, wait_until, write_text
from migretti_core.types import DEFAULT_LOCK_ID

DOCS = Path(__file__).resolve().parent.parent / "docs" / "logging.md"
PASSWORD = "Lg-pw-9c2e4d"
ENV = {"MG_TEST_DB_PASSWORD": PASSWORD}
LEVELS = {"debug", "info", "warning", "error"}
# the context fields any event may carry where they apply
CONTEXT = {"migration_id", "migration_name", "direction", "duration_ms", "error"}
PER_MIGRATION = {
    "migration.applied",
    "migration.rolled_back",
    "dryrun.ok",
    "dryrun.failed",
    "dryrun.skipped",
}


# --- what docs/logging.md promises -------------------------------------------------------


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        line = line.strip()
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header row


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def common_fields() -> set[str]:
    """Fields every object has: the table after 'Every object has'."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("Every object has", 1)[1].split("\n\n", 2)[1]
    return {_ticked(row[0])[0] for row in _table_rows(section)}


def documented_events() -> dict[str, tuple[str, set[str]]]:
    """event name -> (level, extra fields) from the table under '## Events'."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
    events: dict[str, tuple[str, set[str]]] = {}
    for name_cell, level, _when, extra in _table_rows(section):
        (name,) = _ticked(name_cell)
        names = _ticked(extra)
        fields: set[str] = set()
        if extra.startswith("as "):
            fields |= events[names[0]][1]
            names = names[1:]
        fields |= set(names)
        events[name] = (level, fields)
    return events


def test_docs_tables_are_parsed() -> None:
    events = documented_events()
    assert {"migration.applied", "command.failed", "lock.waiting", "dryrun.failed"} <= set(events)
    assert events["migration.rolled_back"][1] >= {"migration_id", "duration_ms", "direction"}
    assert "error" in events["dryrun.failed"][1]
    assert {"ts", "level", "event", "message", "env", "dry_run"} <= common_fields()


# --- running mg --------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, database_url: str, db_conninfo: dict[str, str]) -> Project:
    """A project whose password comes from the environment through interpolation."""
    proj = Project(tmp_path / "proj", database_url, configure=False)
    database = {key: db_conninfo[key] for key in ("host", "port", "user", "dbname")}
    database["password"] = "${MG_TEST_DB_PASSWORD}"
    proj.configure(database, extra="envs:\n  staging:\n")
    proj.add("0001", "create_accounts", "CREATE TABLE accounts (id int);", "DROP TABLE accounts;")
    proj.add("0002", "fill_accounts", "INSERT INTO accounts VALUES (1);", "DELETE FROM accounts;")
    return proj


def run(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return project.mg("--json-log", *args, env=ENV)


# only when the error has a hint, or is about a plugin; when a plugin raised in a hook; with
# -v; in a dry run
OPTIONAL = {
    ("command.failed", "hint"),
    ("command.failed", "plugin"),
    ("plugin.failed", "hook"),
    ("plugin.failed", "traceback"),
    ("seed.finished", "ok"),
    ("seed.finished", "failed"),
}


def records(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Every stderr line parsed as JSON; no output holds the password."""
    assert PASSWORD not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert lines, "no log lines on stderr"
    parsed: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def check_documented(
    parsed: list[dict[str, Any]], *, env: str | None = None, dry_run: bool = False
) -> None:
    """Each record has the fields, level and event name docs/logging.md promises."""
    events = documented_events()
    required = common_fields()
    now = datetime.now(timezone.utc)
    for record in parsed:
        line = json.dumps(record)
        missing = required - set(record)
        assert not missing, f"{record.get('event')} lacks {sorted(missing)}: {line}"
        ts = datetime.fromisoformat(record["ts"])
        assert ts.utcoffset() == timedelta(0), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["ts"]), line
        assert abs(now - ts) < timedelta(minutes=5), line
        assert record["level"] in LEVELS, line
        assert isinstance(record["message"], str) and record["message"], line
        assert record["event"] in events, f"undocumented event {record['event']!r}"
        level, fields = events[record["event"]]
        assert record["level"] == level, line
        fields = {f for f in fields if (record["event"], f) not in OPTIONAL}
        assert fields <= set(record), f"{record['event']} lacks {sorted(fields - set(record))}"
        extra = set(record) - required - CONTEXT - events[record["event"]][1] - {"traceback"}
        assert not extra, f"{record['event']} has undocumented fields {sorted(extra)}: {line}"
        assert record["env"] == env, line
        assert record["dry_run"] is dry_run, line
        if record["event"] in PER_MIGRATION:
            for key in ("migration_id", "migration_name", "direction", "duration_ms"):
                assert key in record, f"{record['event']} lacks {key}"
            assert record["direction"] in ("up", "down")
            assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0


def names(parsed: list[dict[str, Any]]) -> list[str]:
    return [r["event"] for r in parsed]


# --- apply, rollback, failure ------------------------------------------------------------


def test_apply_logs_one_json_object_per_line(project: Project) -> None:
    done = run(project, "--env", "staging", "apply")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    applied = [r for r in parsed if r["event"] == "migration.applied"]
    assert [(r["migration_id"], r["migration_name"]) for r in applied] == [
        ("0001", "create_accounts"),
        ("0002", "fill_accounts"),
    ]
    assert {r["direction"] for r in applied} == {"up"}
    # Debug events are in the log without -v.
    assert names(parsed).count("migration.started") == 2
    assert "lock.acquired" in names(parsed)
    assert names(parsed)[-1] == "apply.finished"
    assert parsed[-1]["count"] == 2
    # Results on stdout stay human lines.
    assert re.search(r"^applied 0001 create_accounts \(\d+ ms\)$", done.stdout, re.M)
    check_documented(parsed, env="staging")


def test_seed_logs_each_seed_as_it_starts_and_ends(project: Project) -> None:
    assert project.mg("apply", env=ENV).returncode == 0
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_one.sql").write_text("INSERT INTO accounts VALUES (10);\n")
    (seeds / "02_two.sql").write_text("INSERT INTO accounts VALUES (20);\n")
    for args in (("seed",), ("seed", "--all", "--dry-run")):
        done = run(project, *args)
        assert done.returncode == 0, done.stderr
        parsed = records(done)
        seeded = [(r["event"], r.get("seed")) for r in parsed if r["event"].startswith("seed.")]
        assert seeded[:4] == [
            ("seed.started", "01_one.sql"),
            ("seed.ran", "01_one.sql"),
            ("seed.started", "02_two.sql"),
            ("seed.ran", "02_two.sql"),
        ], seeded
        check_documented(parsed, env=None, dry_run="--dry-run" in args)


def test_rollback_logs_down_events(project: Project) -> None:
    assert project.mg("apply", env=ENV).returncode == 0

    done = run(project, "rollback", "2")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    rolled = [r for r in parsed if r["event"] == "migration.rolled_back"]
    assert [r["migration_id"] for r in rolled] == ["0002", "0001"]
    assert {r["direction"] for r in rolled} == {"down"}
    assert names(parsed)[-1] == "rollback.finished"
    check_documented(parsed)


def test_nothing_to_do_is_logged(project: Project) -> None:
    assert project.mg("apply", env=ENV).returncode == 0

    done = run(project, "apply")

    assert done.returncode == 0
    parsed = records(done)
    assert names(parsed) == ["command.nothing"]
    check_documented(parsed)


def test_failing_migration_logs_failure_then_command_failed_last(project: Project) -> None:
    project.add("0003", "broken", "SELECT 1;\nINSERT INTO no_such_table VALUES (1);")

    done = run(project, "apply")

    assert done.returncode == 1
    parsed = records(done)
    assert names(parsed).count("migration.applied") == 2
    (failed,) = [r for r in parsed if r["event"] == "migration.failed"]
    assert failed["migration_id"] == "0003"
    assert failed["migration_name"] == "broken"
    assert failed["direction"] == "up"
    assert "migrations/0003_broken.sql:3:" in failed["error"]
    last = parsed[-1]
    assert last["event"] == "command.failed"
    assert last["exit_code"] == 1
    assert "no_such_table" in last["error"]
    check_documented(parsed)


def test_dry_run_lines_say_dry_run(project: Project) -> None:
    project.add("0003", "broken", "INSERT INTO no_such_table VALUES (1);")

    done = run(project, "apply", "--dry-run")

    assert done.returncode == 1
    parsed = records(done)
    assert [r["event"] for r in parsed if r["event"].startswith("dryrun.")] == [
        "dryrun.sql",
        "dryrun.sql",
        "dryrun.sql",
        "dryrun.ok",
        "dryrun.locks",
        "dryrun.ok",
        "dryrun.locks",
        "dryrun.failed",
        "dryrun.finished",
    ]
    (failed,) = [r for r in parsed if r["event"] == "dryrun.failed"]
    assert failed["migration_id"] == "0003"
    assert "migrations/0003_broken.sql:2:" in failed["error"]
    (summary,) = [r for r in parsed if r["event"] == "dryrun.finished"]
    assert summary["failed"] == 1
    check_documented([r for r in parsed if r["event"] != "command.failed"], dry_run=True)


def test_failed_dry_run_ends_with_command_failed(project: Project) -> None:
    project.add("0003", "broken", "INSERT INTO no_such_table VALUES (1);")

    done = run(project, "apply", "--dry-run")

    assert done.returncode == 1
    parsed = records(done)
    assert parsed[-1]["event"] == "command.failed", names(parsed)
    assert parsed[-1]["exit_code"] == 1


def test_refused_confirmation_is_logged(project: Project) -> None:
    project.configure(
        {"url": project.database_url, "password": "${MG_TEST_DB_PASSWORD}"},
        extra="envs:\n  prod:\n",
    )

    done = run(project, "--env", "prod", "apply")

    assert done.returncode == 5
    parsed = records(done)
    (asked,) = [r for r in parsed if r["event"] == "confirm.required"]
    assert "@" in asked["target"]
    assert parsed[-1]["event"] == "command.failed"
    assert parsed[-1]["exit_code"] == 5
    assert project.all_tables() == set()
    check_documented(parsed, env="prod")


def test_shell_hook_events_name_the_hook_not_its_command(project: Project) -> None:
    command = "test -n ${MG_TEST_DB_PASSWORD} && exit 0"
    project.configure(
        {"url": project.database_url, "password": "${MG_TEST_DB_PASSWORD}"},
        extra=f"hooks:\n  pre_apply: {json.dumps(command)}\n",
    )

    done = run(project, "apply")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    hooks = [r for r in parsed if r["event"].startswith("hook.")]
    assert [(r["event"], r["hook"]) for r in hooks] == [
        ("hook.started", "pre_apply"),
        ("hook.finished", "pre_apply"),
    ]
    assert "test -n" not in done.stderr
    check_documented(parsed)


# --- lock wait ---------------------------------------------------------------------------


@pytest.fixture
def lock_holder(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(database_url, autocommit=True, application_name="json-log-holder")
    try:
        conn.execute("SELECT pg_advisory_lock(%s::bigint)", (DEFAULT_LOCK_ID,))
        yield conn
    finally:
        conn.close()


def test_lock_wait_is_logged_and_times_out_with_exit_4(
    project: Project, lock_holder: psycopg.Connection[Any]
) -> None:
    done = run(project, "apply", "--lock-timeout", "3s")

    assert done.returncode == 4, done.stderr
    parsed = records(done)
    waiting = [r for r in parsed if r["event"] == "lock.waiting"]
    assert waiting, names(parsed)
    assert waiting[0]["level"] == "warning"
    assert waiting[0]["holder_pid"] == lock_holder.info.backend_pid
    assert waiting[0]["holder_application"] == "json-log-holder"
    assert isinstance(waiting[0]["waited_s"], (int, float))
    assert datetime.fromisoformat(waiting[0]["holder_since"]).tzinfo is not None
    last = parsed[-1]
    assert last["event"] == "command.failed"
    assert last["exit_code"] == 4
    assert str(lock_holder.info.backend_pid) in last["message"]
    assert project.statuses() == {}
    assert project.tables() == set()
    check_documented(parsed)


# --- secrets -----------------------------------------------------------------------------


def url_with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def test_password_in_a_url_never_appears(project: Project) -> None:
    url = url_with_password(project.database_url, "${MG_TEST_DB_PASSWORD}")
    project.configure({"url": url})
    project.add("0003", "broken", "INSERT INTO no_such_table VALUES (1);")

    applied = run(project, "apply")
    assert applied.returncode == 1
    records(applied)  # every line is JSON and none holds the password
    assert run(project, "status").returncode == 0
    assert run(project, "rollback", "2", "--dry-run").returncode == 0
    rolled = run(project, "rollback", "2")
    assert rolled.returncode == 0
    records(rolled)
    assert all(PASSWORD not in text for text in project.transcript)


def test_connection_failure_is_json_and_hides_the_password(project: Project) -> None:
    project.configure(
        {"url": "postgresql://someone:${MG_TEST_DB_PASSWORD}@127.0.0.1:1/app?connect_timeout=3"}
    )

    done = run(project, "apply")

    assert done.returncode == 1
    parsed = records(done)
    assert parsed[-1]["event"] == "command.failed"
    assert "127.0.0.1" in parsed[-1]["message"]
    check_documented(parsed)


# --- every way a command ends ------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_lock_wait_ends_with_command_failed_130(
    project: Project, lock_holder: psycopg.Connection[Any], signum: int
) -> None:
    job = project.spawn("--json-log", "apply", "--lock-timeout", "5m", env=ENV)
    wait_until(lambda: "lock.waiting" in job.stderr_so_far())

    done, _ = project.interrupt(job, signum)

    assert done.returncode == 130, done.stderr
    parsed = records(done)
    assert parsed[-1]["event"] == "command.failed"
    assert parsed[-1]["exit_code"] == 130
    assert project.statuses() == {}
    check_documented(parsed)


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["apply", "--no-such-option"], ["rollback", "0"], ["status", "--env"]],
    ids=["command", "option", "value", "global"],
)
def test_usage_errors_are_json(project: Project, args: list[str]) -> None:
    done = run(project, *args)

    assert done.returncode == 2, done.stderr
    parsed = records(done)
    assert names(parsed) == ["command.failed"]
    assert parsed[0]["exit_code"] == 2
    check_documented(parsed)


def test_a_failing_plugin_is_logged_with_the_common_fields(project: Project) -> None:
    write_text(
        project.root / "failing.py",
        """
        from migretti_core import hookimpl

        @hookimpl
        def mg_after_apply(session, plan, results):
            raise RuntimeError("notification failed")
        """,
    )
    project.configure(
        {"url": project.database_url}, extra="plugins:\n  - ./failing.py\nenvs:\n  staging:\n"
    )

    done = run(project, "--env", "staging", "apply")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    failed = [r for r in parsed if r["event"] == "plugin.failed"]
    assert [(r["plugin"], r["hook"]) for r in failed] == [("failing", "mg_after_apply")]
    check_documented(parsed, env="staging")


def test_a_plugin_warning_at_load_names_the_plugin(project: Project) -> None:
    write_text(
        project.root / "misspelt.py",
        """
        def mg_after_aply(session, plan, results):
            pass
        """,
    )
    project.configure({"url": project.database_url}, extra="plugins:\n  - ./misspelt.py\n")

    done = run(project, "status")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    failed = [r for r in parsed if r["event"] == "plugin.failed"]
    assert [r["plugin"] for r in failed] == ["misspelt"], parsed
    assert "did you mean mg_after_apply" in failed[0]["message"]
    check_documented(parsed)


def test_a_query_that_ignores_its_cancel_leaves_no_stray_line(project: Project) -> None:
    # Dry runs read through psycopg, which logs a warning of its own when a cancelled query
    # does not end; it must not reach stderr beside the JSON lines.
    project.add(
        "0003",
        "stubborn",
        "DO $$ DECLARE i int := 0; BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); i := i + 1;"
        " EXIT WHEN i > 150; EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$;",
    )
    job = project.spawn("--json-log", "apply", "--dry-run", env=ENV)
    wait_until(lambda: any("query_canceled" in query for _, _, query in project.other_backends()))

    done, _ = project.interrupt(job)

    assert done.returncode == 130, done.stderr
    parsed = records(done)
    assert parsed[-1]["event"] == "command.failed"
    check_documented(parsed, dry_run=True)
    project.terminate_backends()


# --- warnings of apply and rollback ------------------------------------------------------


def test_rolling_back_fewer_than_asked_is_a_documented_event(project: Project) -> None:
    assert project.mg("apply", env=ENV).returncode == 0

    done = run(project, "rollback", "5")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    (fewer,) = [r for r in parsed if r["event"] == "rollback.fewer"]
    assert fewer["level"] == "warning"
    assert (fewer["asked"], fewer["count"]) == (5, 2)
    check_documented(parsed)


def test_a_history_row_edited_by_hand_is_a_documented_event(project: Project) -> None:
    assert project.mg("up", env=ENV).returncode == 0
    project.sql("UPDATE _migrations SET checksum = NULL WHERE id = '0001'")

    done = run(project, "apply")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    (problem,) = [r for r in parsed if r["event"] == "history.problem"]
    assert problem["level"] == "warning" and "0001" in problem["message"]
    check_documented(parsed)


def test_an_ignored_section_of_a_blocked_plugin_is_a_documented_event(project: Project) -> None:
    project.configure({"url": project.database_url}, extra="lint:\n  enable: [all]\n")

    done = run(project, "-p", "no:lint", "status")

    assert done.returncode == 0, done.stderr
    parsed = records(done)
    (ignored,) = [r for r in parsed if r["event"] == "config.section_ignored"]
    assert ignored["level"] == "warning" and ignored["section"] == "lint"
    check_documented(parsed)
