"""A small PostgreSQL connection over libpq itself, through ``ctypes``.

Importing psycopg costs more than the whole of ``mg status`` otherwise does (it imports
``asyncio``, ``ssl``, ``logging`` and ``importlib.metadata``: about 0.25 s). The commands
that only read (``status``, ``list``, ``head``, ``verify``) say so (``Options.read_only``),
and ``apply`` and ``rollback`` without ``--dry-run`` say that all they do on the connection
goes through builtin hooks (``Options.light_connection``). When no third-party plugin is
loaded the builtin ``postgres`` plugin then connects through this module instead: the same
libpq library psycopg would load, opened with ``ctypes``.

What it does, and where it gives way to psycopg (``Unsupported``, or ``None`` from
``connect``), so that what a user sees is psycopg's in every case:

- The library: psycopg's own choice of implementation is followed. ``PSYCOPG_IMPL=python``
  or an installed ``psycopg_c`` mean the system's libpq (opened by its name, ``libpq.so.5``
  or ``libpq.5.dylib``; ``ctypes.util.find_library`` is not used, it runs subprocesses);
  otherwise the libpq of the ``psycopg_binary`` wheel (``psycopg_binary.libs/libpq-*.so.5*``
  or ``psycopg_binary/.dylibs/libpq.5.dylib``). On Windows, when none can be opened, or
  with ``MG_PSYCOPG_ONLY=1`` in the environment, nothing here is used.
- Connecting follows ``psycopg.connect``: the conninfo string is built as
  ``psycopg.conninfo.make_conninfo`` builds it, a host name is resolved with
  ``getaddrinfo`` into one attempt per address, each attempt is polled with psycopg's
  timeout (``connect_timeout``, at least 2 s, 130 s when 0 or unset), and a failure reads
  as psycopg's (the last attempt's message). Several hosts, ``load_balance_hosts=random``,
  ``target_session_attrs=prefer-standby`` and a ``connect_timeout`` that is not a number
  are left to psycopg, as is a session whose ``client_encoding`` is not UTF8 after
  connecting. A migration may ``SET client_encoding`` later: queries, parameters, text
  results and errors then follow the session's encoding, as psycopg's do.
- Queries wait for the server in ``select``, not inside libpq, so Ctrl-C (and SIGTERM,
  which mg turns into the same) interrupts them; the query is then cancelled on the
  server, as psycopg cancels it. Without parameters a query goes as one simple-protocol
  query (``%`` is literal) and answers the first result's rows, as psycopg's
  ``cursor.execute`` does; with parameters ``%s``
  placeholders (``%%`` a literal ``%``) become ``$1``, ``$2``... and the values are sent
  as text with the types psycopg gives them (``str`` untyped, ``int`` the smallest of
  int2/int4/int8/numeric, ``bool``, ``float``, ``None``). Any other placeholder or value
  type is ``Unsupported``.
- Results are text and are converted by the column's type as psycopg converts them:
  ``int2/int4/int8/oid`` to ``int``, ``bool``, ``text/varchar/bpchar/name/"char"/unknown``
  and ``void`` (psycopg has no loader for it and gives its text) to ``str``,
  ``float4/float8`` to ``float``, ``numeric`` to ``Decimal``, ``timestamp`` to
  a naive ``datetime`` and ``timestamptz`` to a ``datetime`` in the session's ``TimeZone``
  (``DateStyle`` is made ISO when the server's is not). Any other type, and any value
  these parsers do not take (infinity, BC dates, a time zone Python does not know), is
  ``Unsupported``: the caller runs the query again through psycopg, which gives its own
  value or error. A session that runs migrations (``writing``) is handed to psycopg only
  while it holds no transaction and no advisory lock (the ``postgres`` plugin checks): a
  new session would hold neither.
- Migrations (``execute``) go as one simple-protocol query, read as the plugin reads them
  through psycopg: the first error and the statements completed before it, ``COMMIT``s
  counted, ``COPY FROM STDIN`` refused and ``COPY TO STDOUT`` dropped; on Ctrl-C the query
  is cancelled and read to its end, as psycopg's ``Connection.wait`` does. Notices are
  dropped, as psycopg drops them when no handler is added (libpq's own receiver would print
  them), or their SQLSTATEs collected while ``notices`` is a list.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migretti_core.interrupts import HELD_SIGNALS

# ctypes is imported when the library is first looked for: `mg --help` does not pay for it.

# Environment variable that turns this module off: every connection goes through psycopg.
PSYCOPG_ONLY = "MG_PSYCOPG_ONLY"

_DEFAULT_CONNECT_TIMEOUT = 130  # psycopg's, for connect_timeout 0 or unset

# PQstatus, PQconnectPoll, PQresultStatus
_CONNECTION_OK = 0
_CONNECTION_BAD = 1
_POLLING_FAILED = 0
_POLLING_READING = 1
_POLLING_WRITING = 2
_POLLING_OK = 3
_PGRES_TUPLES_OK = 2
_PGRES_FATAL_ERROR = 7
_PGRES_COPY_OUT = 3
_PGRES_COPY_IN = 4
_PGRES_COPY_BOTH = 8
# PQtransactionStatus
TRANS_IDLE = 0
TRANS_ACTIVE = 1
TRANS_INTRANS = 2
TRANS_INERROR = 3
# How long a query cancelled by Ctrl-C may take to end before the session is given up (psycopg's)
_CANCEL_WAIT = 5.0

# PQresultErrorField codes
_DIAG_SQLSTATE = ord("C")
_DIAG_MESSAGE_PRIMARY = ord("M")
_DIAG_MESSAGE_DETAIL = ord("D")
_DIAG_MESSAGE_HINT = ord("H")
_DIAG_STATEMENT_POSITION = ord("P")
_DIAG_CONTEXT = ord("W")


# Queries of this many bytes or more are sent by ``_send_waiting``.
_SENT_BY_THREAD = 1 << 20


class Unsupported(Exception):
    """Something this connection does not do as psycopg would: use psycopg for it."""


class ConnectError(Exception):
    """A failed connection, worded as psycopg words it (``str`` of psycopg's error)."""


class ConninfoError(Exception):
    """A connection string libpq cannot parse; the text is libpq's reason."""


# --- the library ------------------------------------------------------------------------


_library: list[Any] = []  # [CDLL or None] once looked for


def library() -> Any | None:
    """libpq as psycopg would load it, with the functions used here declared; None when
    this module is not to be used (see the module's docstring)."""
    if _library:
        return _library[0]
    lib = None
    if os.environ.get(PSYCOPG_ONLY, "").strip().lower() in ("", "0", "false", "no", "off"):
        import ctypes

        for path in _candidates():
            try:
                lib = _declare(ctypes.CDLL(path))
                break
            except (OSError, AttributeError):
                continue
    _library.append(lib)
    return lib


def _candidates() -> list[str]:
    if sys.platform == "win32":
        return []
    system = "libpq.5.dylib" if sys.platform == "darwin" else "libpq.so.5"
    impl = os.environ.get("PSYCOPG_IMPL", "").lower()
    if impl in ("python", "c"):
        return [system]
    import importlib.util

    try:
        if impl != "binary" and importlib.util.find_spec("psycopg_c") is not None:
            return [system]
        spec = importlib.util.find_spec("psycopg_binary")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return [] if impl == "binary" else [system]
    found: list[str] = []
    for location in spec.submodule_search_locations:
        package = os.path.abspath(location)
        if sys.platform == "darwin":
            candidate = os.path.join(package, ".dylibs", "libpq.5.dylib")
            if os.path.exists(candidate):
                found.append(candidate)
            continue
        libs = package + ".libs"
        try:
            names = sorted(os.listdir(libs))
        except OSError:
            continue
        found.extend(
            os.path.join(libs, name)
            for name in names
            if name.startswith("libpq-") and ".so.5" in name
        )
    return found


def _declare(lib: Any) -> Any:
    from ctypes import CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_uint, c_void_p

    class ConninfoOption(Structure):
        _fields_ = [
            ("keyword", c_char_p),
            ("envvar", c_char_p),
            ("compiled", c_char_p),
            ("val", c_char_p),
            ("label", c_char_p),
            ("dispchar", c_char_p),
            ("dispsize", c_int),
        ]

    def fn(name: str, restype: Any, *argtypes: Any) -> None:
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = list(argtypes)

    options = POINTER(ConninfoOption)
    fn("PQconndefaults", options)
    fn("PQconninfoParse", options, c_char_p, POINTER(c_char_p))
    fn("PQconninfoFree", None, options)
    fn("PQfreemem", None, c_void_p)
    fn("PQconnectStart", c_void_p, c_char_p)
    fn("PQconnectPoll", c_int, c_void_p)
    fn("PQsocket", c_int, c_void_p)
    fn("PQstatus", c_int, c_void_p)
    fn("PQerrorMessage", c_char_p, c_void_p)
    fn("PQparameterStatus", c_char_p, c_void_p, c_char_p)
    fn("PQbackendPID", c_int, c_void_p)
    fn("PQpass", c_char_p, c_void_p)
    fn("PQfinish", None, c_void_p)
    fn("PQsendQuery", c_int, c_void_p, c_char_p)
    fn("PQsetnonblocking", c_int, c_void_p, c_int)
    fn("PQflush", c_int, c_void_p)
    pointers = (c_void_p, c_void_p, c_void_p, c_void_p)  # types, values, lengths, formats
    fn("PQsendQueryParams", c_int, c_void_p, c_char_p, c_int, *pointers, c_int)
    fn("PQisBusy", c_int, c_void_p)
    fn("PQconsumeInput", c_int, c_void_p)
    fn("PQgetResult", c_void_p, c_void_p)
    fn("PQgetCancel", c_void_p, c_void_p)
    fn("PQcancel", c_int, c_void_p, c_char_p, c_int)
    fn("PQfreeCancel", None, c_void_p)
    fn("PQresultStatus", c_int, c_void_p)
    fn("PQresultErrorMessage", c_char_p, c_void_p)
    fn("PQresultErrorField", c_char_p, c_void_p, c_int)
    fn("PQntuples", c_int, c_void_p)
    fn("PQnfields", c_int, c_void_p)
    fn("PQftype", c_uint, c_void_p, c_int)
    fn("PQgetvalue", c_char_p, c_void_p, c_int, c_int)
    fn("PQgetisnull", c_int, c_void_p, c_int, c_int)
    fn("PQclear", None, c_void_p)
    fn("PQtransactionStatus", c_int, c_void_p)
    fn("PQserverVersion", c_int, c_void_p)
    fn("PQcmdStatus", c_char_p, c_void_p)
    fn("PQputCopyEnd", c_int, c_void_p, c_char_p)
    fn("PQgetCopyData", c_int, c_void_p, POINTER(c_void_p), c_int)
    lib.NoticeReceiver = CFUNCTYPE(None, c_void_p, c_void_p)
    fn("PQsetNoticeReceiver", c_void_p, c_void_p, lib.NoticeReceiver, c_void_p)
    # Second handles without argtypes, for the calls made once per value (see _rows).
    lib.getvalue = lib["PQgetvalue"]
    lib.getvalue.restype = c_char_p
    lib.getisnull = lib["PQgetisnull"]
    lib.getisnull.restype = c_int
    return lib


# --- connection strings ---------------------------------------------------------------------


def _options(lib: Any, array: Any) -> list[Any]:
    found = []
    i = 0
    while array[i].keyword is not None:
        found.append(array[i])
        i += 1
    return found


_DEFAULTS: dict[str, tuple[str | None, str | None]] = {}  # keyword: (envvar, compiled)


def _defaults(lib: Any) -> dict[str, tuple[str | None, str | None]]:
    """Each keyword's environment variable and compiled-in default (``PQconndefaults``),
    read once: they do not change while the library is loaded."""
    if not _DEFAULTS:
        array = lib.PQconndefaults()
        if not array:
            raise MemoryError("couldn't allocate connection defaults")
        try:
            for opt in _options(lib, array):
                _DEFAULTS[opt.keyword.decode()] = (
                    opt.envvar.decode() if opt.envvar else None,
                    opt.compiled.decode() if opt.compiled else None,
                )
        finally:
            lib.PQconninfoFree(array)
    return _DEFAULTS


def keywords(lib: Any) -> frozenset[str]:
    """libpq's connection keywords."""
    return frozenset(_defaults(lib))


def env_vars(lib: Any) -> dict[str, str]:
    """Each keyword's environment variable, where it has one."""
    return {key: var for key, (var, _) in _defaults(lib).items() if var}


def parse_conninfo(lib: Any, conninfo: str) -> dict[str, str]:
    """The parameters a URL or ``key=value`` string sets (``psycopg.conninfo_to_dict``);
    raises ``ConninfoError`` with libpq's reason."""
    from ctypes import byref, c_char_p

    error = c_char_p()
    array = lib.PQconninfoParse(conninfo.encode(), byref(error))
    if not array:
        if not error:
            raise MemoryError("couldn't allocate on conninfo parse")
        reason = (error.value or b"").decode("utf8", "replace")
        lib.PQfreemem(error)
        raise ConninfoError(reason)
    try:
        return {
            opt.keyword.decode(): opt.val.decode()
            for opt in _options(lib, array)
            if opt.val is not None
        }
    finally:
        lib.PQconninfoFree(array)


_ESCAPE = re.compile(r"([\\'])")
_SPACE = re.compile(r"\s")


def conninfo_of(params: Mapping[str, str]) -> str:
    """``key=value`` pairs quoted as ``psycopg.conninfo.make_conninfo`` quotes them."""
    return " ".join(f"{key}={_quote(str(value))}" for key, value in params.items())


def _quote(value: str) -> str:
    if not value:
        return "''"
    value = _ESCAPE.sub(r"\\\1", value)
    return f"'{value}'" if _SPACE.search(value) else value


# --- connecting -----------------------------------------------------------------------------


def attempts(lib: Any, params: Mapping[str, str]) -> list[dict[str, str]] | None:
    """psycopg's connection attempts for ``params`` (``conninfo_attempts``), or None when
    psycopg should make them (several hosts, load balancing, prefer-standby).

    Raises ``ConnectError`` with psycopg's words when the host name cannot be resolved."""
    env = env_vars(lib)

    def get(key: str) -> str | None:
        if key in params:
            return str(params[key])
        var = env.get(key)
        return os.environ.get(var) if var else None

    for key in ("host", "hostaddr", "port"):
        if "," in (get(key) or ""):
            return None
    if get("load_balance_hosts") == "random" or get("target_session_attrs") == "prefer-standby":
        return None
    host = get("host")
    if not host or host.startswith("/") or host[1:2] == ":" or get("hostaddr"):
        return [dict(params)]
    if _is_ip_address(host):
        return [{**params, "hostaddr": host}]
    import socket

    port = get("port") or _compiled_port(lib)
    try:
        found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(f"failed to resolve host {host!r}: {exc}") from None
    return [{**params, "hostaddr": str(item[4][0])} for item in found]


def _compiled_port(lib: Any) -> str:
    return _defaults(lib).get("port", (None, None))[1] or "5432"


def _is_ip_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def connect_timeout(value: str | None) -> int | None:
    """psycopg's timeout for one attempt; None when psycopg should judge the value."""
    if value is None:
        return _DEFAULT_CONNECT_TIMEOUT
    try:
        timeout = int(float(value))
    except ValueError:
        return None
    if timeout <= 0:
        return _DEFAULT_CONNECT_TIMEOUT
    return max(timeout, 2)


def connect(
    lib: Any, attempts: Sequence[Mapping[str, str]], timeout: int
) -> LibpqConnection | None:
    """Try each attempt in turn as psycopg does; raise ``ConnectError`` with the last
    failure's text. None when the session is not one this connection can serve (its
    ``client_encoding`` is not UTF8, or its ``DateStyle`` cannot be made ISO): the caller
    connects with psycopg."""
    import time

    error = ""
    for attempt in attempts:
        pgconn = lib.PQconnectStart(conninfo_of(attempt).encode())
        if not pgconn:
            raise MemoryError("couldn't allocate PGconn")
        deadline = time.monotonic() + timeout
        try:
            error = _poll(lib, pgconn, deadline)
        except BaseException:
            lib.PQfinish(pgconn)
            raise
        if error:
            lib.PQfinish(pgconn)
            continue
        conn = LibpqConnection(lib, pgconn)
        try:
            if conn.parameter_status("client_encoding") != "UTF8":
                conn.close()
                return None
            conn.ensure_iso_dates()
        except Exception:
            conn.close()
            return None  # a session this module cannot set up: psycopg's turn
        except BaseException:
            conn.close()
            raise
        return conn
    raise ConnectError(error)


def _poll(lib: Any, pgconn: int, deadline: float) -> str:
    """Drive ``PQconnectPoll`` to the end; the error text as psycopg words it, or ""."""
    import select
    import time

    while True:
        if lib.PQstatus(pgconn) == _CONNECTION_BAD:
            return f"connection is bad: {_text(lib.PQerrorMessage(pgconn))}"
        status = lib.PQconnectPoll(pgconn)
        if status == _POLLING_OK:
            return ""
        if status == _POLLING_FAILED:
            return f"connection failed: {_text(lib.PQerrorMessage(pgconn))}"
        if status not in (_POLLING_READING, _POLLING_WRITING):
            return f"unexpected poll status: {status}"
        fileno = lib.PQsocket(pgconn)
        left = deadline - time.monotonic()
        wait = [fileno]
        if left <= 0 or not any(
            select.select(wait, [], wait, left)
            if status == _POLLING_READING
            else select.select([], wait, wait, left)
        ):
            return "connection timeout expired"


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


# --- the connection -------------------------------------------------------------------------

# The severity libpq puts before a message (English; psycopg also knows the translations).
_SEVERITY = re.compile(r"^(?:DEBUG|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC):\s+")


class LibpqConnection:
    """An open libpq session in autocommit mode: ``query`` and ``close``.

    ``fallback`` is the psycopg connection the ``postgres`` plugin opened in its place when
    something was ``Unsupported`` here (opened by ``opener``, which the plugin sets); from
    then on it serves every call.
    """

    def __init__(self, lib: Any, pgconn: int) -> None:
        self._lib = lib
        self._pgconn: int | None = pgconn
        self._tz: Any = None
        self.fallback: Any = None
        self.opener: Callable[[], Any] | None = None
        # The session runs migrations: giving way to psycopg would drop its advisory lock.
        self.writing = False
        # SQLSTATEs of the notices received while this is a list; otherwise they are
        # dropped, as psycopg drops them (libpq's own receiver would print them).
        self.notices: list[str] | None = None
        self._receiver = lib.NoticeReceiver(self._notice)
        lib.PQsetNoticeReceiver(pgconn, self._receiver, None)

    def _notice(self, arg: int | None, result: int | None) -> None:
        notices = self.notices
        if notices is not None and result:
            sqlstate = self._lib.PQresultErrorField(result, _DIAG_SQLSTATE)
            notices.append(sqlstate.decode("ascii", "replace") if sqlstate else "")

    def ensure_iso_dates(self) -> None:
        """Dates and times come as ISO text, the only form parsed here."""
        if not (self.parameter_status("DateStyle") or "").startswith("ISO"):
            self.query("SET DateStyle TO ISO")

    @property
    def closed(self) -> bool:
        return self._pgconn is None and self.fallback is None

    def _conn(self) -> int:
        if self._pgconn is None:
            raise ConnectError("the connection is closed")
        return self._pgconn

    @property
    def password(self) -> str:
        """The password the session was opened with, wherever libpq found it (the
        parameters, PGPASSWORD, a password file); empty when none was used."""
        value = self._lib.PQpass(self._conn())
        return value.decode("utf-8", "replace") if value else ""

    def parameter_status(self, name: str) -> str | None:
        value = self._lib.PQparameterStatus(self._conn(), name.encode())
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def encoding(self) -> str:
        """The session's ``client_encoding`` as Python names it, as psycopg's
        ``conn.info.encoding``: UTF8 when connected, but a migration may ``SET`` another,
        and what is sent and read after it follows, as it does on psycopg."""
        name = self.parameter_status("client_encoding")
        if name in (None, "UTF8"):
            return "utf-8"
        from psycopg import NotSupportedError
        from psycopg._encodings import pg2pyenc  # a rare session: psycopg's own table

        try:
            return pg2pyenc(name.encode())
        except NotSupportedError:  # no Python codec (EUC_TW): read as psycopg reads it
            return "utf-8"

    @property
    def backend_pid(self) -> int:
        return int(self._lib.PQbackendPID(self._conn()))

    @property
    def server_version(self) -> str | None:
        return self.parameter_status("server_version")

    def _failed(self, doing: str) -> ConnectError:
        """A lost connection, worded as psycopg's ``pq`` words it."""
        message = _SEVERITY.sub("", self.error_message(), count=1).strip()
        return ConnectError(f"{doing} failed: {message or 'no error details available'}")

    def error_message(self) -> str:
        return _text(self._lib.PQerrorMessage(self._conn()))

    def transaction_status(self) -> int:
        return int(self._lib.PQtransactionStatus(self._conn()))

    @property
    def server_version_num(self) -> int:
        return int(self._lib.PQserverVersion(self._conn()))

    def close_light(self) -> None:
        """End the libpq session only (its fallback has taken over)."""
        pgconn, self._pgconn = self._pgconn, None
        if pgconn is not None:
            self._lib.PQfinish(pgconn)

    def close(self) -> None:
        self.close_light()
        fallback, self.fallback = self.fallback, None
        if fallback is not None:
            fallback.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` (see the module's docstring). Raises ``ServerError`` for an
        error the server reported, ``ConnectError`` for a lost connection, and
        ``Unsupported``."""
        lib = self._lib
        pgconn = self._conn()
        encoding = self.encoding  # asked of libpq once per query, not per use
        if params:
            from ctypes import c_char_p, c_uint

            text, values, types = _bind(sql, params, encoding)
            count = len(values)
            sent = lib.PQsendQueryParams(
                pgconn,
                text.encode(encoding),
                count,
                (c_uint * count)(*types),
                (c_char_p * count)(*values),
                None,
                None,
                0,
            )
        else:
            sent = lib.PQsendQuery(pgconn, sql.encode(encoding))
        if not sent:
            raise self._failed("sending query and params" if params else "sending query")
        results = self._results()
        try:
            if not results:
                raise ConnectError(self.error_message())
            for result in results:
                self._check(result)
            first = results[0]
            return self._rows(first) if lib.PQresultStatus(first) == _PGRES_TUPLES_OK else []
        finally:
            for result in results:
                lib.PQclear(result)

    def _results(self) -> list[int]:
        """Every result of the query sent, waiting for the server in ``select`` (not inside
        libpq), so that Ctrl-C interrupts the wait; the query is then cancelled on the
        server, as psycopg does."""
        import select

        lib = self._lib
        pgconn = self._conn()
        results: list[int] = []
        try:
            while True:
                while lib.PQisBusy(pgconn):
                    fileno = lib.PQsocket(pgconn)
                    select.select([fileno], [], [fileno])
                    if not lib.PQconsumeInput(pgconn):
                        # psycopg's fetch: an error already received is the answer (the
                        # session ended after it, as an idle timeout or termination does)
                        if any(lib.PQresultStatus(r) == _PGRES_FATAL_ERROR for r in results):
                            return results
                        raise self._failed("consuming input")
                result = lib.PQgetResult(pgconn)
                if not result:
                    return results
                results.append(result)
                if lib.PQresultStatus(result) in (
                    _PGRES_COPY_IN,
                    _PGRES_COPY_OUT,
                    _PGRES_COPY_BOTH,
                ):
                    raise Unsupported("COPY")
        except BaseException as exc:
            for result in results:
                lib.PQclear(result)
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                self._cancel()
            raise

    def execute(
        self,
        data: bytes | bytearray,
        on_commit: Callable[[], None] | None = None,
        on_settled: Callable[[], None] | None = None,
    ) -> tuple[ServerError | None, int]:
        """Send ``data`` (no NUL in it) as one simple-protocol query and read every result,
        as psycopg's ``conn.wait`` reads them for the ``postgres`` plugin. A ``bytearray``
        is emptied once libpq has taken its copy.

        Answers the first error and how many statements completed before it; ``on_commit``
        is called for each ``COMMIT`` before the error, ``on_settled`` once every result is
        read and counted (not when an interruption came while one was being counted).
        ``COPY FROM STDIN`` is refused and ``COPY TO STDOUT`` read and dropped. On Ctrl-C
        (or SIGTERM) the query is cancelled and its results read to the end, for at most
        5 s, before the interruption goes on; a second one, or a server that does not end
        the query, closes the session. Raises ``ConnectError`` when nothing could be sent or
        read.
        """
        from ctypes import c_char

        lib = self._lib
        pgconn = self._conn()
        # A large query is sent in blocking mode, by a thread of its own (``_send_waiting``);
        # any other in non-blocking mode: libpq takes the whole query into its buffer and
        # sends what the link takes, and the rest goes in ``_flush``. Either way a signal is
        # seen while the query is on its way.
        large = len(data) >= _SENT_BY_THREAD
        if lib.PQsetnonblocking(pgconn, 0 if large else 1) != 0:
            raise self._failed("sending query")
        sent = 0
        try:
            query: Any = data
            if isinstance(data, bytearray):
                data.append(0)
                # The bytes in place, no copy, seen as an array of one char: libpq reads up
                # to the NUL, and a type per length would cost 16 us and stay cached for good.
                query = (c_char * 1).from_buffer(data)
            try:
                sent = self._send_waiting([query]) if large else lib.PQsendQuery(pgconn, query)
                if not sent:
                    lib.PQsetnonblocking(pgconn, 0)
                    raise self._failed("sending query")
                if not large:
                    self._flush()
            except BaseException as exc:
                if not isinstance(exc, ConnectError) or sent or large:
                    # Part of the query is on its way: it cannot be taken back, and the
                    # server runs nothing of it until it has all of it. Ending the session
                    # drops it whole.
                    self.close_light()
                raise
            finally:
                del query
        finally:
            if isinstance(data, bytearray):
                # libpq holds its own copy: a large query is not kept twice while it runs.
                # Let go once it is sent, while the server works, not before.
                data.clear()
        reading = _Reading(on_commit, on_settled)
        try:
            lib.PQsetnonblocking(pgconn, 0)
            held = _hold_signals(reading) if on_commit is not None else None
            try:
                self._read(reading, None)
            finally:
                if held:
                    _release_signals(held)
        except (KeyboardInterrupt, SystemExit):
            # Raised while a result was being taken and counted (not while waiting for one):
            # that result may be lost to the count, so the count is not vouched for.
            reading.uncertain = reading.uncertain or reading.busy
            reading.busy = False
            if self.transaction_status() == TRANS_ACTIVE:
                try:
                    self._cancel()
                    self._read(reading, _CANCEL_WAIT)
                except BaseException as again:
                    self.close_light()  # the session is in an unknown state
                    if not isinstance(again, Exception):
                        raise
            raise
        if not reading.answered:
            raise ConnectError(self.error_message())
        return reading.failed, reading.completed

    def _flush(self) -> None:
        """Wait until libpq has sent the whole query, reading what the server sends
        meanwhile (so neither side waits for the other)."""
        import select

        lib = self._lib
        pgconn = self._conn()
        while True:
            state = lib.PQflush(pgconn)
            if state == 0:
                return
            if state < 0:
                raise self._failed("sending query")
            fileno = lib.PQsocket(pgconn)
            readable, _, broken = select.select([fileno], [fileno], [fileno])
            if (readable or broken) and not lib.PQconsumeInput(pgconn):
                raise self._failed("sending query")

    def _send_waiting(self, box: list[Any]) -> int:
        """``PQsendQuery`` of a large query, libpq in blocking mode, run by a thread of its
        own while this one waits where a signal still interrupts it.

        In non-blocking mode each ``PQflush`` moves what is left of the query to the front
        of libpq's buffer: sending 19 MB over a Unix socket took some 70 such calls (30 ms),
        100 MB some 290 (1.7 s); blocking mode sends it all in one call and moves nothing.
        On an interruption the socket is shut down, which ends the send at once, and the
        caller ends the session. The query comes in ``box``, which the thread empties: it lets
        go of the query before it says it is done, so the caller can free the bytes."""
        import threading

        lib = self._lib
        pgconn = self._conn()
        outcome: list[int] = []
        done = threading.Event()

        def send() -> None:
            query = box.pop()
            try:
                outcome.append(lib.PQsendQuery(pgconn, query))
            finally:
                del query
                done.set()

        threading.Thread(target=send, name="mg-send", daemon=True).start()
        try:
            done.wait()
        except BaseException:
            self._stop_sending(done)
            raise
        return outcome[0] if outcome else 0

    def _stop_sending(self, done: Any) -> None:
        """End a send in progress in another thread (``_send_waiting``) by shutting the socket
        down, and wait for that thread to leave libpq: the session is ended next, and must
        not be freed under it."""
        import socket

        fileno = self._lib.PQsocket(self._conn())
        if fileno >= 0:
            try:
                with socket.socket(fileno=os.dup(fileno)) as link:
                    link.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        while True:
            try:
                if done.wait(1.0):
                    return
            except BaseException:  # a second Ctrl-C: the first is being handled
                continue

    def _read(self, reading: _Reading, timeout: float | None) -> None:
        import select
        import time

        lib = self._lib
        pgconn = self._conn()
        deadline = None if timeout is None else time.monotonic() + timeout
        fatal = _PGRES_FATAL_ERROR
        while True:
            while lib.PQisBusy(pgconn):
                fileno = lib.PQsocket(pgconn)
                if deadline is None:
                    select.select([fileno], [], [fileno])
                elif not any(
                    select.select([fileno], [], [fileno], max(0.0, deadline - time.monotonic()))
                ):
                    raise TimeoutError("the query did not end after it was cancelled")
                if not lib.PQconsumeInput(pgconn):
                    raise self._failed("consuming input")
            reading.busy = True
            result = lib.PQgetResult(pgconn)
            if not result:
                reading.busy = False
                if reading.on_settled is not None and not reading.uncertain:
                    reading.on_settled()
                if reading.pending is not None:
                    _raise_pending(reading)
                return
            reading.answered = True
            try:
                status = lib.PQresultStatus(result)
                if status == fatal:
                    if reading.failed is None:
                        reading.failed = _server_error(lib, result, self.encoding)
                elif status in (_PGRES_COPY_IN, _PGRES_COPY_BOTH):
                    lib.PQputCopyEnd(pgconn, NO_COPY_DATA)
                elif status == _PGRES_COPY_OUT:
                    self._discard_copy_out()
                elif reading.failed is None:
                    reading.completed += 1
                    if reading.on_commit is not None and lib.PQcmdStatus(result) == b"COMMIT":
                        reading.on_commit()
            finally:
                lib.PQclear(result)
            reading.busy = False
            if reading.pending is not None:
                _raise_pending(reading)

    def _discard_copy_out(self) -> None:
        import select
        from ctypes import byref, c_void_p

        lib = self._lib
        pgconn = self._conn()
        buffer = c_void_p()
        while True:
            nbytes = lib.PQgetCopyData(pgconn, byref(buffer), 1)
            if nbytes > 0:
                lib.PQfreemem(buffer)
            elif nbytes == 0:
                fileno = lib.PQsocket(pgconn)
                select.select([fileno], [], [fileno])
                if not lib.PQconsumeInput(pgconn):
                    raise self._failed("consuming input")
            else:
                return

    def _cancel(self) -> None:
        from ctypes import create_string_buffer

        lib = self._lib
        cancel = lib.PQgetCancel(self._conn())
        if cancel:
            try:
                lib.PQcancel(cancel, create_string_buffer(256), 256)
            finally:
                lib.PQfreeCancel(cancel)

    def _check(self, result: int) -> None:
        lib = self._lib
        if lib.PQresultStatus(result) != _PGRES_FATAL_ERROR:
            return
        error = _server_error(lib, result, self.encoding)
        if error.sqlstate is None or not error.primary:
            raise ConnectError(_text(lib.PQresultErrorMessage(result)) or self.error_message())
        raise error

    def _rows(self, result: int) -> list[tuple[Any, ...]]:
        import gc
        from ctypes import c_void_p

        lib = self._lib
        nrows = lib.PQntuples(result)
        ncols = lib.PQnfields(result)
        encoding = self.encoding
        columns = [
            (col, self._converter(lib.PQftype(result, col), encoding)) for col in range(ncols)
        ]
        # The two calls made per value take the result as a ready ctypes object and plain
        # ints, without argtypes: converting each argument costs more than the call.
        handle = c_void_p(result)
        getvalue = lib.getvalue
        isnull = lib.getisnull
        collecting = gc.isenabled()
        gc.disable()  # thousands of tuples, none in a cycle: nothing for the collector
        try:
            # libpq gives b"" for NULL: only an empty value can be one
            return [
                tuple(
                    [
                        convert(raw)
                        if (raw := getvalue(handle, row, col)) or not isnull(handle, row, col)
                        else None
                        for col, convert in columns
                    ]
                )
                for row in range(nrows)
            ]
        finally:
            if collecting:
                gc.enable()

    def _converter(self, oid: int, encoding: str = "utf-8") -> Callable[[bytes], Any]:
        convert = _CONVERTERS.get(oid)
        if convert is not None:
            if convert is bytes.decode and encoding != "utf-8":
                if encoding == "ascii":  # SQL_ASCII: psycopg gives bytes, not text
                    raise Unsupported("text in SQL_ASCII")
                return lambda raw: raw.decode(encoding)
            return convert
        if oid == _TIMESTAMPTZ:
            return _timestamptz_of(self._timezone())
        raise Unsupported(f"type oid {oid}")

    def _timezone(self) -> Any:
        """The session's ``TimeZone`` as psycopg takes it (``psycopg._tz.get_tzinfo``)."""
        if self._tz is None:
            from datetime import timezone

            name = self.parameter_status("TimeZone")
            if name in (None, "UTC"):
                self._tz = timezone.utc
            else:
                from zoneinfo import ZoneInfo

                try:
                    self._tz = ZoneInfo(name)
                except Exception:
                    # psycopg logs a warning and uses UTC: let it
                    raise Unsupported(f"time zone {name!r}") from None
        return self._tz


class _Reading:
    """What ``LibpqConnection.execute`` has read of a query's results so far."""

    __slots__ = (
        "answered",
        "busy",
        "completed",
        "failed",
        "on_commit",
        "on_settled",
        "pending",
        "uncertain",
    )

    def __init__(
        self, on_commit: Callable[[], None] | None, on_settled: Callable[[], None] | None
    ) -> None:
        self.on_commit, self.on_settled = on_commit, on_settled
        self.failed: ServerError | None = None
        self.completed = 0
        self.answered = False
        self.busy = False  # between asking libpq for a result and counting it
        self.uncertain = False  # interrupted while busy: ``on_settled`` is not called
        # A signal held back while busy, with the handler it was meant for
        self.pending: tuple[int, Callable[[int, Any], Any]] | None = None


def _hold_signals(reading: _Reading) -> list[tuple[int, Any]] | None:
    """While a batch's results are read, a signal that lands between taking a result and
    counting it waits until the count is made, so what committed is known exactly.

    Only Python-level handlers can be held, and only in the main thread; others are left
    as they are. Answers what to put back.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    kept: list[tuple[int, Any]] = []
    for name in HELD_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        handler = signal.getsignal(signum)
        if callable(handler):
            kept.append((signum, handler))
            signal.signal(signum, _holding(reading, handler))
    return kept


def _holding(reading: _Reading, handler: Callable[[int, Any], Any]) -> Callable[[int, Any], Any]:
    def hold(signum: int, frame: Any) -> Any:
        if reading.busy:
            if reading.pending is None:
                reading.pending = (signum, handler)
            return None
        return handler(signum, frame)

    return hold


def _release_signals(kept: list[tuple[int, Any]]) -> None:
    import signal

    for signum, handler in kept:
        signal.signal(signum, handler)


def _raise_pending(reading: _Reading) -> None:
    """Deliver the signal held back while a result was counted."""
    assert reading.pending is not None
    signum, handler = reading.pending
    reading.pending = None
    handler(signum, None)


NO_COPY_DATA = b"COPY FROM STDIN has no data in a migration; load files with COPY FROM 'path'"


class ServerError(Exception):
    """An error the server reported, with its diagnostic fields. ``message`` is the primary
    message, or libpq's whole text when there is none (``primary`` is then False), as
    psycopg words an error result."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None,
        detail: str | None,
        hint: str | None,
        position: str | None,
        context: str | None,
        primary: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        self.position = position
        self.context = context
        self.primary = primary


def _server_error(lib: Any, result: int, encoding: str = "utf-8") -> ServerError:
    def field(code: int) -> str | None:
        value = lib.PQresultErrorField(result, code)
        return value.decode(encoding, "replace") if value else None

    message = field(_DIAG_MESSAGE_PRIMARY)
    whole = lib.PQresultErrorMessage(result)
    return ServerError(
        message if message is not None else (whole or b"").decode(encoding, "replace"),
        sqlstate=field(_DIAG_SQLSTATE),
        detail=field(_DIAG_MESSAGE_DETAIL),
        hint=field(_DIAG_MESSAGE_HINT),
        position=field(_DIAG_STATEMENT_POSITION),
        context=field(_DIAG_CONTEXT),
        primary=message is not None,
    )


# --- parameters -----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"%(.|\Z)", re.DOTALL)
_INT2, _INT4, _INT8, _NUMERIC, _BOOL, _FLOAT8 = 21, 23, 20, 1700, 16, 701


def _bind(
    sql: str, params: Sequence[Any], encoding: str = "utf-8"
) -> tuple[str, list[bytes | None], list[int]]:
    """``sql`` with ``$n`` for its ``%s``, and the values and types psycopg would send."""
    parts: list[str] = []
    count = 0
    start = 0
    for match in _PLACEHOLDER.finditer(sql):
        kind = match.group(1)
        if kind == "%":
            parts.append(sql[start : match.start()] + "%")
        elif kind == "s":
            count += 1
            parts.append(f"{sql[start : match.start()]}${count}")
        else:
            raise Unsupported(f"placeholder %{kind}")
        start = match.end()
    parts.append(sql[start:])
    if count != len(params):
        raise Unsupported("placeholders and parameters differ in number")
    values: list[bytes | None] = []
    types: list[int] = []
    for value in params:
        if value is None:
            values.append(None)
            types.append(0)
        elif isinstance(value, bool):
            values.append(b"t" if value else b"f")
            types.append(_BOOL)
        elif isinstance(value, int):
            values.append(str(value).encode())
            types.append(_int_oid(value))
        elif isinstance(value, str):
            if "\0" in value:
                raise Unsupported("NUL in a parameter")
            values.append(value.encode(encoding))
            types.append(0)
        elif isinstance(value, float):
            values.append(_float_text(value).encode())
            types.append(_FLOAT8)
        else:
            raise Unsupported(f"parameter of type {type(value).__name__}")
    return "".join(parts), values, types


def _int_oid(value: int) -> int:
    if -(2**15) <= value < 2**15:
        return _INT2
    if -(2**31) <= value < 2**31:
        return _INT4
    if -(2**63) <= value < 2**63:
        return _INT8
    return _NUMERIC


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


# --- results --------------------------------------------------------------------------------

_TIMESTAMP, _TIMESTAMPTZ = 1114, 1184
_DIGITS = frozenset(b"0123456789")


def _decimal(raw: bytes) -> Any:
    from decimal import Decimal

    return Decimal(raw.decode("ascii"))


_Fields = tuple[int, int, int, int, int, int, int]


def _parts(raw: bytes, aware: bool) -> tuple[_Fields, int]:
    """The fields of an ISO timestamp as PostgreSQL writes it with DateStyle ISO
    (``2026-11-27 05:17:14.77356+00``; the offset only for timestamptz) and the offset in
    seconds; ``Unsupported`` for anything else (infinity, BC, a year past 9999)."""
    if (
        len(raw) < 19
        or raw[4] != 45  # -
        or raw[7] != 45
        or raw[10] != 32  # space
        or raw[13] != 58  # :
        or raw[16] != 58
        or not _DIGITS.issuperset(
            raw[0:4] + raw[5:7] + raw[8:10] + raw[11:13] + raw[14:16] + raw[17:19]
        )
    ):
        raise Unsupported(f"timestamp {raw!r}")
    rest = raw[19:]
    micros = 0
    if rest[:1] == b".":
        end = 1
        while end < len(rest) and rest[end] in _DIGITS:
            end += 1
        fraction = rest[1:end]
        if not 1 <= len(fraction) <= 6:
            raise Unsupported(f"timestamp {raw!r}")
        micros = int(fraction.ljust(6, b"0"))
        rest = rest[end:]
    offset = 0
    if aware:
        sign = rest[:1]
        parts = rest[1:].split(b":")
        if (
            sign not in (b"+", b"-")
            or len(parts) > 3
            or not all(len(part) == 2 and _DIGITS.issuperset(part) for part in parts)
        ):
            raise Unsupported(f"timestamp {raw!r}")
        hours, minutes, seconds = (*(int(part) for part in parts), 0, 0)[:3]
        offset = 3600 * hours + 60 * minutes + seconds
        if sign == b"-":
            offset = -offset
    elif rest:
        raise Unsupported(f"timestamp {raw!r}")
    fields: _Fields = (
        int(raw[0:4]),
        int(raw[5:7]),
        int(raw[8:10]),
        int(raw[11:13]),
        int(raw[14:16]),
        int(raw[17:19]),
        micros,
    )
    return fields, offset


def _timestamp(raw: bytes) -> Any:
    from datetime import datetime

    try:
        # PostgreSQL's ISO form, which Python 3.11 reads in C; 3.10 needs the parser below
        value = datetime.fromisoformat(raw.decode("ascii"))
        if value.tzinfo is None:
            return value
    except ValueError:
        pass
    fields, _ = _parts(raw, False)
    try:
        return datetime(*fields)
    except ValueError:
        raise Unsupported(f"timestamp {raw!r}") from None


def _timestamptz_of(tz: Any) -> Callable[[bytes], Any]:
    """A converter to an aware ``datetime`` in ``tz``, as psycopg's: the instant moved to
    the session's time zone."""
    from datetime import datetime, timedelta, timezone

    fromisoformat = datetime.fromisoformat

    def timestamptz(raw: bytes) -> Any:
        try:
            value = fromisoformat(raw.decode("ascii"))
            if value.tzinfo is not None:
                return value.astimezone(tz)
        except (ValueError, OverflowError):
            pass
        fields, offset = _parts(raw, True)
        try:
            utc = datetime(*fields, tzinfo=timezone.utc)
            if offset:
                utc -= timedelta(seconds=offset)
            return utc.astimezone(tz)
        except (ValueError, OverflowError):
            raise Unsupported(f"timestamptz {raw!r}") from None

    return timestamptz


_CONVERTERS: dict[int, Callable[[bytes], Any]] = {
    16: b"t".__eq__,  # bool
    18: bytes.decode,  # "char" (UTF-8, the session's encoding)
    19: bytes.decode,  # name
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    25: bytes.decode,  # text
    26: int,  # oid
    700: float,  # float4
    701: float,  # float8
    705: bytes.decode,  # unknown
    1042: bytes.decode,  # bpchar
    1043: bytes.decode,  # varchar
    2278: bytes.decode,  # void: psycopg has no loader for it and gives its text, ""
    1700: _decimal,  # numeric
    _TIMESTAMP: _timestamp,
}
