"""What mg reported applied survives a server crash right after it exits.

All but a run's last migration commit without waiting for the disk (docs/concurrency.md,
"Durability"); the last one's COMMIT, or a wait when the run stops early, makes them all
durable. Each test crashes a server of its own, with durable settings and a WAL writer slowed
to one pass a second, by killing one of its processes: the server then drops whatever WAL
it had not written yet and recovers from what is on disk.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from migretti_core.testing import Project, wait_until
from migretti_plugins.embedded.server import EmbeddedServer

COUNT = 30


@pytest.fixture
def server(server_tmp_path: Path) -> Iterator[EmbeddedServer]:
    pg = EmbeddedServer(server_tmp_path / "data")  # fsync and synchronous_commit on
    pg.start()
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET wal_writer_delay = '1s'")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE DATABASE app")
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def project(tmp_path: Path, server: EmbeddedServer) -> Iterator[Project]:
    project = Project(tmp_path / "proj", server.url("app"))
    yield project
    project.close()


_CHECKPOINTER = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"


def _checkpointer(url: str) -> int | None:
    """The checkpointer's pid; None while the server does not answer."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(_CHECKPOINTER).fetchone()
    except psycopg.OperationalError:
        return None
    return int(row[0]) if row else None


def crash(server: EmbeddedServer) -> None:
    """Kill a backend with SIGKILL: the postmaster stops every process without writing
    anything more, resets shared memory and replays the WAL on disk. Done once the server
    answers with a new checkpointer."""
    before = _checkpointer(server.url())
    assert before is not None
    victim = psycopg.connect(server.url(), autocommit=True)
    os.kill(victim.info.backend_pid, signal.SIGKILL)
    with suppress(psycopg.Error):
        victim.execute("SELECT 1")  # fails once the backend is gone
    victim.close()
    wait_until(lambda: _checkpointer(server.url()) not in (None, before), timeout=60)


def _tables(count: int) -> set[str]:
    return {f"t_{n:04d}" for n in range(1, count + 1)}


def test_every_migration_of_a_finished_run_survives_a_crash_right_after(
    project: Project, server: EmbeddedServer
) -> None:
    for n in range(1, COUNT + 1):
        project.add_table(f"{n:04d}")
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    crash(server)
    assert project.statuses() == dict.fromkeys((f"{n:04d}" for n in range(1, COUNT + 1)), "applied")
    assert project.tables() == _tables(COUNT)


def test_the_migrations_before_a_failure_survive_a_crash_right_after(
    project: Project, server: EmbeddedServer
) -> None:
    for n in range(1, COUNT + 1):
        project.add_table(f"{n:04d}")
    project.add(f"{COUNT + 1:04d}", "broken", "CREATE TABLE broken (id int);\nSELECT 1 / 0;")
    project.add_table(f"{COUNT + 2:04d}")
    done = project.mg("apply")
    assert done.returncode == 1, done.stderr
    assert f"applied {COUNT:04d}" in done.stderr + done.stdout
    crash(server)
    assert project.statuses() == dict.fromkeys((f"{n:04d}" for n in range(1, COUNT + 1)), "applied")
    assert project.tables() == _tables(COUNT)


def test_a_rollback_is_on_disk_when_mg_exits(project: Project, server: EmbeddedServer) -> None:
    # rows, not tables: a COMMIT that drops a table waits for the disk whatever it is told
    project.add("0001", "items", "CREATE TABLE items (n int);", "DROP TABLE items;")
    for n in range(2, COUNT + 1):
        project.add(
            f"{n:04d}",
            f"item_{n}",
            f"INSERT INTO items VALUES ({n});",
            f"DELETE FROM items WHERE n = {n};",
        )
    assert project.mg("apply").returncode == 0
    done = project.mg("rollback", str(COUNT - 5))
    assert done.returncode == 0, done.stderr
    crash(server)
    assert project.sql("SELECT n FROM items ORDER BY n") == [(n,) for n in range(2, 6)]
    assert set(project.statuses()) == {f"{n:04d}" for n in range(1, 6)}
