"""Helpers for testing migretti plugins. Opt-in: ``mg`` itself never imports this module.

Plain functions, usable from any test runner:

- ``plugin_manager`` / ``make_hooks``: a plugin manager holding only the plugins you choose;
- ``make_config``, ``make_session``, ``make_migration``: the frozen values hooks receive;
- ``registered``: load a plugin object in every ``mg`` run of this process for a while;
- ``run_cli``: run ``mg`` in this process and capture exit code, stdout and stderr;
- ``make_project``, ``write_migration``, ``write_text``: a project directory with mg.yaml
  and migrations;
- ``run_mg``, ``mg_env``, ``MG_COMMAND``, ``assert_clean_error``: the real ``mg`` command in a
  subprocess, as users run it;
- ``Project``: a project directory and its database, driven through ``mg`` processes (in the
  foreground or the background) and inspected with SQL; ``AdvisoryLockHolder``, ``wait_until``;
- ``postgres_server``, ``fresh_database``: a PostgreSQL server (``MG_TEST_DATABASE_URL`` or
  an embedded one) and an empty database per test.

With pytest, ``pytest_plugins = ["migretti_core.testing"]`` in a top-level conftest.py adds
the fixtures ``mg_register``, ``mg_pg_url`` and ``mg_database_url``. pytest is only imported
when it is installed. The guide is docs/plugins/testing.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from migretti_core.hooks import Hooks
from migretti_core.plugins import (
    BUILTINS,
    ORIGIN_BUILTIN,
    MgPluginManager,
    PluginInfo,
    PluginLoader,
)
from migretti_core.types import DEFAULT_LOCK_ID, Config, Key, Migration, Options, Session

__all__ = [
    "MG_COMMAND",
    "TEST_DATABASE_URL_ENV",
    "AdvisoryLockHolder",
    "CliResult",
    "MgProcess",
    "Project",
    "assert_clean_error",
    "fresh_database",
    "make_config",
    "make_hooks",
    "make_migration",
    "make_project",
    "make_session",
    "mg_env",
    "migration_text",
    "plugin_manager",
    "postgres_server",
    "registered",
    "run_cli",
    "run_mg",
    "url_with_dbname",
    "wait_until",
    "write_migration",
    "write_text",
]

TEST_DATABASE_URL_ENV = "MG_TEST_DATABASE_URL"
ORIGIN_TEST = "test"

# --- plugin managers and the values hooks receive ------------------------------------------


def _builtin_names(builtins: Iterable[str] | bool) -> list[str]:
    known = [builtin.name for builtin in BUILTINS]
    if builtins is True:
        return known
    if builtins is False:
        return []
    chosen = list(builtins)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"no such builtin: {', '.join(unknown)} (builtins: {', '.join(known)})")
    return chosen


def _default_name(plugin: object) -> str:
    """A module's last dotted part, an object's ``name`` attribute, else its class name."""
    name = getattr(plugin, "__name__", None) or getattr(plugin, "name", None)
    if isinstance(name, str) and name:
        return name.rpartition(".")[2]
    return type(plugin).__name__.lower()


def plugin_manager(
    *plugins: object, builtins: Iterable[str] | bool = (), trace: bool = False
) -> MgPluginManager:
    """A plugin manager with the builtins named in ``builtins`` (True: all) and ``plugins``.

    Builtins are registered first and ``plugins`` after them in the order given, as ``mg``
    does, so the last one runs first. A plugin is validated like a real one: an unknown
    ``mg_*`` hook raises ``PluginError``. Pass ``("name", plugin)`` to choose its name.
    """
    loader = PluginLoader(strict=True, trace=trace)
    wanted = set(_builtin_names(builtins))
    for name, module_name, _keys in BUILTINS:
        if name in wanted:
            module = importlib.import_module(module_name)
            loader._register(module, PluginInfo(name, ORIGIN_BUILTIN, module_name))
    for item in plugins:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, plugin = item
        else:
            name, plugin = _default_name(item), item
        loader._register(plugin, PluginInfo(name, ORIGIN_TEST, repr(plugin)))
    pm: MgPluginManager = loader.pm
    return pm


def make_hooks(*plugins: object, builtins: Iterable[str] | bool = (), trace: bool = False) -> Hooks:
    """The typed facade the engine uses, over ``plugin_manager(*plugins, builtins=...)``."""
    return Hooks(plugin_manager(*plugins, builtins=builtins, trace=trace))


def make_config(
    root: Path | str,
    settings: Mapping[str, Any] | None = None,
    *,
    env: str | None = None,
    database: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    **fields: Any,
) -> Config:
    """A ``Config`` rooted at ``root``, built by the real mg.yaml loader without a file.

    ``settings`` are mg.yaml's top-level keys as data (a plugin's own section, ``lock_id``,
    ``envs``...). They go through the loader as if written in mg.yaml in JSON style, so a
    plugin sees the same types as in a real run: the core's keys as text, a plugin's section
    with its YAML types, frozen. ``${VAR}`` is interpolated from ``environ`` (default: the
    process environment). ``env`` selects a profile from ``envs`` when there is one.
    ``fields`` then replace ``Config`` fields such as ``lock_id`` or ``protected``.
    """
    import dataclasses

    from migretti_core.types import ConfigRequest
    from migretti_plugins.config.loader import build_config, parse_text

    root = Path(os.path.abspath(root))
    data = dict(settings or {})
    if database is not None:
        data["database"] = dict(database)
    parsed = parse_text(json.dumps(data, default=str)) if data else {}
    profiles = data.get("envs")
    in_profiles = env is not None and isinstance(profiles, Mapping) and env in profiles
    # Every key given is accepted (and interpolated) as a declared section would be.
    sections = set(parsed)
    if isinstance(parsed.get("envs"), Mapping):
        for profile in parsed["envs"].values():
            sections.update(profile if isinstance(profile, Mapping) else ())
    request = ConfigRequest(
        cwd=root,
        config_path=None,
        env_name=env if in_profiles else None,
        environ=dict(os.environ if environ is None else environ),
        known_sections=frozenset(sections),
        written_sections=_builtin_written_sections(),
    )
    config = build_config(parsed, request, root / "mg.yaml")
    if env is not None and not in_profiles:
        config = dataclasses.replace(config, env=env)
    return dataclasses.replace(config, **fields) if fields else config


@functools.cache
def _builtin_written_sections() -> frozenset[str]:
    """The builtins' keys kept as written (``Key.as_written``), as in a real run."""
    names: set[str] = set()
    for _name, module_name, _keys in BUILTINS:
        declare = getattr(importlib.import_module(module_name), "mg_config_sections", None)
        for item in declare() if declare is not None else ():
            if isinstance(item, Key) and item.as_written:
                names.add(item.name)
    return frozenset(names)


def make_session(hooks: Hooks, config: Config, **options: Any) -> Session:
    """A ``Session`` as a command would build it; ``options`` are ``Options`` fields.

    The configuration's passwords are registered for masking, as in a real run.
    """
    opts = Options(**options)
    hooks.options = opts
    hooks.remember_secrets(config)
    return Session(config, opts, hooks)


def make_migration(
    migration_id: str,
    name: str,
    up_sql: str = "SELECT 1;",
    down_sql: str | None = None,
    *,
    directory: Path | str = "migrations",
    transactional: bool = True,
) -> Migration:
    """A parsed migration, for hooks that receive plans and results."""
    import hashlib

    path = Path(directory) / f"{migration_id}_{name}.sql"
    text = migration_text(migration_id, name, up_sql, down_sql, transactional=transactional)
    return Migration(
        id=migration_id,
        name=name,
        path=path,
        text=text,
        checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        up_sql=up_sql,
        up_line=text.splitlines().index("-- migrate: up") + 2,
        down_sql=down_sql,
        transactional=transactional,
        title=name,
    )


# --- running mg in this process ----------------------------------------------------------------


@contextlib.contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[str]:
    """Load ``plugin`` (a module or any object) in every ``mg`` run of this process.

    The object goes through the real loader as if given with ``-p NAME``: it is listed by
    ``mg plugins``, ``-p no:NAME`` blocks it, and a misspelled hook is reported. It is made
    importable under ``NAME`` and added to ``MG_PLUGINS`` until the block ends, so runs in a
    subprocess do not see it. Yields the name.
    """
    name = name or _default_name(plugin)
    if not name.isidentifier():
        raise ValueError(f"plugin name {name!r} must be a Python identifier")
    previous_module = sys.modules.get(name)
    if previous_module is not None and previous_module is not plugin:
        raise ValueError(f"{name!r} is already an imported module; choose another name")
    previous_env = os.environ.get("MG_PLUGINS")
    sys.modules[name] = plugin  # type: ignore[assignment]
    os.environ["MG_PLUGINS"] = f"{previous_env},{name}" if previous_env else name
    try:
        yield name
    finally:
        if previous_module is None:
            sys.modules.pop(name, None)
        if previous_env is None:
            os.environ.pop("MG_PLUGINS", None)
        else:
            os.environ["MG_PLUGINS"] = previous_env


@dataclass(frozen=True)
class CliResult:
    """What one ``mg`` run did."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@contextlib.contextmanager
def _environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_cli(
    args: Sequence[str] | str,
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str | None] | None = None,
    plugins: Sequence[object] = (),
) -> CliResult:
    """Run ``mg ARGS`` in this process and capture what it printed.

    ``cwd`` is the working directory for the run; ``env`` sets variables (None unsets one);
    ``plugins`` are objects loaded for this run only (see ``registered``). The process-wide
    working directory, environment and standard streams are borrowed for the duration, so
    do not call it from several threads at once.
    """
    from migretti_core.cli import run

    argv = shlex.split(args) if isinstance(args, str) else list(args)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        for plugin in plugins:
            stack.enter_context(registered(plugin))
        stack.enter_context(_environment(env or {}))
        if cwd is not None:
            stack.enter_context(_chdir(Path(cwd)))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        code = run(argv)
    return CliResult(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


# --- projects ------------------------------------------------------------------------------


def make_project(
    directory: Path | str,
    database_url: str | None = None,
    *,
    plugins: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``mg.yaml`` (and an empty ``migrations/``) in ``directory``; return mg.yaml.

    ``settings`` are extra top-level sections, such as a plugin's own. The file is JSON,
    which is valid YAML, so no value needs quoting.
    """
    directory = Path(directory)
    (directory / "migrations").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if database_url is not None:
        data["database"] = {"url": database_url}
    if plugins:
        data["plugins"] = list(plugins)
    data.update(settings or {})
    path = directory / "mg.yaml"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def migration_text(
    migration_id: str,
    name: str,
    up_sql: str,
    down_sql: str | None = None,
    *,
    transactional: bool = True,
) -> str:
    """The text of a migration file in migretti's format (as ``mg create`` writes it)."""
    from migretti_plugins.files.parse import render_migration

    return render_migration(name, migration_id, up_sql, down_sql, transactional=transactional)


def write_migration(
    project: Path | str,
    migration_id: str,
    name: str,
    up_sql: str,
    down_sql: str | None = None,
    *,
    transactional: bool = True,
) -> Path:
    """Write ``migrations/<id>_<name>.sql`` under ``project`` (a directory or its mg.yaml)."""
    project = Path(project)
    root = project.parent if project.suffix in (".yaml", ".yml") else project
    path = root / "migrations" / f"{migration_id}_{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = migration_text(migration_id, name, up_sql, down_sql, transactional=transactional)
    path.write_text(text, encoding="utf-8")
    return path


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text``, dedented, as UTF-8 with LF line ends, creating parent directories.

    For the files a test needs beside mg.yaml: a plugin module, a seed, a hand-written mg.yaml.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(textwrap.dedent(text).lstrip("\n").encode("utf-8"))
    return path


# --- running mg as users do: a subprocess --------------------------------------------------

_BIN_DIR = Path(sys.executable).parent
_MG_SCRIPT = _BIN_DIR / "mg"

# The ``mg`` console script installed beside this interpreter, as a user runs it; without
# one (an uninstalled checkout), ``python -m migretti_core``, the same command.
MG_COMMAND: tuple[str, ...] = (
    (str(_MG_SCRIPT),) if _MG_SCRIPT.is_file() else (sys.executable, "-m", "migretti_core")
)


def mg_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``mg``: this process's, minus ``MG_*`` and libpq's ``PG*``
    variables (``PGTZ`` stays), plus ``extra``.

    A developer's own settings (``MG_ENV=prod``, ``PGHOST``...) thus never change what a test
    observes; a test passes the variables it means to set. The interpreter's directory leads
    ``PATH``, so the child finds this environment's ``mg``.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MG_") and not (key.startswith("PG") and key != "PGTZ")
    }
    env["PATH"] = str(_BIN_DIR) + os.pathsep + env.get("PATH", "")
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


def run_mg(
    args: Sequence[str],
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    input: str = "",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``mg ARGS`` in a subprocess in ``cwd`` and wait for it.

    The environment is ``mg_env(env)``; standard input is ``input`` (empty: not a terminal,
    at end of file). Output is decoded as UTF-8, undecodable bytes replaced.
    """
    return subprocess.run(
        [*MG_COMMAND, *args],
        cwd=cwd,
        env=mg_env(env),
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def assert_clean_error(
    result: subprocess.CompletedProcess[str] | CliResult,
    *needles: str,
    code: int = 2,
    one_line: bool = True,
) -> str:
    """Assert a failed run as users should see one; return its stderr.

    Exit ``code``, exactly one ``mg: error:`` line, no traceback, and every one of ``needles``
    in stderr. With ``one_line``, nothing but indented ``hint:`` lines follows the error.
    """
    if isinstance(result, CliResult):
        returncode, stdout, stderr = result.exit_code, result.stdout, result.stderr
    else:
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
    assert returncode == code, (returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mg: error:")]
    assert len(errors) == 1, stderr
    if one_line:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines[0].startswith("mg: error:"), stderr
        assert all(line.startswith("  hint:") for line in lines[1:]), stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
    return stderr


def wait_until(
    predicate: Callable[[], object], timeout: float = 30, interval: float = 0.02
) -> None:
    """Poll ``predicate()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


@dataclass
class MgProcess:
    """An ``mg`` process started without waiting (``Project.spawn``); output goes to files."""

    args: Sequence[str]
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    handles: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr_so_far(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Wait for the end (killing it after ``timeout``) and return what it printed."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._close()
        return subprocess.CompletedProcess(
            list(self.args),
            code,
            self.out_path.read_text(encoding="utf-8", errors="replace"),
            self.err_path.read_text(encoding="utf-8", errors="replace"),
        )

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        for handle in self.handles:
            handle.close()


_HISTORY_TABLES = frozenset({"_migrations", "_migrations_log"})


class Project:
    """A project directory (mg.yaml, ``migrations/``) and its database, seen as a user sees
    them: through real ``mg`` processes and SQL on a connection of the test's own.

    Every output of every ``mg`` run is kept in ``transcript`` so a test can search all of
    it. Call ``close()`` at the end of a test: it kills ``mg`` processes a failed test left
    running. The SQL helpers need psycopg, imported when first used.
    """

    def __init__(self, root: Path | str, database_url: str, *, configure: bool = True) -> None:
        self.root = Path(root)
        self.database_url = database_url
        self.migrations_dir = self.root / "migrations"
        self.migrations_dir.mkdir(parents=True, exist_ok=True)
        self.transcript: list[str] = []
        self._jobs: list[MgProcess] = []
        if configure:
            self.configure()

    # -- files ------------------------------------------------------------------------------

    def configure(self, database: Mapping[str, str] | None = None, extra: str = "") -> Path:
        """Write mg.yaml: a ``database`` section (default ``{url: <the test database>}``),
        then ``extra``, YAML text appended as it is."""
        settings = dict(database) if database is not None else {"url": self.database_url}
        lines = ["database:"]
        lines += [f"  {key}: {json.dumps(value)}" for key, value in settings.items()]
        path = self.root / "mg.yaml"
        path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
        return path

    def add(
        self,
        ident: str,
        name: str,
        up: str,
        down: str | None = None,
        *,
        no_transaction: bool = False,
    ) -> Path:
        """Write ``migrations/<ident>_<name>.sql``: the up (and down) sections, no header."""
        lines = ["-- migrate: no-transaction"] if no_transaction else []
        lines += ["-- migrate: up", up.strip("\n")]
        if down is not None:
            lines += ["-- migrate: down", down.strip("\n")]
        path = self.migrations_dir / f"{ident}_{name}.sql"
        path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
        return path

    def add_table(self, ident: str, table: str | None = None) -> Path:
        """A migration creating (and dropping on the way down) table ``t_<ident>``."""
        table = table or f"t_{ident}"
        return self.add(
            ident,
            f"create_{table}",
            f"CREATE TABLE {table} (id int PRIMARY KEY);",
            f"DROP TABLE {table};",
        )

    def path_of(self, ident: str) -> Path:
        """The one migration file whose id is ``ident``."""
        (found,) = self.migrations_dir.glob(f"{ident}_*.sql")
        return found

    # -- running mg -------------------------------------------------------------------------

    def mg(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``mg ARGS`` in the project directory and wait for it (see ``run_mg``)."""
        done = run_mg(args, self.root, env, input or "", timeout)
        self.transcript += [done.stdout, done.stderr]
        return done

    def spawn(self, *args: str, env: Mapping[str, str] | None = None) -> MgProcess:
        """Start ``mg ARGS`` in the project directory and return at once.

        Its output goes to files under ``.mg-runs/``; standard input is closed.
        """
        logs = self.root / ".mg-runs"
        logs.mkdir(exist_ok=True)
        out_path = logs / f"{len(self._jobs) + 1}.out"
        err_path = logs / f"{len(self._jobs) + 1}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        proc = subprocess.Popen(
            [*MG_COMMAND, *args],
            cwd=self.root,
            env=mg_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        job = MgProcess(args, proc, out_path, err_path, [out, err])
        self._jobs.append(job)
        return job

    def finish(self, job: MgProcess, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Wait for a spawned run; its output joins the transcript."""
        done = job.wait(timeout)
        self.transcript += [done.stdout, done.stderr]
        return done

    def interrupt(
        self, job: MgProcess, signum: int = signal.SIGINT, timeout: float = 60
    ) -> tuple[subprocess.CompletedProcess[str], float]:
        """Send ``signum`` (SIGINT, as Ctrl-C, unless told) to a spawned run and wait for it:
        what it printed, and the seconds it took from the signal to its end."""
        started = time.monotonic()
        os.kill(job.pid, signum)
        done = self.finish(job, timeout)
        return done, time.monotonic() - started

    def close(self) -> None:
        """Kill whatever a failed test left running."""
        for job in self._jobs:
            job.kill()

    # -- the database -----------------------------------------------------------------------

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``query`` on a fresh autocommit connection to the project's database."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(query.encode("utf-8"), tuple(params) if params else None)
            if cur.description is None:
                return []
            return [tuple(row) for row in cur.fetchall()]

    def value(self, query: str, params: Sequence[Any] = ()) -> Any:
        """The single value ``query`` returns (one row, one column)."""
        rows = self.sql(query, params)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def tables(self) -> set[str]:
        """Ordinary tables in ``public`` other than the history tables."""
        rows = self.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return {str(r[0]) for r in rows} - _HISTORY_TABLES

    def all_tables(self) -> set[str]:
        """Every user table in the database as ``schema.table``, history tables included."""
        rows = self.sql(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        return {str(r[0]) for r in rows}

    def statuses(self) -> dict[str, str]:
        """``_migrations`` as id -> status (empty before the first run)."""
        if self.value("SELECT to_regclass('_migrations') IS NOT NULL") is False:
            return {}
        return {str(i): str(s) for i, s in self.sql("SELECT id, status FROM _migrations")}

    def log(self) -> list[tuple[str, str]]:
        """``_migrations_log`` as (migration_id, action), oldest first."""
        if self.value("SELECT to_regclass('_migrations_log') IS NOT NULL") is False:
            return []
        rows = self.sql("SELECT migration_id, action FROM _migrations_log ORDER BY id")
        return [(str(m), str(a)) for m, a in rows]

    def other_backends(self) -> list[tuple[int, str, str]]:
        """Sessions on the database other than the asking one: (pid, state, query)."""
        rows = self.sql(
            "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [(int(p), str(s), str(q)) for p, s, q in rows]

    def wait_for_backends_to_end(self, timeout: float = 30, ignore: Sequence[int] = ()) -> None:
        """Wait until no other session is connected (a killed client's backend lingers).

        ``ignore`` lists the pids of the test's own sessions.
        """
        deadline = time.monotonic() + timeout
        while others := [b for b in self.other_backends() if b[0] not in ignore]:
            if time.monotonic() > deadline:
                raise AssertionError(f"sessions still connected: {others}")
            time.sleep(0.05)

    def terminate_backends(self) -> None:
        """End every other session on the database and wait until they are gone."""
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        self.wait_for_backends_to_end()


class AdvisoryLockHolder:
    """A session of the test's own holding the migration lock, as another ``mg`` run would.

    Use it as a context manager, or call ``release()``. ``pid`` is its backend's pid.
    """

    application_name = "mg-test-holder"

    def __init__(self, database_url: str, lock_id: int = DEFAULT_LOCK_ID) -> None:
        import psycopg

        self.conn = psycopg.connect(
            database_url, autocommit=True, application_name=self.application_name
        )
        self.conn.execute("SELECT pg_advisory_lock(%s::bigint)", (lock_id,))
        self.pid: int = self.conn.info.backend_pid

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.close()

    def __enter__(self) -> AdvisoryLockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- PostgreSQL ----------------------------------------------------------------------------


def url_with_dbname(url: str, dbname: str) -> str:
    """The same server URL pointing at another database.

    The parameters stay as written, only a ``dbname`` one is left out: decoded and encoded
    again, ``options=-c%20x%3D1`` would become ``-c+x%3D1``, and libpq reads ``+`` as ``+``.
    """
    parts = urlsplit(url)
    query = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote(pair.partition("=")[0]) != "dbname"
    ]
    return urlunsplit(
        (parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), "&".join(query), "")
    )


@contextlib.contextmanager
def postgres_server(workdir: Path | str | None = None) -> Iterator[str]:
    """Yield a superuser URL: ``MG_TEST_DATABASE_URL`` when set, else an embedded server.

    The embedded server (the ``embedded`` extra) keeps its data under ``workdir`` or a
    temporary directory and is stopped when the block ends. Its URL names every libpq
    setting a ``PG*`` variable could change, so that it leads to that server from any
    process, whatever its environment. Without the extra it raises
    ``ConfigError`` saying how to install it.
    """
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        yield external
        return
    from migretti_plugins.embedded.server import EmbeddedServer

    EmbeddedServer.bin_dir()  # fail early, with the install hint, when the extra is missing
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="mg-test-pg-", ignore_cleanup_errors=True)
            )
            Path(workdir).chmod(0o711)  # the server may run as another user (under root)
        server = EmbeddedServer(Path(workdir) / "data", durable=False)
        server.start_temporary()
        stack.callback(server.stop)
        # It reaches the server whatever PG* variables the process using it has (PGSERVICE,
        # PGHOSTADDR, PGOPTIONS...: docs/embedded.md).
        yield server.connection_url(anywhere=True)


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "mg_test") -> Iterator[str]:
    """Create an empty database on ``server_url``, yield its URL, then drop it (forcibly)."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_with_dbname(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- pytest fixtures (only when pytest is installed) -------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    _HAVE_PYTEST = False
else:
    _HAVE_PYTEST = True

if _HAVE_PYTEST:

    @pytest.fixture
    def mg_register() -> Iterator[Callable[..., str]]:
        """``mg_register(plugin, name=None)`` loads ``plugin`` in ``mg`` runs of this test."""
        with contextlib.ExitStack() as stack:

            def register(plugin: object, name: str | None = None) -> str:
                return stack.enter_context(registered(plugin, name))

            yield register

    @pytest.fixture(scope="session")
    def mg_pg_url() -> Iterator[str]:
        """A superuser URL of the session's PostgreSQL server (see ``postgres_server``).

        An embedded server keeps its data in a directory of its own, not in pytest's
        temporary tree: as root the server runs as another user, which must traverse the
        parents, and every pytest run resets ``/tmp/pytest-of-USER`` to mode 0700.
        """
        from migretti_core.errors import MgError

        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(postgres_server())
            except MgError as exc:
                pytest.skip(f"no PostgreSQL to test against: {exc}")
            yield url

    @pytest.fixture
    def mg_database_url(mg_pg_url: str) -> Iterator[str]:
        """URL of a database created empty for this test and dropped after it."""
        with fresh_database(mg_pg_url) as url:
            yield url
