"""Time the pytest plugin's database per test on a schema of many migrations.

Generates a project of ``--migrations`` migrations (342 by default, the size of a mature
application's history: tables, indexes, foreign keys, functions, triggers, views and enum
types), then runs a real pytest session of ``--tests`` tests that each request
``mg_database`` and query it. pytest's own ``--durations`` report gives each test's set-up
(the clone) and tear-down (the drop); the first set-up also builds the template.

Also reports, for comparison, applying every migration to an empty database (what a test
would pay without a template), and the clone alone with each ``CREATE DATABASE`` strategy
the server offers.

The server is ``MG_BENCH_DATABASE_URL`` when set, else an embedded server started in a
temporary directory.

Each session is run once per ``--pool-size`` and ``--strategy`` given (the plugin's ini
options ``mg_pool_size`` and ``mg_clone_strategy``); ``--work-ms`` makes each test sleep
that long after its query, like a test that does something.

    python benchmarks/bench_pytest_clone.py [--migrations 342] [--tests 200] [--clones 10]
        [--pool-size 1 2 4] [--strategy default wal_log file_copy] [--work-ms 0]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from migretti_core.testing import fresh_database  # noqa: E402

URL_ENV = "MG_BENCH_DATABASE_URL"


# --- the schema -------------------------------------------------------------------------------


def migration_sql(n: int) -> tuple[str, str]:
    """The up and down SQL of migration ``n`` (1-based): a mix of what real histories hold."""
    table = f"t{n:03d}"
    kind = n % 6
    if n <= 2 or kind in (0, 1):
        parent = f"t{(n - 1) // 6 * 6 + 1:03d}" if n > 6 else None
        ref = (
            f",\n    parent_id bigint REFERENCES {parent} (id) ON DELETE CASCADE" if parent else ""
        )
        up = (
            f"CREATE TABLE {table} (\n"
            "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
            "    name text NOT NULL,\n"
            "    published boolean NOT NULL DEFAULT false,\n"
            "    score integer NOT NULL DEFAULT 0 CHECK (score >= 0),\n"
            f"    created_at timestamptz NOT NULL DEFAULT now(){ref}\n"
            ");\n"
            f"CREATE INDEX {table}_created ON {table} (created_at DESC);\n"
            f"CREATE UNIQUE INDEX {table}_name ON {table} (lower(name));\n"
            f"COMMENT ON TABLE {table} IS 'benchmark table {n}';"
        )
        return up, f"DROP TABLE {table};"
    target = f"t{(n - 1) // 6 * 6 + 1:03d}"
    if kind == 2:
        return (
            f"ALTER TABLE {target} ADD COLUMN c{n} text;\n"
            f"CREATE INDEX {target}_c{n} ON {target} (c{n}) WHERE c{n} IS NOT NULL;",
            f"ALTER TABLE {target} DROP COLUMN c{n};",
        )
    if kind == 3:
        return (
            f"CREATE FUNCTION f{n}_touch() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n    NEW.score := NEW.score + 1;\n    RETURN NEW;\nEND;\n$$;\n"
            f"CREATE TRIGGER {target}_touch_{n} BEFORE UPDATE ON {target}\n"
            f"    FOR EACH ROW EXECUTE FUNCTION f{n}_touch();",
            f"DROP TRIGGER {target}_touch_{n} ON {target};\nDROP FUNCTION f{n}_touch();",
        )
    if kind == 4:
        return (
            f"CREATE VIEW v{n} AS SELECT id, name, score FROM {target} WHERE published;",
            f"DROP VIEW v{n};",
        )
    return (
        f"CREATE TYPE e{n} AS ENUM ('new', 'open', 'closed');\n"
        f"INSERT INTO {target} (name) SELECT 'row ' || g FROM generate_series(1, 20) g;",
        f"DELETE FROM {target};\nDROP TYPE e{n};",
    )


def write_project(root: Path, migrations: int, tests: int, work_ms: int = 0) -> None:
    (root / "migrations").mkdir(parents=True)
    (root / "mg.yaml").write_text("database:\n  url: postgresql://unused@127.0.0.1:1/unused\n")
    for n in range(1, migrations + 1):
        up, down = migration_sql(n)
        text = f"-- migration: step {n}\n\n-- migrate: up\n{up}\n\n-- migrate: down\n{down}\n"
        (root / "migrations" / f"{n:04d}_step_{n}.sql").write_text(text)
    (root / "pytest.ini").write_text("[pytest]\n")
    body = [
        "import time\n\n\n",
        "def _check(mg_database):\n",
        "    with mg_database.connect() as conn:\n",
        "        conn.execute(\"INSERT INTO t001 (name) VALUES ('x')\")\n",
        f"        assert conn.execute('SELECT count(*) FROM _migrations').fetchone()[0] == "
        f"{migrations}\n",
        f"    time.sleep({work_ms / 1000!r})\n\n\n",
    ]
    for i in range(tests):
        body.append(f"def test_{i:03d}(mg_database):\n    _check(mg_database)\n\n\n")
    (root / "test_many.py").write_text("".join(body))


# --- measuring ----------------------------------------------------------------------------------


@contextmanager
def server_url() -> Iterator[str]:
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    from migretti_plugins.embedded.server import EmbeddedServer

    base = Path(tempfile.mkdtemp(prefix="mg-bench-pg-"))
    base.chmod(0o711)
    server = EmbeddedServer(base / "data", durable=False)
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def time_migrate(url: str, project: Path) -> float:
    from migretti_core.application import Migretti

    with fresh_database(url, "mg_bench") as db:
        started = time.perf_counter()
        Migretti(config=project / "mg.yaml", database_url=db).apply()
        return time.perf_counter() - started


def checkpoints(admin: Any) -> tuple[float, float, float]:
    """Checkpoints requested so far, buffers they wrote, milliseconds they took."""
    if admin.info.server_version >= 170000:
        query = (
            "SELECT num_requested, buffers_written, write_time + sync_time "
            "FROM pg_stat_checkpointer"
        )
    else:
        query = (
            "SELECT checkpoints_req, buffers_checkpoint, "
            "checkpoint_write_time + checkpoint_sync_time FROM pg_stat_bgwriter"
        )
    row = admin.execute(query).fetchone()
    return (float(row[0]), float(row[1]), float(row[2])) if row else (0.0, 0.0, 0.0)


def time_clones(url: str, project: Path, count: int) -> dict[str, list[float]]:
    """Clone (and drop) the migrated template ``count`` times with each strategy."""
    import psycopg
    from psycopg import sql

    from migretti_core.application import Migretti
    from migretti_core.testing import url_with_dbname

    results: dict[str, list[float]] = {}
    with psycopg.connect(url, autocommit=True) as admin:
        version = admin.info.server_version
        strategies = ["default"] + (["wal_log", "file_copy"] if version >= 150000 else [])
        template = f"mg_bench_tpl_{uuid.uuid4().hex[:8]}"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
        try:
            Migretti(
                config=project / "mg.yaml", database_url=url_with_dbname(url, template)
            ).apply()
            size = admin.execute("SELECT pg_database_size(%s)", (template,)).fetchone()
            print(f"template size: {(size[0] if size else 0) / 1024 / 1024:.1f} MiB")
            empty: list[float] = []
            for _ in range(count):
                name = f"mg_bench_empty_{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                empty.append(time.perf_counter() - started)
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            results["an empty database (template1), for comparison"] = empty
            for strategy in strategies:
                times: list[float] = []
                before = checkpoints(admin)
                for _ in range(count):
                    name = f"mg_bench_clone_{uuid.uuid4().hex[:8]}"
                    query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                    if strategy != "default":
                        query = query + sql.SQL(" STRATEGY {}").format(sql.SQL(strategy))
                    started = time.perf_counter()
                    admin.execute(query)
                    times.append(time.perf_counter() - started)
                    admin.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                    )
                results[strategy] = times
                after = checkpoints(admin)
                print(
                    f"checkpoints during {count} clones, strategy {strategy}: "
                    f"{after[0] - before[0]:.0f} requested, {after[1] - before[1]:.0f} buffers "
                    f"written by them, {after[2] - before[2]:.0f} ms spent in them"
                )
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(template)))
    return results


_DURATION = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+\S+::(test_\d+)", re.M)


def run_session(
    url: str, project: Path, pool_size: int, strategy: str
) -> tuple[float, dict[str, dict[str, float]], str]:
    """One real pytest session; per test: setup, call and teardown seconds."""
    ini = f"[pytest]\nmg_pool_size = {pool_size}\n"
    if strategy != "default":
        ini += f"mg_clone_strategy = {strategy}\n"
    (project / "pytest.ini").write_text(ini)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env["MG_TEST_DATABASE_URL"] = url
    env["PYTHONPATH"] = str(REPO_ROOT)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={project.parent / 'basetemp'}",
            "--durations=0",
            "--durations-min=0",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest failed:\n{done.stdout}\n{done.stderr}")
    phases: dict[str, dict[str, float]] = {}
    for seconds, phase, test in _DURATION.findall(done.stdout):
        phases.setdefault(test, {})[phase] = float(seconds)
    summary = done.stdout.strip().splitlines()[-1]
    return wall, phases, summary


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
        f"max {ordered[-1] * 1000:7.1f} ms"
    )


def report(
    args: argparse.Namespace,
    pool_size: int,
    strategy: str,
    wall: float,
    phases: dict[str, dict[str, float]],
    summary: str,
) -> None:
    tests = sorted(phases)
    first = phases[tests[0]]
    rest = [phases[t] for t in tests[1:]]
    print(
        f"pool size {pool_size}, strategy {strategy}, test work {args.work_ms} ms, "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"  pytest, {args.tests} tests with mg_database: {summary} (wall {wall:.1f} s)")
    print(f"  first test's set-up (builds the template): {first.get('setup', 0):.2f} s")
    print(f"  set-up of the others (waiting for a clone): {ms([p.get('setup', 0) for p in rest])}")
    print(f"  tear-down (to the dropper): {ms([p.get('teardown', 0) for p in rest])}")
    print(
        "  per test after the first, set-up + tear-down: "
        f"{ms([p.get('setup', 0) + p.get('teardown', 0) for p in rest])}"
    )
    per_test = (wall - first.get("setup", 0)) / max(1, len(rest))
    print(f"  session wall time after the first set-up, per test: {per_test * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--migrations", type=int, default=342)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--clones", type=int, default=10, help="clones per strategy")
    parser.add_argument("--pool-size", type=int, nargs="+", default=[2])
    parser.add_argument("--strategy", nargs="+", default=["default"])
    parser.add_argument("--work-ms", type=int, default=0, help="each test sleeps this long")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mg-bench-clone-"))
    try:
        project = work / "project"
        write_project(project, args.migrations, args.tests, args.work_ms)
        with server_url() as url:
            print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            migrate = time_migrate(url, project)
            print(f"applying {args.migrations} migrations to an empty database: {migrate:.2f} s")
            for strategy, times in time_clones(url, project, args.clones).items():
                what = strategy if strategy.startswith("an empty") else f"strategy {strategy}"
                print(f"CREATE DATABASE, {what}:\n    {ms(times)}")
            for pool_size in args.pool_size:
                for strategy in args.strategy:
                    wall, phases, summary = run_session(url, project, pool_size, strategy)
                    report(args, pool_size, strategy, wall, phases, summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
