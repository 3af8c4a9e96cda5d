"""Shared fixtures.

Database fixtures: one PostgreSQL server per test session, a fresh database per test.
The server is ``MG_TEST_DATABASE_URL`` (a superuser URL to an existing server) when set,
else an embedded server started in a temporary directory and stopped at session end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import fresh_database
from migretti_plugins.embedded_server import EmbeddedServer

TEST_DATABASE_URL_ENV = "MG_TEST_DATABASE_URL"

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
    base = Path(tempfile.mkdtemp(prefix="mg-test-pg-"))
    server = EmbeddedServer(base / "data", durable=False)
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


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
