"""Shared fixtures.

Database fixtures: one PostgreSQL server per test session, a fresh database per test.
The server is ``MG_TEST_DATABASE_URL`` (a superuser URL to an existing server) when set,
else an embedded server started in a temporary directory and stopped at session end.

Every test that starts a server keeps its data outside pytest's temporary tree
(``server_tmp_path``), and the harness refuses one that does not: under root the server runs
as another system user, which must traverse the data directory's parents, and any pytest
starting on the machine resets ``/tmp/pytest-of-USER`` to mode 0700 (a nested pytest, or a
colleague's run). A server there fails at random, with initdb's "Permission denied".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from migretti_core.testing import fresh_database, run_mg, write_text
from migretti_plugins.embedded.server import EmbeddedServer

TEST_DATABASE_URL_ENV = "MG_TEST_DATABASE_URL"

# A suite started in the background by a shell without job control (`.ci/run &`) inherits
# SIGINT ignored, and so would every mg it starts: its Ctrl-C tests would find mg deaf to
# Ctrl-C, as mg rightly stays when started that way. A handler is not inherited across exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Tests that need a PostgreSQL server get the ``pg`` marker, so ``pytest -m "not pg"`` runs
# the database-free part alone (CONTRIBUTING.md).
PG_FIXTURES = frozenset(
    {
        "pg_url",
        "database_url",
        "db_conninfo",
        "mg_pg_url",
        "mg_database_url",
        "mg_server",
        "mg_database",
        "server_tmp_path",
    }
)
PG_MODULES = frozenset({"test_embedded.py", "test_pg_smoke.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        embedded = "embedded" in item.name  # starts an embedded server of its own
        if names & PG_FIXTURES or item.path.name in PG_MODULES or embedded:
            item.add_marker(pytest.mark.pg)


# -- where servers keep their data -----------------------------------------------------------


def server_workdir(prefix: str = "mg-test-") -> Path:
    """A new directory in the system temp dir whose parents other users can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


def remove_server_workdir(path: Path) -> None:
    """Stop every server still running below ``path``, then delete it."""
    for pidfile in path.rglob("postmaster.pid"):
        EmbeddedServer(pidfile.parent).stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_tmp_path() -> Iterator[Path]:
    """Like ``tmp_path``, for tests whose PostgreSQL server keeps its data there."""
    path = server_workdir()
    try:
        yield path
    finally:
        remove_server_workdir(path)


@pytest.fixture(scope="session", autouse=True)
def _servers_stay_out_of_pytest_temp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Fail a test that starts a server under pytest's temporary tree (see the docstring)."""
    basetemp = tmp_path_factory.getbasetemp().resolve()
    # Without --basetemp, the tree is /tmp/pytest-of-USER, shared by every run of USER.
    pytest_root = basetemp if request.config.option.basetemp else basetemp.parent
    start = EmbeddedServer.start

    def guarded_start(self: EmbeddedServer) -> None:
        if self.datadir.is_relative_to(pytest_root):
            raise AssertionError(
                f"server data under pytest's temporary tree ({self.datadir}); "
                "use the server_tmp_path fixture"
            )
        start(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EmbeddedServer, "start", guarded_start)
        yield


# -- database server and per-test databases ------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of the session's server, connected as a superuser to its ``postgres`` database.

    The data lives in a directory of its own rather than pytest's temporary tree: pytest
    prunes and re-permissions that tree when another pytest run starts, and the server runs as
    another system user when the suite runs as root.
    """
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        yield external
        return
    base = server_workdir("mg-test-pg-")
    try:
        server = EmbeddedServer(base / "data", durable=False)
        server.start()
        yield server.url()
    finally:
        remove_server_workdir(base)


@pytest.fixture
def database_url(pg_url: str) -> Iterator[str]:
    """URL of a database created empty for this test and dropped after it."""
    with fresh_database(pg_url) as url:
        yield url


@pytest.fixture
def db_conninfo(database_url: str) -> dict[str, str]:
    """libpq keywords (host, port, user, dbname; password when the URL has one)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        info = conn.info
        result = {
            "host": info.host,
            "port": str(info.port),
            "user": info.user,
            "dbname": info.dbname,
        }
        if info.password:
            result["password"] = info.password
    return result


@pytest.fixture(scope="session")
def psql_bin() -> Path:
    """The embedded distribution's psql, else the one on PATH."""
    from migretti_core.errors import ConfigError

    try:
        return EmbeddedServer.bin_dir() / "psql"
    except ConfigError:
        found = shutil.which("psql")
        if found is None:
            pytest.skip("no psql: install the 'test' extra or put psql on PATH")
        return Path(found)


# -- migretti 0.10's history tables ----------------------------------------------------------


@pytest.fixture(scope="session")
def ddl_010() -> str:
    """migretti 0.10's DDL, as it created the history tables (for upgrade tests)."""
    return """
CREATE TABLE _migrations (
    id VARCHAR(26) PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    applied_at TIMESTAMPTZ DEFAULT now(),
    checksum VARCHAR(64),
    status VARCHAR(20) DEFAULT 'applied'
);
CREATE TABLE _migrations_log (
    id BIGSERIAL PRIMARY KEY,
    migration_id VARCHAR(26) NOT NULL,
    name VARCHAR(255),
    action VARCHAR(10) NOT NULL,
    performed_at TIMESTAMPTZ DEFAULT now(),
    performed_by VARCHAR(255),
    checksum VARCHAR(64)
);
"""


# -- the configuration mg sees ----------------------------------------------------------------

SHOW_CONFIG_PLUGIN = '''
"""Adds `mg show-config`: the selected profile's configuration as JSON on stdout."""

import json
from collections.abc import Mapping

import click

from migretti_core.cli import app_of
from migretti_plugins.seeds import seeds_dir


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def mg_register_commands(cli):
    @cli.command("show-config")
    @click.pass_context
    def show_config(ctx):
        config = app_of(ctx).config()
        data = {
            "path": config.path,
            "root": config.root,
            "env": config.env,
            "database": config.database,
            "settings": config.settings,
            "lock_id": config.lock_id,
            "lock_timeout": config.lock_timeout,
            "migrations_dir": config.migrations_dir,
            "seeds_dir": seeds_dir(config),
            "plugins": config.plugins,
        }
        click.echo(json.dumps(_plain(data)))
'''


class ShowConfig:
    """The configuration a real ``mg`` run sees, through a plugin adding ``mg show-config``."""

    def install(self, directory: Path, name: str = "show_config") -> Path:
        """Put the plugin in ``directory`` as ``<name>.py`` (load it with ``-p <name>``)."""
        return write_text(directory / f"{name}.py", SHOW_CONFIG_PLUGIN)

    def __call__(
        self, cwd: Path, *args: str, env: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """``mg -p show_config show-config ARGS`` in ``cwd``, its JSON parsed."""
        if not (cwd / "show_config.py").exists():
            self.install(cwd)
        result = run_mg(["-p", "show_config", "show-config", *args], cwd, env=env)
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data


@pytest.fixture
def show_config() -> ShowConfig:
    """``show_config(cwd, *args, env=None)``: the configuration ``mg`` sees, as a dict;
    ``show_config.install(directory)`` only writes the plugin."""
    return ShowConfig()
