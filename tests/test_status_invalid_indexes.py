"""`mg status` with an INVALID index left on the target: listed among the problems, and
`--exit-code` fails on it even when every migration is applied."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from migretti_core.testing import make_project, write_migration


def mg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migretti_core", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )


def test_an_invalid_index_is_a_problem_and_fails_the_gate(
    tmp_path: Path, database_url: str
) -> None:
    root = tmp_path / "proj"
    make_project(root, database_url)
    write_migration(root, "001", "t", "CREATE TABLE t (id bigint); INSERT INTO t VALUES (1), (1);")
    assert mg(root, "apply").returncode == 0, "setup"

    clean = mg(root, "status", "--exit-code")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines()[-1] == "no problems"

    # A concurrent unique build fails on the duplicates and leaves an INVALID index.
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id)")

    done = mg(root, "status", "--exit-code")
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert "no problems" not in done.stdout
    assert lines[-2:] == [
        "invalid indexes (1), left by failed CREATE INDEX CONCURRENTLY:",
        "  public.t_id on public.t: DROP INDEX CONCURRENTLY public.t_id;",
    ]
    assert mg(root, "status").returncode == 0  # without --exit-code: informative only
    document = json.loads(mg(root, "status", "--format", "json").stdout)
    assert document["ok"] is False
    assert document["problems"] == []  # the migrations themselves are in order
    assert document["invalid_indexes"] == [
        {
            "index": "public.t_id",
            "table": "public.t",
            "drop": "DROP INDEX CONCURRENTLY public.t_id;",
        }
    ]

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX CONCURRENTLY public.t_id")
    again = mg(root, "status", "--exit-code")
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "no problems"
