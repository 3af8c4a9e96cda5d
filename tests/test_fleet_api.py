"""The Python API on a fleet (``Migretti(...).fleet(name)``) against real databases: the
same data as ``mg --fleet NAME --format json``, frozen results, nothing printed, and the
exit-code-carrying errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migretti_core import (
    ConfigError,
    ConfirmationRequired,
    FleetFailed,
    FleetResult,
    Migretti,
    RunResult,
    SqlError,
    StatusResult,
    UsageError,
)
from migretti_core.testing import make_project, url_with_dbname, write_migration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API reads MG_* like the CLI; none of the runner's own may leak into these tests."""
    for key in list(os.environ):
        if key.startswith("MG_") and key != "MG_TEST_DATABASE_URL":
            monkeypatch.delenv(key)


@dataclass
class Setup:
    config: Path
    names: list[str]
    server: str

    def sql(self, name: str, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url_with_dbname(self.server, name), autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def applied(self, name: str) -> list[str]:
        if self.sql(name, "SELECT to_regclass('_migrations')") == [(None,)]:
            return []
        return [r[0] for r in self.sql(name, "SELECT id FROM _migrations ORDER BY id")]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MG_", "PG"))}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        return subprocess.run(
            [sys.executable, "-m", "migretti_core", *args],
            cwd=self.config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture
def setup(pg_url: str, tmp_path: Path) -> Iterator[Setup]:
    """Five empty databases, the fleet ``tenants`` (jobs 2) and three migrations."""
    prefix = f"api_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{n}" for n in range(1, 6)]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    config = make_project(
        tmp_path / "proj",
        pg_url,
        settings={
            "fleets": {"tenants": {"databases": names, "jobs": 2}},
            "envs": {"prod": {}},
        },
    )
    for ident in ("0001", "0002", "0003"):
        write_migration(
            config,
            ident,
            f"t{ident}",
            f"CREATE TABLE t_{ident} (id bigint);",
            f"DROP TABLE t_{ident};",
        )
    try:
        yield Setup(config, names, pg_url)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def test_apply_on_a_fleet_reports_every_member_and_raises_with_the_first_exit_code(
    setup: Setup, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    broken = setup.names[3]
    setup.sql(broken, "CREATE TABLE t_0002 (id bigint)")
    fleet = Migretti(setup.config).fleet("tenants")
    assert fleet.members() == tuple(setup.names)

    with caplog.at_level(logging.INFO, logger="migretti"), pytest.raises(FleetFailed) as raised:
        fleet.apply()

    error = raised.value
    assert error.exit_code == 1
    assert f"{broken}: " in str(error) and "t_0002" in str(error)
    copy = pickle.loads(pickle.dumps(error))  # as multiprocessing hands it back
    assert type(copy) is FleetFailed and (str(copy), copy.exit_code) == (str(error), 1)
    assert [m.name for m in copy.result.members] == setup.names  # type: ignore[attr-defined]
    result = error.result
    assert isinstance(result, FleetResult)
    assert result.ok is False and result.exit_code == 1
    assert [m.name for m in result.members] == setup.names
    assert [m.name for m in result.failed] == [broken]
    bad = result[broken]
    assert bad.result == "failed" and bad.exit_code == 1
    assert isinstance(bad.exception, SqlError) and bad.exception.sqlstate == "42P07"
    assert bad.applied == ("0001",)  # what the member's own error carried
    assert isinstance(bad.output, RunResult) and bad.output.ids == ("0001",)
    assert bad.error is not None and "t_0002" in bad.error
    for name in setup.names:
        member = result[name]
        if name != broken:
            assert member.ok and member.exit_code == 0 and member.exception is None
            assert member.applied == ("0001", "0002", "0003") and member.rolled_back == ()
            assert setup.applied(name) == ["0001", "0002", "0003"]
    assert setup.applied(broken) == ["0001"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bad.result = "ok"  # type: ignore[misc]
    # nothing printed; every member's log records carry its name
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    applied = [r for r in caplog.records if getattr(r, "event", None) == "migration.applied"]
    assert sorted({r.target for r in applied}) == sorted(setup.names)  # type: ignore[attr-defined]
    # the fleet's own events, as in mg's JSON log: one per member, the failure included
    ended = [r for r in caplog.records if getattr(r, "event", None) == "fleet.member.finished"]
    assert sorted(r.target for r in ended) == sorted(setup.names)  # type: ignore[attr-defined]
    assert [r.exit_code for r in ended if r.target == broken] == [1]  # type: ignore[attr-defined]
    finished = [r for r in caplog.records if getattr(r, "event", None) == "fleet.finished"]
    assert [r.levelname for r in finished] == ["WARNING"]
    assert finished[0].getMessage() == "fleet tenants: 4 of 5 succeeded"

    # raise_on_failure=False returns it; rollback reports what it rolled back
    back = Migretti(setup.config).fleet("tenants", raise_on_failure=False).rollback()
    assert back.ok is True
    assert back[setup.names[0]].rolled_back == ("0003",)
    assert back[broken].rolled_back == ("0001",)


def test_the_fleet_document_is_the_clis(setup: Setup) -> None:
    Migretti(setup.config).fleet("tenants").apply(to="0002")

    api = Migretti(setup.config).fleet("tenants").status()
    done = setup.cli("status", "--fleet", "tenants", "--format", "json")

    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    mine = api.as_dict()
    for doc in (cli, mine):
        for member in doc["members"]:
            member.pop("duration_ms")
    assert mine == cli
    assert all(isinstance(m.output, StatusResult) for m in api.members)
    assert api[setup.names[0]].output is not None
    assert api[setup.names[0]].output.pending == 1


def test_reads_canary_fail_fast_and_bad_arguments(setup: Setup) -> None:
    mg = Migretti(setup.config)
    first = setup.names[0]
    setup.sql(first, "CREATE TABLE t_0001 (id bigint)")

    canary = mg.fleet("tenants", canary=1, raise_on_failure=False).apply()
    assert canary.exit_code == 1
    assert [m.result for m in canary.members] == ["failed"] + ["skipped"] * 4
    assert all(m.error == "not started: a canary failed" for m in canary.members[1:])
    assert all(m.exit_code is None for m in canary.members[1:])
    assert all(setup.applied(name) == [] for name in setup.names)

    fast = mg.fleet("tenants", jobs=1, fail_fast=True, raise_on_failure=False).apply()
    assert [m.result for m in fast.members] == ["failed"] + ["skipped"] * 4

    everyone = mg.fleet("tenants", raise_on_failure=False).apply()
    assert [m.ok for m in everyone.members] == [False, True, True, True, True]
    heads = mg.fleet("tenants", raise_on_failure=False).head()
    assert heads[first].output is None
    assert {heads[n].output.id for n in setup.names[1:]} == {"0003"}  # type: ignore[union-attr]
    rows = mg.fleet("tenants").list()
    assert [r.status for r in rows[first].output or ()] == ["pending"] * 3
    verified = mg.fleet("tenants").verify()
    assert verified.ok and verified[setup.names[1]].output.checked == 3  # type: ignore[union-attr]

    with pytest.raises(ConfigError) as unknown:
        mg.fleet("nope")
    assert unknown.value.exit_code == 2 and "tenants" in str(unknown.value)
    with pytest.raises(UsageError):
        mg.fleet("tenants", jobs=0)
    with pytest.raises(UsageError):  # "no" is truthy: refused rather than taken as True
        mg.fleet("tenants", fail_fast="no")  # type: ignore[arg-type]


def test_a_protected_profile_is_refused_once_before_any_member(setup: Setup) -> None:
    fleet = Migretti(setup.config, env="prod").fleet("tenants")

    with pytest.raises(ConfirmationRequired) as refused:
        fleet.apply()
    with pytest.raises(ConfirmationRequired):  # a dry run runs SQL there too, as mg asks
        fleet.apply(dry_run=True)
    with pytest.raises(UsageError) as not_a_bool:  # a truthy string is no confirmation
        fleet.apply(confirm="no")  # type: ignore[arg-type]
    assert not_a_bool.value.exit_code == 2
    assert str(not_a_bool.value) == "apply: confirm must be True or False, not 'no'"

    assert refused.value.exit_code == 5
    assert "5 databases" in str(refused.value) and setup.names[0] in str(refused.value)
    assert all(setup.applied(name) == [] for name in setup.names)
    assert fleet.status().ok  # reading needs no confirmation
    done = fleet.apply(confirm=True)
    assert done.ok and all(setup.applied(n) == ["0001", "0002", "0003"] for n in setup.names)


def test_ctrl_c_waits_for_the_running_member_then_is_raised(setup: Setup) -> None:
    # Long enough that Ctrl-C, pressed once the server shows it, lands while it runs.
    write_migration(setup.config, "0004", "slow", "SELECT pg_sleep(3);", "SELECT 1;")
    fleet = Migretti(setup.config).fleet("tenants", jobs=1)
    main = threading.main_thread().ident
    assert main is not None
    first = setup.names[0]

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()"
        )
        while setup.sql(first, query)[0][0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fleet.apply()
    finally:
        presser.join()
    # Raised only once the running member had finished its command; nobody else started.
    assert setup.applied(first) == ["0001", "0002", "0003", "0004"]
    for name in setup.names[1:]:
        assert setup.applied(name) == []
