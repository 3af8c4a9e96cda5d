"""The ``fleets:`` section of mg.yaml and the members it names.

::

    fleets:
      tenants:
        query: SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\_%' ORDER BY 1
        jobs: 8
        canary: 1
      shards:
        databases: [shard_01, shard_02, "postgresql://app@10.0.0.7/shard_03"]
      regions:
        file: regions.txt      # one dbname or URL a line; # comments

A member is a database name, which keeps the selected profile's connection with only
``dbname`` replaced, or a full URL, which stands alone. Members are deduplicated in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migretti_core.errors import ConfigError
from migretti_core.interpolation import interpolate, with_dotenv
from migretti_core.redact import redact_url
from migretti_core.types import Config, Session

_KEYS = ("databases", "query", "file", "jobs", "canary")
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class FleetSettings:
    name: str
    databases: tuple[str, ...] = ()
    query: str | None = None
    file: Path | None = None
    jobs: int | None = None
    canary: int | None = None


@dataclass(frozen=True)
class Member:
    """One database of a fleet: ``name`` is what people see (a URL's password masked);
    ``origin`` says where it was written (``mg.yaml: fleets.shards.databases[2]``, a line of
    the fleet's file, a row of its query)."""

    name: str
    spec: str
    origin: str = ""

    @property
    def is_url(self) -> bool:
        return is_url(self.spec)

    @property
    def described(self) -> str:
        """The member for an error about it: ``member NAME (ORIGIN)``."""
        return f"member {self.name} ({self.origin})" if self.origin else f"member {self.name}"

    def database(self, profile: Mapping[str, Any]) -> dict[str, Any]:
        """The ``database`` section this member runs with."""
        if self.is_url:
            return {"url": self.spec}
        return {**profile, "dbname": self.spec}


def is_url(spec: str) -> bool:
    """A URL or ``key=value`` conninfo, which stands alone; anything else names a database."""
    return "://" in spec or "=" in spec


def _label(config: Config) -> str:
    return config.label


def _count(value: Any, where: str, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: expected a whole number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}")
    return number


def _raw_fleets(config: Config) -> Mapping[str, Any]:
    raw = config.settings.get("fleets")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{_label(config)}: fleets: expected a mapping of fleet names to their members"
        )
    return raw


def _fleet(
    config: Config, name: str, body: Any, environ: Mapping[str, str] | None
) -> FleetSettings:
    """One fleet, checked. With ``environ`` its ``${VAR}`` references are resolved (the fleet
    in use); without, only its shape is checked (every fleet, whenever mg.yaml is read), so
    a variable that only one fleet needs is no error for the commands that do not use it."""
    label = _label(config)
    where = f"{label}: fleets.{name}"
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: expected a mapping with databases, query or file")
    unknown = [key for key in body if key not in _KEYS]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected one of {', '.join(_KEYS)})")
    body = _names_as_written(config, name, body)
    if environ is not None:
        body = interpolate(dict(body), environ, label, ("fleets", name))
    databases = body.get("databases")
    if databases is None or databases == "":
        databases = []
    if isinstance(databases, str):
        databases = [databases]
    if not isinstance(databases, (list, tuple)) or not all(
        isinstance(item, str) and item.strip() for item in databases
    ):
        raise ConfigError(f"{where}.databases: expected a list of database names or URLs")
    query = body.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise ConfigError(f"{where}.query: expected an SQL query returning one column")
    file = body.get("file")
    if file is not None and (not isinstance(file, str) or not file.strip()):
        raise ConfigError(f"{where}.file: expected a file name")
    # ``databases: []`` is a fleet with no members yet (running it warns and does nothing);
    # a fleet naming no source at all is a mistake.
    listed = isinstance(body.get("databases"), (list, tuple))
    if not databases and not listed and query is None and file is None:
        raise ConfigError(f"{where}: give its members with databases, query or file")

    def count(key: str, minimum: int) -> int | None:
        value = body.get(key)
        if environ is None and isinstance(value, str) and "${" in value:
            return None  # checked once interpolated, when the fleet is used
        return _count(value, f"{where}.{key}", minimum)

    return FleetSettings(
        name=name,
        databases=tuple(item.strip() for item in databases),
        query=query,
        file=(config.root / file) if file else None,
        jobs=count("jobs", 1),
        canary=count("canary", 0),
    )


def _written_fleet(config: Config, name: str) -> dict[str, Any]:
    """The fleet as mg.yaml writes it, scalars as text: the top level's keys, the selected
    profile's over them (as the profile is merged)."""
    written: dict[str, Any] = {}
    profiles = config.source.get("envs")
    profile = profiles.get(config.env) if config.env and isinstance(profiles, Mapping) else None
    for where in (config.source, profile):
        fleets = where.get("fleets") if isinstance(where, Mapping) else None
        body = fleets.get(name) if isinstance(fleets, Mapping) else None
        if isinstance(body, Mapping):
            written.update(body)
    return written


def _names_as_written(config: Config, name: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``databases`` with the text the user wrote where YAML read a number or a boolean:
    ``[01, 0123]`` names the databases '01' and '0123', not 1 and 83 (as every scalar of
    mg.yaml keeps its text, ``dbname: 0123`` included)."""
    databases = body.get("databases")

    def read_as_other(item: Any) -> bool:
        return isinstance(item, (bool, int, float))

    if isinstance(databases, (list, tuple)):
        if not any(read_as_other(item) for item in databases):
            return body
    elif not read_as_other(databases):
        return body
    written = _written_fleet(config, name).get("databases")
    if isinstance(databases, (list, tuple)):
        if not isinstance(written, (list, tuple)) or len(written) != len(databases):
            return body
        texts = [
            text if read_as_other(item) and isinstance(text, str) else item
            for item, text in zip(databases, written, strict=True)
        ]
        return {**body, "databases": texts}
    return {**body, "databases": written} if isinstance(written, str) else body


def all_fleets(config: Config) -> dict[str, FleetSettings]:
    """Every fleet of mg.yaml, its shape checked (a typo is a configuration error, exit 2);
    ``${VAR}`` references stay unresolved: ``fleet_named`` resolves the fleet in use."""
    return {
        str(name): _fleet(config, str(name), body, None)
        for name, body in _raw_fleets(config).items()
    }


def fleet_environ(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the ``.env`` beside mg.yaml under it, as mg.yaml is interpolated."""
    if config.path is None:
        return dict(environ)
    return with_dotenv(config.root / ".env", environ, config.label)


def fleet_named(config: Config, name: str, environ: Mapping[str, str]) -> FleetSettings:
    """The fleet ``name``, its ``${VAR}`` references resolved from ``environ`` and the
    ``.env`` beside mg.yaml."""
    fleets = {str(key): body for key, body in _raw_fleets(config).items()}
    if name not in fleets:
        label = _label(config)
        defined = f"defined: {', '.join(fleets)}" if fleets else "no fleets defined"
        raise ConfigError(f"fleet '{name}' is not defined in {label} ({defined})")
    return _fleet(config, name, fleets[name], fleet_environ(config, environ))


# A member a line: a million databases, each named by a 64-byte URL, fit.
_FLEET_FILE_LIMIT = 64 << 20


def _databases_key(config: Config, name: str) -> str:
    """Where the fleet's ``databases`` are written: the selected profile's fleet when it
    gives them (it is merged over the top level's), else the top level's."""
    profiles = config.source.get("envs")
    profile = profiles.get(config.env) if config.env and isinstance(profiles, Mapping) else None
    fleets = profile.get("fleets") if isinstance(profile, Mapping) else None
    body = fleets.get(name) if isinstance(fleets, Mapping) else None
    key = f"fleets.{name}.databases"
    if isinstance(body, Mapping) and "databases" in body:
        key = f"envs.{config.env}.{key}"
    return f"{_label(config)}: {key}"


def _file_members(
    path: Path, environ: Mapping[str, str], config: Config, fleet: str
) -> list[tuple[str, str]]:
    """The members a fleet's file names, each with its line (``regions.txt:3``)."""
    from migretti_core.configfile import read_bounded
    from migretti_core.reporting import display_path

    # A regular file only: a device such as /dev/zero would be read until memory runs out.
    shown = display_path(path)
    raw = read_bounded(path, shown, what="fleet file", limit=_FLEET_FILE_LIMIT)
    try:
        # An editor's byte order mark is no part of the first member (as in mg.yaml).
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"fleet file {shown}: not UTF-8 text") from None
    members = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "\0" in entry:
            # libpq would cut the name there and connect to another database.
            raise ConfigError(f"fleet file {shown}:{number}: a NUL character (\\0) in a member")
        cut = entry.find(" #")  # a comment after the entry (a URL may hold a bare '#')
        if cut != -1:
            entry = entry[:cut].strip()
        value = interpolate(entry, environ, path.name, (f"line {number}",), _label(config))
        members.append((str(value), f"{shown}:{number}, fleets.{fleet}.file"))
    return members


def _query_members(session: Session, fleet: str, sql: str) -> list[tuple[str, str]]:
    """The members the fleet's query returns, each with its row."""
    from migretti_core.errors import MgError
    from migretti_core.running import LOCK_NOT_AVAILABLE, connected, table_lock_settings

    hooks = session.hooks
    # Bounded as a migration is: a lock wait ends after table_lock_timeout (a table another
    # session keeps locked would otherwise hold every fleet command without end), the whole
    # query after statement_timeout when one is set.
    lock_wait, _, statement = table_lock_settings(session)
    timeouts = hooks.timeout_sql(session, lock_wait, statement, local=True)
    try:
        # A lookup, run read-only and rolled back: listing the members never changes the
        # profile's database (``mg status`` and dry runs change nothing).
        with (
            connected(session) as conn,
            hooks.transaction(session, conn, rollback=True),
        ):
            hooks.query(session, conn, "SET TRANSACTION READ ONLY", ())
            if timeouts:
                hooks.query(session, conn, timeouts, ())
            rows = hooks.query(session, conn, sql, ())
    except MgError as exc:
        # Name the query: "division by zero" alone does not say which SQL failed.
        exc.message = f"fleet {fleet}: query failed: {exc.message}"
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == "25006" and exc.hint is None:
            exc.hint = "the members' query runs read-only: it may read tables, not change them"
        elif sqlstate == LOCK_NOT_AVAILABLE and exc.hint is None:
            wait = f"{lock_wait * 1000:.0f}ms" if lock_wait < 1 else f"{lock_wait:g}s"
            exc.hint = (
                "it waited for a lock another session holds longer than table_lock_timeout "
                f"({wait}); run it again once that lock is released, or raise "
                "table_lock_timeout"
            )
        raise
    members = []
    for number, row in enumerate(rows, start=1):
        if len(row) != 1:
            raise ConfigError(
                f"fleet {fleet}: query must return exactly one column (a name or URL)"
            )
        if row[0] is None or not str(row[0]).strip():
            continue  # NULL or blank: no database
        value = str(row[0])
        # A database name is kept exactly as returned: 'x ' is another database than 'x'
        # (PostgreSQL keeps the spaces). A URL's surrounding spaces are no part of it.
        spec = value.strip() if is_url(value.strip()) else value
        members.append((spec, f"row {number} of fleets.{fleet}.query"))
    return members


def resolve(session: Session, fleet: FleetSettings, environ: Mapping[str, str]) -> list[Member]:
    """The fleet's members in order, duplicates dropped (``query`` runs on the profile's
    own database)."""
    config = session.config
    listed = _databases_key(config, fleet.name) if fleet.databases else ""
    specs = [(spec, f"{listed}[{index}]") for index, spec in enumerate(fleet.databases)]
    if fleet.file is not None:
        specs += _file_members(fleet.file, fleet_environ(config, environ), config, fleet.name)
    if fleet.query is not None:
        specs += _query_members(session, fleet.name, fleet.query)
    seen: set[str] = set()
    members: list[Member] = []
    for spec, origin in specs:
        if spec in seen:
            continue
        seen.add(spec)
        shown = redact_url(spec) if is_url(spec) else spec
        members.append(Member(shown, spec, origin))
    return members
