"""The run-wide PostgreSQL session advisory lock.

The wait polls ``pg_try_advisory_lock`` instead of blocking in ``pg_advisory_lock``: a
session blocked there keeps a snapshot open, and the holder's ``CREATE INDEX CONCURRENTLY``
waits for that snapshot forever. Each poll is its own autocommit query, so no transaction
stays open between polls. Queries go through ``session.hooks.query``, so the lock works
with whichever plugin provides the connection.

While waiting, the holder (pid, application name, and since when its session is connected)
is looked up at once and then every few seconds and passed to ``mg_on_lock_wait``.

A session lock can be lost while held: a migration may call ``pg_advisory_unlock_all()`` or
``DISCARD ALL``, or a connection pooler may hand the session to someone else. So the engine
starts each migration's query with ``mg_lock_check_sql``, a statement that fails when this
session no longer holds the lock; it costs no round trip of its own.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from migretti_core import hookimpl
from migretti_core.errors import LockTimeout
from migretti_core.types import LockHolder, Session

POLL_INTERVAL = 0.25
POLL_JITTER = 0.1
REPORT_EVERY = 5.0

# Connections (by id) on which this plugin holds the lock, and the lock id.
_held: dict[int, int] = {}

_TRY = "SELECT pg_try_advisory_lock(%s::bigint)"
_UNLOCK = "SELECT pg_advisory_unlock(%s::bigint)"
# A bigint key is stored as classid = high 32 bits, objid = low 32 bits, objsubid = 1.
_HOLDER = """
SELECT l.pid, a.application_name, coalesce(a.backend_start, a.query_start)
FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory'
  AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s
  AND l.objid::bigint = %s
  AND l.objsubid = 1
  AND l.pid <> pg_backend_pid()
ORDER BY l.pid
LIMIT 1
"""


def key_parts(lock_id: int) -> tuple[int, int]:
    """The (classid, objid) pair pg_locks shows for a bigint advisory lock key."""
    unsigned = lock_id & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def find_holder(session: Session, conn: Any, lock_id: int) -> LockHolder | None:
    """The session holding ``lock_id`` in this database, if any is visible."""
    classid, objid = key_parts(lock_id)
    rows = session.hooks.query(session, conn, _HOLDER, (classid, objid))
    if not rows:
        return None
    pid, application_name, since = rows[0]
    return LockHolder(
        pid=int(pid) if pid is not None else None,
        application_name=application_name or None,
        since=since if isinstance(since, datetime) else None,
        lock=f"the migration lock {lock_id}",
    )


def describe_holder(holder: LockHolder | None) -> str:
    if holder is None or holder.pid is None:
        return "another session"
    text = f"pid {holder.pid}"
    if holder.application_name:
        text += f" ({holder.application_name})"
    if holder.since is not None:
        text += f" since {holder.since.isoformat(sep=' ', timespec='seconds')}"
    return text


def _seconds(value: float) -> str:
    return f"{value:g}s" if value < 10 else f"{round(value)}s"


def _try(session: Session, conn: Any, lock_id: int) -> bool:
    rows = session.hooks.query(session, conn, _TRY, (lock_id,))
    return bool(rows and rows[0][0])


@hookimpl(trylast=True)
def mg_lock_acquire(session: Session, conn: Any, timeout: float) -> bool | None:
    lock_id = session.config.lock_id
    started = time.monotonic()
    next_report = 0.0
    while not _try(session, conn, lock_id):
        waited = time.monotonic() - started
        if waited >= timeout:
            holder = find_holder(session, conn, lock_id)
            raise LockTimeout(
                f"lock {lock_id} is held by {describe_holder(holder)}; "
                f"gave up after {_seconds(timeout)}",
                hint="wait for that run to finish, or allow a longer wait with --lock-timeout",
            )
        if waited >= next_report:
            holder = find_holder(session, conn, lock_id)
            if holder is not None:
                session.hooks.on_lock_wait(session, holder, waited)
            next_report = waited + REPORT_EVERY
        import random

        pause = POLL_INTERVAL + random.uniform(0.0, POLL_JITTER)
        time.sleep(max(0.0, min(pause, timeout - waited)))
    _held[id(conn)] = lock_id
    return True


@hookimpl(trylast=True)
def mg_lock_release(session: Session, conn: Any) -> bool | None:
    _held.pop(id(conn), None)
    session.hooks.query(session, conn, _UNLOCK, (session.config.lock_id,))
    return True


def check_sql(lock_id: int) -> str:
    """A statement that fails (22P02, with the reason in its message) unless this session
    holds the advisory lock ``lock_id``; a cast that cannot succeed is how plain SQL raises
    an error, and ``pg_backend_pid()`` keeps it from being evaluated at plan time.

    It asks the lock manager rather than ``pg_locks``, which copies every lock of the server
    (about 50 us a migration, more on a busy server): a transaction-level hold on the key
    (granted to this session whatever it holds, refused while another session holds the
    key) keeps other sessions out while ``pg_advisory_unlock`` says whether the session
    lock was held (releasing it, with a warning when it was not) and ``pg_try_advisory_lock``
    takes it back. The nested ``CASE`` fixes the order of the three calls.

    The key is a quoted literal: ``-9223372036854775808::bigint`` would cast the positive
    number (out of range) before negating it.
    """
    key = f"'{lock_id}'::bigint"
    return (
        f"SELECT CASE WHEN (CASE WHEN pg_try_advisory_xact_lock({key}) "
        f"THEN CASE WHEN pg_advisory_unlock({key}) THEN pg_try_advisory_lock({key}) END END) "
        "IS TRUE THEN 1 ELSE ('migretti: session ' || pg_backend_pid() || "
        f"' no longer holds the migration lock {lock_id}')::integer END"
    )


@hookimpl(trylast=True)
def mg_lock_check_sql(session: Session, conn: Any) -> str | None:
    lock_id = _held.get(id(conn))
    return None if lock_id is None else check_sql(lock_id)
