"""Time `mg check` and `mg drift` on a project of N migrations shaped like a real one.

The migrations grow a schema the way an application's do: tables with identity keys and
foreign keys, columns added later, indexes, views rebuilt over the tables, trigger functions,
enums extended, each with a down section that undoes it. The scratch server is
``MG_BENCH_DATABASE_URL`` (a superuser URL) when set, else an embedded server started in a
temporary directory; both commands get it through ``--database-url``, so server start-up is
not part of the figures. Prints wall-clock seconds and seconds per migration.

    python benchmarks/bench_check.py [--migrations 342]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from migretti_core.testing import fresh_database  # noqa: E402

URL_ENV = "MG_BENCH_DATABASE_URL"


def migration(index: int) -> tuple[str, str]:
    """The up and down sections of migration ``index`` (0-based)."""
    table = f"t{index // 6}"
    step = index % 6
    if step == 0:
        parent = f", parent_id bigint REFERENCES t{index // 6 - 1} (id)" if index >= 6 else ""
        return (
            f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            f"name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(){parent});",
            f"DROP TABLE {table};",
        )
    if step == 1:
        return (
            f"ALTER TABLE {table} ADD COLUMN score double precision NOT NULL DEFAULT 0;\n"
            f"CREATE INDEX {table}_score ON {table} (score DESC);",
            f"DROP INDEX {table}_score;\nALTER TABLE {table} DROP COLUMN score;",
        )
    if step == 2:
        return (
            f"CREATE VIEW {table}_view AS SELECT id, name, score FROM {table} WHERE score > 0;",
            f"DROP VIEW {table}_view;",
        )
    if step == 3:
        return (
            f"CREATE FUNCTION {table}_touch() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN NEW.created_at := now(); RETURN NEW; END $$;\n"
            f"CREATE TRIGGER {table}_touch BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_touch();",
            f"DROP TRIGGER {table}_touch ON {table};\nDROP FUNCTION {table}_touch();",
        )
    if step == 4:
        return (
            f"CREATE TYPE {table}_state AS ENUM ('new', 'done');\n"
            f"ALTER TABLE {table} ADD COLUMN state {table}_state NOT NULL DEFAULT 'new';\n"
            f"COMMENT ON COLUMN {table}.state IS 'where the row is in its life';",
            f"ALTER TABLE {table} DROP COLUMN state;\nDROP TYPE {table}_state;",
        )
    return (
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_name_unique UNIQUE (name);\n"
        f"CREATE INDEX {table}_created ON {table} (created_at);",
        f"DROP INDEX {table}_created;\nALTER TABLE {table} DROP CONSTRAINT {table}_name_unique;",
    )


def write_project(root: Path, count: int) -> None:
    (root / "migrations").mkdir(parents=True)
    (root / "mg.yaml").write_text("database:\n  url: ${BENCH_TARGET}\n")
    for index in range(count):
        up, down = migration(index)
        text = f"-- migrate: up\n{up}\n-- migrate: down\n{down}\n"
        (root / "migrations" / f"{index + 1:06d}_m{index + 1}.sql").write_text(text)


@contextmanager
def server() -> Iterator[str]:
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    from migretti_core.testing import postgres_server

    with postgres_server() as url:
        yield url


def timed(args: list[str], root: Path, env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "migretti_core", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"mg {' '.join(args)} exited {done.returncode}")
    return elapsed, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=342)
    options = parser.parse_args()
    with server() as url, fresh_database(url) as target, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_project(root, options.migrations)
        env = dict(os.environ, BENCH_TARGET=target, PYTHONPATH=str(REPO_ROOT))
        env.pop("MG_DATABASE_URL", None)
        check, code = timed(["check", "--database-url", url, "-p", "no:lint"], root, env)
        print(
            f"mg check, {options.migrations} migrations (exit {code}): {check:.1f} s "
            f"({check / options.migrations * 1000:.0f} ms per migration)"
        )
        timed(["apply"], root, env)
        drift, code = timed(["drift", "--database-url", url], root, env)
        print(f"mg drift after applying them (exit {code}): {drift:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
