"""Lint benchmark: ``mg lint --all`` over W1 (1000 migrations) and a mixed set of 1000.

    python benchmarks/bench_lint.py [--runs 5] [--apply]

W1 is bench_engine's workload (CREATE TABLE + CREATE INDEX per migration). The mixed set
adds an ALTER TABLE with a volatile default, a foreign key, a drop and an ignore comment to
every migration, so most rules run and find something. Reports the median wall time of the
whole command (startup included) and of the lint alone in-process. ``--apply`` also times
``mg apply`` of W1 on fresh databases with the plan's lint on and with ``--no-lint``
(MG_BENCH_DATABASE_URL, or an embedded server). Never asserts.
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
    from migretti_core import engine
    from migretti_core.app import App
    from migretti_core.argv import extract_globals
    from migretti_plugins.lint import lint_migrations
    from migretti_plugins.lint.linter import _CACHE, _parse_json

    options, _ = extract_globals(["--config", str(root / "mg.yaml")])
    app = App(options, cwd=root)
    session = app.session("lint")
    migrations = engine.load_migrations(session)
    times = []
    found = 0
    for _ in range(runs):
        _parse_json.cache_clear()
        _CACHE.clear()
        started = time.perf_counter()
        found = len(lint_migrations(session, migrations, plan=False))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def time_apply(tmp: Path, runs: int) -> None:
    from bench_engine import Databases, server_url

    url, stop = server_url(tmp)
    dbs = Databases(url)
    try:
        root = project(tmp / "apply", W1)
        times: dict[str, list[float]] = {"lint": [], "no-lint": []}
        for _ in range(runs):
            for label, extra in (("lint", []), ("no-lint", ["--no-lint"])):
                target = dbs.fresh()
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "migretti_core", "apply", *extra],
                    cwd=root,
                    capture_output=True,
                    check=False,
                    env={**os.environ, "MG_DATABASE_URL": target},
                )
                times[label].append(time.perf_counter() - started)
                if done.returncode != 0:
                    print(done.stderr.decode()[-2000:])
        with_lint = statistics.median(times["lint"])
        without = statistics.median(times["no-lint"])
        print(
            f"W1 apply: {with_lint:.2f} s with lint, {without:.2f} s with --no-lint "
            f"({(with_lint / without - 1) * 100:+.1f}%)"
        )
    finally:
        dbs.drop_all()
        stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apply", action="store_true", help="also time mg apply of W1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for label, template in (("W1", W1), ("mixed", MIXED)):
            root = project(Path(tmp) / label, template)
            command = time_command(root, args.runs)
            alone, found = time_in_process(root, args.runs)
            print(
                f"{label:6} 1000 migrations: mg lint --all {command:.2f} s; "
                f"lint alone {alone:.2f} s; {found} findings"
            )
        if args.apply:
            time_apply(Path(tmp), args.runs)


if __name__ == "__main__":
    main()
