"""A no-transaction migration of N single-row INSERTs, each committed: ``mg apply`` with its
statements in batches (``mg_execute_each``), with every statement alone (a plugin that
implements ``mg_execute`` only, which turns batching off), and ``psql -f`` of the same SQL.

Runs against an embedded server started with fsync off (``durable=False``), so the time is
the client's and the server's work, not the disk's: the commits, which cost the same for
every tool, do not drown the difference. Prints medians of wall time and of the client's
CPU time (user + system, from ``getrusage`` of the children). ``--batch-sizes 50,100,200``
runs mg once per batch size instead (``running.BATCH_STATEMENTS``), to choose one.

    python benchmarks/bench_no_transaction.py [--statements 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from migretti_core.testing import fresh_database, postgres_server  # noqa: E402
from migretti_plugins.embedded.server import EmbeddedServer  # noqa: E402

ALONE_PLUGIN = """\
from migretti_core.api import hookimpl

@hookimpl
def mg_execute(sql):
    return None  # implemented without mg_execute_each: every statement goes alone
"""
WITH_BATCH_SIZE = (
    "import sys, migretti_core.running as r; r.BATCH_STATEMENTS = int(sys.argv.pop(1)); "
    "from migretti_core.cli import main; sys.exit(main())"
)


def statements(count: int) -> str:
    filler = "x" * 117
    lines = ["CREATE TABLE big (id bigint PRIMARY KEY, name text, note text);"]
    lines += [
        f"INSERT INTO big (id, name, note) VALUES ({i}, 'name {i} it''s', '{filler}');"
        for i in range(count)
    ]
    return "\n".join(lines) + "\n"


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and client CPU seconds of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="", help="e.g. 50,100,200: mg only")
    args = parser.parse_args()
    mg = str(Path(sys.executable).parent / "mg")
    psql = str(EmbeddedServer.bin_dir() / "psql")
    with tempfile.TemporaryDirectory(prefix="mg-bench-nontx-") as tmp:
        root = Path(tmp)
        (root / "migrations").mkdir()
        sql = statements(args.statements)
        header = "-- migrate: no-transaction\n-- migrate: up\n"
        (root / "migrations" / "000001_big.sql").write_text(header + sql)
        (root / "plain.sql").write_text(sql)
        (root / "alone.py").write_text(ALONE_PLUGIN)

        tools: dict[str, Callable[[str], tuple[list[str], str]]] = {}
        if args.batch_sizes:
            for size in args.batch_sizes.split(","):
                command = [sys.executable, "-c", WITH_BATCH_SIZE, size, "apply"]
                tools[f"mg, batches of {size}"] = lambda url, c=command: (c, "")
        else:
            tools["mg"] = lambda url: ([mg, "apply"], "")
            tools["mg, each alone"] = lambda url: ([mg, "apply"], "plugins: [alone.py]\n")
            tools["psql -f"] = lambda url: (
                [psql, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", "plain.sql", "-d", url],
                "",
            )
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
        with postgres_server() as server:
            for _ in range(args.runs):
                for name, make in tools.items():
                    with fresh_database(server) as url:
                        command, extra = make(url)
                        (root / "mg.yaml").write_text(f"database:\n  url: {url}\n{extra}")
                        samples[name].append(timed(command, root))
    print(f"{args.statements} statements each committed, fsync off, {args.runs} runs")
    for name, runs in samples.items():
        wall = statistics.median(s[0] for s in runs)
        cpu = statistics.median(s[1] for s in runs)
        print(f"  {name:22s} wall {wall:6.2f} s   client CPU {cpu:6.2f} s")


if __name__ == "__main__":
    main()
