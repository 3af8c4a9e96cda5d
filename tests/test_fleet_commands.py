"""``--fleet`` with the commands tests/test_fleet.py leaves out: list, head, lint, drift, fix
and baseline. The real ``mg`` against the suite's server, one database per member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migretti_core.testing import CliResult, make_project, url_with_dbname, write_migration

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Fleet:
    root: Path
    names: list[str]
    server: str

    def mg(self, *args: str, env: Mapping[str, str] | None = None) -> CliResult:
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MG_") and not (k.startswith("PG") and k != "PGTZ")
        }
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        environ.update(env or {})
        done = subprocess.run(
            [sys.executable, "-m", "migretti_core", *args],
            cwd=self.root,
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.mg(*args, "--format", "json")
        try:
            return done.exit_code, json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"not JSON: {done.stdout!r}\n{done.stderr}") from None

    def sql(self, name: str, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url_with_dbname(self.server, name), autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def history(self, name: str) -> dict[str, str]:
        rows = self.sql(name, "SELECT id, status FROM _migrations ORDER BY id")
        return {row[0]: row[1] for row in rows}


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """Three empty databases in the fleet ``tenants`` of a new project."""
    prefix = f"cmds_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{n}" for n in range(1, 4)]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    root = tmp_path / "proj"
    make_project(root, pg_url, settings={"fleets": {"tenants": {"databases": names}}})
    try:
        yield Fleet(root, names, pg_url)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def members(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in document["members"]}


def test_list_and_head_show_each_members_own_history(fleet: Fleet) -> None:
    a, b, c = fleet.names
    write_migration(fleet.root, "0001", "one", "CREATE TABLE one (id bigint);")
    write_migration(fleet.root, "0002", "two", "CREATE TABLE two (id bigint);")
    assert fleet.mg("apply", "--fleet", "tenants", "--to", "0001").exit_code == 0
    only_a = {"MG_DATABASE_URL": url_with_dbname(fleet.server, a)}
    assert fleet.mg("apply", env=only_a).exit_code == 0

    code, listed = fleet.json("list", "--fleet", "tenants")
    assert code == 0
    assert listed["ok"] is True
    rows = {
        name: [(r["id"], r["status"]) for r in m["output"]] for name, m in members(listed).items()
    }
    assert rows == {
        a: [("0001", "applied"), ("0002", "applied")],
        b: [("0001", "applied"), ("0002", "pending")],
        c: [("0001", "applied"), ("0002", "pending")],
    }
    assert all(m["applied"] == [] and m["exit_code"] == 0 for m in listed["members"])

    code, heads = fleet.json("head", "--fleet", "tenants")
    assert code == 0
    assert {name: m["output"]["id"] for name, m in members(heads).items()} == {
        a: "0002",
        b: "0001",
        c: "0001",
    }

    text = fleet.mg("head", "--fleet", "tenants")
    assert text.exit_code == 0, text.stderr
    assert f"{a}: 0002 two (applied " in text.stdout
    assert text.stdout.splitlines()[-1] == "3 of 3 succeeded"


def test_lint_runs_per_member_on_its_pending_plan_and_once_for_files(fleet: Fleet) -> None:
    a, b, c = fleet.names
    write_migration(fleet.root, "0001", "one", "CREATE TABLE one (id bigint);")
    write_migration(fleet.root, "0002", "required", "ALTER TABLE one ADD COLUMN c bigint NOT NULL;")
    assert fleet.mg("apply", "--fleet", "tenants", "--to", "0001").exit_code == 0
    only_a = {"MG_DATABASE_URL": url_with_dbname(fleet.server, a)}
    assert fleet.mg("apply", "--no-lint", env=only_a).exit_code == 0

    # Pending migrations differ per member: each is linted as `mg lint` would on it alone.
    code, report = fleet.json("lint", "--fleet", "tenants")
    assert code == 3
    assert report["ok"] is False
    by_name = members(report)
    assert by_name[a]["ok"] is True and by_name[a]["output"]["findings"] == []
    for name in (b, c):
        assert by_name[name]["exit_code"] == 3
        rules = {f["rule"] for f in by_name[name]["output"]["findings"]}
        assert "adding-required-field" in rules
    assert fleet.history(a) == {"0001": "applied", "0002": "applied"}  # lint changes nothing

    # Every file, or files by name: no database is read, so the fleet lints them once and
    # prints lint's own document.
    for args in (("--all",), ("0002",)):
        once = fleet.mg("lint", *args, "--fleet", "tenants", "--format", "json")
        assert once.exit_code == 3, once.stderr
        document = json.loads(once.stdout)
        assert "members" not in document
        assert [f["rule"] for f in document["findings"]].count("adding-required-field") == 1
        assert "linted once" in once.stderr


def test_lint_annotations_on_a_fleet_go_to_stdout_as_github_reads_them(fleet: Fleet) -> None:
    """``--format github`` on a fleet: the workflow annotations are lint's result, so they go
    to stdout, each line starting with ``::`` (a member's name in front would hide it from
    GitHub), and an annotation every member found is written once; the summary follows."""
    a = fleet.names[0]
    write_migration(fleet.root, "0001", "one", "CREATE TABLE one (id bigint);")
    write_migration(fleet.root, "0002", "required", "ALTER TABLE one ADD COLUMN c bigint NOT NULL;")
    write_migration(fleet.root, "0003", "small", "ALTER TABLE one ADD COLUMN d int;")
    assert fleet.mg("apply", "--fleet", "tenants", "--to", "0001").exit_code == 0
    only_a = {"MG_DATABASE_URL": url_with_dbname(fleet.server, a)}
    assert fleet.mg("apply", "--no-lint", "--to", "0002", env=only_a).exit_code == 0

    done = fleet.mg("lint", "--fleet", "tenants", "--format", "github")
    assert done.exit_code == 3, done.stderr
    lines = done.stdout.splitlines()
    annotations = [line for line in lines if line.startswith("::")]
    assert len(annotations) == len(set(annotations)) == 2, done.stdout
    assert any("title=adding-required-field::" in line for line in annotations)
    assert any("title=prefer-bigint-over-int::" in line for line in annotations)
    assert lines[: len(annotations)] == annotations  # then the summary
    assert lines[-1] == "1 of 3 succeeded"
    assert "::" not in done.stderr


def test_drift_reports_the_member_that_differs(fleet: Fleet) -> None:
    a, b, c = fleet.names
    write_migration(fleet.root, "0001", "one", "CREATE TABLE one (id bigint);")
    assert fleet.mg("apply", "--fleet", "tenants").exit_code == 0
    fleet.sql(b, "CREATE TABLE by_hand (id bigint)")

    # one member after the other: each later one runs drift in a process that already did
    code, report = fleet.json(
        "drift", "--fleet", "tenants", "--jobs", "1", "--database-url", fleet.server
    )

    assert code == 3
    by_name = members(report)
    assert by_name[b]["ok"] is False and by_name[b]["exit_code"] == 3
    assert by_name[b]["error"] == "drift: 1 object differs"
    assert "by_hand" in json.dumps(by_name[b]["output"])
    for name in (a, c):
        assert by_name[name]["ok"] is True, (by_name[name], report)
        assert by_name[name]["output"]["ok"] is True


def test_fix_and_baseline_on_a_fleet(fleet: Fleet) -> None:
    write_migration(fleet.root, "0001", "one", "CREATE TABLE one (id bigint);")
    write_migration(
        fleet.root,
        "0002",
        "breaks",
        "CREATE TABLE two (id bigint);\nSELECT 1 / 0;",
        transactional=False,
    )

    applied = fleet.mg("apply", "--fleet", "tenants", "--format", "json")
    assert applied.exit_code == 1, applied.stderr
    for name in fleet.names:
        assert fleet.history(name) == {"0001": "applied", "0002": "failed"}

    # mg fix on every member; the summary and the history agree
    code, fixed = fleet.json("fix", "0002", "--remove", "--fleet", "tenants", "--yes")
    assert code == 0, fixed
    assert all(m["ok"] for m in fixed["members"])
    for name in fleet.names:
        assert fleet.history(name) == {"0001": "applied"}
    # a second fix finds nothing to fix on any member: the members' own exit code
    again = fleet.mg("fix", "0002", "--remove", "--fleet", "tenants")
    assert again.exit_code == 2, again.stderr
    assert "nothing to fix" in again.stdout
    assert again.stdout.splitlines()[-1] == "0 of 3 succeeded"

    # baseline: new databases adopted up to 0002 without running it
    extra = [f"{fleet.names[0]}_new_{n}" for n in range(2)]
    with psycopg.connect(fleet.server, autocommit=True) as admin:
        for name in extra:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        (fleet.root / "new.txt").write_text("\n".join(extra) + "\n")
        config = json.loads((fleet.root / "mg.yaml").read_text())
        config["fleets"]["new"] = {"file": "new.txt"}
        (fleet.root / "mg.yaml").write_text(json.dumps(config))

        code, baselined = fleet.json("baseline", "0002", "--fleet", "new")
        assert code == 0, baselined
        assert [m["name"] for m in baselined["members"]] == extra
        for name in extra:
            assert fleet.history(name) == {"0001": "applied", "0002": "applied"}
            assert fleet.sql(name, "SELECT to_regclass('two')") == [(None,)]
        # refused where the history already has applied rows: exit 3 from each member
        refused = fleet.mg("baseline", "0001", "--fleet", "new")
        assert refused.exit_code == 3, refused.stderr
    finally:
        with psycopg.connect(fleet.server, autocommit=True) as admin:
            for name in extra:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
