"""PostgreSQL through psycopg 3: connection parameters, connecting, and running SQL.

Every hook here is ``trylast`` so any plugin that answers replaces it. Decisions:

- ``database`` is a mapping of libpq parameters, or ``url`` (a URL or ``key=value`` string)
  optionally completed by other keys, which win over the URL. Unknown keys are a
  configuration error naming the key; an empty ``password`` counts as unset. So is a value
  libpq would refuse only when connecting (a port out of range, an unknown ``sslmode``, a
  ``connect_timeout`` that is no number: ``setting_problem``), in a key or inside the URL.
  An error names the setting as the user wrote it: ``MG_DATABASE_URL``, or the key in its
  file (``mg.yaml: envs.prod.database.url``).
- Connections are opened in autocommit mode, so statements outside ``mg_transaction`` each
  commit on their own. ``application_name`` (migretti), ``connect_timeout`` (10 s) and
  ``client_encoding`` (UTF8, so server error positions count the same characters as Python)
  are set unless the parameters, the connection service they use or the matching ``PG*``
  variables choose otherwise; so are TCP keepalives and a user timeout (``TCP_DEFAULTS``)
  unless the parameters or the connection service they use set them.
  Prepared statements are off: nothing here repeats, and psycopg's cache would keep a copy
  of every query text, including a whole migration.
- ``mg_execute`` sends the SQL as one simple-protocol query (several statements are fine,
  ``%`` is never a placeholder) and reads the server's answers one at a time without keeping
  them, so a 20 MB migration of many INSERTs costs no more than the copies libpq makes of
  its text (two while sending). An error the server reports without a position (most
  errors while executing) is given the position of the failing statement's start, found
  by counting the statements that completed before it. ``COPY ... TO
  STDOUT`` output is discarded; ``COPY ... FROM STDIN`` fails, as a migration has no data
  stream. SQL that ends the transaction ``mg_transaction`` opened (COMMIT, ROLLBACK, END)
  is an error: the migration's changes would no longer commit together with its record.
- ``mg_execute_each`` sends the statements of a no-transaction migration that may run in a
  transaction block (a whitelist by first keyword, ``may_share_query``) as one query, each
  between its own ``BEGIN`` and ``COMMIT``, and counts the COMMITs as they arrive; it
  declines (the engine then uses ``mg_execute``) for any other statement, inside a
  transaction, and on servers before 13. A syntax error refuses the whole query: the
  statements before the one it points at are sent again without it.
- ``mg_query`` without parameters does not treat ``%`` as a placeholder either.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any

from migretti_core import hookimpl
from migretti_core.connsettings import failure_lines, setting_problem
from migretti_core.errors import ConfigError, DatabaseError, MgError, SqlError
from migretti_core.pgservice import target_of
from migretti_core.redact import redact, redact_text
from migretti_core.types import (
    Config,
    FileText,
    LockHolder,
    LockReport,
    Session,
    Statement,
    StatementBatch,
    StatementInfo,
    Target,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg.abc import PQGen
    from psycopg.pq.abc import PGconn, PGresult

    from migretti_plugins.postgres import libpq

APPLICATION_NAME = "migretti"
CONNECT_TIMEOUT = "10"

# Parameters we default, with the environment variable that also counts as the user's choice.
_DEFAULTS = (
    ("application_name", "PGAPPNAME", APPLICATION_NAME),
    ("connect_timeout", "PGCONNECT_TIMEOUT", CONNECT_TIMEOUT),
    ("client_encoding", "PGCLIENTENCODING", "UTF8"),
)
# TCP keepalives and a user timeout: a server that stops answering once connected (a network
# partition, a host gone dead) ends the session after about a minute (probes from 30 s of
# silence, every 10 s, 3 lost; data unacknowledged for 60 s) instead of holding mg for ever.
# libpq ignores them on a Unix-domain socket. Set unless the user's parameters (or the
# connection service they use) set them: libpq has no environment variables for them.
TCP_DEFAULTS = (
    ("keepalives", "1"),
    ("keepalives_idle", "30"),
    ("keepalives_interval", "10"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "60000"),
)
_NOT_LIBPQ = frozenset({"url", "embedded"})
# libpq variables that name a target: with one set, mg runs without any mg.yaml.
_PG_TARGET = frozenset({"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"})
_ALIASES = {
    "database": "dbname",
    "db": "dbname",
    "name": "dbname",
    "username": "user",
    "hostname": "host",
    "server": "host",
    "pass": "password",
    "passwd": "password",
}
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off", "n", "f"})

# Transactions opened through mg_transaction, per connection, to notice SQL that ends them.
_depth: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


# --- parameters ----------------------------------------------------------------------------


def is_embedded(database: Mapping[str, Any]) -> bool:
    """True when the embedded plugin, not a server the user runs, is the target."""
    flag = database.get("embedded")
    if isinstance(flag, str):
        flag = flag.strip().lower() not in _FALSE_WORDS
    url = database.get("url")
    return bool(flag) or (isinstance(url, str) and url.strip().startswith("embedded:"))


def _section_key(key: str) -> str:
    return f"database.{key}"


def _setting_names(config: Config) -> Callable[[str], str]:
    """How an error names a key of ``config.database``: ``MG_DATABASE_URL`` for the URL that
    variable gave (``database_url`` when the Python API passed it that way:
    ``Config.url_origin``), else the key in the config file (``mg.yaml: database.url``, or
    ``mg.yaml: envs.prod.database.url`` when the selected profile sets it)."""
    variable = config.environ.get("MG_DATABASE_URL") or None
    # the file as it was found (``../mg.yaml``, the --config text), escaped, as elsewhere
    label = config.label if config.path is not None else None
    written = config.source.get("database")
    profiles = config.source.get("envs")
    profile = profiles.get(config.env) if config.env and isinstance(profiles, Mapping) else None
    in_profile = profile.get("database") if isinstance(profile, Mapping) else None

    def name(key: str) -> str:
        if key == "url" and variable is not None and config.database.get("url") == variable:
            return config.url_origin
        if isinstance(in_profile, Mapping) and key in in_profile:
            where = f"envs.{config.env}.database.{key}"
        elif isinstance(written, Mapping) and key in written:
            where = f"database.{key}"
        else:  # not from the file: Migretti.from_url, or a plugin's configuration
            return "the database URL" if key == "url" else f"database.{key}"
        return f"{label}: {where}" if label else where

    return name


def libpq_params(
    database: Mapping[str, Any], name: Callable[[str], str] = _section_key
) -> dict[str, str]:
    """Turn the ``database`` section into libpq keywords; raise ``ConfigError`` if invalid.

    The URL is parsed and the keywords are read by libpq itself: through ``ctypes`` when
    ``migretti_plugins.libpq`` can load it (so a read-only command need not import
    psycopg), else through psycopg; the same library, the same answers. ``name`` gives what
    an error calls a key (``_setting_names``; default ``database.KEY``)."""
    params: dict[str, str] = {}
    url = database.get("url")
    if url not in (None, ""):
        try:
            parsed = _parse_conninfo(str(url))
        except ValueError as exc:
            reason = redact_text(" ".join(str(exc).split()))
            raise ConfigError(f"{name('url')} is not a valid connection URL: {reason}") from None
        params.update({k: str(v) for k, v in parsed.items() if v is not None})
    for key, value in database.items():
        if key in _NOT_LIBPQ or value is None:
            continue
        params[str(key)] = str(value)
    known = _libpq_keywords()
    for key in params:
        if key not in known:
            close = _ALIASES.get(key.lower()) or next(
                iter(__import__("difflib").get_close_matches(key, sorted(known), n=1)), None
            )
            hint = f" (did you mean {close}?)" if close else ""
            raise ConfigError(f"{name(key)}: not a libpq connection parameter{hint}")
    if params.get("password") == "":
        del params["password"]
    for key, value in params.items():
        problem = setting_problem(key, value)
        if problem is None:
            continue
        if database.get(key) in (None, ""):  # the URL's
            raise ConfigError(f"{name('url')}: {key} {value!r} {problem}")
        raise ConfigError(f"{name(key)}: {value!r} {problem}")
    return params


def _parse_conninfo(conninfo: str) -> dict[str, Any]:
    """``conninfo_to_dict``; raises ``ValueError`` with libpq's reason."""
    from migretti_plugins.postgres import libpq

    lib = libpq.library()
    if lib is not None:
        try:
            return libpq.parse_conninfo(lib, conninfo)
        except libpq.ConninfoError as exc:
            raise ValueError(str(exc)) from None
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(conninfo)
    except ProgrammingError as exc:
        raise ValueError(str(exc)) from None


def _libpq_keywords() -> frozenset[str]:
    from migretti_plugins.postgres import libpq

    lib = libpq.library()
    if lib is not None:
        return libpq.keywords(lib)
    from psycopg import pq

    return frozenset(opt.keyword.decode() for opt in pq.Conninfo.get_defaults())


# --- errors --------------------------------------------------------------------------------


def connect_failure(exc: Exception, target: Target, password: str | None) -> DatabaseError:
    """One line: who we tried to reach and the server's reason; the rest becomes the hint."""
    said = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    socket = re.match(
        r"(?:connection (?:failed|is bad): )?"
        r'connection to server on socket "([^"]*)/\.s\.PGSQL\.\d+"',
        said,
    )
    if socket and target.host is None:
        # No host given: libpq tried its default socket directory, not "localhost".
        target = dataclasses.replace(target, host=socket.group(1))
    first, *others = failure_lines(exc)
    rest = [line for line in others if not line.startswith("Multiple connection attempts")]
    secrets = (password or "",)
    hint = redact(rest[0], secrets) if rest and not rest[0].startswith("-") else None
    message = f"cannot connect to {target.describe()}: {redact(first, secrets)}"
    return DatabaseError(message, hint=hint)


def error_from_psycopg(exc: psycopg.Error) -> MgError:
    """A server error becomes ``SqlError``; anything else (a lost connection) ``DatabaseError``."""
    diag = exc.diag
    if exc.sqlstate is None or diag.message_primary is None:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if getattr(exc, "pgconn", None) is not None or "connection" in text:
            return DatabaseError(f"database connection failed: {redact_text(text)}")
        return DatabaseError(redact_text(text))
    return SqlError(
        diag.message_primary,
        sqlstate=exc.sqlstate,
        detail=diag.message_detail,
        hint=diag.message_hint,
        position=_int(diag.statement_position),
        context=diag.context,
    )


def _error_from_result(result: PGresult, encoding: str) -> SqlError:
    from psycopg import pq

    field = pq.DiagnosticField

    def text(which: pq.DiagnosticField) -> str | None:
        value = result.error_field(which)
        return value.decode(encoding, "replace") if value else None

    message = text(field.MESSAGE_PRIMARY) or result.error_message.decode(encoding, "replace")
    return SqlError(
        message.strip(),
        sqlstate=text(field.SQLSTATE),
        detail=text(field.MESSAGE_DETAIL),
        hint=text(field.MESSAGE_HINT),
        position=_int(text(field.STATEMENT_POSITION)),
        context=text(field.CONTEXT),
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- connection hooks ------------------------------------------------------------------------


@hookimpl(trylast=True)
def mg_connection_params(session: Session) -> dict[str, str] | None:
    database = session.config.database
    if is_embedded(database):
        return None
    if session.config.path is None and not database and not _PG_TARGET.intersection(os.environ):
        raise ConfigError(
            f"no mg.yaml in {session.config.root} or its parents",
            hint="run mg in your project, pass --config PATH, set MG_DATABASE_URL (or PGHOST, "
            "PGDATABASE, ...), or create a project with mg init",
        )
    return libpq_params(database, _setting_names(session.config))


@hookimpl(trylast=True)
def mg_connect(session: Session) -> Any | None:
    params = dict(session.hooks.connection_params(session))
    _default_settings(params)
    _default_tcp_settings(params)
    timeout = os.environ.get("PGCONNECT_TIMEOUT")
    if not params.get("connect_timeout") and timeout:
        problem = setting_problem("connect_timeout", timeout)
        if problem:
            raise ConfigError(f"PGCONNECT_TIMEOUT: {timeout!r} {problem}")
    password = params.get("password") or os.environ.get("PGPASSWORD")
    options = session.options
    if (options.read_only or options.light_connection) and only_builtin_plugins(session):
        conn = _connect_libpq(params, password)
        if conn is not None:
            conn.writing = not options.read_only
            _remember_password(session, conn.password)
            return conn
    conn = _connect_psycopg(params, password)
    _remember_password(session, conn.info.password)
    return conn


def _default_settings(params: dict[str, str]) -> None:
    """Add the ``_DEFAULTS`` that neither ``params``, the connection service they use nor
    the matching ``PG*`` variable set. A service's value is copied into ``params``: libpq
    would use it anyway (a service comes before the variables), and psycopg's own wait for
    the connection (``connect_timeout``) then follows it too."""
    missing = [(k, v) for k, var, v in _DEFAULTS if not params.get(k) and not os.environ.get(var)]
    if not missing:
        return
    chosen = _service_chosen(params)
    for key, _var, _value in _DEFAULTS:
        if not params.get(key) and chosen.get(key):
            params[key] = chosen[key]
    params.update((key, value) for key, value in missing if not params.get(key))


def _default_tcp_settings(params: dict[str, str]) -> None:
    """Add the ``TCP_DEFAULTS`` that neither ``params`` nor the connection service they use
    set, and that this libpq knows (``tcp_user_timeout`` is libpq 12's)."""
    missing = [(key, value) for key, value in TCP_DEFAULTS if not params.get(key)]
    if not missing:
        return
    known = _libpq_keywords()
    missing = [(key, value) for key, value in missing if key in known]
    if missing:
        chosen = _service_chosen(params)
        missing = [(key, value) for key, value in missing if not chosen.get(key)]
    params.update(missing)


def _service_chosen(params: Mapping[str, str]) -> Mapping[str, str]:
    """What the connection service ``params`` use sets; nothing without a service, or when
    it cannot be read (connecting then says what is wrong with it)."""
    # as pgservice.service_in_effect, without importing it (and subprocess) on every connect
    service = params.get("service") or os.environ.get("PGSERVICE")
    if not service:
        return {}
    try:
        return _service_settings(service)
    except ValueError:
        return {}


_services: dict[tuple[str, str | None, str | None], dict[str, str]] = {}
_services_lock = threading.Lock()


def _service_settings(service: str) -> dict[str, str]:
    """What connection service ``service`` sets (``pgservice.service_settings``, which runs a
    child process), read once per process: a fleet connects many times."""
    from migretti_core.pgservice import service_settings

    env = os.environ
    key = (service, env.get("PGSERVICEFILE"), env.get("PGSYSCONFDIR"))
    with _services_lock:
        if key not in _services:
            _services[key] = service_settings(service, env)
        return _services[key]


def _remember_password(session: Session, used: str) -> None:
    """Mask the password the session was opened with from now on: libpq may have read it
    from a password file (~/.pgpass, PGPASSFILE, ``passfile``), which mg.yaml does not name,
    and a server error may quote it as any other value."""
    if used:
        session.hooks.secrets.add(used)


def _connect_psycopg(params: Mapping[str, str], password: str | None) -> psycopg.Connection[Any]:
    import logging

    import psycopg
    from psycopg.conninfo import make_conninfo

    # psycopg logs a few warnings of its own ("query not terminated after cancellation",
    # "error ignored in rollback of ..."); with no logging configured Python would print
    # them raw on stderr, outside mg's output and --json-log. mg reports what happened
    # itself; an application that configures logging still receives them.
    logger = logging.getLogger("psycopg")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())

    try:
        conn = psycopg.connect(make_conninfo("", **params), autocommit=True)
    except psycopg.ProgrammingError as exc:
        raise ConfigError("database: " + redact(str(exc), (password or "",))) from None
    except psycopg.Error as exc:
        raise connect_failure(exc, target_of(params), password) from None
    conn.prepare_threshold = None
    # psycopg parses timestamps only in the ISO output style; the field order (DMY, MDY)
    # the database chose for input stays, as on the libpq path (``ensure_iso_dates``).
    if not (conn.info.parameter_status("DateStyle") or "ISO").startswith("ISO"):
        try:
            conn.execute("SET DateStyle TO ISO")
        except psycopg.Error as exc:
            conn.close()
            raise error_from_psycopg(exc) from None
    return conn


def _connect_libpq(params: Mapping[str, str], password: str | None) -> Any | None:
    """A ``libpq.LibpqConnection``, or None where psycopg must connect (see
    ``migretti_plugins/postgres/libpq.py``); its failures read as psycopg's."""
    from migretti_plugins.postgres import libpq

    lib = libpq.library()
    if lib is None or not set(params) <= libpq.keywords(lib):
        return None
    try:
        attempts = libpq.attempts(lib, params)
        timeout = libpq.connect_timeout(
            params.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT"))
        )
        if attempts is None or timeout is None:
            return None
        conn = libpq.connect(lib, attempts, timeout)
    except libpq.ConnectError as exc:
        raise connect_failure(exc, target_of(params), password) from None
    if conn is not None:
        conn.opener = lambda: _connect_psycopg(params, password)
    return conn


def only_builtin_plugins(session: Session) -> bool:
    """True when every registered plugin is a builtin module: third-party hooks may expect
    ``conn`` to be a psycopg connection, so only then may it be a ``LibpqConnection``."""
    from migretti_core.plugins import BUILTINS

    modules = {builtin.name: builtin.module for builtin in BUILTINS}
    return all(
        name in modules and getattr(plugin, "__name__", None) == modules[name]
        for name, plugin in session.hooks.pm.list_name_plugin()
    )


@hookimpl(trylast=True)
def mg_disconnect(session: Session, conn: Any) -> bool | None:
    from migretti_plugins.postgres import libpq

    if not isinstance(conn, libpq.LibpqConnection) and not _is_psycopg(conn):
        return None
    conn.close()
    return True


@hookimpl(trylast=True)
def mg_describe_target(session: Session) -> Target | None:
    return target_of(session.hooks.connection_params(session))


def _is_psycopg(conn: Any) -> bool:
    """Whether ``conn`` is a psycopg connection, without importing psycopg: a connection
    cannot be one before psycopg was imported."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(conn, psycopg.Connection)


def _psycopg_of(conn: Any) -> psycopg.Connection[Any] | None:
    """The psycopg connection behind ``conn``: itself, or the one a ``LibpqConnection``
    opens in its place for what it does not do (then used for everything that follows)."""
    from migretti_plugins.postgres import libpq

    if isinstance(conn, libpq.LibpqConnection):
        return _upgrade(conn)
    return conn if _is_psycopg(conn) else None


def _connection_of(conn: Any) -> Any | None:
    """``conn`` itself when this plugin can run SQL on it (a psycopg connection, or a
    ``LibpqConnection`` that has not given way to psycopg), its psycopg connection when it
    has, None when it is not this plugin's."""
    from migretti_plugins.postgres import libpq

    if isinstance(conn, libpq.LibpqConnection):
        return conn if conn.fallback is None else conn.fallback
    return conn if _is_psycopg(conn) else None


def _is_libpq(conn: Any) -> bool:
    """Whether ``conn`` is a ``LibpqConnection`` (then the libpq module is imported)."""
    libpq = sys.modules.get("migretti_plugins.postgres.libpq")
    return libpq is not None and isinstance(conn, libpq.LibpqConnection)


_HELD_ADVISORY = (
    "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
)


def _upgrade(conn: libpq.LibpqConnection) -> psycopg.Connection[Any]:
    if conn.fallback is None:
        if conn.opener is None:
            raise DatabaseError("the database connection is closed")
        if conn.writing:
            _refuse_upgrade_in_use(conn)
        conn.fallback = conn.opener()
        conn.close_light()
    fallback: psycopg.Connection[Any] = conn.fallback
    return fallback


def _refuse_upgrade_in_use(conn: libpq.LibpqConnection) -> None:
    """A session that runs migrations gives way to psycopg only while it holds nothing: a
    new session would not hold its transaction or its advisory locks (the migration lock)."""
    from migretti_plugins.postgres import libpq

    try:
        idle = conn.transaction_status() == libpq.TRANS_IDLE
        held = idle and conn.query(_HELD_ADVISORY)[0][0] > 0
    except (libpq.ServerError, libpq.ConnectError, libpq.Unsupported):
        idle, held = False, False
    if not idle or held:
        raise DatabaseError(
            "this needs psycopg's connection, and the session cannot be handed over "
            "while it holds a transaction or the migration lock",
            hint=f"run mg again with {libpq.PSYCOPG_ONLY}=1 in the environment",
        )


def _encoding(conn: Any) -> str:
    """The codec to send text with: the client encoding as Python calls it (UTF8 unless a
    migration set another).

    For a client encoding Python has no codec for (EUC_TW, MULE_INTERNAL) psycopg answers
    UTF-8, which would send other characters than the text holds; every client encoding
    agrees with ASCII, so ASCII is what is sent, and any other character is refused."""
    name = _client_encoding(conn)
    if name in (None, "UTF8"):
        return "utf-8"
    from psycopg import NotSupportedError
    from psycopg._encodings import pg2pyenc

    try:
        return pg2pyenc(name.encode())
    except NotSupportedError:
        return "ascii"


def _client_encoding(conn: Any) -> str | None:
    """The session's ``client_encoding`` as PostgreSQL names it."""
    if _is_libpq(conn):
        return conn.parameter_status("client_encoding")  # type: ignore[no-any-return]
    # (psycopg's ``conn.info`` decodes it with the codec it names, which may not exist)
    value = conn.pgconn.parameter_status(b"client_encoding")
    return None if value is None else bytes(value).decode("ascii", "replace")


def _unsendable(conn: Any, exc: UnicodeEncodeError, position: int) -> SqlError:
    name = _client_encoding(conn) or "?"
    return SqlError(
        f"character {exc.object[exc.start]!r} cannot be sent in client encoding {name}",
        position=position,
    )


def _transaction_status(conn: Any) -> int:
    """libpq's ``PQtransactionStatus`` (0 idle, 1 active, 2 in a block, 3 failed block)."""
    if _is_libpq(conn):
        return int(conn.transaction_status())
    return int(conn.pgconn.transaction_status)


_TRANS_IDLE, _TRANS_INTRANS, _TRANS_INERROR = 0, 2, 3


def _send(
    conn: Any,
    data: bytes | bytearray,
    *,
    rollback: bool = False,
    on_commit: Callable[[], None] | None = None,
    on_settled: Callable[[], None] | None = None,
    notices: list[str] | None = None,
) -> tuple[SqlError | None, int]:
    """Send ``data`` as one simple-protocol query and read every result: the first error
    (as ``SqlError``, its position still in ``data``) and how many statements completed
    before it. A ``bytearray`` is emptied once sent. With ``rollback`` a transaction left
    open by an error or an interruption is rolled back. ``notices`` collects the SQLSTATEs
    of the notices received."""
    if _is_libpq(conn):
        return _send_libpq(conn, data, rollback, on_commit, on_settled, notices)
    import psycopg
    from psycopg import pq

    def notice(diagnostic: psycopg.errors.Diagnostic) -> None:
        if notices is not None:
            notices.append(diagnostic.sqlstate or "")

    with conn.lock:
        if notices is not None:
            conn.add_notice_handler(notice)
        try:
            # The C implementations take a bytearray as it is; ctypes wants bytes.
            if pq.__impl__ == "python" and isinstance(data, bytearray):
                data = bytes(data)
            conn.pgconn.send_query(data)
            if isinstance(data, bytearray):
                data.clear()  # libpq holds its own copy: not kept twice while it runs
            del data
            failed, completed = conn.wait(_consume(conn.pgconn, on_commit, on_settled))
        except BaseException as exc:
            _give_up(
                conn, rollback, error_from_psycopg(exc) if isinstance(exc, psycopg.Error) else None
            )
            raise
        finally:
            if notices is not None:
                conn.remove_notice_handler(notice)
        if failed is not None and rollback:
            _rollback_quietly(conn)
    if failed is None:
        return None, completed
    reading = _encoding(conn)
    return _error_from_result(failed, "utf-8" if reading == "ascii" else reading), completed


def _send_libpq(
    conn: libpq.LibpqConnection,
    data: bytes | bytearray,
    rollback: bool,
    on_commit: Callable[[], None] | None,
    on_settled: Callable[[], None] | None,
    notices: list[str] | None,
) -> tuple[SqlError | None, int]:
    from migretti_plugins.postgres import libpq

    conn.notices = notices
    try:
        failed, completed = conn.execute(data, on_commit, on_settled)
    except BaseException as exc:
        _give_up(conn, rollback, _lost(exc) if isinstance(exc, libpq.ConnectError) else None)
        raise
    finally:
        conn.notices = None
    if failed is None:
        return None, completed
    if rollback:
        _rollback_quietly(conn)
    return _sql_error(failed, strip=True), completed


def _give_up(conn: Any, rollback: bool, error: MgError | None) -> None:
    """After a send failed: roll back if asked, then raise ``error`` in place of the
    failure when there is one (the caller re-raises the failure otherwise)."""
    if rollback:
        _rollback_quietly(conn)
    if error is not None:
        raise error from None


def _sql_error(exc: libpq.ServerError, strip: bool = False) -> SqlError:
    return SqlError(
        exc.message.strip() if strip else exc.message,
        sqlstate=exc.sqlstate,
        detail=exc.detail,
        hint=exc.hint,
        position=_int(exc.position),
        context=exc.context,
    )


def _lost(exc: Exception) -> DatabaseError:
    text = " ".join(str(exc).split()) or "the connection was lost"
    return DatabaseError(f"database connection failed: {redact_text(text)}")


# --- execution hooks -------------------------------------------------------------------------


@hookimpl(trylast=True)
def mg_execute(session: Session, conn: Any, sql: str) -> bool | None:
    conn = _connection_of(conn)
    if conn is None:
        return None
    try:
        execute_script(conn, sql, lambda text: session.hooks.split_statements(text))
    except SqlError as error:
        # Failed inside a block the SQL opened itself (BEGIN in a no-transaction migration):
        # nothing but ROLLBACK can run in it, history writes included.
        if (
            _depth.get(conn, 0) == 0
            and not conn.closed
            and _transaction_status(conn) == _TRANS_INERROR
        ):
            _rollback_quietly(conn)
            error.block_rolled_back = True
        raise
    return True


def execute_script(
    conn: psycopg.Connection[Any] | libpq.LibpqConnection,
    sql: str,
    split: Callable[[str], Sequence[Statement]] | None = None,
) -> None:
    """Run ``sql`` as one simple query; raise ``SqlError`` for the first statement that fails.

    When the server gives no position (most errors raised while executing), ``split`` is
    used to point at the start of the failing statement: the server answers each statement
    in turn, so the number of answers before the error is its index.
    """
    if conn.closed:
        raise DatabaseError("the database connection is closed")
    refuse_nul(sql)
    encoding = _encoding(conn)
    try:
        data = sql.encode(encoding)
    except UnicodeEncodeError as exc:
        raise _unsendable(conn, exc, exc.start + 1) from None
    in_transaction = _depth.get(conn, 0) > 0
    error, index = _send(conn, data)
    del data
    if error is not None:
        if error.position is None and split is not None:
            error.position = statement_position(sql, split, index)
        raise error
    if in_transaction and _transaction_status(conn) == _TRANS_IDLE:
        raise SqlError(_ENDED_TRANSACTION, hint=_ENDED_TRANSACTION_HINT)


@hookimpl(trylast=True)
def mg_execute_transaction(session: Session, conn: Any, parts: Sequence[str]) -> bool | None:
    conn = _connection_of(conn)
    if conn is None or _depth.get(conn, 0) > 0:
        return None  # inside a transaction already: the engine nests one with mg_transaction
    execute_transaction(conn, parts, lambda text: session.hooks.split_statements(text))
    return True


_BEGIN = "BEGIN;\n"
_COMMIT = "\n;\nCOMMIT;"
_ENCODE_CHUNK = 1 << 20
_NO_ACTIVE_TRANSACTION = "25P01"  # the warning of a COMMIT with no transaction open


def execute_transaction(
    conn: psycopg.Connection[Any] | libpq.LibpqConnection,
    parts: Sequence[str],
    split: Callable[[str], Sequence[Statement]] | None = None,
) -> None:
    """Run the concatenated ``parts`` in a transaction of their own, in one round trip.

    ``BEGIN``, the parts and ``COMMIT`` go as one simple-protocol query. A failing statement
    makes the server skip the rest of the query, ``COMMIT`` included, and the transaction
    is then rolled back; a syntax error anywhere means nothing ran at all. Errors count
    positions in the concatenated parts, as if they had been sent alone. The text is
    encoded a chunk at a time into one buffer, so a large migration is not copied twice;
    in UTF8, a large migration file's bytes are the encoded text and go in as they are.
    """
    from migretti_core.running import QueryParts

    if conn.closed:
        raise DatabaseError("the database connection is closed")
    encoding = _encoding(conn)
    data = bytearray(_BEGIN.encode(encoding))
    offset = 0
    utf8 = encoding.replace("-", "").lower() == "utf8"
    for part in parts.kept() if isinstance(parts, QueryParts) else parts:
        if isinstance(part, FileText):
            if utf8:  # no NUL: a file holding one is refused when it is read
                part.append_utf8(data)
                offset += len(part)
                continue
            part = part.load()
        refuse_nul(part, offset)
        _encode_into(conn, data, part, encoding, offset)
        offset += len(part)
    data += _COMMIT.encode(encoding)
    notices: list[str] = []
    error, index = _send(conn, data, rollback=True, notices=notices)
    del data
    if error is not None:
        if error.position is not None:
            error.position = max(error.position - len(_BEGIN), 1)
        elif split is not None and index > 0:
            # BEGIN was the first statement to complete: the failing one's index in the parts.
            error.position = statement_position("".join(parts), split, index - 1)
        raise error
    if _NO_ACTIVE_TRANSACTION in notices:
        raise SqlError(_ENDED_TRANSACTION, hint=_ENDED_TRANSACTION_HINT)


@hookimpl(trylast=True)
def mg_execute_each(session: Session, conn: Any, batch: StatementBatch) -> bool | None:
    conn = _connection_of(conn)
    if conn is None:
        return None
    return execute_each(conn, batch, lambda text: session.hooks.split_statements(text)) or None


# Between statements of a batch: a newline ends a trailing ``--`` comment.
_EACH_BEGIN = "BEGIN;\n"
_EACH_NEXT = "\n;\nCOMMIT;\nBEGIN;\n"
_EACH_END = "\n;\nCOMMIT;"
# From PostgreSQL 13 statement_timeout applies to each statement of a multi-statement query,
# not to the whole query string.
_EACH_SERVER = 130000
# Statements that may share a query, each in a transaction of its own, by their first word:
# data changes, and definitions unless a word below shows one that may refuse a
# transaction block (CREATE INDEX CONCURRENTLY, DROP DATABASE, ALTER SYSTEM, ...). Anything
# else (transaction control, COPY, VACUUM, SET, DO, CALL, ...) is sent alone.
_IDENT = r"[\w$]"
_EACH_DATA = re.compile(rf"(?i:insert|update|delete|merge)(?!{_IDENT})")
_EACH_DEFINITION = re.compile(rf"(?i:create|alter|drop|comment|grant|revoke)(?!{_IDENT})")
_NOT_IN_BLOCK = re.compile(
    rf"(?i)(?<!{_IDENT})(?:concurrently|database|tablespace|system|subscription)(?!{_IDENT})"
)
_LEADING = re.compile(r"(?:\s+|--[^\n]*)*")


def may_share_query(text: str) -> bool:
    """True when ``text`` (one statement) runs the same in ``BEGIN; ...; COMMIT`` as alone
    in autocommit mode, judged by its first keyword after comments; False when unsure.

    A semicolon anywhere but at the end makes it unsure: the text may be several statements
    (a splitter of another plugin, a ``COMMIT`` inside), and the COMMITs counted for a batch
    must be the builtin's own. ``;`` inside a string just sends that statement alone.
    """
    if "\0" in text:
        return False
    semicolon = text.find(";")
    if semicolon != -1 and not text[semicolon + 1 :].isspace() and semicolon != len(text) - 1:
        return False
    pos = 0
    while True:
        pos = _LEADING.match(text, pos).end()  # type: ignore[union-attr]
        if not text.startswith("/*", pos):
            break
        pos = _comment_end(text, pos)
    if _EACH_DATA.match(text, pos) is not None:
        return True
    if _EACH_DEFINITION.match(text, pos) is not None:
        return _NOT_IN_BLOCK.search(text, pos) is None
    return False


def _comment_end(text: str, pos: int) -> int:
    """The end of the block comment opening at ``pos`` (they nest)."""
    depth = 0
    while True:
        opening = text.find("/*", pos)
        closing = text.find("*/", pos)
        if closing == -1:
            return len(text)
        if opening != -1 and opening < closing:
            depth += 1
            pos = opening + 2
            continue
        depth -= 1
        pos = closing + 2
        if depth == 0:
            return pos


def execute_each(
    conn: psycopg.Connection[Any] | libpq.LibpqConnection,
    batch: StatementBatch,
    split: Callable[[str], Sequence[Statement]] | None = None,
) -> bool:
    """Run the statements of ``batch`` that may share a query, from the first, as one
    simple-protocol query: ``BEGIN; s1; COMMIT; BEGIN; s2; COMMIT; ...``.

    Each commits on its own, as in autocommit mode; a failing one aborts its own
    transaction and the server skips the rest of the query, so the COMMITs counted before
    the error say which failed. A syntax error anywhere makes the server refuse the whole
    text before running any of it: then the statements before the one it points at are
    sent again on their own, and that one is left to ``mg_execute``, as it would have been
    sent without batching. False (nothing ran) when fewer than two statements may share a
    query, on a server older than 13, or inside a transaction.
    """
    if conn.closed or _depth.get(conn, 0) > 0 or _server_version(conn) < _EACH_SERVER:
        return False
    if _transaction_status(conn) != _TRANS_IDLE:
        return False  # the migration opened one (BEGIN): its statements go one by one
    group = 0
    for text in batch.statements:
        if not may_share_query(text):
            break
        group += 1
    while group >= 2:
        refused_at = _run_each(conn, batch, group, split)
        if refused_at is None:
            return True
        group = refused_at
    return False


def _server_version(conn: Any) -> int:
    return int(conn.server_version_num if _is_libpq(conn) else conn.info.server_version)


def _run_each(
    conn: psycopg.Connection[Any] | libpq.LibpqConnection,
    batch: StatementBatch,
    count: int,
    split: Callable[[str], Sequence[Statement]] | None,
) -> int | None:
    """Send the first ``count`` statements of ``batch``, each in its own transaction.

    None when they ran (raise ``SqlError`` for the one that failed); when the server
    refused the whole text, the index of the statement its error points at (0 if unknown).
    """
    statements = batch.statements
    starts: list[int] = []
    pieces: list[str] = [_EACH_BEGIN]
    offset = len(_EACH_BEGIN)
    for text in statements[:count]:
        starts.append(offset)
        pieces.append(text)
        pieces.append(_EACH_NEXT)
        offset += len(text) + len(_EACH_NEXT)
    pieces[-1] = _EACH_END
    encoding = _encoding(conn)
    try:
        data = "".join(pieces).encode(encoding)
    except UnicodeEncodeError:
        return 0  # mg_execute reports the statement that cannot be encoded
    del pieces

    def committed() -> None:
        batch.committed += 1

    def settled() -> None:
        batch.settled = True

    batch.settled = False
    error, progress = _send(conn, data, rollback=True, on_commit=committed, on_settled=settled)
    del data
    if error is None:
        return None
    if progress == 0:
        # Nothing ran, not even the first BEGIN: the server refused the text as a whole.
        position = error.position
        if position is None:
            return 0
        return max(0, bisect.bisect_right(starts, position - 1) - 1)
    at = batch.committed
    if error.position is not None:
        error.position = max(error.position - starts[at], 1)
    elif split is not None:
        error.position = statement_position(statements[at], split, 0)
    raise error


def _encode_into(conn: Any, buffer: bytearray, text: str, encoding: str, offset: int) -> None:
    """Append ``text`` encoded; ``offset`` is its position in the whole, for errors."""
    for start in range(0, len(text), _ENCODE_CHUNK):
        chunk = text[start : start + _ENCODE_CHUNK] if len(text) > _ENCODE_CHUNK else text
        try:
            buffer += chunk.encode(encoding)
        except UnicodeEncodeError as exc:
            raise _unsendable(conn, exc, offset + start + exc.start + 1) from None


def _rollback_quietly(conn: Any) -> None:
    """End a transaction left open or failed by an interrupted or failed query."""
    try:
        if _transaction_status(conn) in (_TRANS_INTRANS, _TRANS_INERROR):
            if _is_libpq(conn):
                conn.query("ROLLBACK")
            else:
                conn.pgconn.exec_(b"ROLLBACK")
    except Exception:
        pass  # the connection is gone: the server rolls back by itself


_ENDED_TRANSACTION = (
    "the SQL ended the transaction migretti runs it in (COMMIT, ROLLBACK or END); "
    "its changes may be committed without a history record"
)
_ENDED_TRANSACTION_HINT = (
    "remove transaction control statements, or mark the migration -- migrate: no-transaction"
)


def refuse_nul(sql: str, offset: int = 0) -> None:
    """libpq sends a query text only up to a NUL character: never send one.

    Migration and seed files with a NUL are refused when they are read; this guards every
    other path (plugins, generated SQL).
    """
    at = sql.find("\0")
    if at != -1:
        raise SqlError(
            "the SQL holds a NUL character, which PostgreSQL cannot receive; "
            "it would be cut short there",
            position=offset + at + 1,
        )


def statement_position(
    sql: str, split: Callable[[str], Sequence[Statement]], index: int
) -> int | None:
    """1-based offset in ``sql`` where its ``index``-th (0-based) statement starts."""
    try:
        statements = split(sql)
    except Exception:
        return None
    if index >= len(statements):
        return None
    statement = statements[index]
    line_start = 0
    for _ in range(statement.line - 1):
        line_start = sql.find("\n", line_start) + 1
        if line_start == 0:
            return None
    found = sql.find(statement.text[:64], line_start)
    return found + 1 if found != -1 else None


def _consume(
    pgconn: PGconn, on_commit: Callable[[], None] | None, on_settled: Callable[[], None] | None
) -> PQGen[tuple[PGresult | None, int]]:
    """Flush the query, then read every result (also while psycopg drains a query cancelled
    by Ctrl-C); return the first error and how many statements completed before it.
    ``on_commit`` is called for each COMMIT before the error, ``on_settled`` at the end."""
    from psycopg import generators, pq
    from psycopg.waiting import Wait

    status = pq.ExecStatus
    yield from generators.send(pgconn)
    failed: PGresult | None = None
    completed = 0
    # psycopg's ``generators.fetch`` per result costs a generator and a notifies check each:
    # a 100,000-statement migration is read here at about half the CPU time.
    is_busy, consume_input, get_result = pgconn.is_busy, pgconn.consume_input, pgconn.get_result
    while True:
        while is_busy():
            while not (yield Wait.R):
                pass
            consume_input()
        result = get_result()
        if result is None:
            if on_settled is not None:
                on_settled()
            return failed, completed
        if result.status == status.FATAL_ERROR:
            if failed is None:
                failed = result
        elif result.status in (status.COPY_IN, status.COPY_BOTH):
            yield from _refuse_copy_in(pgconn)
        elif result.status == status.COPY_OUT:
            yield from _discard_copy_out(pgconn)
        elif failed is None:
            completed += 1
            if on_commit is not None and result.command_status == b"COMMIT":
                on_commit()


def _refuse_copy_in(pgconn: PGconn) -> PQGen[None]:
    from psycopg import generators
    from psycopg.waiting import Wait

    from migretti_plugins.postgres.libpq import NO_COPY_DATA

    while pgconn.put_copy_end(NO_COPY_DATA) == 0:
        yield Wait.W
    yield from generators.send(pgconn)


def _discard_copy_out(pgconn: PGconn) -> PQGen[None]:
    from psycopg.waiting import Wait

    while True:
        nbytes, _ = pgconn.get_copy_data(1)
        if nbytes < 0:
            return
        if nbytes == 0:
            while not (yield Wait.R):
                pass
            pgconn.consume_input()


@hookimpl(trylast=True)
def mg_transaction(
    session: Session, conn: Any, rollback: bool
) -> AbstractContextManager[Any] | None:
    conn = _connection_of(conn)
    if conn is None:
        return None
    return transaction(conn, rollback)


@contextmanager
def transaction(
    conn: psycopg.Connection[Any] | libpq.LibpqConnection, rollback: bool = False
) -> Iterator[Any]:
    """``conn.transaction()`` with errors on BEGIN, COMMIT or RELEASE mapped to ``MgError``."""
    if _is_libpq(conn):
        with _libpq_transaction(conn, rollback):
            yield None
        return
    import psycopg

    assert isinstance(conn, psycopg.Connection)
    _depth[conn] = _depth.get(conn, 0) + 1
    try:
        with conn.transaction(force_rollback=rollback) as tx:
            yield tx
    except psycopg.Error as exc:
        raise error_from_psycopg(exc) from exc
    finally:
        _depth[conn] -= 1


@contextmanager
def _libpq_transaction(conn: Any, rollback: bool) -> Iterator[None]:
    """psycopg's ``Transaction`` on a ``LibpqConnection``: ``BEGIN`` when the session is
    idle, otherwise a savepoint named as psycopg names it; the block's end commits (or
    releases), an error or ``rollback`` rolls back, and the error goes on."""
    depth = _depth.get(conn, 0)
    outer = _transaction_status(conn) == _TRANS_IDLE
    savepoint = None if outer else f'"_pg3_{depth + 1}"'
    query(conn, "BEGIN" if outer else f"SAVEPOINT {savepoint}")
    _depth[conn] = depth + 1
    try:
        try:
            yield
        except BaseException:
            if not conn.closed:
                with suppress(MgError):
                    _end_libpq_transaction(conn, savepoint, rollback=True)
            raise
        _end_libpq_transaction(conn, savepoint, rollback)
    finally:
        _depth[conn] = depth


def _end_libpq_transaction(conn: Any, savepoint: str | None, rollback: bool) -> None:
    if savepoint is None:
        query(conn, "ROLLBACK" if rollback else "COMMIT")
    elif rollback:
        query(conn, f"ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}")
    else:
        query(conn, f"RELEASE SAVEPOINT {savepoint}")


@hookimpl(trylast=True)
def mg_query(
    session: Session, conn: Any, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]] | None:
    from migretti_plugins.postgres import libpq

    if not isinstance(conn, libpq.LibpqConnection) and not _is_psycopg(conn):
        return None
    return query(conn, sql, params)


def query(
    conn: psycopg.Connection[Any] | libpq.LibpqConnection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``%s`` placeholders; none means ``%`` is literal)."""
    from migretti_plugins.postgres import libpq

    refuse_nul(sql)
    if isinstance(conn, libpq.LibpqConnection):
        if conn.fallback is None:
            try:
                return conn.query(sql, params)
            except libpq.Unsupported:
                pass
            except libpq.ServerError as exc:
                raise _sql_error(exc) from None
            except libpq.ConnectError as exc:
                raise _lost(exc) from None
        conn = _upgrade(conn)
    import psycopg

    try:
        with conn.cursor() as cur:
            cur.execute(sql, tuple(params) if params else None, prepare=False)
            if cur.description is None:
                return []
            return [tuple(row) for row in cur.fetchall()]
    except psycopg.Error as exc:
        raise error_from_psycopg(exc) from None


# --- table-lock timeouts ----------------------------------------------------------------------


def _milliseconds(seconds: float) -> str:
    return f"'{max(1, round(seconds * 1000))}ms'"


@hookimpl(trylast=True)
def mg_timeout_sql(
    session: Session, lock_timeout: float, statement_timeout: float, local: bool
) -> str | None:
    set_ = "SET LOCAL" if local else "SET"
    parts: list[str] = []
    if lock_timeout > 0:
        parts.append(f"{set_} lock_timeout = {_milliseconds(lock_timeout)}")
    if statement_timeout > 0:
        parts.append(f"{set_} statement_timeout = {_milliseconds(statement_timeout)}")
    if not local and not parts:
        return "RESET lock_timeout; RESET statement_timeout"
    return "; ".join(parts)


# --- commits that need not wait for the disk ---------------------------------------------------

# Only this transaction's COMMIT stops waiting for its WAL flush (and for synchronous
# standbys); the setting ends with it, and the run's last migration commits as the session
# would. WAL is flushed (and replicated) in order, so that last COMMIT covers the others.
_UNFLUSHED = "SET LOCAL synchronous_commit = off"
# Where the WAL ends now, at or after this session's last COMMIT; and the WAL writer's
# delay: it flushes a commit that did not wait within three of them (PostgreSQL docs,
# "Asynchronous Commit").
_WAL_END = (
    "SELECT pg_current_wal_insert_lsn()::text, "
    "(SELECT setting::int FROM pg_settings WHERE name = 'wal_writer_delay')"
)
_FLUSHED = "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn"
FLUSH_POLL = 0.02
FLUSH_WAIT_LIMIT = 10.0


@hookimpl(trylast=True)
def mg_unflushed_commit_sql(session: Session) -> str | None:
    return _UNFLUSHED


@hookimpl(trylast=True)
def mg_wait_flushed(session: Session, conn: Any) -> bool | None:
    import time

    from migretti_plugins.postgres import libpq

    if not isinstance(conn, libpq.LibpqConnection) and not _is_psycopg(conn):
        return None
    end, delay_ms = query(conn, _WAL_END)[0]
    # Bounded: another session's WAL after this one's may sit unflushed longer.
    deadline = time.monotonic() + min(3 * int(delay_ms or 200) / 1000 + 0.5, FLUSH_WAIT_LIMIT)
    while not query(conn, _FLUSHED, (end,))[0][0] and time.monotonic() < deadline:
        time.sleep(FLUSH_POLL)
    return True


_INVALID_INDEXES = (
    "SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace "
    "WHERE NOT i.indisvalid ORDER BY 1"
)


@hookimpl(trylast=True)
def mg_invalid_indexes(session: Session, conn: Any) -> list[dict[str, str]] | None:
    from migretti_plugins.postgres import libpq

    if not isinstance(conn, libpq.LibpqConnection) and not _is_psycopg(conn):
        return None
    return [
        {"index": index, "table": table, "drop": f"DROP INDEX CONCURRENTLY {index};"}
        for index, table in query(conn, _INVALID_INDEXES)
    ]


_INVALID_INDEX_NOTE = (
    "a CREATE INDEX CONCURRENTLY that fails once it has begun its build leaves an INVALID "
    "index behind (mg status lists it); drop it with DROP INDEX CONCURRENTLY before retrying"
)


_PENDING_DETACH_NOTE = (
    "a DETACH PARTITION ... CONCURRENTLY that failed after its first step leaves the partition "
    "pending detach; complete it with ALTER TABLE ... DETACH PARTITION ... FINALIZE"
)


_MAY_HAVE_COMMITTED_NOTE = (
    "a procedure (CALL) or a DO block with COMMIT or ROLLBACK keeps what it committed "
    "before it failed (after a lock timeout mg does not run it again: that work would be "
    "done twice); check what it did before resolving the migration"
)


@hookimpl(trylast=True)
def mg_describe_statement(sql: str) -> StatementInfo | None:
    words = " ".join(sql.upper().split())
    concurrently = "CONCURRENTLY" in words
    concurrent_index = "INDEX CONCURRENTLY" in words and "DROP INDEX" not in words
    # Its first transaction marks the partition pending detach; a timeout in the second leaves
    # it so, and the same statement run again fails ("already pending detach").
    concurrent_detach = concurrently and "DETACH PARTITION" in words
    try:
        kind = statement_kind(sql)
    except Exception:  # a name for a message only: never worth a second error
        kind = None
    # In a no-transaction migration a procedure, or a DO block, may COMMIT: what it did
    # before failing stays, and it would be done again.
    committing = kind == "CALL" or (
        kind == "DO" and re.search(r"\b(COMMIT|ROLLBACK|CALL)\b", words) is not None
    )
    return StatementInfo(
        kind=kind,
        # a concurrent index build or reindex that failed leaves an INVALID index behind
        retry_safe=not (concurrently and ("INDEX" in words or "REINDEX" in words))
        and not concurrent_detach
        and not committing,
        note=_INVALID_INDEX_NOTE
        if concurrent_index
        else _PENDING_DETACH_NOTE
        if concurrent_detach
        else _MAY_HAVE_COMMITTED_NOTE
        if committing
        else None,
    )


MAX_KIND_WORDS = 4


def statement_kind(sql: str) -> str | None:
    """The leading keywords of the first statement in ``sql`` (``CREATE INDEX
    CONCURRENTLY``, ``ALTER TABLE``), or None when there are none.

    For error messages only, never on the path that runs migrations: sqlparse's lexer is
    the right tool to skip comments and find the leading keywords of any statement, and its
    cost does not matter once something failed.
    """
    import sqlparse
    from sqlparse import tokens

    for statement in sqlparse.parse(sql):
        words: list[str] = []
        for token in statement.flatten():  # type: ignore[no-untyped-call]
            if token.is_whitespace or token.ttype in tokens.Comment:
                continue
            if token.ttype in tokens.Keyword and not token.normalized.upper().startswith("IF"):
                words.append(token.normalized.upper())
                if len(words) < MAX_KIND_WORDS:
                    continue
            break
        if words:
            return " ".join(words)
    return None


@hookimpl(trylast=True)
def mg_describe_lock_holder(holder: LockHolder) -> str | None:
    parts = [f"pid {holder.pid}"]
    if holder.application_name:
        parts.append(repr(holder.application_name))
    if holder.state:
        parts.append(holder.state)
    if holder.since is not None:
        from datetime import datetime, timezone

        age = max(0.0, (datetime.now(timezone.utc) - holder.since).total_seconds())
        parts.append(f"transaction open for {age:.0f}s")
    return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


# Relations of the user's schemas: tables, partitioned tables, materialized views, indexes.
_SNAPSHOT = (
    "SELECT c.oid::bigint, format('%I.%I', n.nspname, c.relname), c.relkind::text, "
    "pg_relation_filenode(c.oid)::bigint, c.reltuples::float8 "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)
_OWN_LOCKS = (
    "SELECT relation::bigint, mode FROM pg_locks "
    "WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted AND relation IS NOT NULL"
)
_FILENODES = (
    "SELECT c.oid::bigint, pg_relation_filenode(c.oid)::bigint FROM pg_class c "
    "WHERE c.oid = ANY(%s::oid[])"
)
_SIZES = (
    "SELECT c.oid::bigint, c.reltuples::float8, pg_total_relation_size(c.oid)::bigint "
    "FROM pg_class c WHERE c.oid = ANY(%s::oid[])"
)
_LOCK_STRENGTH = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)


@hookimpl(trylast=True)
def mg_lock_probe(session: Session, conn: Any) -> AbstractContextManager[list[LockReport]] | None:
    conn = _psycopg_of(conn)
    if conn is None:
        return None
    return probe_locks(conn)


@contextmanager
def probe_locks(conn: psycopg.Connection[Any]) -> Iterator[list[LockReport]]:
    """The relation locks this backend took and the tables whose filenode changed while
    the block ran, among relations that existed before it; read before the caller's
    savepoint is rolled back. Nothing is measured when the block fails."""
    before = {row[0]: row for row in query(conn, _SNAPSHOT)}
    held = {(row[0], row[1]) for row in query(conn, _OWN_LOCKS)}
    reports: list[LockReport] = []
    yield reports
    locks = sorted(
        (
            (oid, mode)
            for oid, mode in query(conn, _OWN_LOCKS)
            if oid in before and (oid, mode) not in held
        ),
        key=lambda lock: (before[lock[0]][1], _strength(lock[1])),
    )
    tables = [oid for oid, row in before.items() if row[2] in ("r", "m")]
    now = dict(query(conn, _FILENODES, (tables,))) if tables else {}
    rewrites = sorted(
        oid for oid in tables if oid in now and now[oid] != before[oid][3] and now[oid]
    )
    # A rewrite takes ACCESS EXCLUSIVE: shown even when an earlier migration of the dry run
    # holds it already (pg_locks shows a lock once, with the migration that took it first).
    taken = set(locks)
    exclusive = [(oid, "AccessExclusiveLock") for oid in rewrites]
    if not taken.issuperset(exclusive):
        locks = sorted(
            taken.union(exclusive), key=lambda lock: (before[lock[0]][1], _strength(lock[1]))
        )
    touched = sorted({oid for oid, _ in locks} | set(rewrites), key=lambda o: before[o][1])
    sizes = {row[0]: row for row in query(conn, _SIZES, (touched,))} if touched else {}
    reports.append(
        LockReport(
            locks=tuple((before[oid][1], mode) for oid, mode in locks),
            rewrites=tuple(sorted(before[oid][1] for oid in rewrites)),
            tables=tuple(
                (
                    before[oid][1],
                    _rows(sizes.get(oid), before[oid]),
                    int(sizes[oid][2]) if oid in sizes else 0,
                )
                for oid in touched
            ),
        )
    )


def _rows(now: Any, before: Any) -> int | None:
    """The estimated rows: the current ``reltuples``, else the one from before the block (a
    rewrite of a table without indexes resets it to -1, unknown), else None."""
    for estimate in (now[1] if now else -1, before[4]):
        if estimate is not None and estimate >= 0:
            return int(estimate)
    return None


def _strength(mode: str) -> int:
    return _LOCK_STRENGTH.index(mode) if mode in _LOCK_STRENGTH else -1


_BLOCKERS = (
    "SELECT pid, application_name, state, xact_start FROM pg_stat_activity "
    "WHERE pid = ANY (pg_blocking_pids(%s)) ORDER BY xact_start NULLS LAST, pid"
)


@hookimpl(trylast=True)
def mg_lock_blockers(
    session: Session, conn: Any, after: float
) -> AbstractContextManager[list[LockHolder]] | None:
    conn = _connection_of(conn)
    if conn is None:
        return None
    pid = conn.backend_pid if _is_libpq(conn) else conn.info.backend_pid
    return watch_blockers(session, pid, after)


def watch_blockers(
    session: Session, pid: int, after: float
) -> AbstractContextManager[list[LockHolder]]:
    """While the block runs, after ``after`` seconds ask ``pg_blocking_pids`` on a second
    connection who keeps backend ``pid`` waiting: once the lock timeout fires, it no longer
    waits and nobody can tell any more.

    One watcher thread per session and backend serves every statement (a no-transaction
    migration of 100,000 statements enters this block 100,000 times): entering arms it,
    leaving disarms it and waits for a probe already under way, so the holders it finds are
    all in the list when the block ends. Starting and joining a thread per statement cost
    more than running the statement.
    """
    return _Watch(session, pid, after)


class _Watch:
    """The block of ``watch_blockers`` (a class: a generator-based context manager costs
    several times more to enter and leave, once per migration or statement)."""

    __slots__ = ("after", "found", "pid", "session", "watcher")

    def __init__(self, session: Session, pid: int, after: float) -> None:
        self.session, self.pid, self.after = session, pid, after
        self.found: list[LockHolder] = []
        self.watcher: _BlockerWatcher | None = None

    def __enter__(self) -> list[LockHolder]:
        import time

        key = (id(self.session), self.pid)
        with _WATCHERS_LOCK:
            watcher = _WATCHERS.get(key)
            start = watcher is None
            if watcher is None:
                watcher = _BlockerWatcher(self.session, self.pid, key)
                _WATCHERS[key] = watcher
            # Armed before its thread starts: the thread's first sleep is this poll.
            poll = max(0.005, min(self.after / 4, 0.5))
            if poll < watcher.poll and not start:
                watcher.wake.set()  # asleep for the longer poll: it would probe too late
            watcher.poll = poll
            watcher.armed = (self, time.monotonic() + self.after, self.found)
            if start:
                threading.Thread(target=watcher.run, name="mg-lock-blockers", daemon=True).start()
        self.watcher = watcher
        return self.found

    def __exit__(self, *exc: object) -> None:
        watcher = self.watcher
        if watcher is None:
            return
        with _WATCHERS_LOCK:
            watcher.armed = None
            probing = watcher.probing is self
        if probing:
            watcher.probed.wait(15)


class _BlockerWatcher:
    """The thread behind ``watch_blockers`` for one session and backend; it ends itself once
    nothing has been armed for a few seconds."""

    IDLE_EXIT = 5.0

    def __init__(self, session: Session, pid: int, key: tuple[int, int]) -> None:
        self.session, self.pid, self.key = session, pid, key
        self.poll = 0.5
        self.armed: tuple[object, float, list[LockHolder]] | None = None
        self.probing: object | None = None
        self.probed = threading.Event()
        self.probed.set()
        self.wake = threading.Event()  # set to end a sleep early (a shorter poll)

    def run(self) -> None:
        import time

        idle_since = time.monotonic()
        last: object | None = None
        delay = self.poll
        while True:
            if self.wake.wait(delay):
                self.wake.clear()
            delay = self.poll
            with _WATCHERS_LOCK:
                now = time.monotonic()
                armed = self.armed
                if armed is None:
                    if now - idle_since > self.IDLE_EXIT:
                        del _WATCHERS[self.key]
                        return
                    continue
                idle_since = now
                token, deadline, found = armed
                if token is last:
                    continue
                if now < deadline:
                    # Seen within a poll of being armed: probe on time, not a poll late.
                    delay = deadline - now
                    continue
                last = token
                self.probing = token
                self.probed.clear()
            try:
                self._probe(found)
            finally:
                with _WATCHERS_LOCK:
                    self.probing = None
                self.probed.set()

    def _probe(self, found: list[LockHolder]) -> None:
        try:
            other = self.session.hooks.connect(self.session)
        except Exception:
            return
        try:
            for row in query(other, _BLOCKERS, (self.pid,)):
                found.append(LockHolder(row[0], row[1] or None, row[3], row[2]))
        except Exception:
            pass
        finally:
            with suppress(Exception):
                other.close()


_WATCHERS: dict[tuple[int, int], _BlockerWatcher] = {}
_WATCHERS_LOCK = threading.Lock()


__all__ = [
    "connect_failure",
    "error_from_psycopg",
    "execute_script",
    "is_embedded",
    "libpq_params",
    "query",
    "setting_problem",
    "target_of",
    "transaction",
]
