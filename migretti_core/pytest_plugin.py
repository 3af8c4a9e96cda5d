"""pytest plugin: every test that asks for ``mg_database`` gets its own migrated database.

Installed with migretti (entry point ``pytest11``) and inert until a test requests one of its
fixtures: adding options is all it does otherwise, so no server starts and psycopg is not
imported. The guide is docs/pytest.md.

- ``mg_server`` (session): the PostgreSQL server. ``--mg-database-url`` or
  ``MG_TEST_DATABASE_URL`` (a server where the plugin may create and drop databases), else an
  embedded server in a private temporary directory (the ``embedded`` extra), stopped at the
  end of the session.
- ``mg_database`` (function): a database cloned with ``CREATE DATABASE ... TEMPLATE`` from a
  template migrated once (and seeded with ``mg_seeds = true``), dropped after the test.
  Clones come from a pool made ahead by background threads (``ClonePool``); every clone of
  the process is dropped when the session ends, however it ends.

The template's name holds a hash of the migration files' checksums (and of the seeds'), so a
changed migration builds a new template. Building happens under an advisory lock on the
server's maintenance database, so pytest-xdist workers (and concurrent runs against one
server) share one template; each clone is private to its test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from migretti_core.errors import MgError

if TYPE_CHECKING:
    import psycopg

    from migretti_core.application import Migretti

URL_ENV = "MG_TEST_DATABASE_URL"
#: What a test database's migrations leave out: deployment hooks (backups, notifications)
#: and the rewrite of ``schema_file``, a file of the project that a test run must not change
#: (with a test server's pg_dump, or after a test's rollback).
TEST_RUN_BLOCKED = ("no:shellhooks", "no:schema")
#: Advisory lock key (on the maintenance database) serialising template builds.
TEMPLATE_LOCK_KEY = 894322
#: With a template's hashtext() as second key (the two-int4 advisory lock space, apart from
#: the single-bigint one of TEMPLATE_LOCK_KEY and of mg's own lock): a session cloning it.
TEMPLATE_IN_USE_KEY = 894323
TEMPLATE_PREFIX = "mgtpl_"
CLONE_PREFIX = "mgtest_"
#: How long one DROP DATABASE of a clone may take (milliseconds).
DROP_TIMEOUT_MS = 120_000
#: Clones made ahead of the tests that will take them (ini ``mg_pool_size``).
DEFAULT_POOL_SIZE = 3
_RUN_ID = pytest.StashKey[str]()
NO_SERVER = (
    "mg_database needs a PostgreSQL server: pass --mg-database-url URL or set "
    f"{URL_ENV} (a server where tests may create and drop databases), or install "
    "the embedded server with: pip install 'migretti[embedded]'"
)


# --- options ---------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("migretti", "migretti test databases (mg_database fixture)")
    group.addoption(
        "--mg-database-url",
        dest="mg_database_url",
        metavar="URL",
        default=None,
        help=f"PostgreSQL server for mg_database (default: ${URL_ENV}, else an embedded one).",
    )
    group.addoption(
        "--mg-config",
        dest="mg_config",
        metavar="PATH",
        default=None,
        help="mg.yaml of the project whose migrations mg_database applies.",
    )
    parser.addini("mg_config", "mg.yaml for mg_database (relative to the ini file)", default="")
    parser.addini("mg_seeds", "apply seeds to the mg_database template", type="bool", default=False)
    parser.addini(
        "mg_pool_size",
        f"databases cloned ahead of the tests, each by a thread of its own (default "
        f"{DEFAULT_POOL_SIZE})",
        default=str(DEFAULT_POOL_SIZE),
    )
    parser.addini(
        "mg_clone_strategy",
        "CREATE DATABASE strategy for clones: wal_log or file_copy (default: file_copy on the "
        "embedded server, else the server's own)",
        default="",
    )


# --- values the fixtures hand out --------------------------------------------------------------


def url_with_dbname(url: str, dbname: str) -> str:
    """The same server URL (or key=value DSN) pointing at another database."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if "://" in url:
        from migretti_core.testing import url_with_dbname as swap

        return swap(url, dbname)
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


@dataclass(frozen=True)
class MgServer:
    """The session's PostgreSQL server; ``url`` reaches its maintenance database."""

    url: str
    embedded: bool = False

    def database_url(self, dbname: str) -> str:
        return url_with_dbname(self.url, dbname)

    def connect(self, dbname: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection (autocommit unless told otherwise); close it when done."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.database_url(dbname) if dbname else self.url, **kwargs)

    def __repr__(self) -> str:
        # pytest shows fixture values in a failing test's traceback: never the password.
        from migretti_core.redact import redact_url

        return f"MgServer(url={redact_url(self.url)!r}, embedded={self.embedded!r})"


@dataclass(frozen=True)
class MgDatabase:
    """A database of this test only, migrated to head; dropped after the test."""

    url: str
    dbname: str
    template: str
    config_path: Path | None = field(default=None, repr=False)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection to this database; use it in a ``with`` block or close it."""
        import psycopg

        return psycopg.connect(self.url, **kwargs)

    def migretti(self, **kwargs: Any) -> Migretti:
        """A ``Migretti`` for this database and the project's configuration."""
        from migretti_core.application import Migretti

        kwargs.setdefault("confirm", True)
        plugins = kwargs.pop("plugins", ())
        plugins = [plugins] if isinstance(plugins, (str, os.PathLike)) else list(plugins)
        return Migretti(
            config=self.config_path,
            database_url=self.url,
            plugins=[*plugins, *TEST_RUN_BLOCKED],
            **kwargs,
        )

    def __repr__(self) -> str:
        from migretti_core.redact import redact_url

        return (
            f"MgDatabase(url={redact_url(self.url)!r}, dbname={self.dbname!r}, "
            f"template={self.template!r})"
        )


# --- the server ------------------------------------------------------------------------------


def _configured_url(config: pytest.Config) -> str | None:
    url = config.getoption("mg_database_url") or os.environ.get(URL_ENV)
    return str(url) if url else None


@contextlib.contextmanager
def _embedded() -> Iterator[str]:
    """An embedded server: private to this run, or shared by its pytest-xdist workers."""
    from migretti_core.errors import ConfigError
    from migretti_plugins.embedded.server import EmbeddedServer

    try:
        EmbeddedServer.bin_dir()
    except ConfigError:
        pytest.fail(NO_SERVER, pytrace=False)
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not (run_id and os.environ.get("PYTEST_XDIST_WORKER")):
        # Not pytest's tmp_path: pytest prunes and re-permissions that tree, and under root
        # the server runs as another user.
        base = Path(tempfile.mkdtemp(prefix="mg-pytest-pg-"))
        base.chmod(0o711)  # under root the server runs as another user
        server = EmbeddedServer(base / "data", durable=False)
        try:
            try:
                server.start()
            except MgError as exc:
                pytest.fail(f"could not start the embedded PostgreSQL server: {exc}", pytrace=False)
            yield server.connection_url(anywhere=True)
        finally:
            with contextlib.suppress(Exception):
                server.stop()
            shutil.rmtree(base, ignore_errors=True)
        return
    # Workers of one xdist run share a server: the last one to finish stops it.
    base = _xdist_base(run_id)
    lock_path = base.with_name(base.name + ".lock")
    server = EmbeddedServer(base / "data", durable=False)
    with _flocked(lock_path):
        base.mkdir(exist_ok=True)
        base.chmod(0o711)
        users = _read_count(base / "users") + 1
        (base / "users").write_text(str(users))
        server.start()
        url = server.connection_url(anywhere=True)
    try:
        yield url
    finally:
        with _flocked(lock_path):
            users = max(0, _read_count(base / "users") - 1)
            (base / "users").write_text(str(users))
            if users == 0:
                with contextlib.suppress(Exception):
                    server.stop()
                shutil.rmtree(base, ignore_errors=True)


def _xdist_base(run_id: str) -> Path:
    safe = "".join(c for c in run_id if c.isalnum())[:32]
    return Path(tempfile.gettempdir()) / f"mg-pytest-xdist-{safe}"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist controller: remember the run id to tidy the workers' lock file after."""
    run_id = node.workerinput.get("testrunuid")
    if run_id:
        node.config.stash[_RUN_ID] = str(run_id)


def pytest_unconfigure(config: pytest.Config) -> None:
    run_id = config.stash.get(_RUN_ID, None)
    if run_id is None:
        return
    base = _xdist_base(run_id)
    if not base.exists():
        with contextlib.suppress(OSError):
            base.with_name(base.name + ".lock").unlink()


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_count(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


#: Signals that end a run politely: a CI job's timeout or cancellation, ``timeout``, ``docker
#: stop`` (SIGTERM), a closed terminal (SIGHUP). Python's default for them ends the process
#: at once, leaving the embedded server running and the clones on an external server.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a session holding test databases: pytest unwinds as for
    Ctrl-C (its fixtures are finalised, so the clones are dropped and the server stopped)."""


@contextlib.contextmanager
def _stopped_politely() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise ``Terminated`` in the main thread, as
    Ctrl-C raises ``KeyboardInterrupt``. Only signals left at their default are taken (a
    handler of the program's own stays). The first one is taken: a second one, during the
    clean-up, ends the process at once as it would without the plugin."""
    import signal
    import threading

    taken: list[signal.Signals] = []

    def stop(signum: int, frame: object) -> None:
        for sig in taken:
            with contextlib.suppress(ValueError):
                signal.signal(sig, signal.SIG_DFL)
        name = signal.Signals(signum).name
        raise Terminated(f"{name} received: ending the test session and dropping its databases")

    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, stop)
                taken.append(sig)
    try:
        yield
    finally:
        for sig in taken:
            if signal.getsignal(sig) is stop:
                signal.signal(sig, signal.SIG_DFL)


@pytest.fixture(scope="session")
def mg_server(pytestconfig: pytest.Config) -> Iterator[MgServer]:
    """The PostgreSQL server of this test session (see the module docstring)."""
    url = _configured_url(pytestconfig)
    with _stopped_politely():
        if url:
            yield MgServer(url)
            return
        with _embedded() as embedded_url:
            yield MgServer(embedded_url, embedded=True)


# --- the template ----------------------------------------------------------------------------


STRATEGIES = ("wal_log", "file_copy")


def _pool_size(config: pytest.Config) -> int:
    text = str(config.getini("mg_pool_size") or DEFAULT_POOL_SIZE).strip()
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"mg_pool_size must be a whole number from 1 up, not {text!r}")
    return int(text)


def _strategy(config: pytest.Config) -> str:
    text = str(config.getini("mg_clone_strategy") or "").strip().lower()
    if text and text not in STRATEGIES:
        raise pytest.UsageError(
            f"mg_clone_strategy must be one of {', '.join(STRATEGIES)}, not {text!r}"
        )
    return text


def _config_path(config: pytest.Config) -> Path | None:
    """``--mg-config``, the ``mg_config`` ini option, ``MG_CONFIG``, else the rootdir's mg.yaml."""
    given = config.getoption("mg_config")
    if given:
        return Path(os.path.abspath(os.path.expanduser(str(given))))
    ini = str(config.getini("mg_config") or "")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return Path(os.path.abspath(base / os.path.expanduser(ini)))
    if os.environ.get("MG_CONFIG"):
        return None  # the CLI's own lookup reads it
    candidate = config.rootpath / "mg.yaml"
    return candidate if candidate.is_file() else None


def _privilege_hint(error: BaseException) -> str:
    import psycopg

    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return (
            "\n  hint: the plugin creates and drops a database per test: give it a role with "
            "CREATEDB (or a superuser) in --mg-database-url or MG_TEST_DATABASE_URL"
        )
    return ""


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


class Templates:
    """Builds (once, under the server's advisory lock) and clones the session's template."""

    def __init__(
        self,
        server: MgServer,
        config_path: Path | None,
        seeds: bool,
        pool_size: int = DEFAULT_POOL_SIZE,
        strategy: str = "",
    ) -> None:
        self.server = server
        self.config_path = config_path
        self.seeds = seeds
        self.pool_size = pool_size
        self.strategy = strategy
        self._admin: psycopg.Connection[Any] | None = None
        self._name: str | None = None
        self._failure: str | None = None
        self._pool: ClonePool | None = None

    def _migretti(self, url: str) -> Migretti:
        from migretti_core.application import Migretti

        return Migretti(
            config=self.config_path, database_url=url, plugins=TEST_RUN_BLOCKED, confirm=True
        )

    def admin(self) -> psycopg.Connection[Any]:
        if self._admin is None or self._admin.closed or self._admin.broken:
            import psycopg

            from migretti_core.redact import redact_text, redact_url

            try:
                self._admin = self.server.connect(application_name="migretti-pytest")
            except psycopg.OperationalError as exc:
                pytest.fail(
                    f"mg_database cannot connect to {redact_url(self.server.url)}: "
                    f"{redact_text(str(exc).strip())}",
                    pytrace=False,
                )
        return self._admin

    def key(self, mg: Migretti) -> tuple[str, str]:
        """(project key, content key): where the project lives, what its migrations hold."""
        from migretti_core import planning

        session = mg._app.session("pytest")
        parts = [f"{m.id}:{m.checksum}" for m in planning.load_migrations(session)]
        if self.seeds:
            from migretti_plugins.seeds import load_seeds, seed_paths
            from migretti_plugins.seeds import seeds_dir as seeds_dir_of

            # read as mg seed reads them: regular files only, never past their size
            seeds_dir = seeds_dir_of(mg.config)
            seeds = load_seeds(seed_paths(seeds_dir)) if seeds_dir.is_dir() else []
            parts.extend(f"seed {seed.name}:{seed.checksum}" for seed in seeds)
        project = _digest([str(mg.config.root), str(mg.config.migrations_dir)])
        return project[:8], _digest(parts)[:16]

    def name(self) -> str:
        """The template for the current migration files, built if needed.

        A build that fails (a broken migration) fails every test that needs it with mg's own
        message, without being tried again for each of them.
        """
        if self._failure is not None:
            pytest.fail(self._failure, pytrace=False)
        if self._name is None:
            import psycopg

            try:
                self._name = self._build()
            except MgError as exc:
                self._failure = f"migrating the test template failed: {exc}"
                if exc.hint:
                    self._failure += f"\n  hint: {exc.hint}"
            except psycopg.Error as exc:  # the server refused to create the template
                from migretti_core.redact import redact_text, redact_url

                self._failure = (
                    f"mg_database could not create the test template on "
                    f"{redact_url(self.server.url)}: {redact_text(str(exc).strip())}"
                    + _privilege_hint(exc)
                )
            if self._failure is not None:  # failed outside the except: no chained traceback
                pytest.fail(self._failure, pytrace=False)
        assert self._name is not None
        return self._name

    def _build(self) -> str:
        from psycopg import sql

        probe = self._migretti(self.server.url)
        self._check_project(probe)
        if self.config_path is None and probe.config.path is not None:
            # found from the current directory (or MG_CONFIG): kept, so a test that changes
            # directory still gets this project from ``mg_database.migretti()``
            self.config_path = probe.config.path
        project, content = self.key(probe)
        name = f"{TEMPLATE_PREFIX}{project}_{content}"
        admin = self.admin()
        with self._locked(admin):
            found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is not None:
                self._hold(admin, name)
                return name
            building = f"{name}_building"
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(building))
            )
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
            try:
                mg = self._migretti(self.server.database_url(building))
                mg.apply()
                if self.seeds:
                    mg.seed()
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(building), sql.Identifier(name)
                    )
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    admin.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(building)
                        )
                    )
                raise
            self._hold(admin, name)
            self._drop_stale(admin, f"{TEMPLATE_PREFIX}{project}_", name)
        return name

    @staticmethod
    def _hold(admin: psycopg.Connection[Any], name: str) -> None:
        """Mark the template as in use by this session until its admin connection closes:
        a shared advisory lock on the template's name, taken under the build lock, so another
        session's ``_drop_stale`` (under the same lock) leaves it alone."""
        admin.execute(
            "SELECT pg_advisory_lock_shared(%s, hashtext(%s))", (TEMPLATE_IN_USE_KEY, name)
        )

    @staticmethod
    def _check_project(mg: Migretti) -> None:
        """No mg.yaml found and no migrations directory: a test run started outside the
        project, or one that names none. An empty database would pass for a migrated one."""
        from migretti_core.errors import ConfigError

        if mg.config.path is None and not mg.config.migrations_dir.is_dir():
            raise ConfigError(
                "mg_database found no project: no mg.yaml in pytest's rootdir, nor in "
                f"{os.getcwd()} or its parents, and no {mg.config.migrations_dir}",
                hint="name the project's mg.yaml with --mg-config PATH, the mg_config ini "
                "option or MG_CONFIG",
            )

    @staticmethod
    def _drop_stale(admin: psycopg.Connection[Any], prefix: str, keep: str) -> None:
        """Templates of this project's older migration files. One that a running session
        clones from (its shared lock, ``_hold``) is kept: dropping it failed that session's
        next clones with "template database ... does not exist"."""
        import psycopg
        from psycopg import sql

        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s",
            (prefix, keep),
        ).fetchall()
        for (stale,) in rows:
            taken = admin.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (TEMPLATE_IN_USE_KEY, stale)
            ).fetchone()
            if taken is None or not taken[0]:
                continue  # in use: a build after that session has ended drops it
            try:
                with contextlib.suppress(psycopg.Error):
                    admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(stale)))
            finally:
                admin.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(%s))", (TEMPLATE_IN_USE_KEY, stale)
                )

    @staticmethod
    @contextlib.contextmanager
    def _locked(admin: psycopg.Connection[Any]) -> Iterator[None]:
        # Polled, never a blocking pg_advisory_lock (see docs/concurrency.md).
        while True:
            row = admin.execute("SELECT pg_try_advisory_lock(%s)", (TEMPLATE_LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                break
            time.sleep(0.05)
        try:
            yield
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK_KEY,))

    # -- the clones ---------------------------------------------------------------------------
    #
    # A pool (ClonePool) keeps ``pool_size`` clones made ahead on threads of their own, each
    # with its own connection (CREATE DATABASE cannot run in a transaction, and one
    # connection runs one statement at a time); a test takes a ready one. Drops happen on
    # another thread. Every clone of this process is named ``mgtest_<token>_<n>``, so the end
    # of the session can sweep whatever a thread left behind.

    def pool(self) -> ClonePool:
        template = self.name()
        if self._pool is None:
            # STRATEGY came with PostgreSQL 15; older servers have one way to copy. FILE_COPY
            # makes two checkpoints per clone: cheap on the embedded server (fsync off), not
            # on a durable one, which keeps its own default (docs/performance.md).
            modern = self.admin().info.server_version >= 150000
            strategy = self.strategy or ("file_copy" if self.server.embedded else "")
            strategy = strategy if modern else ""
            self._pool = ClonePool(self.server, template, self.pool_size, strategy)
            self._pool.start()
        return self._pool

    def clone(self) -> str:
        """A database made from the template: a ready one from the pool when there is one."""
        return self.pool().take()

    def drop(self, dbname: str) -> None:
        if self._pool is not None:
            self._pool.give_back(dbname)

    def close(self) -> None:
        """Stop the pool, drop every clone of this process, disconnect."""
        try:
            if self._pool is not None:
                self._pool.close()
        finally:
            if self._admin is not None:
                self._admin.close()


class ClonePool:
    """Clones of one template, made ahead by ``size`` threads and dropped by another.

    Each creator thread owns a connection and loops: wait for a free place in the pool,
    ``CREATE DATABASE ... TEMPLATE``, hand the name over. ``take()`` blocks until a clone is
    ready and frees its place, so the next one starts at once. ``give_back()`` queues a used
    clone for the dropping threads. ``close()`` lets the clones in progress finish, stops the
    threads and drops every database named after this pool, ready, used or never taken.
    """

    def __init__(self, server: MgServer, template: str, size: int, strategy: str = "") -> None:
        import queue
        import threading

        self.server = server
        self.template = template
        self.size = max(1, size)
        self.strategy = strategy.strip().upper()
        self.prefix = f"{CLONE_PREFIX}{uuid.uuid4().hex[:8]}_"
        self._count = 0
        self._count_lock = threading.Lock()
        self._places = threading.Semaphore(self.size)
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._used: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._closed = False
        self._conns: list[psycopg.Connection[Any]] = []  # the creators'
        self._conns_lock = threading.Lock()
        self._creators: list[threading.Thread] = []
        # Every DROP DATABASE waits for a checkpoint it requests; drops running side by side
        # share one, so one thread each would fall behind the creators.
        self._droppers = [
            threading.Thread(target=self._drop_loop, name=f"mg-clone-drop-{n}", daemon=True)
            for n in range(max(2, self.size))
        ]

    def start(self) -> None:
        import atexit
        import threading

        # The session fixture closes the pool, Ctrl-C included; this is for an exit that
        # skips fixture finalisation.
        atexit.register(self._close_at_exit)

        for n in range(self.size):
            thread = threading.Thread(target=self._create_loop, name=f"mg-clone-{n}", daemon=True)
            self._creators.append(thread)
            thread.start()
        for thread in self._droppers:
            thread.start()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = self.server.connect(application_name="migretti-pytest")
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _drop_connection(self) -> psycopg.Connection[Any]:
        """A connection for drops, whose statements give up after DROP_TIMEOUT.

        A drop waits for a checkpoint; on a loaded machine a drop was once seen waiting for
        minutes. Bounded, a stuck drop is retried by the sweep at the end, and a sweep that
        cannot finish fails the session's teardown instead of hanging it.
        """
        conn = self.server.connect(application_name="migretti-pytest")
        conn.execute(f"SET statement_timeout = {DROP_TIMEOUT_MS}")
        return conn

    def _next_name(self) -> str:
        with self._count_lock:
            self._count += 1
            return f"{self.prefix}{self._count}"

    def create_sql(self, dbname: str) -> Any:
        from psycopg import sql

        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(dbname), sql.Identifier(self.template)
        )
        if self.strategy:
            query += sql.SQL(" STRATEGY {}").format(sql.SQL(self.strategy))
        return query

    def _create_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            while True:
                self._places.acquire()
                if self._stopping.is_set():
                    return
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = self._connect()
                    dbname = self._next_name()
                    conn.execute(self.create_sql(dbname))
                except Exception as exc:  # handed to the test that takes this place
                    if self._stopping.is_set():
                        return
                    self._ready.put(exc)
                    continue
                self._ready.put(dbname)
        finally:
            if conn is not None:
                conn.close()

    def _drop_loop(self) -> None:
        import psycopg

        conn: psycopg.Connection[Any] | None = None
        while True:
            dbname = self._used.get()
            if dbname is None:
                return
            with contextlib.suppress(psycopg.Error):  # the sweep in close() tries again
                if conn is None or conn.closed or conn.broken:
                    conn = self._drop_connection()
                conn.execute(_drop_sql(dbname))
        if conn is not None:
            conn.close()

    def take(self) -> str:
        """A ready clone (waiting for one if needed); its place is refilled right away."""
        import psycopg

        from migretti_core.redact import redact_text

        got = self._ready.get()
        self._places.release()
        if isinstance(got, psycopg.Error):
            pytest.fail(
                f"mg_database could not clone {self.template}: {redact_text(str(got).strip())}"
                + (self._owner_hint(got) or _privilege_hint(got)),
                pytrace=False,
            )
        if isinstance(got, BaseException):
            raise got
        return got

    def _owner_hint(self, error: BaseException) -> str:
        """When the template belongs to another role: only its owner (or a superuser) may
        copy it, whatever CREATEDB this role has. Empty otherwise."""
        import psycopg

        if not isinstance(error, psycopg.errors.InsufficientPrivilege):
            return ""
        with contextlib.suppress(psycopg.Error), self.server.connect() as conn:
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba), current_user FROM pg_database WHERE datname = %s",
                (self.template,),
            ).fetchone()
            if row is not None and row[0] != row[1]:
                owner = row[0]
                return (
                    f"\n  hint: the template belongs to role {owner} (a session run as "
                    f"{owner} built it), and PostgreSQL lets only its owner or a superuser "
                    f"copy it: run the tests as {owner}, or drop the template (DROP DATABASE "
                    f"{self.template}, as {owner} or a superuser) and this role builds its own"
                )
        return ""

    def give_back(self, dbname: str) -> None:
        self._used.put(dbname)

    def close(self) -> None:
        """Stop the threads (after the clones in progress) and drop this pool's databases."""
        import atexit
        import queue

        if self._closed:
            return
        self._stopping.set()
        with self._conns_lock:
            conns = list(self._conns)
        # A CREATE DATABASE in flight is waited for, never cancelled: a cancelled one kept a
        # concurrent DROP DATABASE waiting for its backend (ProcSignalBarrier) in testing.
        for _ in range(self.size):
            self._places.release()
        for thread in self._creators:
            thread.join()
        while True:  # the clones made ahead and never taken go the same way, side by side
            try:
                got = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(got, str):
                self._used.put(got)
        for _ in self._droppers:
            self._used.put(None)
        for thread in self._droppers:
            thread.join()
        try:
            with self._drop_connection() as admin:
                self.sweep(admin)
        finally:
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.close()
        # Only now: a close cut short (a second Ctrl-C) is tried again at exit.
        self._closed = True
        atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def sweep(self, admin: psycopg.Connection[Any]) -> None:
        """Drop every database named after this pool."""
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (self.prefix,)
        ).fetchall()
        for (dbname,) in rows:
            admin.execute(_drop_sql(dbname))


def _drop_sql(dbname: str) -> Any:
    from psycopg import sql

    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))


@pytest.fixture(scope="session")
def mg_templates(pytestconfig: pytest.Config, mg_server: MgServer) -> Iterator[Templates]:
    """The session's template database (built on first use); ``mg_database`` clones it."""
    templates = Templates(
        mg_server,
        _config_path(pytestconfig),
        bool(pytestconfig.getini("mg_seeds")),
        pool_size=_pool_size(pytestconfig),
        strategy=_strategy(pytestconfig),
    )
    try:
        yield templates
    finally:
        templates.close()


@pytest.fixture
def mg_database(mg_templates: Templates) -> Iterator[MgDatabase]:
    """A fresh database migrated to head (seeded with ``mg_seeds = true``), dropped after."""
    dbname = mg_templates.clone()
    try:
        yield MgDatabase(
            mg_templates.server.database_url(dbname),
            dbname,
            mg_templates.name(),
            mg_templates.config_path,
        )
    finally:
        mg_templates.drop(dbname)
