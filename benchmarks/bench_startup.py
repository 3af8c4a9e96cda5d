"""Startup cost of installed plugins: ``mg --help`` with and without N trivial entry points.

    python benchmarks/bench_startup.py [--plugins 20] [--runs 40]

N distributions are written to a scratch directory the way pip installs them (a module plus
a ``.dist-info`` with METADATA, RECORD and an ``entry_points.txt`` in the ``migretti``
group), each plugin implementing one hook. ``mg --help`` then runs with that directory on
PYTHONPATH, and, as the baseline, with an empty directory there instead, so both runs have
the same interpreter and the same number of path entries. Runs alternate between the two
after a warm-up, in an empty working directory, without any MG_* variable. Wall-clock and
CPU time (user + system, from the child's rusage) are both recorded: on a busy machine CPU
time and minimums are the steadier figures. Each round also times, inside a fresh process,
the steps of loading the entry points (scan, versions, imports, registration), and reading
the versions with a regular expression on the METADATA text instead of ``dist.version``
(which imports the email package on first use).

Prints medians, minimums and differences; never asserts (figures go to docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''"""Trivial migretti plugin {n} for the startup benchmark."""

from migretti_core import hookimpl

__version__ = "1.0.{n}"


@hookimpl
def mg_after_apply(session, plan, results):
    pass
'''


def install_fake_distributions(site: Path, count: int) -> None:
    """What ``pip install`` leaves behind for ``count`` one-module plugin packages."""
    for n in range(count):
        module = f"mg_trivial_{n:02d}"
        dist = f"mg_trivial_{n:02d}-1.0.{n}.dist-info"
        (site / f"{module}.py").write_text(PLUGIN.format(n=n), encoding="utf-8")
        info = site / dist
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: mg-trivial-{n:02d}\nVersion: 1.0.{n}\n",
            encoding="utf-8",
        )
        (info / "entry_points.txt").write_text(
            f"[migretti]\ntrivial{n:02d} = {module}\n", encoding="utf-8"
        )
        (info / "INSTALLER").write_text("pip\n", encoding="utf-8")
        (info / "RECORD").write_text(
            f"{module}.py,,\n{dist}/METADATA,,\n{dist}/entry_points.txt,,\n"
            f"{dist}/INSTALLER,,\n{dist}/RECORD,,\n",
            encoding="utf-8",
        )


def mg_command() -> list[str]:
    script = Path(sys.executable).parent / "mg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "migretti_core"]


def run_once(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) milliseconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0 or "Usage:" not in result.stdout:
        raise SystemExit(f"mg --help failed:\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


PHASES = """
import re, sys, time
import importlib_metadata
from migretti_core.plugins import ENTRY_POINT_GROUP, ORIGIN_ENTRY_POINT, PluginInfo, PluginLoader

loader = PluginLoader()
clock = time.process_time
t0 = clock()
eps = sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
t1 = clock()
plain = [ep.dist.read_text("METADATA") if ep.dist is not None else None for ep in eps]
plain = [re.search(r"(?m)^Version: *(.*)$", text or "") for text in plain]
a1 = clock()
versions = [ep.dist.version if ep.dist is not None else None for ep in eps]
t2 = clock()
plugins = [ep.load() for ep in eps]
t3 = clock()
for ep, plugin, version in zip(eps, plugins, versions):
    loader._register(plugin, PluginInfo(ep.name, ORIGIN_ENTRY_POINT, ep.value, version=version))
t4 = clock()
spans = ((t0, t1), (a1, t2), (t2, t3), (t3, t4), (t1, a1))
print(*(round((b - a) * 1000, 3) for a, b in spans), round((t4 - t0 - (a1 - t1)) * 1000, 3))
"""
PHASE_NAMES = (
    "scan the `migretti` group",
    "read versions (`dist.version`)",
    "import the plugins",
    "register them",
    "read versions from the METADATA text instead",
    "`load_entry_points()` in all",
)


def phases_ms(env: dict[str, str], cwd: Path) -> list[float]:
    """CPU milliseconds of each step of loading entry points, measured inside the process."""
    result = subprocess.run(
        [sys.executable, "-c", PHASES], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return [float(part) for part in result.stdout.split()]


def plugins_seen(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    listing = subprocess.run(
        [*command, "plugins", "--format", "json"], cwd=cwd, env=env, capture_output=True, text=True
    )
    import json

    return sum(
        1
        for p in json.loads(listing.stdout)
        if p["origin"] == "entry point" and p["status"] == "loaded"
    )


def summary(samples: list[float]) -> tuple[float, float, float]:
    """Median, first quartile and minimum: on a busy machine the minimum is the least noisy."""
    q1, median, _ = statistics.quantiles(samples, n=4)
    return median, q1, min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=20)
    parser.add_argument("--runs", type=int, default=40, help="timed runs of each variant")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    base_env.pop("PYTHONPATH", None)
    command = mg_command()
    with tempfile.TemporaryDirectory(prefix="mg-bench-startup-") as tmp:
        work = Path(tmp)
        empty, site, cwd = work / "empty", work / "site", work / "cwd"
        for directory in (empty, site, cwd):
            directory.mkdir()
        install_fake_distributions(site, args.plugins)
        variants = {
            "without plugins": {**base_env, "PYTHONPATH": str(empty)},
            f"with {args.plugins} plugins": {**base_env, "PYTHONPATH": str(site)},
        }
        seen = plugins_seen(command, cwd, variants[f"with {args.plugins} plugins"])
        if seen != args.plugins:
            raise SystemExit(f"expected {args.plugins} entry-point plugins loaded, saw {seen}")

        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        phases: dict[str, list[list[float]]] = {name: [] for name in variants}
        for _ in range(args.warmup):
            for env in variants.values():
                run_once([*command, "--help"], cwd, env)
        for _ in range(args.runs):
            for name, env in variants.items():
                elapsed, used = run_once([*command, "--help"], cwd, env)
                wall[name].append(elapsed)
                cpu[name].append(used)
                phases[name].append(phases_ms(env, cwd))

    print(f"mg --help, {args.runs} runs each, alternating, after {args.warmup} warm-up rounds")
    print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs,")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print("| | " + " | ".join(variants) + " | difference |")
    print("|---|" + "---|" * (len(variants) + 1))
    rows = [("`mg --help` wall clock", wall), ("`mg --help` CPU time (user+sys)", cpu)]
    for index, phase in enumerate(PHASE_NAMES):
        rows.append((f"{phase} (CPU)", {n: [r[index] for r in v] for n, v in phases.items()}))
    for label, data in rows:
        stats = [summary(values) for values in data.values()]
        for index, kind in ((0, "median"), (2, "minimum")):
            cells = [f"{s[index]:.1f} ms" for s in stats]
            diff = stats[1][index] - stats[0][index]
            print(f"| {label}, {kind} | " + " | ".join(cells) + f" | {diff:+.1f} ms |")


if __name__ == "__main__":
    main()
