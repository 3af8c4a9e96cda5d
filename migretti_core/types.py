"""The data that crosses hooks: frozen, so one plugin cannot corrupt what the next sees."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from migretti_core.records import record

if TYPE_CHECKING:
    from pathlib import Path

    from migretti_core.hooks import Hooks

Direction = Literal["up", "down"]
Status = Literal["applied", "failed", "running"]
Action = Literal["UP", "DOWN", "FIX", "BASELINE"]
Level = Literal["debug", "info", "warning", "error"]

DEFAULT_LOCK_ID = 894321
DEFAULT_LOCK_TIMEOUT = 600.0
DEFAULT_TABLE_LOCK_TIMEOUT = 5.0
DEFAULT_TABLE_LOCK_RETRIES = 10


@record(frozen=True)
class Key:
    """One key of a plugin's section, declared as tox's ``add_config`` does: name, type,
    default and help (for people and for ``Section.read``).

    ``kind`` names the ``Section`` reader: ``text``, ``boolean``, ``integer``, ``number``,
    ``duration``, ``strings`` or ``mapping``. A top-level key returned as a ``Key`` from
    ``mg_config_sections`` with ``as_written`` is kept as written in ``Config.settings``: its
    ``${VAR}`` references are not resolved, for a plugin that resolves them itself (with
    ``Config.environ``), as ``shellhooks`` and ``fleet`` do.
    """

    name: str
    kind: Literal["text", "boolean", "integer", "number", "duration", "strings", "mapping"]
    default: Any = None
    help: str = ""
    as_written: bool = False

    def describe(self) -> str:
        """``timeout (duration, default 5): how long to wait`` for listings and docs."""
        default = "" if self.default in (None, "", ()) else f", default {self.default}"
        return f"{self.name} ({self.kind}{default}): {self.help}".rstrip(": ")


@record(frozen=True)
class ConfigRequest:
    """What the configuration hook needs to find and build the configuration.

    ``env_name`` is already resolved (``--env`` wins over ``MG_ENV``); ``config_path`` is
    ``--config`` or ``MG_CONFIG`` when given, else None for ``./mg.yaml``.
    """

    cwd: Path
    config_path: Path | None
    env_name: str | None
    environ: Mapping[str, str]
    known_sections: frozenset[str] = frozenset()
    check_unknown: bool = True
    # Top-level keys whose owners resolve ``${VAR}`` themselves (``Key.as_written``).
    written_sections: frozenset[str] = frozenset()
    # What messages call the URL ``environ``'s ``MG_DATABASE_URL`` holds (``Config.url_origin``).
    url_origin: str = "MG_DATABASE_URL"


@record(frozen=True)
class Config:
    """The merged configuration of the selected profile, interpolated.

    ``settings`` is the full merged mapping (read-only); plugins read their own sections
    from it. ``database`` holds libpq parameters as strings exactly as written, or a single
    ``url`` key (``MG_DATABASE_URL`` replaces it whole). ``source`` is the file as written
    (every profile under ``envs``, no reference resolved, scalars as text) and ``environ``
    the variables ``${VAR}`` references are resolved against (the environment over ``.env``):
    for a plugin that checks its section in every profile or resolves references itself, as
    ``shellhooks`` does for hook commands. Neither is shown by ``repr``. ``url_origin`` is
    what an error calls a URL that came from ``MG_DATABASE_URL``: the variable for ``mg``,
    ``database_url`` for the Python API (which passes its argument in that way). ``label``
    names the file in messages as it was found (``mg.yaml``, ``../mg.yaml``, the text of
    ``--config``), so every error about it points at the file that was read.
    """

    path: Path | None
    root: Path
    env: str | None
    settings: Mapping[str, Any]
    database: Mapping[str, Any]
    migrations_dir: Path
    lock_id: int = DEFAULT_LOCK_ID
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    table_lock_timeout: float = DEFAULT_TABLE_LOCK_TIMEOUT
    table_lock_retries: int = DEFAULT_TABLE_LOCK_RETRIES
    statement_timeout: float = 0.0
    plugins: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    source: Mapping[str, Any] = field(default_factory=dict, repr=False)
    url_origin: str = field(default="MG_DATABASE_URL", repr=False)
    label: str = field(default="mg.yaml", repr=False)

    def __repr__(self) -> str:
        """The fields, passwords masked (``****``): a configuration gets printed and logged
        (``print(Migretti().config)``), and ``database`` holds the connection's password."""
        from urllib.parse import unquote, urlsplit

        from migretti_core.redact import redact

        secrets: set[str] = set()
        # password, and sslpassword (the passphrase of the client key) too
        for key, password in self.database.items():
            if str(key).lower().endswith("password") and isinstance(password, str) and password:
                secrets.add(password)
        url = self.database.get("url")
        if isinstance(url, str) and "://" in url:
            try:
                secret = urlsplit(url).password
            except ValueError:
                secret = None
            if secret:
                secrets.update({secret, unquote(secret)})
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return redact(f"{type(self).__qualname__}({shown})", secrets)


@record(frozen=True)
class Statement:
    """One SQL statement cut from a larger text; ``line`` is 1-based within that text."""

    text: str
    line: int


class FileText:
    """A text of a migration file that is not kept in memory: read again from the file each
    time it is asked for (``load``), and checked against the checksum the file was parsed
    with, so what is returned is always what was parsed, checksummed and checked.

    ``start``/``end`` are byte offsets in the file; ``length`` is the text's length in
    characters and ``blank`` whether it holds nothing but white space, both known without
    reading the file again. ``head``, when known, is the text before the up section (a
    file's header, what lint looks for ignore comments in beside the section). Equal (and
    hashed alike) when it names the same part of the same file content.
    """

    __slots__ = ("blank", "checksum", "end", "head", "length", "path", "size", "start")

    def __init__(
        self,
        path: Path,
        size: int,
        checksum: str,
        start: int,
        end: int,
        length: int,
        blank: bool,
        head: str | None = None,
    ) -> None:
        self.path = path
        self.head = head
        self.size = size
        self.checksum = checksum
        self.start = start
        self.end = end
        self.length = length
        self.blank = blank

    def _key(self) -> tuple[str, int, str, int, int]:
        return (str(self.path), self.size, self.checksum, self.start, self.end)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileText) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"FileText({str(self.path)!r}, bytes {self.start}-{self.end})"

    def load(self) -> str:
        """The text, from the file as it is now; ``MigrationFileError`` if the file changed.
        Inside ``read_once()``, the text read first."""
        held = _HELD.get()
        if held is None:
            loaded = self._read()
            kept = _KEPT.get()
            if kept is not None and kept.key == self._file_key():
                # Read for a caller that keeps the text (a no-transaction migration split into
                # statements, a dry run): the bytes are not needed beside it.
                kept.clear()
            return loaded
        text = held.get(self)
        if text is None:
            text = held[self] = self._read()
        return text

    def append_utf8(self, buffer: bytearray) -> None:
        """Append the text encoded in UTF-8 to ``buffer``, checked like ``load``.

        A ``FileText`` is made only for a file whose text is its bytes decoded (no BOM, no
        CR), so the encoded text is the file's own bytes: a database plugin sending a 20 MB
        migration appends them instead of decoding and encoding them again."""
        kept = _KEPT.get()
        if kept is not None and kept.data is not None and kept.key == self._file_key():
            # The bytes this file was parsed from: copied into the query and let go, so they
            # are not held beside the query's copies while it runs (a retry reads the file).
            data = kept.data
            kept.clear()
        else:
            held = _HELD.get()
            text = None if held is None else held.get(self)
            if text is not None:
                buffer += text.encode("utf-8")
                return
            data = self.file_bytes()
        with memoryview(data) as view:
            buffer += view[self.start : self.end]

    def file_bytes(self) -> bytes:
        """The whole file's bytes, as parsed: those kept by ``keep_file_bytes`` when they
        still are, else read again and checked against the size and SHA-256 it was parsed
        with (``MigrationFileError`` when it changed)."""
        kept = _KEPT.get()
        if kept is not None and kept.data is not None:
            if kept.key == self._file_key():
                return kept.data
            kept.clear()  # never kept beside another large file's bytes
        from migretti_core.textfiles import read_checked

        return read_checked(self.path, self.size, self.checksum)

    def _file_key(self) -> tuple[str, int, str]:
        return (str(self.path), self.size, self.checksum)

    def _read(self) -> str:
        data = self.file_bytes()
        if self.start == 0 and self.end == len(data):
            return data.decode("utf-8")
        with memoryview(data) as view:
            return str(view[self.start : self.end], "utf-8")


# The texts read inside ``read_once`` (a context variable: each thread has its own).
_HELD: ContextVar[dict[FileText, str] | None] = ContextVar("mg_file_texts", default=None)


class _Kept:
    """The bytes of one large file, kept by ``keeping_file_bytes``."""

    __slots__ = ("data", "key")

    def __init__(self) -> None:
        self.key: tuple[str, int, str] | None = None
        self.data: bytes | None = None

    def clear(self) -> None:
        self.key = self.data = None


_KEPT: ContextVar[_Kept | None] = ContextVar("mg_file_bytes", default=None)


@contextmanager
def keeping_file_bytes() -> Iterator[None]:
    """Within it, the bytes of the last large migration file parsed are kept (one file at
    most) until the query that runs it is built: its pre-flight checks, lint and query take
    them instead of reading the file again and checking its SHA-256 each time (about 20 ms
    for 19 MB, twice), and what runs is what was parsed and checksummed. The engine wraps
    a command that applies or rolls back in it. The bytes go when the command ends, when
    another large file is read, or when the query is built (``FileText.append_utf8``), so
    they are never held beside another large file or the copies of the query. While lint
    runs they are held beside the section's text: W2 peaks at its query all the same
    (docs/performance.md).
    """
    token = _KEPT.set(_Kept())
    try:
        yield
    finally:
        _KEPT.reset(token)


def keep_file_bytes(path: Path, migration: Migration, raw: bytes) -> None:
    """Keep ``raw``, the bytes of ``path`` that ``migration`` was just parsed from, inside
    ``keeping_file_bytes`` when its text is read on demand (a large file)."""
    kept = _KEPT.get()
    if kept is None:
        return
    text = migration.kept("text")
    if type(text) is FileText and text.size == len(raw) and text.path == path:
        kept.clear()  # the earlier file's first: never two held at once
        kept.key, kept.data = text._file_key(), raw


@contextmanager
def read_once() -> Iterator[None]:
    """Within it, a ``FileText`` is read from its file once and its text kept, dropped on
    leaving: for checks that follow each other (the engine's pre-flight checks and lint),
    not around a migration's execution, where the kept text would be one more copy. When a
    text was read, the memory the checks freed is given back to the system on leaving
    (``textfiles.return_free_memory``): the query is built next."""
    held: dict[FileText, str] = {}
    token = _HELD.set(held)
    try:
        yield
    finally:
        _HELD.reset(token)
        if held:  # a large file was read: give what the checks left back before it runs
            held.clear()
            from migretti_core.textfiles import return_free_memory

            return_free_memory()


class _OnDemand:
    """A field of ``Migration`` that may hold a ``FileText``, loaded each time it is read."""

    __slots__ = ("slot",)

    def __init__(self, name: str) -> None:
        # Kept in the instance's __dict__ under the field's own name (a data descriptor is
        # looked up first), so ``Migration(**m.__dict__)`` still makes a copy.
        self.slot = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.slot]
        return value.load() if type(value) is FileText else value

    def __set__(self, instance: object, value: Any) -> None:
        instance.__dict__[self.slot] = value


@record(frozen=True)
class Migration:
    """A parsed migration file.

    ``text`` is the normalised file text (no BOM, LF line ends) the checksum is taken of;
    ``raw_checksum`` is the checksum of the raw bytes when they differ (BOM or CR), which is
    what migretti 0.10 recorded for such files.
    ``up_line``/``down_line`` are the 1-based file lines where each section's SQL starts,
    so a server error position can be turned into a file line.

    ``text``, ``up_sql`` and ``down_sql`` may be given as ``FileText`` (the ``files``
    plugin does so for files of ``ON_DEMAND_BYTES`` or more): they are then read from the
    file each time they are asked for, and a 20 MB migration is not kept in memory twice
    while it runs. ``kept`` and ``section_kept`` give them without reading.
    """

    id: str
    name: str
    path: Path
    text: str
    checksum: str
    up_sql: str
    up_line: int
    down_sql: str | None = None
    down_line: int | None = None
    transactional: bool = True
    title: str | None = None
    raw_checksum: str | None = None

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def has_down(self) -> bool:
        down = self.kept("down_sql")
        if isinstance(down, FileText):
            return not down.blank
        return down is not None and down.strip() != ""

    def section(self, direction: Direction) -> tuple[str, int]:
        """The SQL one direction runs and the file line it starts on."""
        if direction == "up":
            return self.up_sql, self.up_line
        return self.down_sql or "", self.down_line or self.up_line

    def __eq__(self, other: object) -> bool:
        # The dataclass's own, except that texts are read only when their kept forms differ
        # (a FileText and a str, or two files): the other fields are compared first.
        if other.__class__ is not self.__class__:
            return NotImplemented
        for f in fields(self):
            if f.name not in _ON_DEMAND and getattr(self, f.name) != getattr(other, f.name):
                return False
        for name in _ON_DEMAND:
            mine, theirs = self.__dict__[name], other.__dict__[name]
            if mine is theirs or mine == theirs:
                continue
            if not isinstance(mine, FileText) and not isinstance(theirs, FileText):
                return False
            if getattr(self, name) != getattr(other, name):
                return False
        return True

    def __hash__(self) -> int:
        # Equal migrations have the same id, name, path and checksum; their texts are not
        # read to hash them.
        return hash((self.id, self.name, self.path, self.checksum))

    def __repr__(self) -> str:
        # The dataclass's own, except that a FileText is shown as itself, not read.
        shown = (
            (f.name, self.__dict__[f.name] if f.name in _ON_DEMAND else getattr(self, f.name))
            for f in fields(self)
        )
        values = ", ".join(f"{name}={value!r}" for name, value in shown)
        return f"{type(self).__qualname__}({values})"

    def kept(self, name: Literal["text", "up_sql", "down_sql"]) -> str | FileText | None:
        """``text``, ``up_sql`` or ``down_sql`` as kept: a ``FileText`` is not read."""
        value: str | FileText | None = self.__dict__[name]
        return value

    def section_kept(self, direction: Direction) -> tuple[str | FileText, int]:
        """``section`` without reading a ``FileText``."""
        if direction == "up":
            up = self.kept("up_sql")
            return up if up is not None else "", self.up_line
        return self.kept("down_sql") or "", self.down_line or self.up_line


# Installed after the dataclass is made: the generated __init__ sets these through them.
_ON_DEMAND = ("text", "up_sql", "down_sql")
for _name in _ON_DEMAND:
    setattr(Migration, _name, _OnDemand(_name))
del _name

# Migration files of this size or more are read again when their text is needed.
ON_DEMAND_BYTES = 1 << 20


@record(frozen=True)
class HistoryEntry:
    """One row of ``_migrations`` as read from the database."""

    id: str
    name: str
    status: str
    checksum: str | None = None
    applied_at: datetime | None = None
    seq: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    failed_statement: int | None = None
    baseline: bool = False
    #: For a ``failed`` or ``running`` row: which way the migration was going when it
    #: stopped (``"up"`` applying, ``"down"`` rolling back), as the history can tell; None
    #: when it cannot. The advice to resolve it depends on it.
    direction: Direction | None = None
    #: For a ``running`` row: the PostgreSQL session that marked it so, as
    #: ``log_line_prefix``'s ``%c`` shows one (its start time and pid in hex, ``6565f1a2.53f0``),
    #: when the history records it.
    session_id: str | None = None
    #: For a ``running`` row: whether that session is still connected. A run that released the
    #: migration lock without ending (its no-transaction migration ran ``DISCARD ALL``) may
    #: still be at work on it; a row whose session is gone was interrupted.
    session_connected: bool = False


@record(frozen=True)
class HistoryChange:
    """A change to the history, written by the history hook.

    ``status`` None means the ``_migrations`` row is removed (rollback, ``fix --remove``).
    Every change with ``log=True`` appends a row to ``_migrations_log`` with ``action``.
    """

    migration_id: str
    name: str
    checksum: str | None
    action: Action
    status: Status | None
    duration_ms: int | None = None
    error: str | None = None
    failed_statement: int | None = None
    log: bool = True


@record(frozen=True)
class Plan:
    """The ordered migrations one command will run in one direction."""

    direction: Direction
    steps: tuple[Migration, ...]
    single_transaction: bool = False

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.steps)


@record(frozen=True)
class LockReport:
    """What one migration did to relations that existed before it, measured in a dry run.

    ``locks`` are ``(relation, mode)`` with PostgreSQL's mode names (``AccessExclusiveLock``);
    ``rewrites`` the tables whose storage was replaced; ``tables`` ``(relation, estimated
    rows or None, bytes)`` of every relation in either. Relations are schema-qualified.
    """

    locks: tuple[tuple[str, str], ...] = ()
    rewrites: tuple[str, ...] = ()
    tables: tuple[tuple[str, int | None, int], ...] = ()


@record(frozen=True)
class MigrationResult:
    """What happened to one migration of a plan (``locks``: a dry run's lock report)."""

    migration: Migration
    direction: Direction
    ok: bool
    duration_ms: int
    error: str | None = None
    dry_run: bool = False
    executed: bool = True
    locks: LockReport | None = None


@record(frozen=True)
class StatementInfo:
    """What the database plugin knows of one statement, asked only after it failed.

    ``kind`` names it in the error (``CREATE INDEX CONCURRENTLY``); ``retry_safe`` is true
    when running it again after a lock timeout cannot meet something a failed attempt left
    behind (a failed concurrent index build leaves an INVALID index); ``note`` is a line
    for its error message. The defaults are what the core assumes when no plugin knows.
    """

    kind: str | None = None
    retry_safe: bool = False
    note: str | None = None


class StatementBatch:
    """Consecutive statements of a no-transaction migration for ``mg_execute_each``, and how
    far they got: unlike the other types not frozen, as the plugin writes its progress here.

    ``committed`` counts the statements that committed, from the first, as they commit, so
    it is right even when the call ends in an exception (an error, Ctrl-C, a lost
    connection). ``settled`` is false while statements after those may have run without
    the plugin learning of it (a query still in flight when the call ended).
    """

    __slots__ = ("committed", "settled", "statements")

    def __init__(self, statements: Sequence[str]) -> None:
        self.statements = statements
        self.committed = 0
        self.settled = True

    def __repr__(self) -> str:
        return (
            f"StatementBatch({len(self.statements)} statements, committed={self.committed}, "
            f"settled={self.settled})"
        )


@record(frozen=True)
class LockHolder:
    """Who holds a lock we are waiting for: mg's advisory lock, or a table lock.

    ``since`` is when its transaction (or, for the advisory lock, its session) started;
    ``state`` is ``pg_stat_activity.state`` when known (``idle in transaction``, ...);
    ``lock`` is the lock plugin's description of its lock, used in "waiting for" messages.
    """

    pid: int | None
    application_name: str | None
    since: datetime | None
    state: str | None = None
    lock: str | None = None


@record(frozen=True)
class Target:
    """Where SQL will run, for people: never holds a password."""

    host: str | None
    port: str | None
    dbname: str | None
    user: str | None

    def describe(self) -> str:
        host = self.host or "localhost"
        port = f":{self.port}" if self.port else ""
        return f"{self.user or '?'}@{host}{port}/{self.dbname or '?'}"


@record(frozen=True)
class ScratchServer:
    """A server where mg may create and drop scratch databases (``mg check``, ``mg drift``).

    ``conninfo`` reaches a database there to run ``CREATE DATABASE`` from (usually
    ``postgres``); ``description`` says where it is in messages ("a temporary embedded
    server").
    """

    conninfo: str
    description: str


@record(frozen=True)
class Event:
    """A diagnostic for the user or a log: a stable ``name`` plus context ``fields``."""

    name: str
    level: Level
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Severity = Literal["error", "warning"]


@record(frozen=True)
class LintRequest:
    """Migrations to lint, in the order they would run, and what is known about the target.

    ``plan`` says they run one after another on a database that has none of them yet, so a
    table created by an earlier one is new for the later ones (false for ``mg lint --all``
    or named files: each is judged on its own). ``server_version`` is a PostgreSQL major
    version given on the command line (it wins over mg.yaml's ``lint.server_version``);
    ``target_version`` is the connected target's (used when neither is given; else 13).
    ``enable``/``disable`` come from the command line and win over mg.yaml's ``lint:``.
    ``apply`` says the migrations are about to run (``apply``, ``up``, dry runs).
    """

    migrations: tuple[Migration, ...]
    server_version: int | None = None
    target_version: int | None = None
    plan: bool = True
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    apply: bool = False


@record(frozen=True)
class LintFinding:
    """One lint finding; ``line``/``column`` are 1-based positions in the migration file."""

    path: Path
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    help: str = ""
    migration: str | None = None

    def as_dict(self, path: str | None = None) -> dict[str, Any]:
        return {
            "path": path if path is not None else str(self.path),
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "help": self.help,
            "migration": self.migration,
        }


@record(frozen=True)
class Options:
    """Options of the current command that plugins may need to respect.

    ``extra`` holds the values of options plugins added to the command, by parameter name.
    ``read_only`` says the command only reads the database (``status``, ``list``, ``head``,
    ``verify``): it runs no migration and writes no history, so the builtin ``postgres``
    may connect without psycopg when no third-party plugin is loaded (docs/design.md).
    ``light_connection`` says the same of a command that writes (``apply`` and ``rollback``
    without ``--dry-run``): everything it does on the connection goes through the builtin
    plugins' hooks, which serve it on libpq alone.
    """

    verbose: bool = False
    json_log: bool = False
    yes: bool = False
    dry_run: bool = False
    command: str = ""
    lock_timeout: float | None = None
    lint: bool = True
    table_lock_timeout: float | None = None
    statement_timeout: float | None = None
    output_format: str = "text"
    extra: Mapping[str, Any] = field(default_factory=dict)
    read_only: bool = False
    light_connection: bool = False

    def option(self, name: str, default: Any = None) -> Any:
        """The value of an option a plugin added to the command (``mg_command_options``)."""
        return self.extra.get(name, default)


@record(frozen=True)
class Session:
    """Everything a hook needs about the current run: configuration, options, hooks."""

    config: Config
    options: Options
    hooks: Hooks
