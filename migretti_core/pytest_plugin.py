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
    from concurrent.futures import Future, ThreadPoolExecutor

    import psycopg

    from migretti_core.application import Migretti

URL_ENV = "MG_TEST_DATABASE_URL"
#: Advisory lock key (on the maintenance database) serialising template builds.
TEMPLATE_LOCK_KEY = 894322
TEMPLATE_PREFIX = "mgtpl_"
CLONE_PREFIX = "mgtest_"
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
        return Migretti(config=self.config_path, database_url=self.url, **kwargs)


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
            yield server.url()
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
        url = server.url()
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


@pytest.fixture(scope="session")
def mg_server(pytestconfig: pytest.Config) -> Iterator[MgServer]:
    """The PostgreSQL server of this test session (see the module docstring)."""
    url = _configured_url(pytestconfig)
    if url:
        yield MgServer(url)
        return
    with _embedded() as embedded_url:
        yield MgServer(embedded_url, embedded=True)


# --- the template ----------------------------------------------------------------------------


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


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


class Templates:
    """Builds (once, under the server's advisory lock) and clones the session's template."""

    def __init__(self, server: MgServer, config_path: Path | None, seeds: bool) -> None:
        self.server = server
        self.config_path = config_path
        self.seeds = seeds
        self._admin: psycopg.Connection[Any] | None = None
        self._name: str | None = None
        self._failure: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._bg_admin: psycopg.Connection[Any] | None = None
        self._next: Future[str] | None = None
        self._pending: list[Future[None]] = []

    def _migretti(self, url: str) -> Migretti:
        from migretti_core.application import Migretti

        # Deployment hooks (backups, notifications) have no business in a test run.
        return Migretti(
            config=self.config_path, database_url=url, plugins=["no:shellhooks"], confirm=True
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
            from migretti_plugins.seeds import seeds_dir as seeds_dir_of

            seeds_dir = seeds_dir_of(mg.config)
            for path in sorted(seeds_dir.glob("*.sql")) if seeds_dir.is_dir() else []:
                parts.append(f"seed {path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
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
            try:
                self._name = self._build()
            except MgError as exc:
                self._failure = f"migrating the test template failed: {exc}"
                if exc.hint:
                    self._failure += f"\n  hint: {exc.hint}"
                pytest.fail(self._failure, pytrace=False)
        return self._name

    def _build(self) -> str:
        from psycopg import sql

        probe = self._migretti(self.server.url)
        project, content = self.key(probe)
        name = f"{TEMPLATE_PREFIX}{project}_{content}"
        admin = self.admin()
        with self._locked(admin):
            found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is not None:
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
            self._drop_stale(admin, f"{TEMPLATE_PREFIX}{project}_", name)
        return name

    @staticmethod
    def _drop_stale(admin: psycopg.Connection[Any], prefix: str, keep: str) -> None:
        """Templates of this project's older migration files; one still in use is kept."""
        import psycopg
        from psycopg import sql

        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s",
            (prefix, keep),
        ).fetchall()
        for (stale,) in rows:
            with contextlib.suppress(psycopg.Error):
                admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(stale)))

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

    # Clones are made and dropped by one background thread with a connection of its own:
    # the next test's clone is made while the current test runs, and a finished test's drop
    # does not hold up the next one.

    def _background(self) -> ThreadPoolExecutor:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mg-clones")
        return self._executor

    def _worker_admin(self) -> psycopg.Connection[Any]:
        """The background thread's own connection (used by that thread only)."""
        if self._bg_admin is None or self._bg_admin.closed or self._bg_admin.broken:
            self._bg_admin = self.server.connect(application_name="migretti-pytest")
        return self._bg_admin

    def _create(self, template: str, admin: psycopg.Connection[Any] | None = None) -> str:
        from psycopg import sql

        dbname = f"{CLONE_PREFIX}{uuid.uuid4().hex[:20]}"
        (admin or self._worker_admin()).execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(dbname), sql.Identifier(template)
            )
        )
        return dbname

    def _drop_now(self, dbname: str, admin: psycopg.Connection[Any] | None = None) -> None:
        from psycopg import sql

        (admin or self._worker_admin()).execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )

    def clone(self) -> str:
        """A new database made from the template; the one after it is started right away."""
        template = self.name()
        ready, self._next = self._next, None
        dbname = ready.result() if ready is not None else self._create(template, self.admin())
        self._next = self._background().submit(self._create, template)
        return dbname

    def drop(self, dbname: str) -> None:
        self._pending.append(self._background().submit(self._drop_now, dbname))
        self._pending = [f for f in self._pending if not f.done()]

    def close(self) -> None:
        """Wait for the background work, drop the clone made in advance, disconnect."""
        import psycopg

        try:
            if self._next is not None:
                with contextlib.suppress(psycopg.Error):
                    self._drop_now(self._next.result(), self.admin())
            for future in self._pending:
                with contextlib.suppress(psycopg.Error):
                    future.result()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            for conn in (self._admin, self._bg_admin):
                if conn is not None:
                    conn.close()


@pytest.fixture(scope="session")
def mg_templates(pytestconfig: pytest.Config, mg_server: MgServer) -> Iterator[Templates]:
    """The session's template database (built on first use); ``mg_database`` clones it."""
    templates = Templates(
        mg_server, _config_path(pytestconfig), bool(pytestconfig.getini("mg_seeds"))
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
