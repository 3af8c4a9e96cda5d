"""The history tables ``_migrations`` and ``_migrations_log``, 0.10-compatible.

The tables are created with migretti 0.10's exact DDL; newer columns are added in place:
``apply_seq``, ``duration_ms``, ``error`` and ``failed_statement`` on ``_migrations`` and
``duration_ms`` on ``_migrations_log``. ``apply_seq`` is the application order that rollback
follows; rows written by 0.10 get one from their ``applied_at`` (then id) on first write.

Decisions:

- Table names are unqualified, so they resolve through the connection's ``search_path``
  like any other name; a missing table is created in ``current_schema()``. Once prepared,
  the tables are written under their schema-qualified names: a migration may change
  ``search_path`` for the session (pg_dump's preamble empties it), and its history row must
  still reach the tables the run started with. Columns are
  looked up in ``pg_attribute`` for the table that name resolves to (``information_schema``
  would hide columns the user has no privilege on, and matches by schema name instead).
- Reading never creates or alters anything; preparing only takes the locks of ``CREATE`` or
  ``ALTER TABLE`` when something is actually missing.
- ``performed_by`` in the log is ``<OS user>@<host name>`` of the machine running migretti:
  the database user is the same for every run of a deployment, the person or CI runner
  behind it is what an audit needs.
- A row that becomes ``applied`` gets ``applied_at = now()``; an existing row keeps its
  ``apply_seq``, so ``mg fix --applied`` keeps the original position.

All SQL goes through ``session.hooks.query`` on the engine's connection, inside whatever
transaction the engine opened.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from migretti_core import hookimpl
from migretti_core.types import Direction, HistoryChange, HistoryEntry, Session

TABLE = "_migrations"
LOG_TABLE = "_migrations_log"
_INT_MAX = 2**31 - 1

CREATE_TABLE = """CREATE TABLE IF NOT EXISTS _migrations (
    id VARCHAR(26) PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    applied_at TIMESTAMPTZ DEFAULT now(),
    checksum VARCHAR(64),
    status VARCHAR(20) DEFAULT 'applied'
)"""

CREATE_LOG_TABLE = """CREATE TABLE IF NOT EXISTS _migrations_log (
    id BIGSERIAL PRIMARY KEY,
    migration_id VARCHAR(26) NOT NULL,
    name VARCHAR(255),
    action VARCHAR(10) NOT NULL,
    performed_at TIMESTAMPTZ DEFAULT now(),
    performed_by VARCHAR(255),
    checksum VARCHAR(64)
)"""

NEW_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    TABLE: (
        ("apply_seq", "BIGINT"),
        ("duration_ms", "INTEGER"),
        ("error", "TEXT"),
        ("failed_statement", "INTEGER"),
        ("session_id", "TEXT"),
    ),
    LOG_TABLE: (("duration_ms", "INTEGER"),),
}

_COLUMNS = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped
"""

# The columns with the kind of type each has, and that type as SQL writes it.
_TYPED_COLUMNS = """
SELECT a.attname::text, t.typcategory::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""

# The kind of type (pg_type.typcategory) each column mg reads or writes must have, and the
# type migretti creates it with: a string column may be text or varchar of any length, a
# time stamp with or without time zone, a number of any integer type.
LAYOUT: dict[str, dict[str, tuple[str, str]]] = {
    TABLE: {
        "id": ("S", "VARCHAR(26)"),
        "name": ("S", "VARCHAR(255)"),
        "applied_at": ("D", "TIMESTAMPTZ"),
        "checksum": ("S", "VARCHAR(64)"),
        "status": ("S", "VARCHAR(20)"),
        "apply_seq": ("N", "BIGINT"),
        "duration_ms": ("N", "INTEGER"),
        "error": ("S", "TEXT"),
        "failed_statement": ("N", "INTEGER"),
        "baseline": ("B", "BOOLEAN"),
    },
    LOG_TABLE: {
        "migration_id": ("S", "VARCHAR(26)"),
        "name": ("S", "VARCHAR(255)"),
        "action": ("S", "VARCHAR(10)"),
        "performed_at": ("D", "TIMESTAMPTZ"),
        "performed_by": ("S", "VARCHAR(255)"),
        "checksum": ("S", "VARCHAR(64)"),
        "duration_ms": ("N", "INTEGER"),
    },
}
_FOREIGN_HINT = (
    "another tool's table of that name? rename or drop it, or point mg at another database "
    "or schema"
)

_BACKFILL = """
UPDATE _migrations AS m SET apply_seq = s.seq
FROM (
    SELECT id,
           (SELECT coalesce(max(apply_seq), 0) FROM _migrations)
           + row_number() OVER (ORDER BY applied_at NULLS FIRST, id) AS seq
    FROM _migrations
    WHERE apply_seq IS NULL
) AS s
WHERE m.id = s.id
"""

# Record a row's new state: update it when present, else insert it, without ON CONFLICT so
# a table whose primary key was dropped is still written. An UP change (recording a
# migration as run) fails when the row already says ``applied``: another run got there
# first, and the failure rolls back the migration's transaction instead of letting it count
# twice. The failing cast carries the reason in the server's message.
_WRITE = """
WITH updated AS (
    UPDATE {table} AS m SET
        name = {name},
        checksum = {checksum},
        status = CASE WHEN {guard} AND m.status = 'applied'
            THEN ('migretti: ' || m.id || ' is already recorded as applied')::integer::text
            ELSE {status} END,
        applied_at = CASE WHEN {status} = 'applied' AND m.status IS DISTINCT FROM 'applied'
            THEN now() ELSE m.applied_at END,
        duration_ms = coalesce({duration}, m.duration_ms),
        error = {error},
        failed_statement = {failed},
        session_id = {session}
    WHERE m.id = {id}
    RETURNING 1
)
INSERT INTO {table}
    (id, name, applied_at, checksum, status, apply_seq, duration_ms, error, failed_statement,
     session_id)
SELECT {id}, {name}, now(), {checksum}, {status},
       (SELECT coalesce(max(apply_seq), 0) + 1 FROM {table}), {duration}, {error}, {failed},
       {session}
WHERE NOT EXISTS (SELECT FROM updated)
"""

# Recording a migration this run knows has no row yet (``_Known``): a plain insert at the
# position the run counts, with the same refusal as ``_WRITE`` should an ``applied`` row
# have appeared meanwhile (the migration's own SQL writing it). The server plans it in a
# third of the time ``_WRITE`` takes, which is most of mg's own work per migration.
_INSERT = """
INSERT INTO {table}
    (id, name, applied_at, checksum, status, apply_seq, duration_ms, error, failed_statement)
VALUES ({id}, {name}, now(), {checksum},
    coalesce((SELECT ('migretti: ' || m.id || ' is already recorded as applied')::integer::text
              FROM {table} AS m WHERE m.id = {id} AND m.status = 'applied' LIMIT 1),
             'applied'),
    {seq}, {duration}, NULL, NULL)
"""

# ``mg fix ID --applied``: whatever rows the id has (one, or duplicates in a table without
# its primary key) become one applied row that keeps the first position and, when it was
# applied already, the time it was.
_FIX = """
WITH old AS (
    DELETE FROM {table} WHERE id = {id}
    RETURNING status, applied_at, apply_seq, duration_ms
)
INSERT INTO {table}
    (id, name, applied_at, checksum, status, apply_seq, duration_ms, error, failed_statement)
SELECT {id}, {name}, coalesce(min(applied_at) FILTER (WHERE status = 'applied'), now()),
       {checksum}, 'applied',
       coalesce(min(apply_seq), (SELECT coalesce(max(apply_seq), 0) + 1 FROM {table})),
       max(duration_ms), NULL, NULL
FROM old
"""

_DELETE = "DELETE FROM {table} WHERE id = {id}"

_LOG = """
INSERT INTO {log} (migration_id, name, action, performed_by, checksum, duration_ms)
VALUES ({id}, {name}, {action}, {performed_by}, {checksum}, {duration})
"""

# Column to read, or the value standing in for it in a 0.10 table that lacks it.
_READ = (
    ("id", None),
    ("name", None),
    ("status", None),
    ("checksum", None),
    ("applied_at", None),
    ("apply_seq", "NULL::bigint"),
    ("duration_ms", "NULL::integer"),
    ("error", "NULL::text"),
    ("failed_statement", "NULL::integer"),
    ("coalesce(baseline, false)", "false"),
    ("session_id", "NULL::text"),
)

# This session as ``log_line_prefix``'s ``%c`` writes one (start time and pid, in hex): what a
# ``running`` row records, so that a run finding the row can tell whether the session that
# marked it is still connected (and may still be at work on it). ``pg_stat_get_activity``
# of the one pid reads no other session's entry.
_THIS_SESSION = (
    "(SELECT to_hex(trunc(extract(epoch FROM backend_start))::bigint) || '.' || to_hex(pid) "
    "FROM pg_stat_get_activity(pg_backend_pid()))"
)

# Which of the given pids (an integer list, written into the query: read-only commands'
# libpq path binds only scalars) are other sessions still connected, with their start time
# in hex as ``_THIS_SESSION`` writes it (NULL when this user may not see it).
_CONNECTED = """
SELECT pid, to_hex(trunc(extract(epoch FROM backend_start))::bigint)
FROM pg_stat_activity
WHERE pid IN ({pids}) AND pid <> pg_backend_pid()
"""


@dataclass
class _Known:
    """What this run knows of ``_migrations``: the ids its last read found and, once
    ``mg_history_prepare`` (under the lock, just before the migrations run) has counted the
    same rows, the next ``apply_seq``. Any other write forgets it."""

    ids: set[str]
    next_seq: int | None = None


# By session, like ``_QUALIFIED``.
_KNOWN: dict[int, _Known] = {}

_COUNT = """
SELECT count(*), coalesce(max(apply_seq), 0), count(*) FILTER (WHERE apply_seq IS NULL)
FROM _migrations
"""


def _know(session: Session, ids: set[str]) -> None:
    key = id(session)
    if key not in _KNOWN:
        weakref.finalize(session, _KNOWN.pop, key, None)
    _KNOWN[key] = _Known(ids)


def _forget(session: Session) -> None:
    known = _KNOWN.get(id(session))
    if known is not None:
        known.next_seq = None


def _count_rows(session: Session, conn: Any) -> bool:
    """Confirm what the last read found (and the next position); True when some row has no
    ``apply_seq`` yet (a 0.10 table to backfill)."""
    rows = session.hooks.query(session, conn, _COUNT, ())
    count, top, unnumbered = rows[0] if rows else (None, 0, 0)
    known = _KNOWN.get(id(session))
    if known is not None:
        same = count == len(known.ids) and not unnumbered
        known.next_seq = int(top) + 1 if same else None
    return bool(unnumbered)


# The tables as ``mg_history_prepare`` found or created them, schema-qualified, by session.
_QUALIFIED: dict[int, tuple[str, str]] = {}

_WHERE = """
SELECT c.relname::text,
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.oid IN (pg_catalog.to_regclass(%s), pg_catalog.to_regclass(%s))
"""


def _remember_tables(session: Session, conn: Any) -> None:
    rows = session.hooks.query(session, conn, _WHERE, (TABLE, LOG_TABLE))
    names = {str(row[0]): str(row[1]) for row in rows}
    key = id(session)
    if key not in _QUALIFIED:
        weakref.finalize(session, _QUALIFIED.pop, key, None)
    _QUALIFIED[key] = (names.get(TABLE, TABLE), names.get(LOG_TABLE, LOG_TABLE))


def _tables(session: Session) -> tuple[str, str]:
    return _QUALIFIED.get(id(session), (TABLE, LOG_TABLE))


def columns(session: Session, conn: Any, table: str) -> set[str]:
    """Column names of ``table`` as ``search_path`` resolves it; empty when it does not exist."""
    rows = session.hooks.query(session, conn, _COLUMNS, (table,))
    return {str(row[0]) for row in rows}


def checked_columns(session: Session, conn: Any, table: str) -> set[str]:
    """``columns``, after making sure each one mg reads or writes has a type of the kind
    migretti gives it (``LAYOUT``); else ``DatabaseError`` naming the column (an integer
    ``status`` of another tool's ``_migrations`` would fail on the server's bare message)."""
    rows = session.hooks.query(session, conn, _TYPED_COLUMNS, (table,))
    wrong = []
    for name, category, shown in rows:
        expected = LAYOUT[table].get(str(name))
        if expected is not None and str(category) != expected[0]:
            wrong.append(f"{name} is {shown}, where migretti has {expected[1]}")
    if wrong:
        from migretti_core.errors import DatabaseError

        raise DatabaseError(
            f"{table} exists but is not migretti's history table (migretti 0.10's layout): "
            f"its column {'; its column '.join(wrong)}",
            hint=_FOREIGN_HINT,
        )
    return {str(row[0]) for row in rows}


@functools.lru_cache(maxsize=1)
def performed_by() -> str:
    """``<OS user>@<host>``, the person or runner behind a change."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    # os.uname() gives gethostname()'s answer without importing socket (a few ms of start-up)
    host = os.uname().nodename if hasattr(os, "uname") else _hostname()
    return f"{user}@{host}"[:255]


def _hostname() -> str:
    import socket

    return socket.gethostname()


_SET_LOCK_TIMEOUT = "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, false)"
_RESTORE_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"


@hookimpl(trylast=True)
def mg_history_read(session: Session, conn: Any) -> list[HistoryEntry] | None:
    """The history, its lock waits bounded by ``table_lock_timeout``: a session keeping
    ``_migrations`` locked (a hand edit left open in a transaction, ``VACUUM FULL``) would
    otherwise hold every command without end and without a word."""
    from migretti_core.errors import DatabaseError, MgError
    from migretti_core.running import LOCK_NOT_AVAILABLE, table_lock_settings

    wait = table_lock_settings(session)[0]
    if wait <= 0:
        return _read_history(session, conn)
    hooks = session.hooks
    rows = hooks.query(session, conn, _SET_LOCK_TIMEOUT, (f"{max(1, round(wait * 1000))}ms",))
    previous = str(rows[0][0]) if rows else "0"
    try:
        return _read_history(session, conn)
    except MgError as exc:
        if getattr(exc, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        shown = f"{wait * 1000:.0f}ms" if wait < 1 else f"{wait:g}s"
        raise DatabaseError(
            f"cannot read the history: another session kept {TABLE} locked for longer than "
            f"table_lock_timeout ({shown}); nothing was changed",
            hint="an open transaction that changed the table by hand, or a VACUUM FULL? "
            "pg_locks and pg_stat_activity name it; run the command again once it ends",
        ) from None
    finally:
        with contextlib.suppress(MgError):  # a failed transaction: its rollback restores it
            hooks.query(session, conn, _RESTORE_LOCK_TIMEOUT, (previous,))


def _read_history(session: Session, conn: Any) -> list[HistoryEntry]:
    present = checked_columns(session, conn, TABLE)
    if not present:
        _know(session, set())
        return []
    lacking = [name for name in _REQUIRED if name not in present]
    if lacking:
        from migretti_core.errors import DatabaseError

        plural = "s" if len(lacking) > 1 else ""
        raise DatabaseError(
            f"{TABLE} is not migretti's history table: it has no column{plural} "
            f"{', '.join(lacking)} (it has {', '.join(sorted(present))})",
            hint=_FOREIGN_HINT,
        )
    select = ", ".join(
        expr if fallback is None or _column(expr) in present else fallback
        for expr, fallback in _READ
    )
    # in application order: a row 0.10 recorded after mg numbered the others has no number
    order = "apply_seq NULLS LAST, " if "apply_seq" in present else ""
    rows = session.hooks.query(
        session,
        conn,
        f"SELECT {select} FROM _migrations ORDER BY {order}applied_at NULLS FIRST, id",
        (),
    )
    entries = [_entry(row) for row in rows]
    _know(session, {e.id for e in entries})
    if any(e.status in _STOPPED for e in entries):
        entries = _with_directions(session, conn, entries)
        entries = _with_sessions(session, conn, entries)
    return entries


def _session_pid(session_id: str) -> int | None:
    """The pid of a session id as ``_THIS_SESSION`` writes it (``6565f1a2.53f0``)."""
    started, _, pid = session_id.partition(".")
    try:
        return int(pid, 16) if started else None
    except ValueError:
        return None


def _with_sessions(session: Session, conn: Any, entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """``entries`` with ``session_connected`` set on each ``running`` row whose session is
    still connected: same pid, same start time (or a start time this user may not see)."""
    pids = {p for e in entries if e.session_id and (p := _session_pid(e.session_id)) is not None}
    if not pids:
        return entries
    query = _CONNECTED.format(pids=", ".join(str(p) for p in sorted(pids)))
    rows = session.hooks.query(session, conn, query, ())
    connected = {int(pid): started for pid, started in rows}
    result = []
    for entry in entries:
        pid = _session_pid(entry.session_id) if entry.session_id else None
        if pid is not None and pid in connected:
            started = connected[pid]
            same = started is None or entry.session_id == f"{started}.{pid:x}"
            entry = replace(entry, session_connected=same)
        result.append(entry)
    return result


_STOPPED = ("failed", "running")

# The last journal line of each migration that stopped midway (no parameters: read-only
# commands' libpq path binds none but scalars).
_LAST_LOGGED = """
SELECT DISTINCT ON (migration_id) migration_id, action, performed_at
FROM _migrations_log
WHERE migration_id IN (SELECT id FROM _migrations WHERE status IN ('failed', 'running'))
ORDER BY migration_id, id DESC
"""
_LOG_READ = frozenset({"id", "migration_id", "action", "performed_at"})


def _with_directions(
    session: Session, conn: Any, entries: list[HistoryEntry]
) -> list[HistoryEntry]:
    """``entries`` with the direction of each failed or running row, told by the last line
    ``_migrations_log`` holds for it; unknown (None) without the log (or its columns).

    A stopped no-transaction migration writes no journal line, so the line before it says
    what the migration was: every way of becoming applied (``UP``, ``BASELINE``, 0.10's
    ``UP``) writes one, so after ``UP`` or ``BASELINE`` the failure is a rollback's, after
    ``DOWN`` or none at all an apply's. After ``FIX`` the row's ``applied_at`` tells: the
    fix's own (``--applied``, rolled back since) or a later one, from a row an apply made
    after ``--remove``.
    """
    if not columns(session, conn, LOG_TABLE) >= _LOG_READ:
        return entries
    rows = session.hooks.query(session, conn, _LAST_LOGGED, ())
    last = {str(row[0]): (str(row[1]), row[2]) for row in rows}
    result = []
    for entry in entries:
        if entry.status in _STOPPED:
            action, performed_at = last.get(entry.id, ("DOWN", None))
            entry = replace(entry, direction=_direction(action, performed_at, entry.applied_at))
        result.append(entry)
    return result


def _direction(action: str, performed_at: Any, applied_at: datetime | None) -> Direction | None:
    if action in ("UP", "BASELINE"):
        return "down"
    if action == "DOWN":
        return "up"
    if action == "FIX" and isinstance(performed_at, datetime) and applied_at is not None:
        return "up" if applied_at > performed_at else "down"
    return None


# The columns migretti 0.10 created; the later ones are read when present.
_REQUIRED = ("id", "name", "status", "checksum", "applied_at")


def _column(expr: str) -> str:
    """The column an expression of ``_READ`` reads."""
    return expr.removeprefix("coalesce(").split(",")[0]


def _entry(row: Sequence[Any]) -> HistoryEntry:
    ident, name, status, checksum, applied_at, seq, duration, error, failed, baseline, at = row
    return HistoryEntry(
        id=str(ident),
        name=str(name),
        status=str(status) if status is not None else "",  # NULL: edited by hand, reported
        checksum=checksum,
        applied_at=applied_at if isinstance(applied_at, datetime) else None,
        seq=int(seq) if seq is not None else None,
        duration_ms=int(duration) if duration is not None else None,
        error=error,
        failed_statement=int(failed) if failed is not None else None,
        baseline=bool(baseline),
        session_id=str(at) if at and status == "running" else None,
    )


@hookimpl(trylast=True)
def mg_history_prepare(session: Session, conn: Any) -> bool | None:
    present = {table: checked_columns(session, conn, table) for table in NEW_COLUMNS}
    missing = {
        table: [(col, kind) for col, kind in NEW_COLUMNS[table] if col not in present[table]]
        for table in NEW_COLUMNS
    }
    if not any(missing.values()) and not _count_rows(session, conn):
        _remember_tables(session, conn)
        return True
    _upgrade(session, conn, present, missing)
    _count_rows(session, conn)
    _remember_tables(session, conn)
    return True


def _upgrade(
    session: Session,
    conn: Any,
    present: dict[str, set[str]],
    missing: dict[str, list[tuple[str, str]]],
) -> None:
    """Create the tables and add the missing columns in one transaction.

    ``ALTER TABLE`` needs a brief exclusive lock. It waits at most ``table_lock_timeout``
    (retried ``table_lock_retries`` times, as a migration is): a session holding a lock on the
    table (an open transaction that read it) would otherwise keep it waiting without end, and
    every reader of the table, ``mg status`` included, would queue behind it.
    """
    from migretti_core.running import with_table_lock_timeout

    with_table_lock_timeout(
        session,
        conn,
        lambda: _create_and_add(session, conn, present, missing),
        limited=any(missing[table] for table in NEW_COLUMNS if present[table]),
        what="add migretti's new columns to the history tables",
        doing="adding migretti's new columns to the history tables",
        hint="end the session holding a lock on the history tables (an open "
        "transaction that read them) and run the command again; table_lock_timeout "
        "and table_lock_retries set how long mg waits",
        failure=lambda exc: _history_failure(exc, present),
    )


# What helps when the history tables cannot be created or upgraded, by SQLSTATE.
_PREPARE_HINTS = {
    "25006": "the target is read-only (a hot standby, or default_transaction_read_only is on): "
    "point mg at the primary",
    "42501": "the user needs the CREATE privilege on the schema (or ownership of the history "
    "tables to add their new columns); grant it, or run this once as their owner",
}


def _history_failure(exc: Exception, present: dict[str, set[str]]) -> Exception:
    """The server's refusal to create or upgrade the history tables, saying that this is what
    was refused (its bare message, ``cannot execute CREATE TABLE in a read-only
    transaction``, names no table) and what helps."""
    from migretti_core.errors import DatabaseError, SqlError

    if not isinstance(exc, SqlError):
        return exc
    what = "upgrade" if present[TABLE] else "create"
    code = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    hint = _PREPARE_HINTS.get(exc.sqlstate or "", exc.hint)
    return DatabaseError(
        f"cannot {what} the history tables ({TABLE}, {LOG_TABLE}): {exc.message}{code}; "
        "nothing was changed",
        hint=hint,
    )


def _create_and_add(
    session: Session,
    conn: Any,
    present: dict[str, set[str]],
    missing: dict[str, list[tuple[str, str]]],
) -> None:
    hooks = session.hooks
    if not present[TABLE]:
        hooks.query(session, conn, CREATE_TABLE, ())
    if not present[LOG_TABLE]:
        hooks.query(session, conn, CREATE_LOG_TABLE, ())
    for table, new in missing.items():
        if new:
            adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {col} {kind}" for col, kind in new)
            hooks.query(session, conn, f"ALTER TABLE {table} {adds}", ())
    if _needs_backfill(session, conn):
        hooks.query(session, conn, _BACKFILL, ())


def _needs_backfill(session: Session, conn: Any) -> bool:
    rows = session.hooks.query(
        session, conn, "SELECT EXISTS (SELECT 1 FROM _migrations WHERE apply_seq IS NULL)", ()
    )
    return bool(rows and rows[0][0])


@hookimpl(trylast=True)
def mg_history_sql(session: Session, change: HistoryChange) -> str | None:
    """The same statements as ``mg_history_write``, as text with literals, for the engine to
    send in the migration's own query; the duration is measured by the server."""
    duration = (
        _SERVER_DURATION
        if change.duration_ms is None
        else str(int(min(change.duration_ms, _INT_MAX)))
    )
    known = _KNOWN.get(id(session))
    if (
        known is not None
        and known.next_seq is not None
        and change.action == "UP"
        and change.status == "applied"
        and change.migration_id not in known.ids
    ):
        seq = known.next_seq
        # Counted whether or not the migration commits: a gap in the positions is harmless,
        # a position given twice is not.
        known.ids.add(change.migration_id)
        known.next_seq = seq + 1
        return _insert_sql(change, duration, seq, _tables(session))
    _forget(session)
    return record_sql(change, duration, _tables(session))


def _insert_sql(change: HistoryChange, duration: str, seq: int, tables: tuple[str, str]) -> str:
    template = _insert_template(performed_by() if change.log else None, tables)
    return template.format(
        id=_literal(change.migration_id),
        name=_literal(change.name[:255]),
        checksum=_literal(change.checksum),
        duration=duration,
        seq=seq,
    )


@functools.lru_cache(maxsize=8)
def _insert_template(performed_by: str | None, tables: tuple[str, str]) -> str:
    keep = _kept(tables)
    return _joined([_INSERT.format(**keep)], keep, "UP", performed_by)


def _kept(tables: tuple[str, str]) -> dict[str, str]:
    """The fields a template leaves for each migration, and the tables it names."""
    return {
        "id": "{id}",
        "name": "{name}",
        "checksum": "{checksum}",
        "duration": "{duration}",
        "seq": "{seq}",
        "table": _braced(tables[0]),
        "log": _braced(tables[1]),
    }


def _joined(parts: list[str], keep: dict[str, str], action: str, performed_by: str | None) -> str:
    """``parts`` and, when the change is logged, its ``_migrations_log`` row, as one text."""
    if performed_by is not None:
        parts.append(
            _LOG.format(
                **keep,
                action=_braced(_literal(action)),
                performed_by=_braced(_literal(performed_by)),
            )
        )
    return ";\n".join(part.strip() for part in parts) + ";"


def record_sql(
    change: HistoryChange, duration: str, tables: tuple[str, str] = (TABLE, LOG_TABLE)
) -> str:
    """The statements that record ``change``; ``duration`` is an SQL expression, ``tables``
    the names of ``_migrations`` and ``_migrations_log`` to write."""
    applied = change.status == "applied"
    template = _record_template(
        change.status,
        change.action,
        None if applied else change.error,
        None if applied else change.failed_statement,
        performed_by() if change.log else None,
        tables,
    )
    return template.format(
        id=_literal(change.migration_id),
        name=_literal(change.name[:255]),
        checksum=_literal(change.checksum),
        duration=duration,
    )


@functools.lru_cache(maxsize=64)
def _record_template(
    status: str | None,
    action: str,
    error: str | None,
    failed: int | None,
    performed_by: str | None,
    tables: tuple[str, str] = (TABLE, LOG_TABLE),
) -> str:
    """``record_sql``'s statements with everything but the migration's id, name, checksum and
    duration filled in: the same few for every migration of a run (an apply writes "applied"
    with the same log line 1000 times), so the long statements are put together once."""
    keep = _kept(tables)
    parts = []
    if status is None:
        parts.append(_DELETE.format(**keep))
    elif action == "FIX":
        parts.append(_FIX.format(**keep))
    else:
        parts.append(
            _WRITE.format(
                **keep,
                status=_braced(_literal(status)),
                guard="true" if action == "UP" else "false",
                error=_braced(_literal(error)),
                failed=_braced(_literal(failed)),
                session=_braced(_THIS_SESSION) if status == "running" else "NULL",
            )
        )
    return _joined(parts, keep, action, performed_by)


def _braced(text: str) -> str:
    """``text`` kept as it is by the template's second ``format``."""
    return text.replace("{", "{{").replace("}", "}}")


# A multi-statement query shares one statement_timestamp(): the time since is the migration's.
_SERVER_DURATION = "(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::integer"


def _literal(value: str | int | None) -> str:
    """An SQL literal, correct whatever ``standard_conforming_strings`` says.

    Quoting by hand is ten times faster than ``psycopg.sql.Literal`` here, where it runs
    once per migration.
    """
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    text = value.replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"


@hookimpl(trylast=True)
def mg_history_write(session: Session, conn: Any, change: HistoryChange) -> bool | None:
    _forget(session)
    duration = "NULL" if change.duration_ms is None else str(min(change.duration_ms, _INT_MAX))
    session.hooks.query(session, conn, record_sql(change, duration, _tables(session)), ())
    return True
