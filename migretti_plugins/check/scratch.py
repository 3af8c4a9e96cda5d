"""Scratch databases: an empty database mg creates, uses and always drops.

Where it lives, in order:

1. ``--database-url`` or ``check.database_url``: any server where mg may create and drop a
   database (the URL names the database mg connects to for that, usually ``postgres``);
2. the server a plugin offers through ``mg_scratch_server``: the ``embedded`` plugin offers
   a private embedded server in a temporary directory, started for this command and removed
   after it, when ``migretti[embedded]`` is installed (never the project's own embedded
   server: roles a migration creates would outlive the scratch database there);
3. otherwise exit 2, saying how to get one.

The database is called ``mg_scratch_<random>`` and is dropped ``WITH (FORCE)`` in a
``finally``: on success, on failure, on Ctrl-C and on SIGTERM (which mg turns into Ctrl-C).
Only a ``kill -9`` leaves one behind; the name says what it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from migretti_core.errors import ConfigError, DatabaseError
from migretti_core.types import Session

PREFIX = "mg_scratch"
# What errors call a scratch server's URL; the Python API names its own argument instead.
URL_LABEL = "check.database_url / --database-url"
NO_SERVER = (
    "a scratch PostgreSQL server is needed: install the embedded server "
    "(pip install 'migretti[embedded]'), or set check.database_url in mg.yaml or pass "
    "--database-url with a server where mg may create and drop a temporary database"
)


@dataclass(frozen=True)
class Scratch:
    """An empty database to try migrations on, and a session whose hooks reach it."""

    session: Session
    where: str
    server_version: int


def _connect(conninfo: str, label: str = URL_LABEL) -> Any:
    import psycopg

    _check_settings(conninfo, label)
    try:
        return psycopg.connect(conninfo, autocommit=True, application_name="migretti check")
    except psycopg.Error as exc:
        from migretti_core.redact import redact, url_passwords

        def redact_text(text: str) -> str:
            return redact(text, url_passwords(conninfo))

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, psycopg.ProgrammingError):  # not a connection string at all
            raise ConfigError(
                f"{label} is not a valid connection URL: {redact_text(first)}",
                hint="a URL such as postgresql://USER@HOST:5432/postgres",
            ) from None
        raise DatabaseError(
            redact_text(_connect_failure(exc, conninfo)),
            hint=f"{label} must reach a server where mg may create databases",
        ) from None


def _connect_failure(exc: Exception, conninfo: str) -> str:
    """``cannot connect to the scratch server USER@HOST:PORT/DB: REASON``, composed as the
    target's connection errors are: from the parts of the URL (with libpq's fallbacks) and
    the first line of libpq's reason, without its ``connection to server at ...`` prefix."""
    from psycopg.conninfo import conninfo_to_dict

    from migretti_core.pgservice import target_of

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    except Exception:
        params = {}
    target = target_of(params)
    from migretti_core.connsettings import failure_lines

    return f"cannot connect to the scratch server {target.describe()}: {failure_lines(exc)[0]}"


def _check_settings(conninfo: str, label: str) -> None:
    """A port, an sslmode, ... that libpq would refuse only when connecting is the
    configuration error it is (exit 2), named as the URL's, never with its password."""
    from psycopg.conninfo import conninfo_to_dict

    from migretti_core.connsettings import setting_problem
    from migretti_core.redact import redact, url_passwords

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return  # not a connection string at all: connecting says so
    for key, value in params.items():
        problem = setting_problem(key, str(value)) if value is not None else None
        if problem is not None:
            message = f"{label}: {key} {str(value)!r} {problem}"
            raise ConfigError(redact(message, url_passwords(conninfo)))


def _with_dbname(conninfo: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    params["dbname"] = dbname
    return make_conninfo("", **params)


def _server_of(conninfo: str, label: str = URL_LABEL) -> str:
    """Where a URL of ``--database-url`` or ``check.database_url`` points, for messages: host
    and port, never the password (either option may have given it)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return f"the server of {label}"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    return f"the server at {host}:{params.get('port') or 5432}"


def _remember_password(session: Session, conninfo: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    with contextlib.suppress(Exception):
        password = conninfo_to_dict(conninfo).get("password")
        if password:
            session.hooks.secrets.add(str(password))


@contextlib.contextmanager
def scratch_database(
    session: Session, url: str | None = None, label: str = URL_LABEL
) -> Iterator[Scratch]:
    """Create an empty database, yield it with a session pointing at it, then drop it;
    ``label`` is what errors call ``url``."""
    with contextlib.ExitStack() as stack:
        if url and url.strip().lower().startswith("embedded:"):
            raise ConfigError(
                f"{label} cannot be embedded: (the project's own server would keep the roles "
                "the migrations create)",
                hint="leave it unset: mg check and mg drift start a temporary embedded server",
            )
        if url:
            _remember_password(session, url)
            admin, where = url, _server_of(url, label)
        else:
            # A temporary embedded server (the embedded plugin), or a plugin's own.
            offered = session.hooks.scratch_server(session)
            if offered is None:
                raise ConfigError(NO_SERVER)
            server = stack.enter_context(offered)
            admin, where = server.conninfo, server.description
        # A server mg did not start outlives the command, and so do the roles the migrations
        # create on it: say which, since the next check there fails on them.
        yield stack.enter_context(
            _database_on(session, admin, where, watch_roles=bool(url), label=label)
        )


@contextlib.contextmanager
def _database_on(
    session: Session, admin: str, where: str, *, watch_roles: bool = False, label: str = URL_LABEL
) -> Iterator[Scratch]:
    from psycopg import sql

    name = f"{PREFIX}_{uuid.uuid4().hex[:16]}"
    with _connect(admin, label) as conn:
        version = int(conn.info.server_version) // 10000
        roles = _roles(conn) if watch_roles else None
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except Exception as exc:
            raise DatabaseError(
                f"cannot create a scratch database on {where}: {' '.join(str(exc).split())}"
            ) from None
    try:
        config = dataclasses.replace(
            session.config,
            database={"url": _with_dbname(admin, name)},
            env=None,
            # Nothing to protect and no deployment hooks on a scratch database.
            settings={
                k: v for k, v in session.config.settings.items() if k not in ("protected", "hooks")
            },
            source={k: v for k, v in session.config.source.items() if k != "hooks"},
        )
        scratch_session = dataclasses.replace(session, config=config)
        yield Scratch(scratch_session, f"{name} on {where}", version)
    finally:
        _drop(session, admin, name, where)
        if roles is not None:
            _report_new_roles(session, admin, where, roles)


def _roles(conn: Any) -> set[str]:
    return {str(row[0]) for row in conn.execute("SELECT rolname FROM pg_catalog.pg_roles")}


def _report_new_roles(session: Session, admin: str, where: str, before: set[str]) -> None:
    """Warn about roles that appeared on the server while the scratch database was used: the
    migrations' (or, rarely, someone else's at the same time, so they are named, not dropped)."""
    from migretti_core.reporting import report

    try:
        with _connect(admin) as conn:
            new = sorted(_roles(conn) - before)
    except Exception:
        return
    if new:
        names = ", ".join(new)
        report(
            session,
            "scratch.roles_left",
            "warning",
            f"roles created while the scratch database was in use stay on {where}, which "
            f"mg did not start: {names}; the next check there finds them already made "
            "(DROP ROLE them there, or use a server that is there for checks only)",
            roles=new,
        )


def _drop(session: Session, admin: str, name: str, where: str) -> None:
    """Drop the scratch database; a failure is a warning, never hiding the command's outcome."""
    from psycopg import sql

    from migretti_core.interrupts import signals_held

    try:
        # A second Ctrl-C waits for the drop: cut short, it would leave the database behind.
        # The connection is bounded, so a server gone unreachable is not waited for long.
        with signals_held(), _connect(_bounded(admin)) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    except Exception as exc:
        from migretti_core.reporting import report

        report(
            session,
            "scratch.drop_failed",
            "warning",
            f"could not drop the scratch database {name} on {where}: "
            f"{' '.join(str(exc).split())}; drop it by hand",
            database=name,
        )


def _bounded(conninfo: str, seconds: int = 10) -> str:
    """``conninfo`` with a ``connect_timeout`` unless it (or ``PGCONNECT_TIMEOUT``) has one."""
    import os

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        if conninfo_to_dict(conninfo).get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT"):
            return conninfo
        return make_conninfo(conninfo, connect_timeout=str(seconds))
    except Exception:
        return conninfo  # not a connection string: connecting says so


def scratch_failure(migration_id: str, message: str) -> str:
    """The error of a migration run on the scratch database, without the advice to
    ``mg fix`` the row it left ``failed``: that row is in the scratch database, dropped
    afterwards, and following the advice on the project's own database would record as
    applied a migration that never ran there."""
    from migretti_core.planning import FIX_HINT, FIX_HINT_DOWN

    for hint in (FIX_HINT, FIX_HINT_DOWN):  # an apply's advice, or a rollback's
        advice = f"; migration {migration_id} is now marked failed; " + hint.format(id=migration_id)
        message = message.replace(advice, "")
    if "(SQLSTATE 42710)" in message and _ROLE_EXISTS.search(message):
        # Roles belong to the whole server: the scratch database being new does not make
        # the server's roles new. Say so, or the failure looks like a bug in the migration.
        message += (
            "\n  NOTE: a role belongs to the whole server, not to the scratch database; this "
            "one exists on the scratch server already (left by an earlier check, or the "
            "target's own when check.database_url points at the target's server)"
        )
    return message


_ROLE_EXISTS = re.compile(r'\brole "[^"]*" already exists')
