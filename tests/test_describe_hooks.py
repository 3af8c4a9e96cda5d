"""What the database plugin knows of a failed statement and of a blocking session reaches
the messages through hooks: the core keeps no SQL or catalog knowledge of its own."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import psycopg

from migretti_core import hookimpl
from migretti_core.api import LockHolder, StatementInfo
from migretti_core.testing import make_project, run_cli, write_migration


def _plugin(name: str, **functions: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, function in functions.items():
        setattr(module, attr, hookimpl(function))
    return module


def test_hook_mg_describe_statement(tmp_path: Path, database_url: str) -> None:
    make_project(tmp_path, database_url)
    write_migration(
        tmp_path,
        "0001",
        "index",
        "CREATE INDEX CONCURRENTLY t_x ON missing (x);\n",
        transactional=False,
    )
    builtin = run_cli(["apply"], cwd=tmp_path)
    assert builtin.exit_code == 1
    assert "statement 1 of 1 (CREATE INDEX CONCURRENTLY) failed" in builtin.stderr
    assert (
        "NOTE: a CREATE INDEX CONCURRENTLY that fails once it has begun its build leaves an "
        "INVALID index behind (mg status lists it)"
    ) in builtin.stderr
    assert run_cli(["fix", "0001", "--remove"], cwd=tmp_path).exit_code == 0

    asked: list[str] = []

    def mg_describe_statement(sql: str) -> StatementInfo:
        asked.append(sql)
        return StatementInfo(kind="INDEX BUILD", note="ask the DBA first")

    answered = run_cli(
        ["apply"],
        cwd=tmp_path,
        plugins=[_plugin("dba", mg_describe_statement=mg_describe_statement)],
    )
    assert answered.exit_code == 1
    assert "statement 1 of 1 (INDEX BUILD) failed" in answered.stderr
    assert "NOTE: ask the DBA first" in answered.stderr
    assert "before retrying" not in answered.stderr
    assert asked == ["CREATE INDEX CONCURRENTLY t_x ON missing (x)"]  # the statement as split


def test_hook_mg_describe_lock_holder(tmp_path: Path, database_url: str) -> None:
    make_project(
        tmp_path,
        database_url,
        settings={"table_lock_timeout": "300ms", "table_lock_retries": "0"},
    )
    with psycopg.connect(database_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int)")
    write_migration(tmp_path, "0001", "add_c", "ALTER TABLE t ADD COLUMN c int;")
    described: list[LockHolder] = []

    def mg_describe_lock_holder(holder: LockHolder) -> str:
        described.append(holder)
        return f"the nightly report (backend {holder.pid})"

    with psycopg.connect(database_url, application_name="slow_report") as holder:
        holder.execute("LOCK TABLE t IN ACCESS SHARE MODE")
        pid = holder.info.backend_pid
        builtin = run_cli(["apply"], cwd=tmp_path)
        answered = run_cli(
            ["apply"],
            cwd=tmp_path,
            plugins=[_plugin("ops", mg_describe_lock_holder=mg_describe_lock_holder)],
        )
    assert builtin.exit_code == 1, builtin.stderr
    assert f"blocked by pid {pid} ('slow_report', idle in transaction" in builtin.stderr
    assert answered.exit_code == 1, answered.stderr
    assert f"blocked by the nightly report (backend {pid})" in answered.stderr
    assert [h.pid for h in described] == [pid]
