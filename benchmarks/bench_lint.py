"""Lint benchmark: ``mg lint --all`` over W1 (1000 migrations) and a mixed set of 1000.

    python benchmarks/bench_lint.py [--runs 5] [--apply | --only-apply W1,W2]

W1 is bench_engine's workload (CREATE TABLE + CREATE INDEX per migration). The mixed set
adds an ALTER TABLE with a volatile default, a foreign key, a drop and an ignore comment to
every migration, so most rules run and find something. Reports the median wall time of the
whole command (startup included) and of the lint alone in-process. ``--apply`` also times
``mg apply`` of W1 and of W2 (one 19 MB migration of 100k INSERTs) on fresh databases with
the plan's lint on and with ``--no-lint``, and prints the ratio of wall times and of mg's
own CPU times (MG_BENCH_DATABASE_URL, or an embedded server). Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

W1 = (
    "CREATE TABLE t_{i} (id bigint PRIMARY KEY, name text NOT NULL, at timestamptz);\n"
    "CREATE INDEX t_{i}_name ON t_{i} (name);"
)
MIXED = (
    W1
    + "\nALTER TABLE accounts ADD COLUMN c_{i} int DEFAULT random();\n"
    + "ALTER TABLE orders ADD CONSTRAINT fk_{i} FOREIGN KEY (a) REFERENCES accounts (id);\n"
    + "-- mg:lint-ignore ban-drop-column moved to t_{i}\n"
    + "ALTER TABLE orders DROP COLUMN old_{i};"
)


def project(root: Path, template: str, count: int = 1000) -> Path:
    (root / "migrations").mkdir(parents=True)
    (root / "mg.yaml").write_text(
        json.dumps({"database": {"url": "postgresql://localhost/none"}}), encoding="utf-8"
    )
    for i in range(count):
        ident = f"{i + 1:06d}"
        body = template.format(i=i)
        (root / "migrations" / f"{ident}_m{i}.sql").write_text(
            f"-- migration: m{i}\n-- id: {ident}\n\n-- migrate: up\n{body}\n", encoding="utf-8"
        )
    return root


def time_command(root: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "migretti_core", "lint", "--all", "--format", "json"],
            cwd=root,
            capture_output=True,
            check=False,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_in_process(root: Path, runs: int) -> tuple[float, int]:
    from migretti_core import planning
    from migretti_core.app import App
    from migretti_core.argv import extract_globals
    from migretti_plugins.lint import lint_migrations
    from migretti_plugins.lint.linter import _CACHE, _parse_json

    options, _ = extract_globals(["--config", str(root / "mg.yaml")])
    app = App(options, cwd=root)
    session = app.session("lint")
    migrations = planning.load_migrations(session)
    times = []
    found = 0
    for _ in range(runs):
        _parse_json.cache_clear()
        _CACHE.clear()
        started = time.perf_counter()
        found = len(lint_migrations(session, migrations, plan=False))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def w2_project(root: Path) -> Path:
    """W2: one migration of about 19 MB, a CREATE TABLE and 100k single-row INSERTs."""
    from bench_vs_010 import big_sql

    (root / "migrations").mkdir(parents=True)
    (root / "mg.yaml").write_text("{}\n", encoding="utf-8")
    (root / "migrations" / "000001_big.sql").write_text(
        f"-- migration: big\n-- id: 000001\n\n-- migrate: up\n{big_sql()}\n", encoding="utf-8"
    )
    return root


def cpu_seconds(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0 and process.stderr is not None:
        print(process.stderr.read().decode()[-2000:])
    return wall, usage.ru_utime + usage.ru_stime


def time_apply(tmp: Path, runs: int, workloads: list[str]) -> None:
    """``mg apply`` on fresh databases, with the plan's lint and with ``--no-lint``, in
    alternation; medians of wall time and of mg's own CPU time (the server's is not in it,
    and CPU time is much less disturbed than wall time by other work on the machine)."""
    from bench_engine import Databases, server_url

    url, stop = server_url(tmp)
    dbs = Databases(url)
    try:
        for name in workloads:
            root = project(tmp / "apply_w1", W1) if name == "W1" else w2_project(tmp / "apply_w2")
            wall: dict[str, list[float]] = {"lint": [], "no-lint": []}
            cpu: dict[str, list[float]] = {"lint": [], "no-lint": []}
            for _ in range(runs):
                for label, extra in (("lint", []), ("no-lint", ["--no-lint"])):
                    env = {**os.environ, "MG_DATABASE_URL": dbs.fresh()}
                    argv = [sys.executable, "-m", "migretti_core", "apply", *extra]
                    seconds, used = cpu_seconds(argv, root, env)
                    wall[label].append(seconds)
                    cpu[label].append(used)
            for kind, series in (("wall", wall), ("mg CPU", cpu)):
                with_lint = statistics.median(series["lint"])
                without = statistics.median(series["no-lint"])
                ratio = with_lint / without
                print(
                    f"{name} apply, {kind}: {with_lint:.2f} s with lint, {without:.2f} s with "
                    f"--no-lint, ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)"
                )
    finally:
        dbs.drop_all()
        stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--apply",
        action="store_true",
        help="also time mg apply of W1 and W2 with lint against --no-lint, and print the ratio",
    )
    parser.add_argument(
        "--only-apply",
        default="",
        help="only the apply comparison, of these workloads (W1,W2)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only_apply:
            time_apply(Path(tmp), args.runs, args.only_apply.split(","))
            return
        for label, template in (("W1", W1), ("mixed", MIXED)):
            root = project(Path(tmp) / label, template)
            command = time_command(root, args.runs)
            alone, found = time_in_process(root, args.runs)
            print(
                f"{label:6} 1000 migrations: mg lint --all {command:.2f} s; "
                f"lint alone {alone:.2f} s; {found} findings"
            )
        if args.apply:
            time_apply(Path(tmp), args.runs, ["W1", "W2"])


if __name__ == "__main__":
    main()
