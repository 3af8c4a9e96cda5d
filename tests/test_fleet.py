"""Fleets: one ``mg`` command on many databases (``--fleet NAME``), through the real
entry point against the suite's server."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migretti_core.testing import (
    MG_COMMAND,
    AdvisoryLockHolder,
    Project,
    mg_env,
    url_with_dbname,
    wait_until,
)


class Fleet:
    """``count`` empty databases named ``<prefix>_01`` ... on the suite's server."""

    def __init__(self, pg_url: str, count: int) -> None:
        self.pg_url = pg_url
        self.prefix = f"fleet_{uuid.uuid4().hex[:8]}"
        self.names = [f"{self.prefix}_{n:02d}" for n in range(1, count + 1)]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for name in self.names:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def url(self, name: str) -> str:
        return url_with_dbname(self.pg_url, name)

    def rows(self, name: str, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def applied(self, name: str) -> list[str]:
        if not self.rows(name, "SELECT to_regclass('_migrations') IS NOT NULL")[0][0]:
            return []
        rows = self.rows(name, "SELECT id FROM _migrations WHERE status = 'applied' ORDER BY id")
        return [r[0] for r in rows]

    def drop(self) -> None:
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            for name in self.names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@pytest.fixture
def make_fleet(pg_url: str) -> Iterator[Any]:
    made: list[Fleet] = []

    def make(count: int) -> Fleet:
        fleet = Fleet(pg_url, count)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.drop()


def project_for(tmp_path: Path, fleet: Fleet, fleets_yaml: str, extra: str = "") -> Project:
    """A project whose profile points at the server's own database, with ``fleets:``."""
    project = Project(tmp_path / "proj", fleet.pg_url, configure=False)
    project.configure(extra="fleets:\n" + fleets_yaml + extra)
    return project


def query_fleet(fleet: Fleet, jobs: int | None = None, canary: int | None = None) -> str:
    text = (
        "  tenants:\n"
        f"    query: SELECT datname FROM pg_database WHERE datname LIKE "
        f"'{fleet.prefix}\\_%' ORDER BY 1\n"
    )
    if jobs:
        text += f"    jobs: {jobs}\n"
    if canary is not None:
        text += f"    canary: {canary}\n"
    return text


def three_migrations(project: Project) -> None:
    project.add_table("0001")
    project.add_table("0002")
    project.add_table("0003")


def test_twenty_databases_three_failing_are_reported_and_the_rest_applied(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(20)
    project = project_for(tmp_path, fleet, query_fleet(fleet, jobs=4))
    three_migrations(project)
    broken = [fleet.names[4], fleet.names[10], fleet.names[16]]
    for name in broken:  # 0002 cannot create its table there
        fleet.rows(name, "CREATE TABLE t_0002 (x int)")

    done = project.mg("apply", "--fleet", "tenants", "--format", "json")

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert [m["name"] for m in report["members"]] == fleet.names
    for member in report["members"]:
        assert set(member) >= {
            "name",
            "ok",
            "exit_code",
            "applied",
            "rolled_back",
            "error",
            "duration_ms",
        }
        if member["name"] in broken:
            assert member["ok"] is False
            assert member["exit_code"] == 1
            assert member["applied"] == ["0001"]
            assert "t_0002" in member["error"]
            assert fleet.applied(member["name"]) == ["0001"]
        else:
            assert member["ok"] is True, member
            assert member["exit_code"] == 0
            assert member["applied"] == ["0001", "0002", "0003"]
            assert member["error"] is None
            assert fleet.applied(member["name"]) == ["0001", "0002", "0003"]
        assert member["rolled_back"] == []
    assert "Traceback" not in done.stderr
    # each member's own error line names it
    for name in broken:
        assert any(line.startswith(f"{name}: mg: error:") for line in done.stderr.splitlines())

    again = project.mg("status", "--fleet", "tenants")
    assert again.returncode == 0, again.stderr
    assert "20 of 20 succeeded" in again.stdout


def test_canary_failure_leaves_the_rest_untouched(tmp_path: Path, make_fleet: Any) -> None:
    fleet = make_fleet(6)
    project = project_for(tmp_path, fleet, query_fleet(fleet, canary=2))
    three_migrations(project)
    fleet.rows(fleet.names[1], "CREATE TABLE t_0003 (x int)")

    done = project.mg("apply", "--fleet", "tenants")

    assert done.returncode == 1, done.stderr
    out = done.stdout.splitlines()
    lines = out[next(i for i, line in enumerate(out) if line.startswith("MEMBER")) :]
    assert lines[0].split()[:2] == ["MEMBER", "RESULT"]
    # the members' own lines come before the summary, each prefixed with its name
    assert any(line.startswith(f"{fleet.names[0]}: applied") for line in out)
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows[fleet.names[0]].split()[1] == "ok"
    assert rows[fleet.names[1]].split()[1] == "failed"
    assert "t_0003" in rows[fleet.names[1]]
    for name in fleet.names[2:]:
        assert rows[name].split()[1] == "skipped"
        assert "canary" in rows[name]
        assert fleet.applied(name) == []
    assert lines[-1] == "1 of 6 succeeded"


def test_a_member_whose_lock_is_held_times_out_and_the_others_go_on(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(4)
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    three_migrations(project)
    with AdvisoryLockHolder(fleet.url(fleet.names[1])):
        done = project.mg("apply", "--fleet", "tenants", "--lock-timeout", "2s", "--format", "json")
    assert done.returncode == 4, done.stderr
    members = {m["name"]: m for m in json.loads(done.stdout)["members"]}
    assert members[fleet.names[1]]["exit_code"] == 4
    assert fleet.applied(fleet.names[1]) == []
    for name in (fleet.names[0], *fleet.names[2:]):
        assert members[name]["ok"] is True
        assert fleet.applied(name) == ["0001", "0002", "0003"]


def test_databases_and_file_members_dedupe_and_mask_passwords(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(3)
    a, b, c = fleet.names
    url_c = fleet.url(c)
    secret_url = url_c.replace("://", "://nobody:hunter2secret@", 1) if "@" not in url_c else url_c
    fleets_yaml = (
        "  shards:\n"
        f'    databases: [{a}, {b}, {a}, "${{C_URL}}"]\n'
        "    file: more.txt\n"
        "    jobs: 2\n"
    )
    project = project_for(tmp_path, fleet, fleets_yaml)
    (project.root / "more.txt").write_text(f"# extra members\n{b}\n\n{c}  # the third\n")
    project.add_table("0001")

    done = project.mg("apply", "--fleet", "shards", "--format", "json", env={"C_URL": url_c})
    assert done.returncode == 0, done.stderr
    names = [m["name"] for m in json.loads(done.stdout)["members"]]
    assert names[:2] == [a, b]
    assert len(names) == 4  # a, b, the URL, c by name (a URL and a name are two members)
    for name in fleet.names:
        assert fleet.applied(name) == ["0001"]

    masked = project.mg(
        "status", "--fleet", "shards", "--format", "json", env={"C_URL": secret_url}
    )
    assert "hunter2secret" not in masked.stdout + masked.stderr
    if secret_url != url_c:
        assert any("****" in m["name"] for m in json.loads(masked.stdout)["members"])


def test_protected_profile_asks_once_and_hooks_run_per_member(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(3)
    extra = (
        "envs:\n  prod: {}\nhooks:\n  post_apply: 'echo \"$MG_TARGET $PGDATABASE\" >> hooks.log'\n"
    )
    project = project_for(tmp_path, fleet, query_fleet(fleet), extra)
    project.add_table("0001")

    refused = project.mg("apply", "--fleet", "tenants", "--env", "prod")
    assert refused.returncode == 5, refused.stderr
    assert "3 databases" in refused.stderr
    assert fleet.names[0] in refused.stderr
    assert all(fleet.applied(name) == [] for name in fleet.names)

    done = project.mg("--env", "prod", "--yes", "--json-log", "apply", "--fleet", "tenants")
    assert done.returncode == 0, done.stderr
    logged = sorted((project.root / "hooks.log").read_text().splitlines())
    assert logged == sorted(f"{name} {name}" for name in fleet.names)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    applied = [e for e in events if e["event"] == "migration.applied"]
    assert sorted(e["target"] for e in applied) == fleet.names
    assert all(line.startswith("{") for line in done.stderr.splitlines())  # JSON lines only
    # The results on stdout still say which member each line is about.
    results = [line for line in done.stdout.splitlines() if "applied 0001" in line]
    assert sorted(line.split(": ")[0] for line in results) == fleet.names


def test_a_fleet_asks_its_one_question_through_mg_prompt(
    tmp_path: Path, make_fleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys
    import types

    from migretti_core import hookimpl
    from migretti_core.testing import run_cli

    fleet = make_fleet(2)
    project = project_for(tmp_path, fleet, query_fleet(fleet), "envs:\n  prod: {}\n")
    project.add_table("0001")
    asked: list[str] = []

    @hookimpl
    def mg_prompt(message: str, question: str) -> str:
        asked.append(message)
        return "yes\n"

    console = types.ModuleType("console")
    console.mg_prompt = mg_prompt  # type: ignore[attr-defined]
    args = ["--env", "prod", "apply", "--fleet", "tenants"]
    # Without a terminal on stdin the plugin is not asked: it cannot approve for the user.
    refused = run_cli(args, cwd=project.root, plugins=[console])
    assert refused.exit_code == 5, refused.stderr
    assert "there is no terminal to confirm on" in refused.stderr
    assert asked == []
    assert all(fleet.applied(name) == [] for name in fleet.names)

    leader, follower = os.openpty()
    with os.fdopen(follower, "r") as terminal:
        monkeypatch.setattr(sys, "stdin", terminal)
        done = run_cli(args, cwd=project.root, plugins=[console])
        monkeypatch.undo()
    os.close(leader)
    assert done.exit_code == 0, done.stderr
    assert len(asked) == 1
    assert "fleet of 2 databases" in asked[0]
    assert all(fleet.applied(name) == ["0001"] for name in fleet.names)


def test_ctrl_c_rolls_back_running_members_and_releases_their_locks(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(5)
    project = project_for(tmp_path, fleet, query_fleet(fleet, jobs=3))
    project.add(
        "0001",
        "slow",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);",
        "DROP TABLE slow;",
    )
    job = project.spawn("apply", "--fleet", "tenants", "--format", "json")

    def sleeping() -> int:
        rows = fleet.rows(
            fleet.names[0],
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
            "AND pid <> pg_backend_pid()",
        )
        return int(rows[0][0])

    wait_until(lambda: sleeping() == 3 or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    done, took = project.interrupt(job)
    assert took < 30
    assert done.returncode == 130, done.stderr
    report = json.loads(done.stdout)
    results = [m["result"] for m in report["members"]]
    assert results.count("interrupted") == 3
    assert results.count("skipped") == 2
    for member in report["members"]:
        if member["result"] == "interrupted":  # each was in pg_sleep: it ran for a while,
            assert member["duration_ms"] > 0, member  # and says so on its own line
            assert f"{member['name']}: interrupted in " in done.stderr, done.stderr
    for name in fleet.names:
        assert fleet.applied(name) == []
        assert fleet.rows(name, "SELECT to_regclass('slow') IS NULL")[0][0]
    locks = fleet.rows(fleet.names[0], "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert locks[0][0] == 0


# Holds the member between its first migration's commit and its bookkeeping: the window
# where a Ctrl-C used to drop a committed migration from the summary.
_SLOW_AFTER_COMMIT = """
import pathlib, time

def mg_report(options, event):
    if event.name == "migration.applied" and event.fields.get("migration_id") == "0001":
        pathlib.Path("committed").touch()
        time.sleep(2)
    return None
"""


@pytest.mark.parametrize("single", [False, True])
def test_ctrl_c_after_a_commit_keeps_the_migration_in_the_summary(
    tmp_path: Path, make_fleet: Any, single: bool
) -> None:
    fleet = make_fleet(1)
    project = project_for(tmp_path, fleet, query_fleet(fleet), extra="plugins: [slow.py]\n")
    (project.root / "slow.py").write_text(_SLOW_AFTER_COMMIT)
    project.add_table("0001")
    project.add_table("0002")
    flags = ["--single-transaction"] if single else []
    job = project.spawn("apply", *flags, "--fleet", "tenants", "--format", "json")
    wait_until(lambda: (project.root / "committed").exists() or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    done, _ = project.interrupt(job)

    assert done.returncode == 130, done.stderr
    [member] = json.loads(done.stdout)["members"]
    assert member["result"] == "interrupted"
    # Without --single-transaction 0001 committed before Ctrl-C; with it, the plan was
    # rolled back. Either way the summary says what the database holds.
    expected = [] if single else ["0001"]
    assert fleet.applied(fleet.names[0]) == expected
    assert member["applied"] == expected


def test_rollback_verify_and_fail_fast_on_a_fleet(tmp_path: Path, make_fleet: Any) -> None:
    fleet = make_fleet(4)
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    three_migrations(project)
    assert project.mg("--fleet", "tenants", "apply").returncode == 0

    done = project.mg("rollback", "2", "--fleet", "tenants", "--format", "json")
    assert done.returncode == 0, done.stderr
    for member in json.loads(done.stdout)["members"]:
        assert member["rolled_back"] == ["0003", "0002"]
        assert fleet.applied(member["name"]) == ["0001"]

    project.path_of("0001").write_text("-- migrate: up\nCREATE TABLE changed (id int);\n")
    verify = project.mg("verify", "--format", "json", env={"MG_FLEET": "tenants"})
    assert verify.returncode == 3
    members = json.loads(verify.stdout)["members"]
    assert all(m["exit_code"] == 3 and m["output"]["ok"] is False for m in members)

    # a blocked first member with --fail-fast and one job: nobody else starts
    failing = project.mg("--fleet", "tenants", "--jobs", "1", "--fail-fast", "apply")
    assert failing.returncode == 3, failing.stderr
    assert "skipped" in failing.stdout
    assert all(fleet.applied(name) == ["0001"] for name in fleet.names)


def test_fleet_usage_errors(tmp_path: Path, make_fleet: Any) -> None:
    fleet = make_fleet(1)
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    unknown = project.mg("apply", "--fleet", "nope")
    assert unknown.returncode == 2
    assert "fleet 'nope' is not defined" in unknown.stderr
    assert "tenants" in unknown.stderr
    assert project.mg("apply", "--jobs", "2").returncode == 2
    refused = project.mg("create", "x", "--fleet", "tenants")
    assert refused.returncode == 2
    assert "does not run on a fleet" in refused.stderr
    assert project.mg("apply", "--fleet", "tenants", "--jobs", "0").returncode == 2


def test_seed_runs_on_every_member_and_seed_create_refuses_a_fleet(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(3)
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    project.add_table("0001")
    assert project.mg("apply", "--fleet", "tenants").returncode == 0
    (project.root / "seeds").mkdir()
    (project.root / "seeds" / "0001_data.sql").write_text("INSERT INTO t_0001 VALUES (1);\n")

    done = project.mg("seed", "--fleet", "tenants", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    for name in fleet.names:
        assert fleet.rows(name, "SELECT id FROM t_0001") == [(1,)]
    refused = project.mg("seed", "create", "more", "--fleet", "tenants")
    assert refused.returncode == 2
    assert "does not run on a fleet" in refused.stderr


def test_a_subcommand_refusing_a_fleet_is_named_in_full(tmp_path: Path) -> None:
    """`mg seed` runs on a fleet, `mg seed create` does not: the refusal must not read as
    if `mg seed` did not, while its hint lists seed among the commands that do."""
    project = Project(tmp_path / "proj", "postgresql:///unused", configure=False)
    project.configure(extra="fleets:\n  shards:\n    databases: [a, b]\n")
    for command, shown in (
        (["seed", "create", "more"], "mg seed create"),
        (["schema", "dump"], "mg schema dump"),
        (["db", "start"], "mg db start"),
        (["create", "x"], "mg create"),
    ):
        refused = project.mg("--fleet", "shards", *command)
        assert refused.returncode == 2, refused.stderr
        assert f"mg: error: {shown} does not run on a fleet\n" in refused.stderr


def test_blocking_the_fleet_plugin_leaves_its_section_ignored(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", "postgresql:///unused", configure=False)
    project.configure(extra="fleets:\n  shards:\n    databases: [a, b]\n")
    done = project.mg("-p", "no:fleet", "create", "first")
    assert done.returncode == 0, done.stderr
    assert "section 'fleets' is ignored" in done.stderr
    refused = project.mg("-p", "no:fleet", "apply", "--fleet", "shards")
    assert refused.returncode == 2
    assert "need the fleet plugin" in refused.stderr


def test_fleet_variables_resolve_only_for_the_fleet_in_use(tmp_path: Path, make_fleet: Any) -> None:
    """``${VAR}`` in a fleet is resolved when that fleet runs, from the environment or the
    ``.env`` beside mg.yaml (also in a ``file:``); an unset one fails that fleet only."""
    fleet = make_fleet(2)
    a, b = fleet.names
    fleets_yaml = (
        "  listed:\n"
        '    databases: ["${FIRST_URL}"]\n'
        "    file: more.txt\n"
        '    jobs: "${FLEET_JOBS:-1}"\n'
        "  other:\n"
        '    databases: ["${NEVER_SET_ANYWHERE}"]\n'
    )
    project = project_for(tmp_path, fleet, fleets_yaml)
    (project.root / "more.txt").write_text("${SECOND_URL}\n")
    (project.root / ".env").write_text(f"FIRST_URL={fleet.url(a)}\nSECOND_URL={fleet.url(b)}\n")
    project.add_table("0001")

    assert project.mg("status").returncode == 0  # no fleet in use: nothing to resolve
    done = project.mg("apply", "--fleet", "listed", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["members"]) == 2
    assert fleet.applied(a) == fleet.applied(b) == ["0001"]
    assert "1 at a time" in done.stderr

    unset = project.mg("status", "--fleet", "other")
    assert unset.returncode == 2
    assert unset.stderr.startswith(
        "mg: error: mg.yaml: fleets.other.databases[0]: environment variable NEVER_SET_ANYWHERE"
    )
    assert "Traceback" not in unset.stderr


def test_fleet_configuration_errors_name_the_file_and_the_query(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(1)
    project = project_for(tmp_path, fleet, "  bad:\n    jobs: 0\n    databases: [x]\n")
    wrong = project.mg("status")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "mg: error: mg.yaml: fleets.bad.jobs: must be at least 1"

    project = project_for(tmp_path, fleet, "  none_yet:\n    databases: []\n")
    assert project.mg("status").returncode == 0  # a fleet with no members yet is no mistake
    empty = project.mg("apply", "--fleet", "none_yet", "--format", "json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"ok": True, "fleet": "none_yet", "members": []}
    assert "fleet none_yet has no members; nothing to do" in empty.stderr

    project = project_for(tmp_path, fleet, "  broken:\n    query: SELECT 1/0\n")
    failed = project.mg("status", "--fleet", "broken")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "mg: error: fleet broken: query failed: division by zero"


def test_a_nul_in_a_fleet_file_is_refused_not_cut_short(tmp_path: Path, make_fleet: Any) -> None:
    # libpq stops a database name at a NUL: "tenant\0x" would run on "tenant".
    fleet = make_fleet(1)
    project = project_for(tmp_path, fleet, "  listed:\n    file: members.txt\n")
    three_migrations(project)
    (project.root / "members.txt").write_bytes(f"# tenants\n{fleet.names[0]}\0x\n".encode())
    done = project.mg("apply", "--fleet", "listed")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mg: error: fleet file members.txt:2: a NUL character")
    assert fleet.applied(fleet.names[0]) == []


@pytest.mark.parametrize(
    ("target", "kind"), [("/dev/zero", "not a regular file"), (".", "a directory")]
)
def test_a_fleet_file_that_is_not_a_file_is_refused_without_reading(
    tmp_path: Path, make_fleet: Any, target: str, kind: str
) -> None:
    fleet = make_fleet(1)
    project = project_for(tmp_path, fleet, "  listed:\n    file: members.txt\n")
    (project.root / "members.txt").symlink_to(target)
    done = project.mg("status", "--fleet", "listed", timeout=60)
    assert done.returncode == 2, done.stderr
    # named as the user wrote it, relative to the working directory (not where the link points)
    assert done.stderr.startswith(f"mg: error: fleet file members.txt is {kind}"), done.stderr


def test_members_rewriting_one_schema_file_at_once_all_succeed(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(8)
    project = project_for(
        tmp_path, fleet, query_fleet(fleet, jobs=8), extra="schema_file: db/schema.sql\n"
    )
    three_migrations(project)
    for args in (["up"], ["apply"], ["rollback"], ["down"]):
        done = project.mg("--fleet", "tenants", *args, "--format", "json")
        report = json.loads(done.stdout)
        assert [m["error"] for m in report["members"] if not m["ok"]] == [], done.stderr
        assert done.returncode == 0
    text = (project.root / "db" / "schema.sql").read_text()
    assert "'0001'" in text and "'0002'" not in text
    assert [p.name for p in (project.root / "db").iterdir()] == ["schema.sql"]


def test_control_characters_in_a_member_and_its_error_are_escaped_on_screen(
    tmp_path: Path, make_fleet: Any
) -> None:
    """A name from ``query`` (or a server's message) holding control characters must not
    redraw the terminal: the prefixes, the summary table and the log lines show escapes;
    the JSON document keeps the text (JSON escapes it)."""
    fleet = make_fleet(1)
    evil = f"{fleet.prefix}_\x1b]0;title\x07\x1b[2J"
    with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(evil)))
    fleet.names.append(evil)  # dropped with the others
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    project.add(
        "0001",
        "boom",
        "DO $$ BEGIN IF current_database() LIKE '%title%' THEN "
        "RAISE EXCEPTION E'bad\\x07bell\\x1b[31mred'; END IF; END $$;",
    )

    done = project.mg("apply", "--fleet", "tenants")
    assert done.returncode == 1, done.stderr
    for text in (done.stdout, done.stderr):
        assert "\x1b" not in text and "\x07" not in text, text
    shown = f"{fleet.prefix}_\\x1b]0;title\\x07\\x1b[2J"
    rows = [line for line in done.stdout.splitlines() if line.startswith(shown)]
    assert len(rows) == 1 and rows[0].split()[1] == "failed", done.stdout
    assert "bad\\x07bell\\x1b[31mred" in rows[0]
    assert any(line.startswith(f"{shown}: mg: error:") for line in done.stderr.splitlines())
    assert fleet.applied(fleet.names[0]) == ["0001"]

    document = project.mg("apply", "--fleet", "tenants", "--format", "json")
    names = [m["name"] for m in json.loads(document.stdout)["members"]]
    assert sorted(names) == sorted([fleet.names[0], evil])


def test_a_fleet_file_saved_with_a_bom_and_crlf_names_its_first_member(
    tmp_path: Path, make_fleet: Any
) -> None:
    """An editor's UTF-8 BOM is no part of the first line's database name (as in mg.yaml
    and the migration files)."""
    fleet = make_fleet(2)
    project = project_for(tmp_path, fleet, "  listed:\n    file: members.txt\n")
    project.add_table("0001")
    (project.root / "members.txt").write_bytes(
        ("\ufeff" + "\r\n".join(fleet.names) + "\r\n").encode("utf-8")
    )
    done = project.mg("apply", "--fleet", "listed", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [m["name"] for m in json.loads(done.stdout)["members"]] == fleet.names
    assert all(fleet.applied(name) == ["0001"] for name in fleet.names)


@pytest.mark.parametrize("output", ["full", "pipe", "closed"])
def test_output_that_cannot_be_written_is_said_as_for_one_database(
    tmp_path: Path, make_fleet: Any, output: str
) -> None:
    """``mg status --fleet NAME > /dev/full`` (or ``| true``, or ``>&-``): each member
    fails as ``mg status`` alone would, with the same words, never as an unexpected
    error asking for a traceback."""
    fleet = make_fleet(3)
    project = project_for(tmp_path, fleet, query_fleet(fleet, jobs=1))
    project.add_table("0001")
    assert project.mg("apply", "--fleet", "tenants").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe fails at once (EPIPE)
    with open("/dev/full", "w") as full:
        stdout: Any = {"full": full, "pipe": write_end, "closed": subprocess.DEVNULL}[output]
        done = subprocess.run(
            [*MG_COMMAND, "status", "--fleet", "tenants"],
            cwd=project.root,
            env=mg_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            preexec_fn=(lambda: os.close(1)) if output == "closed" else None,
        )
    os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "unexpected error" not in done.stderr, done.stderr
    assert "rerun with -v" not in done.stderr and "Traceback" not in done.stderr
    words = {
        "full": "writing the output: No space left on device",
        "pipe": "writing the output: Broken pipe",
        "closed": "writing the output: standard output is closed",
    }[output]
    for name in fleet.names:
        assert f"{name}: failed in" in done.stderr, done.stderr
        assert any(
            line.startswith(f"{name}: failed in") and line.endswith(words)
            for line in done.stderr.splitlines()
        ), done.stderr


def test_a_member_failing_without_an_error_says_why_in_the_summary(
    tmp_path: Path, make_fleet: Any
) -> None:
    """verify, status --exit-code and lint exit 3 with no error message: the summary's error
    is the first thing their own output names, not a bare exit code."""
    fleet = make_fleet(2)
    a, b = fleet.names
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    project.add_table("0001")
    assert project.mg("apply", "--fleet", "tenants").returncode == 0
    fleet.rows(b, "UPDATE _migrations SET checksum = 'x' WHERE id = '0001'")
    project.add("0002", "required", "ALTER TABLE t_0001 ADD COLUMN c bigint NOT NULL;")

    def errors(*args: str) -> dict[str, Any]:
        done = project.mg(*args, "--fleet", "tenants", "--format", "json")
        assert done.returncode == 3, done.stderr
        assert "exit code 3" not in done.stderr
        return {m["name"]: m["error"] for m in json.loads(done.stdout)["members"]}

    verify = errors("verify")
    assert verify[a] is None
    assert verify[b] == "mismatch: migrations/0001_create_t_0001.sql changed since it was applied"
    status = errors("status", "--exit-code")
    assert status[a] == "not up to date: 1 pending"
    assert "migrations/0001_create_t_0001.sql changed since it was applied" in status[b]
    lint = errors("lint")
    for name in (a, b):
        assert lint[name].startswith("migrations/0002_required.sql:2:"), lint
        assert "adding-required-field" in lint[name]

    table = project.mg("verify", "--fleet", "tenants")
    row = next(line for line in table.stdout.splitlines() if line.startswith(f"{b} "))
    assert row.split()[1] == "failed"
    assert row.endswith("mismatch: migrations/0001_create_t_0001.sql changed since it was applied")


def test_a_full_disk_under_stderr_fails_each_member_as_one_database_and_leaves_none_running(
    tmp_path: Path, make_fleet: Any
) -> None:
    """``mg apply --fleet NAME 2> /dev/full``: as ``mg apply`` alone, each member applies
    its migrations and fails with exit 1 because its report could not be written; no
    member is left ``running`` nor stopped half-way."""
    fleet = make_fleet(3)
    project = project_for(tmp_path, fleet, query_fleet(fleet, jobs=2))
    project.add_table("0001")
    project.add_table("0002")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*MG_COMMAND, "apply", "--fleet", "tenants", "--format", "json"],
            cwd=project.root,
            env=mg_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=full,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    members = json.loads(done.stdout)["members"]
    assert [m["result"] for m in members] == ["failed"] * 3, members
    for member in members:
        assert member["exit_code"] == 1
        assert member["applied"] == ["0001", "0002"]
        assert member["error"] == "writing the output: No space left on device"
    assert all(fleet.applied(name) == ["0001", "0002"] for name in fleet.names)


def test_a_member_failing_with_an_empty_message_is_reported_not_left_running(
    tmp_path: Path, make_fleet: Any
) -> None:
    """A plugin's error with no message must fail that member like any other error: no
    traceback, no member left ``running``."""
    fleet = make_fleet(2)
    project = project_for(tmp_path, fleet, query_fleet(fleet))
    project.add_table("0001")
    (project.root / "silent_refusal.py").write_text(
        "from migretti_core import hookimpl\n"
        "from migretti_core.errors import MgError\n\n"
        "@hookimpl\n"
        "def mg_before_apply(session, plan):\n"
        "    raise MgError('')\n"
    )
    env = {"PYTHONPATH": str(project.root)}
    done = project.mg(
        "-p", "silent_refusal", "apply", "--fleet", "tenants", "--format", "json", env=env
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr
    members = json.loads(done.stdout)["members"]
    assert [m["result"] for m in members] == ["failed", "failed"], members
    assert all(m["exit_code"] == 1 and m["error"] for m in members)
    assert all(fleet.applied(name) == [] for name in fleet.names)


def test_a_blocked_plugin_s_section_is_said_ignored_once_on_a_fleet(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(3)
    project = project_for(
        tmp_path, fleet, query_fleet(fleet, jobs=3), extra="lint:\n  disable: [ban-drop-column]\n"
    )
    three_migrations(project)
    for args, env in (
        (["-p", "no:lint", "--fleet", "tenants", "status"], None),
        (["--fleet", "tenants", "apply"], {"MG_DISABLE_PLUGINS": "lint"}),
        (["--json-log", "-p", "no:lint", "--fleet", "tenants", "status"], None),
    ):
        done = project.mg(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("section 'lint' is ignored: plugin 'lint' is blocked") == 1, (
            done.stderr
        )
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["event"] for e in events].count("config.section_ignored") == 1
    assert all(fleet.applied(name) == ["0001", "0002", "0003"] for name in fleet.names)


def test_names_from_a_query_are_the_databases_it_returned_spaces_and_all(
    tmp_path: Path, make_fleet: Any
) -> None:
    """PostgreSQL keeps a database name's spaces: ``query`` returning 'x ' and ' x' selects
    those two databases, never a third one named 'x' that it did not return."""
    fleet = make_fleet(1)
    (plain,) = fleet.names
    spaced = [f" {plain}", f"{plain} "]
    with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
        for name in spaced:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    fleet.names += spaced  # dropped with the others
    fleets_yaml = (
        "  spaced:\n"
        "    query: SELECT datname FROM pg_database\n"
        f"      WHERE btrim(datname) = '{plain}' AND datname <> '{plain}' ORDER BY 1\n"
    )
    project = project_for(tmp_path, fleet, fleets_yaml)
    project.add_table("0001")

    done = project.mg("apply", "--fleet", "spaced", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [m["name"] for m in json.loads(done.stdout)["members"]] == spaced
    assert [fleet.applied(name) for name in spaced] == [["0001"], ["0001"]]
    assert fleet.applied(plain) == []  # not returned by the query: untouched


@pytest.mark.parametrize("command", [("status",), ("apply", "--dry-run")])
def test_a_fleet_query_that_writes_is_refused_and_changes_nothing(
    tmp_path: Path, make_fleet: Any, command: tuple[str, ...]
) -> None:
    """The members' query is a lookup: it runs read-only, so ``mg status`` or a dry run on
    the fleet cannot change the profile's database through it."""
    fleet = make_fleet(1)
    (name,) = fleet.names
    table = f"{fleet.prefix}_tally"
    with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE TABLE {} (n int)").format(sql.Identifier(table)))
    fleets_yaml = (
        "  counted:\n"
        f"    query: WITH x AS (INSERT INTO {table} VALUES (1) RETURNING n)\n"
        f"      SELECT '{name}' FROM x\n"
    )
    project = project_for(tmp_path, fleet, fleets_yaml)
    project.add_table("0001")
    try:
        done = project.mg(*command, "--fleet", "counted")
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("mg: error: fleet counted: query failed: "), done.stderr
        assert "read-only transaction" in done.stderr
        assert "hint: the members' query runs read-only" in done.stderr
        assert project.value(f"SELECT count(*) FROM {table}") == 0
        assert fleet.applied(name) == []
    finally:
        with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def test_database_names_that_yaml_reads_as_numbers_keep_the_text_written(
    tmp_path: Path, make_fleet: Any
) -> None:
    """``databases: [01234567, 765432]`` names the databases '01234567' and '765432', as
    every scalar of mg.yaml keeps the text the user wrote (YAML alone reads the first as an
    octal number), and a profile's fleet reads the same way."""
    fleet = make_fleet(1)
    digits = "".join(str(n % 8) for n in uuid.uuid4().bytes[:9])
    numeric = [f"0{digits}", f"7{digits}"]
    with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
        for name in numeric:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    fleet.names += numeric  # dropped with the others
    fleets_yaml = f"  shards:\n    databases: [{numeric[0]}, {numeric[1]}]\n"
    profile = f"envs:\n  staging:\n    fleets:\n      shards:\n        databases: [{numeric[1]}]\n"
    project = project_for(tmp_path, fleet, fleets_yaml, profile)
    project.add_table("0001")

    done = project.mg("apply", "--fleet", "shards", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [m["name"] for m in json.loads(done.stdout)["members"]] == numeric
    assert [fleet.applied(name) for name in numeric] == [["0001"], ["0001"]]

    staged = project.mg("--env", "staging", "status", "--fleet", "shards", "--format", "json")
    assert staged.returncode == 0, staged.stderr
    assert [m["name"] for m in json.loads(staged.stdout)["members"]] == [numeric[1]]


def test_a_fleet_query_blocked_by_a_lock_gives_up_after_table_lock_timeout(
    tmp_path: Path, make_fleet: Any
) -> None:
    """A members' query waiting on a table another session keeps locked (a migration's
    ALTER TABLE, a dashboard's LOCK) ends after ``table_lock_timeout``, as a migration's lock
    wait does, instead of holding every fleet command without end."""
    fleet = make_fleet(1)
    (name,) = fleet.names
    table = f"{fleet.prefix}_tenants"
    with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE TABLE {} (db text)").format(sql.Identifier(table)))
        admin.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(table)), (name,))
    project = project_for(
        tmp_path,
        fleet,
        f"  tenants:\n    query: SELECT db FROM {table}\n",
        extra="table_lock_timeout: 1s\n",
    )
    project.add_table("0001")
    holder = psycopg.connect(fleet.pg_url)
    try:
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        started = time.monotonic()
        done = project.mg("status", "--fleet", "tenants", timeout=30)  # no end before
        assert time.monotonic() - started < 20
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("mg: error: fleet tenants: query failed: "), done.stderr
        assert "lock timeout" in done.stderr
        assert "table_lock_timeout (1s)" in done.stderr
        holder.rollback()
        done = project.mg("status", "--fleet", "tenants")
        assert done.returncode == 0, done.stderr
    finally:
        holder.close()
        with psycopg.connect(fleet.pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def test_a_members_bad_url_is_named_by_the_member_and_where_it_was_written(
    tmp_path: Path, make_fleet: Any
) -> None:
    fleet = make_fleet(1)
    listed = "postgresql://app:Sekr3t-list@db.invalid:notaport/x"
    project = project_for(
        tmp_path,
        fleet,
        "  shards:\n"
        f"    databases: [{fleet.names[0]}, '{listed}']\n"
        "    file: members.txt\n"
        "    query: SELECT 'host=db.invalid port=0 password=Sekr3t-query'\n",
        "envs:\n  prod:\n    fleets:\n      shards:\n"
        "        databases: ['postgresql://app:Sekr3t-prod@[db.invalid']\n",
    )
    (project.root / "members.txt").write_text(
        "# one a line\npostgresql://app:Sekr3t-file@db.invalid:99999/x\n", encoding="utf-8"
    )

    done = project.mg("status", "--fleet", "shards", "--format", "json")
    assert done.returncode == 2, done.stderr
    errors = {m["name"]: m["error"] for m in json.loads(done.stdout)["members"]}
    assert errors == {
        fleet.names[0]: None,
        "postgresql://app:****@db.invalid:notaport/x": (
            "member postgresql://app:****@db.invalid:notaport/x "
            "(mg.yaml: fleets.shards.databases[1]): port 'notaport' is not a port number "
            "(1 to 65535)"
        ),
        "postgresql://app:****@db.invalid:99999/x": (
            "member postgresql://app:****@db.invalid:99999/x "
            "(members.txt:2, fleets.shards.file): port '99999' is not a port number (1 to 65535)"
        ),
        "host=db.invalid port=0 password=****": (
            "member host=db.invalid port=0 password=**** (row 1 of fleets.shards.query): "
            "port '0' is not a port number (1 to 65535)"
        ),
    }, errors

    prod = project.mg("--env", "prod", "status", "--fleet", "shards")
    assert prod.returncode == 2, prod.stderr
    assert (
        "member postgresql://app:****@[db.invalid (mg.yaml: envs.prod.fleets.shards.databases[0])"
        " is not a valid connection URL: " in prod.stdout + prod.stderr
    ), prod.stdout + prod.stderr
    for run in (done, prod):
        assert "Sekr3t" not in run.stdout + run.stderr, run.stdout + run.stderr
        assert "database.url" not in run.stdout + run.stderr, run.stdout + run.stderr
