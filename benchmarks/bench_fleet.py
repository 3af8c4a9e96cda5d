"""Time ``mg apply --fleet`` on 50 databases x 20 migrations at ``--jobs 1`` and ``--jobs 8``.

Each run gets fresh, empty databases. The server is ``MG_BENCH_DATABASE_URL`` (a superuser
URL to an existing server) when set, else an embedded server started in a temporary
directory. ``mg`` is timed as a user runs it, process start included; its peak memory is the
child's maximum RSS, its CPU time (user + system, ``mg`` alone, not the server's) is read
with it. Prints wall time, CPU time and peak memory per ``--jobs`` value and the ratio.

    python benchmarks/bench_fleet.py [--databases 50] [--migrations 20] [--jobs 1 8]
        [--mg-arg=--no-lint]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from migretti_core.testing import postgres_server  # noqa: E402

URL_ENV = "MG_BENCH_DATABASE_URL"


@contextmanager
def databases(server_url: str, count: int) -> Iterator[str]:
    """Create ``count`` empty databases sharing a fresh prefix; yield the prefix."""
    import psycopg
    from psycopg import sql

    prefix = f"bench_fleet_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{n:03d}" for n in range(1, count + 1)]
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield prefix
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def write_project(root: Path, server_url: str, prefix: str, migrations: int) -> None:
    (root / "migrations").mkdir(parents=True)
    (root / "mg.yaml").write_text(
        f"database:\n  url: {server_url!r}\n"
        "fleets:\n  bench:\n"
        f"    query: SELECT datname FROM pg_database WHERE datname LIKE '{prefix}\\_%' "
        "ORDER BY 1\n",
        encoding="utf-8",
    )
    for n in range(1, migrations + 1):
        (root / "migrations" / f"{n:04d}_step_{n}.sql").write_text(
            "-- migrate: up\n"
            f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, name text NOT NULL);\n"
            f"CREATE INDEX t_{n}_name ON t_{n} (name);\n"
            f"INSERT INTO t_{n} SELECT g, 'row ' || g FROM generate_series(1, 100) g;\n"
            "-- migrate: down\n"
            f"DROP TABLE t_{n};\n",
            encoding="utf-8",
        )


def gnu_time() -> str | None:
    """GNU time reads the child's own peak RSS (``wait4`` from here would include this
    process's size, which the child inherits across fork and exec)."""
    path = shutil.which("time") or "/usr/bin/time"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "GNU" in out.stdout + out.stderr else None


def run_mg(root: Path, jobs: int, extra: list[str]) -> tuple[float, float, float, int]:
    """Wall seconds, peak RSS (MiB), CPU seconds and exit code of one ``mg apply --fleet``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MG_", "PG"))}
    argv = [sys.executable, "-m", "migretti_core", "apply", "--fleet", "bench"]
    argv += ["--jobs", str(jobs), *extra]
    timer = gnu_time()
    with tempfile.NamedTemporaryFile("r") as rss, tempfile.TemporaryFile() as err:
        if timer is not None:
            argv = [timer, "-f", "%M %U %S", "-o", rss.name, *argv]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            print(err.read()[-2000:].decode("utf-8", "replace"), file=sys.stderr)
        if timer is not None:
            kib, user, system = (float(x) for x in rss.read().split()[-3:])
        else:
            kib, user, system = usage.ru_maxrss, usage.ru_utime, usage.ru_stime
    return wall, kib / 1024, user + system, code


@contextmanager
def server(external: str | None) -> Iterator[str]:
    if external:
        yield external
        return
    with postgres_server() as url:
        yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--mg-arg", action="append", default=[], help="pass on to mg apply")
    args = parser.parse_args()
    results: dict[int, tuple[float, float]] = {}
    external = os.environ.get(URL_ENV)
    with server(external) as server_url:
        for jobs in args.jobs:
            with (
                databases(server_url, args.databases) as prefix,
                tempfile.TemporaryDirectory(prefix="mg-bench-fleet-") as tmp,
            ):
                root = Path(tmp) / "proj"
                write_project(root, server_url, prefix, args.migrations)
                wall, rss, cpu, code = run_mg(root, jobs, args.mg_arg)
                if code != 0:
                    print(f"--jobs {jobs}: mg exited {code}", file=sys.stderr)
                    return 1
                results[jobs] = (wall, rss)
                print(
                    f"--jobs {jobs}: {wall:.1f} s wall, {cpu:.1f} s CPU (mg), "
                    f"{rss:.0f} MiB peak RSS",
                    flush=True,
                )
    if len(results) >= 2:
        first, last = args.jobs[0], args.jobs[-1]
        ratio = results[last][0] / results[first][0]
        print(f"--jobs {last} / --jobs {first} wall time: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
