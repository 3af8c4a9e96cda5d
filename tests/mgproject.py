"""A migretti project in a temporary directory, driven through real ``mg`` processes.

Tests see what a user sees: exit codes and output of the ``mg`` command, and the database
itself, queried with psycopg on a connection of the test's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BIN_DIR = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[1]
MG_COMMAND: list[str] = [sys.executable, "-m", "migretti_core"]
HISTORY_TABLES = frozenset({"_migrations", "_migrations_log"})
DEFAULT_LOCK_ID = 894321


def mg_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without ``MG_*`` and libpq ``PG*`` settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MG_") and not (k.startswith("PG") and k != "PGTZ")
    }
    env["PATH"] = str(BIN_DIR) + os.pathsep + env.get("PATH", "")
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


def migration_text(up: str, down: str | None = None, *, no_transaction: bool = False) -> str:
    """A migration file's text in the SQL file format (LF line ends)."""
    lines = ["-- migrate: no-transaction"] if no_transaction else []
    lines += ["-- migrate: up", up.strip("\n")]
    if down is not None:
        lines += ["-- migrate: down", down.strip("\n")]
    return "\n".join(lines) + "\n"


@dataclass
class Background:
    """An ``mg`` process started without waiting, its output going to files."""

    args: Sequence[str]
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    handles: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr_so_far(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for handle in self.handles:
                handle.close()
        return subprocess.CompletedProcess(
            list(self.args),
            code,
            self.out_path.read_text(encoding="utf-8", errors="replace"),
            self.err_path.read_text(encoding="utf-8", errors="replace"),
        )

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
        self.proc.wait()
        for handle in self.handles:
            handle.close()


class Project:
    """An ``mg.yaml`` and a ``migrations/`` directory pointing at one test database.

    Every output of every ``mg`` run is kept in ``transcript`` so a test can search all of it.
    """

    def __init__(self, root: Path, database_url: str, *, configure: bool = True) -> None:
        self.root = root
        self.database_url = database_url
        self.migrations_dir = root / "migrations"
        self.migrations_dir.mkdir(parents=True, exist_ok=True)
        self.transcript: list[str] = []
        self._jobs: list[Background] = []
        if configure:
            self.configure()

    # -- files ------------------------------------------------------------------------------

    def configure(self, database: Mapping[str, str] | None = None, extra: str = "") -> Path:
        """Write mg.yaml; ``database`` defaults to ``{url: <the test database>}``."""
        settings = dict(database) if database is not None else {"url": self.database_url}
        lines = ["database:"]
        lines += [f"  {key}: {json.dumps(value)}" for key, value in settings.items()]
        text = "\n".join(lines) + "\n" + extra
        path = self.root / "mg.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def add(
        self,
        ident: str,
        name: str,
        up: str,
        down: str | None = None,
        *,
        no_transaction: bool = False,
    ) -> Path:
        """Write ``migrations/<ident>_<name>.sql``."""
        path = self.migrations_dir / f"{ident}_{name}.sql"
        path.write_bytes(migration_text(up, down, no_transaction=no_transaction).encode())
        return path

    def add_table(self, ident: str, table: str | None = None) -> Path:
        """A migration creating (and dropping on the way down) table ``t_<ident>``."""
        table = table or f"t_{ident}"
        return self.add(
            ident,
            f"create_{table}",
            f"CREATE TABLE {table} (id int PRIMARY KEY);",
            f"DROP TABLE {table};",
        )

    def path_of(self, ident: str) -> Path:
        (found,) = self.migrations_dir.glob(f"{ident}_*.sql")
        return found

    # -- running mg -------------------------------------------------------------------------

    def mg(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``mg ARGS`` in the project directory and wait for it."""
        done = subprocess.run(
            [*MG_COMMAND, *args],
            cwd=self.root,
            env=mg_env(env),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
        )
        self.transcript += [done.stdout, done.stderr]
        return done

    def spawn(self, *args: str, env: Mapping[str, str] | None = None) -> Background:
        """Start ``mg ARGS`` and return at once."""
        logs = self.root / ".mg-runs"
        logs.mkdir(exist_ok=True)
        out_path = logs / f"{len(self._jobs) + 1}.out"
        err_path = logs / f"{len(self._jobs) + 1}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        proc = subprocess.Popen(
            [*MG_COMMAND, *args],
            cwd=self.root,
            env=mg_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        job = Background(args, proc, out_path, err_path, [out, err])
        self._jobs.append(job)
        return job

    def close(self) -> None:
        """Kill whatever a failed test left running."""
        for job in self._jobs:
            job.kill()

    def finish(self, job: Background, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = job.wait(timeout)
        self.transcript += [done.stdout, done.stderr]
        return done

    # -- the database -----------------------------------------------------------------------

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``query`` on a fresh autocommit connection to the test database."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(query, tuple(params) if params else None)
            if cur.description is None:
                return []
            return [tuple(row) for row in cur.fetchall()]

    def value(self, query: str, params: Sequence[Any] = ()) -> Any:
        rows = self.sql(query, params)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def tables(self) -> set[str]:
        """Ordinary tables in ``public`` other than the history tables."""
        rows = self.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return {str(r[0]) for r in rows} - HISTORY_TABLES

    def all_tables(self) -> set[str]:
        """Every user table in the database, history tables included."""
        rows = self.sql(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        return {str(r[0]) for r in rows}

    def statuses(self) -> dict[str, str]:
        """``_migrations``: id -> status."""
        if self.value("SELECT to_regclass('_migrations') IS NOT NULL") is False:
            return {}
        return {str(i): str(s) for i, s in self.sql("SELECT id, status FROM _migrations")}

    def log(self) -> list[tuple[str, str]]:
        """``_migrations_log`` as (migration_id, action), oldest first."""
        if self.value("SELECT to_regclass('_migrations_log') IS NOT NULL") is False:
            return []
        rows = self.sql("SELECT migration_id, action FROM _migrations_log ORDER BY id")
        return [(str(m), str(a)) for m, a in rows]

    def other_backends(self) -> list[tuple[int, str, str]]:
        """Sessions on the test database other than ours: (pid, state, query)."""
        rows = self.sql(
            "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [(int(p), str(s), str(q)) for p, s, q in rows]

    def wait_for_backends_to_end(self, timeout: float = 30, ignore: Sequence[int] = ()) -> None:
        """Wait until no other session is connected (a killed client's backend lingers).

        ``ignore`` lists the pids of the test's own sessions.
        """
        deadline = time.monotonic() + timeout
        while others := [b for b in self.other_backends() if b[0] not in ignore]:
            if time.monotonic() > deadline:
                raise AssertionError(f"sessions still connected: {others}")
            time.sleep(0.05)

    def terminate_backends(self) -> None:
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        self.wait_for_backends_to_end()


def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


class AdvisoryLockHolder:
    """A session of the test's own holding the migration lock, as another ``mg`` run would."""

    application_name = "mg-test-holder"

    def __init__(self, database_url: str, lock_id: int = DEFAULT_LOCK_ID) -> None:
        import psycopg

        self.conn = psycopg.connect(
            database_url, autocommit=True, application_name=self.application_name
        )
        self.conn.execute("SELECT pg_advisory_lock(%s::bigint)", (lock_id,))
        self.pid = self.conn.info.backend_pid

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.close()

    def __enter__(self) -> AdvisoryLockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# migretti 0.10's DDL, as it created the tables.
DDL_010 = """
CREATE TABLE _migrations (
    id VARCHAR(26) PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    applied_at TIMESTAMPTZ DEFAULT now(),
    checksum VARCHAR(64),
    status VARCHAR(20) DEFAULT 'applied'
);
CREATE TABLE _migrations_log (
    id BIGSERIAL PRIMARY KEY,
    migration_id VARCHAR(26) NOT NULL,
    name VARCHAR(255),
    action VARCHAR(10) NOT NULL,
    performed_at TIMESTAMPTZ DEFAULT now(),
    performed_by VARCHAR(255),
    checksum VARCHAR(64)
);
"""
