"""Engine benchmarks: mg against psql doing the same work on fresh databases of one server.

    python benchmarks/bench_engine.py [--runs 3] [--only W1,W2,W3,W4]

W1  1000 small migrations (CREATE TABLE + CREATE INDEX each) from empty; psql applies the
    same files in one session, one transaction per file.
W2  one 22 MB migration of 100k INSERTs: transactional (against the file sent as one query,
    and against ``psql -1 -f``), then as no-transaction (against ``psql -f`` in autocommit);
    mg's peak memory is reported too.
W3  ``mg status`` with 1000 applied migrations.
W4  ``mg status`` with 10,000 migration files.

Uses MG_BENCH_DATABASE_URL (a server URL of a role that may create databases) or starts an
embedded server in a temporary directory. Prints medians and ratios; never asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def server_url(tmp: Path) -> tuple[str, Callable[[], None]]:
    url = os.environ.get("MG_BENCH_DATABASE_URL")
    if url:
        return url, lambda: None
    from migretti_plugins.embedded.server import EmbeddedServer

    server = EmbeddedServer(tmp / "pgdata")
    server.start()
    return server.url(), lambda: server.stop()


def psql_path() -> str:
    from migretti_plugins.embedded.server import EmbeddedServer

    embedded = EmbeddedServer.bin_dir() / "psql"
    return str(embedded) if embedded.exists() else (shutil.which("psql") or "psql")


def with_db(url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


class Databases:
    """Fresh databases on one server, dropped afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.names: list[str] = []

    def fresh(self) -> str:
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return with_db(self.url, name)

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {cmd[:4]}...\n{proc.stderr[-2000:]}")
    return elapsed


def peak_rss_mib(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and peak RSS of a child process, via wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {cmd}")
    return elapsed, usage.ru_maxrss / 1024


def mg_cmd() -> list[str]:
    return [sys.executable, "-m", "migretti_core"]


def project(tmp: Path, name: str) -> Path:
    directory = tmp / name
    (directory / "migrations").mkdir(parents=True)
    (directory / "mg.yaml").write_text("migrations_dir: migrations\n")
    return directory


def mg_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MG_DATABASE_URL"] = url
    return env


def migration_text(ident: str, up: str, no_tx: bool = False) -> str:
    header = "-- migrate: no-transaction\n" if no_tx else ""
    return f"-- migration: m\n{header}\n-- migrate: up\n{up}\n"


def report(label: str, mg: list[float], base: list[float], base_label: str) -> None:
    m, b = statistics.median(mg), statistics.median(base)
    print(f"{label:<34} mg {m:8.3f}s   {base_label} {b:8.3f}s   ratio {m / b:5.2f}x")


def w1(tmp: Path, dbs: Databases, runs: int) -> None:
    proj = project(tmp, "w1")
    script = tmp / "w1_psql.sql"
    lines = []
    for i in range(1000):
        ident = f"{i:06d}"
        up = (
            f"CREATE TABLE t_{i} (id bigint PRIMARY KEY, name text NOT NULL, at timestamptz);\n"
            f"CREATE INDEX t_{i}_name ON t_{i} (name);"
        )
        path = proj / "migrations" / f"{ident}_table_{i}.sql"
        path.write_text(migration_text(ident, up))
        lines.append(f"BEGIN;\n\\i {path}\nCOMMIT;")
    script.write_text("\n".join(lines) + "\n")
    mg_times, psql_times = [], []
    for _ in range(runs):
        mg_times.append(timed([*mg_cmd(), "apply"], env=mg_env(dbs.fresh()), cwd=proj))
        psql_times.append(
            timed(
                [psql_path(), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script), dbs.fresh()]
            )
        )
    report("W1 1000 migrations", mg_times, psql_times, "psql")


def big_inserts(path: Path, no_tx: bool) -> Path:
    rows = []
    filler = "x" * 120
    for i in range(100_000):
        rows.append(f"INSERT INTO big (id, name, note) VALUES ({i}, 'name {i} it''s', '{filler}');")
    body = "\n".join(rows)
    create = "CREATE TABLE big (id bigint PRIMARY KEY, name text, note text);"
    path.write_text(migration_text("x", f"{create}\n{body}", no_tx))
    return path


def w2(tmp: Path, dbs: Databases, runs: int) -> None:
    import psycopg

    for no_tx in (False, True):
        proj = project(tmp, f"w2_{'notx' if no_tx else 'tx'}")
        file = big_inserts(proj / "migrations" / "000001_big.sql", no_tx)
        sql_only = tmp / f"w2_{no_tx}.sql"
        text = file.read_text()
        sql_only.write_text(text.split("-- migrate: up\n", 1)[1])
        size_mb = file.stat().st_size / 1e6
        mg_times, mems, base, psql_times = [], [], [], []
        for _ in range(runs):
            elapsed, mem = peak_rss_mib([*mg_cmd(), "apply"], mg_env(dbs.fresh()), proj)
            mg_times.append(elapsed)
            mems.append(mem)
            if no_tx:
                psql_times.append(
                    timed([psql_path(), "-q", "-X", "-f", str(sql_only), dbs.fresh()])
                )
            else:
                url = dbs.fresh()
                started = time.perf_counter()
                with psycopg.connect(url) as conn:
                    conn.execute(sql_only.read_text())
                base.append(time.perf_counter() - started)
                psql_times.append(
                    timed([psql_path(), "-q", "-X", "-1", "-f", str(sql_only), dbs.fresh()])
                )
        kind = "no-transaction" if no_tx else "transactional"
        print(f"W2 {kind}: file {size_mb:.1f} MB, mg peak RSS {max(mems):.0f} MiB")
        if no_tx:
            report("W2 no-transaction", mg_times, psql_times, "psql -f")
        else:
            report("W2 transactional", mg_times, base, "one query")
            report("W2 transactional", mg_times, psql_times, "psql -1 -f")


def w3_w4(tmp: Path, dbs: Databases, runs: int) -> None:
    proj = project(tmp, "w3")
    for i in range(1000):
        (proj / "migrations" / f"{i:06d}_m{i}.sql").write_text(
            migration_text(str(i), f"CREATE TABLE s_{i} (id int);")
        )
    url = dbs.fresh()
    timed([*mg_cmd(), "apply"], env=mg_env(url), cwd=proj)
    times = [timed([*mg_cmd(), "status"], env=mg_env(url), cwd=proj) for _ in range(runs)]
    print(f"{'W3 status, 1000 applied':<34} mg {statistics.median(times):8.3f}s")

    proj4 = project(tmp, "w4")
    for i in range(10_000):
        (proj4 / "migrations" / f"{i:06d}_m{i}.sql").write_text(
            migration_text(str(i), f"CREATE TABLE u_{i} (id int);")
        )
    url4 = dbs.fresh()
    times = [timed([*mg_cmd(), "status"], env=mg_env(url4), cwd=proj4) for _ in range(runs)]
    print(f"{'W4 status, 10,000 files':<34} mg {statistics.median(times):8.3f}s")
    started = time.perf_counter()
    subprocess.run([*mg_cmd(), "--help"], capture_output=True, check=True)
    print(f"{'mg --help (one run)':<34} mg {time.perf_counter() - started:8.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="W1,W2,W3,W4")
    args = parser.parse_args()
    only = {w.strip().upper() for w in args.only.split(",")}
    with tempfile.TemporaryDirectory(prefix="mg-bench-") as name:
        tmp = Path(name)
        url, stop = server_url(tmp)
        dbs = Databases(url)
        try:
            if "W1" in only:
                w1(tmp, dbs, args.runs)
            if "W2" in only:
                w2(tmp, dbs, args.runs)
            if "W3" in only or "W4" in only:
                w3_w4(tmp, dbs, args.runs)
        finally:
            dbs.drop_all()
            stop()


if __name__ == "__main__":
    main()
