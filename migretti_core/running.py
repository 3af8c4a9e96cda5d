"""Running: the lock, one migration's query, the statement runner, table-lock retries, and
the commands that change the database (apply, rollback, fix).

Nothing here knows PostgreSQL, SQL files or YAML; that is the plugins' business. The rules
of running live here: recompute the plan once the lock is held, keep a transactional
migration and its history row in one transaction (one round trip), and leave an honest
``running`` or ``failed`` row behind a no-transaction migration.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from migretti_core.errors import (
    Aborted,
    DatabaseError,
    Interrupted,
    LockTimeout,
    MgError,
    MigrationFailed,
    MigrationFileError,
    PluginFailed,
    SqlError,
    StateError,
    Terminated,
    UsageError,
)
from migretti_core.messages import lost_connection_reason, printable
from migretti_core.planning import (
    FIX_HINT,
    FIX_HINT_DOWN,
    ApplyRequest,
    RollbackRequest,
    ensure_not_blocked,
    load_migrations,
    plan_apply,
    plan_rollback,
    rollback_shortfall,
    tampering_of,
    validate,
)
from migretti_core.reporting import display_path, finding_line, relative_path, report
from migretti_core.resolve import resolve_id
from migretti_core.state import State, at_work, order_history
from migretti_core.textfiles import has_sql, read_bytes, sha256_hex
from migretti_core.types import (
    Action,
    Direction,
    FileText,
    HistoryChange,
    LintFinding,
    LintRequest,
    Migration,
    MigrationResult,
    Plan,
    Session,
    Statement,
    StatementBatch,
    StatementInfo,
    keeping_file_bytes,
    read_once,
)


@contextmanager
def connected(session: Session) -> Iterator[Any]:
    conn = session.hooks.connect(session)
    try:
        yield conn
    finally:
        _closing(session, session.hooks.disconnect, conn)


def _closing(session: Session, hook: Callable[[Session, Any], Any], conn: Any) -> None:
    """Release the lock or close the connection: the command's own result stands, and a
    plugin that crashed doing so is named in a warning."""
    try:
        hook(session, conn)
    except PluginFailed as exc:
        if exc.plugin:
            session.hooks.plugin_warning(exc.plugin, exc.hook, exc.__cause__ or exc)
    except Exception:
        pass


def read_state(session: Session, conn: Any, migrations: Sequence[Migration]) -> State:
    history = order_history(session.hooks.history_read(session, conn))
    return State(tuple(migrations), tuple(history))


def _line_of(sql: str, position: int | None, first_line: int) -> int:
    if not position or position < 1:
        return first_line
    return first_line + sql[: position - 1].count("\n")


_AT_OR_NEAR = ' at or near "'


def one_line_quote(message: str) -> str:
    """A server message whose quoted SQL ("at or near "...") runs over several lines, cut at
    the end of the first: an unterminated quote or comment quotes everything after it."""
    at = message.find(_AT_OR_NEAR)
    if at == -1:
        return message
    newline = message.find("\n", at + len(_AT_OR_NEAR))
    return message if newline == -1 else message[:newline].rstrip() + '..."'


def sql_failure(
    migration: Migration, exc: SqlError, sql: str, first_line: int, note: str | None = None
) -> SqlError:
    """The server's error placed in the migration file: names file, line and SQLSTATE."""
    line = _line_of(sql, exc.position, first_line)
    code = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    message = one_line_quote(exc.server_message)
    # The server's message is one line, its own line breaks escaped (`RAISE EXCEPTION
    # E'a\nb'`): no text of the server starts a line of mg's output.
    parts = [f"{display_path(migration.path)}:{line}: {printable(message)}{code}"]
    if message.startswith("unterminated "):
        note = note or (
            "it is never closed, so everything after it was read as part of it; close it"
        )
    # The server's fields may hold several lines (a CONTEXT line per PL/pgSQL frame): each
    # continues indented under its label, never at the start of a line of mg's output.
    fields = (("DETAIL", exc.detail), ("HINT", exc.server_hint), ("CONTEXT", exc.context))
    for label, text in fields:
        if text:
            lines = (printable(part) for part in text.strip("\n").splitlines())
            parts.append(f"  {label}: " + "\n    ".join(lines))
    if note:
        parts.append(f"  NOTE: {note}")
    failure = SqlError(
        exc.server_message,
        sqlstate=exc.sqlstate,
        detail=exc.detail,
        position=exc.position,
        context=exc.context,
        file=relative_path(migration.path),
        line=line,
        migration_id=migration.id,
    )
    failure.server_hint = exc.server_hint
    failure.message = "\n".join(parts)
    return failure


class QueryParts(Sequence[str]):
    """The parts of a query as ``mg_execute_transaction`` receives them: a ``FileText`` is
    read when its part is taken, and not kept, so a plugin going through the parts one at
    a time (as it sends them) holds one copy of a large migration at most, beside its own."""

    __slots__ = ("_parts",)

    def __init__(self, parts: Sequence[str | FileText]) -> None:
        self._parts = tuple(parts)

    def __len__(self) -> int:
        return len(self._parts)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> QueryParts: ...

    def __getitem__(self, index: int | slice) -> str | QueryParts:
        if isinstance(index, slice):
            return QueryParts(self._parts[index])
        return _loaded(self._parts[index])

    def __iter__(self) -> Iterator[str]:
        for part in self._parts:
            yield _loaded(part)

    def kept(self) -> tuple[str | FileText, ...]:
        """The parts as held, a large migration's SQL still a ``FileText``: for a plugin that
        sends its bytes as they are (``FileText.append_utf8``)."""
        return self._parts


def _loaded(text: str | FileText) -> str:
    return text.load() if isinstance(text, FileText) else text


@dataclass(frozen=True)
class MigrationQuery:
    """The one query a migration is sent as: the lock check, the migration's SQL, its record.

    Kept in three parts, so a 20 MB migration is not copied to put them together, and so
    the position of a server error tells which part failed. The SQL of a large file is a
    ``FileText``, read from the file when the parts are taken (see ``QueryParts``).
    """

    head: str
    sql: str | FileText
    tail: str

    @classmethod
    def build(cls, check: str | None, sql: str | FileText, record: str | None) -> MigrationQuery:
        return cls(f"{check};\n" if check else "", sql, f"\n;\n{record}" if record else "")

    @property
    def parts(self) -> QueryParts:
        return QueryParts((self.head, self.sql, self.tail))

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def sql_start(self) -> int:
        return len(self.head)

    @property
    def sql_end(self) -> int:
        return len(self.head) + len(self.sql)

    def part(self, position: int | None) -> str:
        """``check``, ``sql`` or ``record``: where the 1-based ``position`` falls."""
        if position is None:
            return "sql"
        if position <= self.sql_start:
            return "check"
        if position > self.sql_end:
            return "record"
        return "sql"

    def own_text_removed(self, message: str) -> str:
        """A server message quoting the SQL ("at or near ...") cut before mg's own statements."""
        tail = self.tail[:16]
        at = message.find(tail) if tail else -1
        return message if at == -1 else message[:at].rstrip() + '..."'


def _blank(sql: str | FileText) -> bool:
    """``not sql.strip()`` without copying (or reading) a large text."""
    if isinstance(sql, FileText):
        return sql.blank
    return not sql or sql.isspace()


class PlanLockTimeout(Exception):
    """A transactional migration of a ``--single-transaction`` plan hit
    ``table_lock_timeout``. Not retried on its own: the plan's transaction would keep the
    locks of the migrations before it through the pause, queueing their tables' traffic
    behind it. ``run_plan`` rolls the whole plan back and tries it again."""

    def __init__(
        self,
        migration: Migration,
        error: SqlError,
        holders: list[Any],
        give_up: Callable[[int], MgError],
        sooner: float | None = None,
    ) -> None:
        super().__init__(error.server_message)
        self.migration = migration
        self.error = error
        self.holders = holders
        self.give_up = give_up  # the error after that many retries
        self.sooner = sooner  # see _sooner


def run_migration(
    session: Session,
    conn: Any,
    migration: Migration,
    direction: Direction,
    *,
    retry: bool = True,
    unflushed: str = "",
) -> int:
    """Run one migration and record it; return its duration in milliseconds.

    Without ``retry`` (a ``--single-transaction`` plan), a table-lock timeout raises
    ``PlanLockTimeout`` instead of trying the migration again. ``unflushed`` (from
    ``mg_unflushed_commit_sql``) starts a transactional migration's query: its COMMIT need
    not wait for the disk, as a later one of the run will."""
    hooks = session.hooks
    # A large file's section stays a FileText, read as it is sent and again only for an
    # error: holding it here would keep a second copy beside the query while it runs.
    sql, first_line = migration.section_kept(direction)
    action: Action = "UP" if direction == "up" else "DOWN"
    status: Any = "applied" if direction == "up" else None
    started = time.perf_counter()
    check = hooks.lock_check_sql(session, conn)

    def done() -> int:
        return int((time.perf_counter() - started) * 1000)

    lock_wait, retries, statement_wait = table_lock_settings(session)
    if migration.transactional:
        change = HistoryChange(migration.id, migration.name, migration.checksum, action, status)
        record = hooks.history_sql(session, change)
        # One query: the timeouts, the lock check, the SQL as written, the history row; one
        # transaction.
        settings = hooks.timeout_sql(session, lock_wait, statement_wait, True)
        head = "; ".join(part for part in (settings, unflushed, check) if part) or None
        query = MigrationQuery.build(head, "" if _blank(sql) else sql, record)
        attempt = 0
        sooner: float | None = None  # how soon the last try gave up, when before lock_wait
        while True:
            writing = False
            tried = time.perf_counter()
            with _watch(session, conn, lock_wait, sooner) as blockers:
                try:
                    # The database plugin opens and commits the transaction in the same
                    # round trip when it can.
                    if not (record and hooks.execute_transaction(session, conn, query.parts)):
                        with hooks.transaction(session, conn):
                            if query.sql or query.head or query.tail:
                                hooks.execute(session, conn, query.text)
                            if not record:
                                writing = True
                                timed = dataclasses.replace(change, duration_ms=done())
                                hooks.history_write(session, conn, timed)
                                writing = False
                    return done()
                except DatabaseError as exc:
                    # the session ended (terminated, server restart, network): name the
                    # migration, and say what its state can be
                    raise DatabaseError(
                        f"the database connection was lost while migration {migration.id} "
                        f"({printable(migration.name)}) ran: {lost_connection_reason(exc.message)}",
                        hint="its transaction was rolled back, unless the server committed it "
                        "just before the connection dropped: `mg status` shows whether it is "
                        "recorded as applied; run the command again to go on",
                    ) from exc
                except SqlError as exc:
                    part = "record" if writing else query.part(exc.position)
                    # the history row is written in the same transaction: a lock on it
                    # (a hand edit left open) is waited for, and retried, as a table's is
                    if _lock_timed_out(exc, lock_wait) and part in ("sql", "record"):
                        attempt += 1
                        sooner = _sooner(
                            lock_wait, time.perf_counter() - tried, lambda: _loaded(sql)
                        )
                        holders = list(blockers)
                        if not retry or attempt > retries:
                            # the error after that many retries
                            give_up = functools.partial(
                                _gave_up,
                                session,
                                migration,
                                exc,
                                query,
                                _loaded(sql),
                                first_line,
                                lock_wait,
                                holders=holders,
                                sooner=sooner,
                                part=part,
                            )
                            if not retry:
                                raise PlanLockTimeout(
                                    migration, exc, holders, give_up, sooner
                                ) from exc
                            raise give_up(attempt - 1) from exc
                        failure = exc
                    else:
                        raise _query_failure(
                            session,
                            conn,
                            migration,
                            direction,
                            query,
                            part,
                            exc,
                            _loaded(sql),
                            first_line,
                        ) from exc
            _lock_retry(
                session, migration, attempt, retries, lock_wait, holders, failure, sooner=sooner
            )

    statements: list[Statement] = [] if _blank(sql) else hooks.split_statements(_loaded(sql))
    running = HistoryChange(
        migration.id, migration.name, migration.checksum, action, "running", log=False
    )
    # The timeouts bound the history writes around the statements too: a session keeping
    # _migrations locked must not hold the run up without end.
    settings = hooks.timeout_sql(session, lock_wait, statement_wait, False)
    if settings:
        hooks.execute(session, conn, settings)
    try:
        _start_no_transaction(
            session, conn, migration, direction, check, running, (lock_wait, retries)
        )
    except BaseException:
        if settings:
            with suppress(MgError):
                hooks.execute(session, conn, hooks.timeout_sql(session, 0, 0, False))
        raise
    at = [0]  # the statement running, for a message when something stops it
    try:
        try:
            _run_statements(
                session,
                conn,
                migration,
                action,
                statements,
                first_line,
                done,
                (lock_wait, retries),
                at,
            )
            at[0] = len(statements) + 1
            finished = HistoryChange(
                migration.id, migration.name, migration.checksum, action, status, done()
            )
            try:
                _write_retried(session, conn, migration, finished, (lock_wait, retries))
            except SqlError as exc:
                raise _unrecorded(migration, len(statements), exc) from exc
        finally:
            if settings:
                with suppress(MgError):
                    hooks.execute(session, conn, hooks.timeout_sql(session, 0, 0, False))
    except KeyboardInterrupt as exc:
        reason = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        cut = _cut_short(session, conn, migration, direction, statements, at, reason, done())
        raise Interrupted(cut) from None
    except DatabaseError as exc:
        reason = f"a lost connection ({exc.message})"
        cut = _cut_short(session, conn, migration, direction, statements, at, reason, done())
        raise DatabaseError(cut) from exc
    return done()


def _unrecorded(migration: Migration, count: int, exc: SqlError) -> MgError:
    """The error when a no-transaction migration's statements all ran but its last history
    write failed."""
    if f"{migration.id} is already recorded as applied" in exc.server_message:
        # the history's refusal: the row says `applied` already (written by hand,
        # by `mg fix`, or by the migration itself), not `running` as this run left it
        return StateError(
            f"migration {migration.id} ({printable(migration.name)}) is already "
            f"recorded as applied: its row was changed while this run ran its "
            f"{count} statements, which all ran (it is a no-transaction "
            "migration); this run did not record it again",
            hint="check that nothing else runs it (mg runs hold an advisory lock; "
            "no migration should release it or write _migrations)",
        )
    # Every statement ran; only the last history write failed (a migration that
    # ran SET ROLE, for example): say so, and what the row left `running` needs.
    code = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    return MigrationFailed(
        f"recording migration {migration.id} ({printable(migration.name)}) in the history "
        f"failed: {exc.message}{code}",
        hint=f"all {count} of its statements ran (it is a no-transaction "
        f"migration), but its row is left `running`: `mg fix {migration.id} "
        f"--applied` records it as applied, `mg fix {migration.id} --remove` as "
        "not applied; a migration that changes the session (SET ROLE, SET "
        "SESSION AUTHORIZATION) should RESET it at its end",
    )


def _write_retried(
    session: Session,
    conn: Any,
    migration: Migration,
    change: HistoryChange,
    lock: tuple[float, int],
) -> None:
    """Write a no-transaction migration's history row; a write that hit the table-lock
    timeout (a session keeping _migrations or the row locked) changed nothing and is tried
    again, as a statement is. The last failure goes on as it came."""
    lock_wait, retries = lock
    attempt = 0
    while True:
        with _watch(session, conn, lock_wait) as blockers:
            try:
                session.hooks.history_write(session, conn, change)
                return
            except SqlError as exc:
                if not _lock_timed_out(exc, lock_wait) or attempt >= retries:
                    if _lock_timed_out(exc, lock_wait):
                        note = _gave_up_note(
                            session, lock_wait, attempt, list(blockers), kind=lock_kind(exc)
                        )
                        exc.message = f"{exc.message} ({note})"
                    raise
                error, holders = exc, list(blockers)
        attempt += 1
        _lock_retry(session, migration, attempt, retries, lock_wait, holders, error)


# A batch for mg_execute_each: bounded, so Ctrl-C, the blockers' probe (armed once per
# batch) and a lock-timeout retry stay close to the statement concerned.
BATCH_STATEMENTS = 100
BATCH_CHARS = 256 * 1024


def _batch_at(texts: Sequence[str], index: int) -> StatementBatch | None:
    """The statements from ``index`` (0-based) for one ``mg_execute_each``, or None when
    only one would go."""
    end = index
    limit = min(len(texts), index + BATCH_STATEMENTS)
    size = 0
    while end < limit:
        size += len(texts[end])
        if size > BATCH_CHARS and end > index:
            break
        end += 1
    return StatementBatch(texts[index:end]) if end - index >= 2 else None


def _run_statements(
    session: Session,
    conn: Any,
    migration: Migration,
    action: Action,
    statements: Sequence[Statement],
    first_line: int,
    done: Callable[[], int],
    lock: tuple[float, int],
    at: list[int],
) -> None:
    """Run a no-transaction migration's statements; a statement that hit the table-lock
    timeout is tried again when it cannot have changed anything. ``at[0]`` follows the
    statement running; ``at[1]``, when set, is the last one that may also have run (a
    batch cut short without an answer for all of it).

    Consecutive statements go to ``mg_execute_each`` in bounded batches (the database
    plugin sends those that may share a query together, each committing on its own);
    a statement it leaves goes alone through ``mg_execute``.
    """
    hooks = session.hooks
    lock_wait, retries = lock
    total = len(statements)
    texts = [s.text for s in statements] if total > 1 and hooks.batches_statements() else None
    index = 0  # statements done
    attempt = 0
    sooner: float | None = None  # how soon the last try gave up, when before lock_wait
    info: StatementInfo | None = None  # asked of the database plugin once it failed
    while index < total:
        at[0] = index + 1
        error: SqlError | None = None
        holders: list[Any] = []
        batch = None if texts is None else _batch_at(texts, index)
        tried = time.perf_counter()
        took = 0.0
        try:
            with _watch(session, conn, lock_wait, sooner) as blockers:
                try:
                    if batch is not None and not (
                        hooks.execute_each(session, conn, batch) and batch.committed
                    ):
                        batch = None  # not handled: the first statement goes alone
                    if batch is None:
                        hooks.execute(session, conn, statements[index].text)
                except SqlError as exc:
                    error = exc
                    holders = list(blockers)
                    took = time.perf_counter() - tried
            ran = (0 if error else 1) if batch is None else batch.committed
            at[0] = index + ran + 1
        except BaseException:
            # Ctrl-C, SIGTERM, a lost connection: the batch counted what committed
            if batch is not None:
                at[0] = index + batch.committed + 1
                if not batch.settled:
                    at.append(index + len(batch.statements))
            raise
        if ran:
            index += ran
            attempt = 0
            sooner = None
            info = None
        if error is None:
            continue
        number = index + 1
        at[0] = number
        statement = statements[index]
        if error.sqlstate and error.sqlstate.startswith(("08", "57P")):
            # The server ended the session (terminated, shut down): nothing to write on.
            raise DatabaseError(error.message) from error
        timed_out = _lock_timed_out(error, lock_wait)
        if timed_out:
            sooner = _sooner(lock_wait, took, functools.partial(_ran, statements, index + 1))
        if info is None:
            info = hooks.describe_statement(statement.text)
        # Alone, a statement of a block the migration opened (BEGIN) would run without the
        # statements before it, which the failure rolled back with the block.
        block = error.block_rolled_back
        if timed_out and attempt < retries and info.retry_safe and not block:
            attempt += 1
            _lock_retry(
                session, migration, attempt, retries, lock_wait, holders, error, sooner=sooner
            )
            continue
        note = info.note
        if timed_out and (block or not info.retry_safe):
            # never tried again: say why, not that it gave up after 0 retries
            why = _BLOCK_ROLLED_BACK if block else note or _MAY_NOT_BE_SAFE
            note = _not_retried_note(session, lock_wait, holders, sooner, why, lock_kind(error))
            if block and info.note:
                note = f"{note}; {info.note}"
        else:
            if timed_out:
                note = "; ".join(
                    part
                    for part in (
                        _gave_up_note(
                            session, lock_wait, attempt, holders, sooner, lock_kind(error)
                        ),
                        note,
                    )
                    if part
                )
            if block:
                note = "; ".join(part for part in (note, _BLOCK_ROLLED_BACK) if part)
        failure = sql_failure(
            migration, error, statement.text, first_line + statement.line - 1, note
        )
        code = f" ({error.sqlstate})" if error.sqlstate else ""
        # The server may quote a secret (a password cast to int): masked before stored.
        stored = hooks.redact(f"line {failure.line}: {error.server_message}{code}")
        hooks.history_write(
            session,
            conn,
            HistoryChange(
                migration.id,
                migration.name,
                migration.checksum,
                action,
                "failed",
                done(),
                error=stored,
                failed_statement=number,
                log=False,
            ),
        )
        failure.message = (
            f"{failure.message}\n  statement {number} of {total}"
            f"{f' ({info.kind})' if info.kind else ''} failed; "
            f"migration {migration.id} is now marked failed; "
            + (FIX_HINT if action == "UP" else FIX_HINT_DOWN).format(id=migration.id)
        )
        raise failure from error


LOCK_NOT_AVAILABLE = "55P03"


def table_lock_settings(session: Session) -> tuple[float, int, float]:
    """``(lock timeout, retries, statement timeout)`` in seconds; 0 means off.

    ``--table-lock-timeout`` and ``--statement-timeout`` win over mg.yaml.
    """
    config = session.config
    options = session.options
    wait = options.table_lock_timeout
    if wait is None:
        wait = config.table_lock_timeout
    statement = options.statement_timeout
    if statement is None:
        statement = config.statement_timeout
    return wait, config.table_lock_retries, statement


def _watch(
    session: Session, conn: Any, lock_wait: float, sooner: float | None = None
) -> AbstractContextManager[list[Any]]:
    """Who blocks the statement, probed halfway through the lock timeout, or halfway
    through ``sooner``: the time the last try took to give up, when the migration's own
    ``lock_timeout`` ended it before ``lock_wait``."""
    if lock_wait <= 0:
        return nullcontext([])
    after = lock_wait if sooner is None else min(lock_wait, sooner)
    return session.hooks.lock_blockers(session, conn, after / 2)


def _sooner(lock_wait: float, took: float, sql: Callable[[], str]) -> float | None:
    """``took`` when a try that failed with 55P03 was ended by the migration's own
    ``lock_timeout`` or a ``NOWAIT``, not by ``table_lock_timeout``: it ended before
    ``table_lock_timeout`` could fire (which counts from the lock wait's start, after the
    try's), or ``sql`` (what ran of the migration) sets ``lock_timeout`` itself. None
    otherwise."""
    if took < lock_wait or _SETS_LOCK_TIMEOUT.search(sql()):
        return took
    return None


def _ran(statements: Sequence[Statement], count: int) -> str:
    """The text of a no-transaction migration's first ``count`` statements."""
    return "\n".join(s.text for s in statements[:count])


_SETS_LOCK_TIMEOUT = re.compile(
    r"\bset\s+(?:local\s+|session\s+)?lock_timeout\b|\bset_config\s*\(\s*'lock_timeout'",
    re.IGNORECASE,
)


def _lock_timed_out(exc: SqlError, lock_wait: float) -> bool:
    return lock_wait > 0 and exc.sqlstate == LOCK_NOT_AVAILABLE


# PostgreSQL's CONTEXT of a wait for a row another transaction holds: "while updating tuple
# (0,1) in relation "t"" (locking, deleting, inserting index, checking uniqueness of, ...).
_ROW_WAIT = re.compile(r"\btuple \(\d+,\d+\) in relation\b")


def lock_kind(exc: SqlError | None) -> str:
    """What a lock timeout waited for, as messages name it: ``row lock`` when the server's
    error says it waited for a row (``SELECT ... FOR UPDATE`` in another session; the
    ``table_lock_timeout`` covers those waits too), ``table lock`` otherwise."""
    if exc is not None and exc.context and _ROW_WAIT.search(exc.context):
        return "row lock"
    return "table lock"


def lock_retry_pause(attempt: int) -> float:
    """Seconds to wait before retry ``attempt``: growing, jittered, at most about 20 s."""
    import random

    return min(0.5 * 1.5 ** (attempt - 1), 15.0) * random.uniform(0.5, 1.5)


def with_table_lock_timeout(
    session: Session,
    conn: Any,
    work: Callable[[], None],
    *,
    limited: bool,
    what: str,
    doing: str,
    hint: str,
    failure: Callable[[SqlError], Exception] | None = None,
) -> None:
    """Run ``work`` in one transaction; with ``limited`` (it takes a strong lock on a history
    table: ``ALTER TABLE``), each lock wait ends after ``table_lock_timeout`` and the whole is
    tried again ``table_lock_retries`` times, a ``history.lock_retry`` warning naming who holds
    the lock before each retry. A session holding a lock on the table (an open transaction
    that read it) would otherwise keep ``work`` waiting without end, and every reader of the
    table, ``mg status`` included, would queue behind it.

    After the last retry: ``DatabaseError`` (exit 1) saying ``cannot WHAT: the table lock was
    not granted ...; blocked by ...; nothing was changed`` with ``hint`` (a retry's warning
    starts with ``doing``). Any other server error goes through ``failure`` when given."""
    hooks = session.hooks
    wait, retries, _ = table_lock_settings(session)
    limit = hooks.timeout_sql(session, wait, 0, True) if limited and wait > 0 else ""
    attempt = 0
    while True:
        watch = hooks.lock_blockers(session, conn, wait / 2) if limit else nullcontext([])
        with watch as holders:
            try:
                with hooks.transaction(session, conn):
                    if limit:
                        hooks.query(session, conn, limit, ())
                    work()
                return
            except SqlError as exc:
                if not limit or exc.sqlstate != LOCK_NOT_AVAILABLE:
                    if failure is None:
                        raise
                    raise failure(exc) from exc
                error = exc
        who = ", ".join(hooks.describe_lock_holder(h) for h in holders)
        blocked = f"; blocked by {who}" if who else ""
        if attempt >= retries:
            raise DatabaseError(
                f"cannot {what}: the table lock was not granted within {wait:g}s after "
                f"{retries} retr{'y' if retries == 1 else 'ies'}{blocked}; nothing was changed",
                hint=hint,
            ) from error
        attempt += 1
        pause = lock_retry_pause(attempt)
        report(
            session,
            "history.lock_retry",
            "warning",
            f"{doing}: table lock not granted within {wait:g}s{blocked}; "
            f"retry {attempt} of {retries} in {pause:.1f}s",
            attempt=attempt,
            retries=retries,
            wait_s=round(pause, 3),
            lock_timeout_s=wait,
            blockers=[_holder_dict(h) for h in holders],
        )
        time.sleep(pause)


def _age(since: Any) -> float | None:
    from datetime import datetime, timezone

    if not isinstance(since, datetime):
        return None
    return max(0.0, (datetime.now(timezone.utc) - since).total_seconds())


def _holder_dict(holder: Any) -> dict[str, Any]:
    age = _age(holder.since)
    return {
        "pid": holder.pid,
        "application_name": holder.application_name,
        "state": getattr(holder, "state", None),
        "transaction_s": round(age, 1) if age is not None else None,
    }


def _format_wait(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:g}s"


def _lock_retry(
    session: Session,
    migration: Migration,
    attempt: int,
    retries: int,
    lock_wait: float,
    holders: Sequence[Any],
    error: SqlError,
    *,
    whole_plan: bool = False,
    sooner: float | None = None,
) -> None:
    pause = lock_retry_pause(attempt)
    describe = session.hooks.describe_lock_holder
    who = "; blocked by " + ", ".join(describe(h) for h in holders) if holders else ""
    plan = "; the whole plan was rolled back (--single-transaction)" if whole_plan else ""
    if sooner is None:
        waited = f"within {_format_wait(lock_wait)}"
    else:
        waited = f"after {_format_wait(sooner)} ({_OWN_TIMEOUT.format(_format_wait(lock_wait))})"
    report(
        session,
        "migration.lock_retry",
        "warning",
        f"{migration.id} {migration.name}: {lock_kind(error)} not granted "
        f"{waited}{who}{plan}; retry {attempt} of {retries} in {pause:.1f}s",
        migration_id=migration.id,
        migration_name=migration.name,
        attempt=attempt,
        retries=retries,
        wait_s=round(pause, 3),
        lock_timeout_s=lock_wait,
        attempt_s=round(sooner if sooner is not None else lock_wait, 3),
        blockers=[_holder_dict(h) for h in holders],
        error=error.server_message,
    )
    time.sleep(pause)


_BLOCK_ROLLED_BACK = (
    "it ran inside the migration's own BEGIN ... COMMIT block, which was rolled back: the "
    "block's earlier statements are undone too"
)


_OWN_TIMEOUT = "the migration's own lock_timeout or NOWAIT, not table_lock_timeout {}"


def _blockers_said(session: Session, holders: Sequence[Any], sooner: float | None) -> str:
    if holders:
        return "blocked by " + ", ".join(session.hooks.describe_lock_holder(h) for h in holders)
    if sooner is None:
        return "the blocking sessions had gone when asked"
    return "who held the lock is not known"


def _gave_up_note(
    session: Session,
    lock_wait: float,
    retries: int,
    holders: Sequence[Any],
    sooner: float | None = None,
    kind: str = "table lock",
) -> str:
    who = _blockers_said(session, holders, sooner)
    count = f"{retries} retr{'y' if retries == 1 else 'ies'}"
    if sooner is None:
        waited = f"within {_format_wait(lock_wait)} after {count}"
    else:
        own = _OWN_TIMEOUT.format(_format_wait(lock_wait))
        waited = f"after {count}, the last try given up after {_format_wait(sooner)} ({own})"
    return f"no {kind} {waited}; {who} (table_lock_timeout, table_lock_retries)"


_MAY_NOT_BE_SAFE = "the database plugin does not know it to be safe to run again"


def _not_retried_note(
    session: Session,
    lock_wait: float,
    holders: Sequence[Any],
    sooner: float | None,
    why: str,
    kind: str = "table lock",
) -> str:
    """The note of a statement whose lock timeout is not tried again, and why."""
    who = _blockers_said(session, holders, sooner)
    if sooner is None:
        waited = f"within {_format_wait(lock_wait)}"
    else:
        waited = f"after {_format_wait(sooner)} ({_OWN_TIMEOUT.format(_format_wait(lock_wait))})"
    return f"no {kind} {waited}; {who} (table_lock_timeout); not retried: {why}"


def _gave_up(
    session: Session,
    migration: Migration,
    exc: SqlError,
    query: MigrationQuery,
    sql: str,
    first_line: int,
    lock_wait: float,
    retries: int,
    holders: Sequence[Any],
    sooner: float | None = None,
    part: str = "sql",
) -> MgError:
    note = _gave_up_note(session, lock_wait, retries, holders, sooner, lock_kind(exc))
    if part == "record":
        return MigrationFailed(
            f"recording migration {migration.id} ({printable(migration.name)}) in the "
            f"history failed: {exc.server_message} (SQLSTATE {exc.sqlstate})",
            hint=f"{note}; its transaction was rolled back",
        )
    if exc.position is not None:
        exc.position -= query.sql_start
    return sql_failure(migration, exc, sql, first_line, note)


def _cut_short(
    session: Session,
    conn: Any,
    migration: Migration,
    direction: Direction,
    statements: Sequence[Statement],
    at: Sequence[int],
    reason: str,
    duration: int,
) -> str:
    """Leave an honest row behind a no-transaction migration that stopped midway, and say
    what happened and what each way out does.

    ``at[0]`` is the statement that was running (1-based), or one past the last when the
    statements had all run and only their record was missing; ``at[1]``, when there, is
    the last statement that may have run too (a batch whose answers were not all read).
    The row becomes ``failed`` with that statement number when mg can still write (Ctrl-C,
    SIGTERM); it stays ``running`` when it cannot (the connection is gone).
    """
    total = len(statements)
    index = at[0]
    last = max(index, min(at[1], total)) if len(at) > 1 else index
    action: Action = "UP" if direction == "up" else "DOWN"
    complete = index > total
    if complete:
        status: Any = "applied" if direction == "up" else None
        change = HistoryChange(
            migration.id, migration.name, migration.checksum, action, status, duration
        )
    else:
        change = HistoryChange(
            migration.id,
            migration.name,
            migration.checksum,
            action,
            "failed",
            duration,
            error=session.hooks.redact(f"stopped by {reason} during statement {index} of {total}"),
            failed_statement=index,
            log=False,
        )
    left = "running"
    try:
        session.hooks.history_write(session, conn, change)
        left = change.status or "removed"
    except BaseException:  # a second Ctrl-C, or no connection: the row stays as it is
        pass
    ident = migration.id
    what = f"migration {ident} ({printable(migration.name)})"
    if complete:
        head = f"{what} ran all {total} statements, then {reason}"
        if left != "running":
            return f"{head}; it is recorded as {'applied' if left == 'applied' else 'rolled back'}"
        return (
            f"{head} before it was recorded; its row is left `running`.\n  "
            f"`mg fix {ident} --applied` records it as applied; `mg fix {ident} --remove` "
            "deletes its row"
        )
    line = migration.up_line if direction == "up" else migration.down_line or migration.up_line
    where = f"{display_path(migration.path)}:{line + statements[index - 1].line - 1}"
    done_part = f"{_statements(1, index - 1)} took effect, " if index > 1 else ""
    rest = f", {_statements(last + 1, total)} did not run" if last < total else ""
    # "statement 1 took effect, statement 2 may or may not have"; without a statement before
    # it, the sentence says what it may or may not have done
    running = f"statement {index} may or may not have" + ("" if done_part else " taken effect")
    if last > index:
        running = f"statements {index}-{last} may or may not have run"
    verb = "applying it" if direction == "up" else "rolling it back"
    if direction == "up":
        ways = (
            f"`mg fix {ident} --applied` records it as applied (after you finish "
            f"{_statements(index, total)} by hand); `mg fix {ident} --remove` deletes its row "
            "so the next "
            f"`mg apply` runs it again from statement 1 (after you undo what ran)"
        )
    else:
        ways = (
            f"`mg fix {ident} --applied` keeps it recorded as applied (after you restore what "
            f"ran); `mg fix {ident} --remove` deletes its row, as a finished rollback would "
            f"(after you finish {_statements(index, total)} by hand)"
        )
    return (
        f"{what} was stopped by {reason} while {verb}, during statement {index} of {total} "
        f"({where}); it is a no-transaction migration, so {done_part}{running}{rest}. "
        f"Its row is left `{left}`"
        + (f" at statement {index}" if left == "failed" else "")
        + f".\n  {ways}"
    )


def _statements(first: int, last: int) -> str:
    return f"statement {first}" if first == last else f"statements {first}-{last}"


def _start_no_transaction(
    session: Session,
    conn: Any,
    migration: Migration,
    direction: Direction,
    check: str | None,
    running: HistoryChange,
    lock: tuple[float, int],
) -> None:
    """Check the lock and mark the migration ``running``, in one query when the history
    plugin gives its SQL. A row write that hit the table-lock timeout (a session keeping
    _migrations locked) changed nothing and is tried again, as a statement is."""
    hooks = session.hooks
    record = hooks.history_sql(session, running)
    query = MigrationQuery.build(check, "", record)
    lock_wait, retries = lock
    attempt = 0
    while True:
        part = "check"
        with _watch(session, conn, lock_wait) as blockers:
            try:
                if record:
                    hooks.execute(session, conn, query.text)
                else:
                    if check:
                        hooks.execute(session, conn, check)
                    part = "record"
                    hooks.history_write(session, conn, running)
                return
            except SqlError as exc:
                if record:
                    part = query.part(exc.position)
                timed_out = part == "record" and _lock_timed_out(exc, lock_wait)
                if not timed_out or attempt >= retries:
                    if timed_out:
                        note = _gave_up_note(
                            session, lock_wait, attempt, list(blockers), kind=lock_kind(exc)
                        )
                        raise MigrationFailed(
                            f"recording migration {migration.id} "
                            f"({printable(migration.name)}) as running in the history failed: "
                            f"{exc.message} (SQLSTATE {exc.sqlstate})",
                            hint=f"{note}; none of its statements ran",
                        ) from exc
                    sql, first_line = migration.section(direction)
                    raise _query_failure(
                        session, conn, migration, direction, query, part, exc, sql, first_line
                    ) from exc
                error, holders = exc, list(blockers)
        attempt += 1
        _lock_retry(session, migration, attempt, retries, lock_wait, holders, error)


def _query_failure(
    session: Session,
    conn: Any,
    migration: Migration,
    direction: Direction,
    query: MigrationQuery,
    part: str,
    exc: SqlError,
    sql: str,
    first_line: int,
) -> MgError:
    """The error to show for a migration's query, by the part of it that failed."""
    if part == "check":
        lock_id = session.config.lock_id
        return MigrationFailed(
            f"the migration lock {lock_id} was lost before migration {migration.id} "
            f"({printable(migration.name)}) started; it was not run, and mg stopped because "
            "another run may now be applying migrations",
            hint="a migration calling pg_advisory_unlock_all() or DISCARD ALL releases the "
            "lock, as does a pooler in transaction mode; see `mg status`",
        )
    if part == "sql":
        if exc.position is not None:
            exc.position -= query.sql_start
        exc.server_message = query.own_text_removed(exc.server_message)
        return sql_failure(migration, exc, sql, first_line)
    if exc.sqlstate == "42601":
        # mg's statements are well-formed: a syntax error after the SQL means the SQL did
        # not end (an open quote, comment, dollar quote or statement). Nothing ran. The
        # server's message is left out: whatever it quotes is mg's history statement, which
        # the open quote swallowed.
        last_line = first_line + sql.rstrip().count("\n")
        return MigrationFailed(
            f"{display_path(migration.path)}:{last_line}: the {direction} section ends inside "
            "an unterminated statement, quoted string, comment or dollar quote",
            hint="close it; nothing was run",
        )
    if direction == "up" and (
        # the builtin history's refusal, in the server's message (the row it found may
        # have been written by the migration itself, and rolled back with it), or a row
        # another run committed
        f"{migration.id} is already recorded as applied" in exc.server_message
        or _recorded_as_applied(session, conn, migration.id)
    ):
        what = (
            "this run's transaction was rolled back, so the migration took effect once"
            if migration.transactional
            else "this run did not start it"
        )
        return StateError(
            f"migration {migration.id} ({printable(migration.name)}) is already recorded as "
            f"applied: another mg run applied it at the same time; {what}",
            hint="mg runs hold an advisory lock; check that no migration releases it "
            "(pg_advisory_unlock_all, DISCARD ALL)",
        )
    code = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    return MigrationFailed(
        f"recording migration {migration.id} ({printable(migration.name)}) in the history failed: "
        f"{exc.message}{code}",
        hint="its transaction was rolled back" if migration.transactional else None,
    )


def _recorded_as_applied(session: Session, conn: Any, ident: str) -> bool:
    try:
        entries = session.hooks.history_read(session, conn)
    except MgError:
        return False
    return any(e.id == ident and e.status == "applied" for e in entries)


HISTORY_ONLY = "; it has no down section: only its history row was removed, its schema is untouched"


def run_plan(
    session: Session,
    conn: Any,
    plan: Plan,
    current: list[Migration] | None = None,
    done: list[MigrationResult] | None = None,
) -> list[MigrationResult]:
    """Execute the plan step by step, firing the per-migration lifecycle hooks.

    ``current`` receives each migration as it starts, so a caller can name the one that failed;
    ``done`` receives each result, so it knows what succeeded before.
    """
    hooks = session.hooks
    results: list[MigrationResult] = done if done is not None else []
    total = len(plan.steps)
    verb = "applied" if plan.direction == "up" else "rolled back"
    event = "migration.applied" if plan.direction == "up" else "migration.rolled_back"
    rollback = plan.direction != "up"
    # Every migration but the last may commit without waiting for the disk: the last one's
    # COMMIT makes them all durable. A run stopped before it waits for them (``unflushed``).
    unflushed = "" if plan.single_transaction else hooks.unflushed_commit_sql(session)
    waiting = [False]  # a migration committed without the disk since the last that waited
    # one that may commit without the disk is running: a signal may land after its COMMIT
    in_flight = [False]

    def walk() -> None:
        for index, migration in enumerate(plan.steps, start=1):
            if current is not None:
                current.append(migration)
            hooks.before_migration(session, migration, plan.direction)
            report(
                session,
                "migration.started",
                "debug",
                f"[{index}/{total}] {migration.id} {migration.name}",
                migration_id=migration.id,
                migration_name=migration.name,
                direction=plan.direction,
                index=index,
                total=total,
            )
            later = unflushed if index < total and migration.transactional else ""
            in_flight[0] = bool(later)
            duration = run_migration(
                session,
                conn,
                migration,
                plan.direction,
                retry=not plan.single_transaction,
                unflushed=later,
            )
            waiting[0] = bool(later)
            in_flight[0] = False
            result = MigrationResult(migration, plan.direction, True, duration)
            results.append(result)
            # --allow-missing-down: nothing ran, so the line must not read as if it had.
            note = HISTORY_ONLY if rollback and not migration.has_down else ""
            report(
                session,
                event,
                "info",
                f"{verb} {migration.id} {migration.name} ({duration} ms){note}",
                migration_id=migration.id,
                migration_name=migration.name,
                direction=plan.direction,
                duration_ms=duration,
                index=index,
                total=total,
            )
            hooks.after_migration(session, result)

    if plan.single_transaction:
        attempt = 0
        walked = False  # every migration ran: the COMMIT was next
        try:
            while True:
                try:
                    with hooks.transaction(session, conn):
                        walk()
                        walked = True
                    break
                except PlanLockTimeout as timeout:
                    # rolled back with the plan: nothing is held while it pauses
                    lock_wait, retries, _ = table_lock_settings(session)
                    attempt += 1
                    if attempt > retries:
                        raise timeout.give_up(attempt - 1) from timeout.error
                    _lock_retry(
                        session,
                        timeout.migration,
                        attempt,
                        retries,
                        lock_wait,
                        timeout.holders,
                        timeout.error,
                        whole_plan=True,
                        sooner=timeout.sooner,
                    )
                    results.clear()
        except MgError as exc:
            if results:  # already reported as applied, now rolled back with the plan
                undone = (
                    f"with --single-transaction the whole plan was rolled back: the "
                    f"{len(results)} migration(s) reported applied before it are not applied"
                )
                exc.hint = f"{exc.hint}; {undone}" if exc.hint else undone
            raise
        except KeyboardInterrupt:
            # Ctrl-C, SIGTERM: the lines already printed for the plan are taken back too (a
            # signal landing once the COMMIT was next leaves it unknown: nothing is said)
            if results and not walked:
                report(
                    session,
                    "plan.rolled_back",
                    "warning",
                    "interrupted: with --single-transaction the whole plan was rolled back: the "
                    f"{len(results)} migration(s) reported applied before it are not applied",
                    count=len(results),
                )
            raise
    else:
        try:
            walk()
        except BaseException as exc:
            if waiting[0] or (in_flight[0] and isinstance(exc, KeyboardInterrupt)):
                _wait_flushed(session, conn)
            raise
    return results


def _wait_flushed(session: Session, conn: Any) -> None:
    """Before a stopped run exits: what it reported applied is to be on disk by then.
    Nothing here may hide why the run stopped, a second Ctrl-C included."""
    try:
        session.hooks.wait_flushed(session, conn)
    except PluginFailed as exc:  # a plugin that crashed is named, the run's error stands
        if exc.plugin:
            session.hooks.plugin_warning(exc.plugin, exc.hook, exc.__cause__ or exc)
    except (MgError, KeyboardInterrupt):
        pass


def lint_plan(session: Session, conn: Any, plan: Plan) -> list[LintFinding]:
    """Lint an apply plan before anything runs and show the findings as warnings.

    The lint plugin follows ``lint.on_apply``: ``off`` answers nothing, ``block`` raises
    ``StateError`` (exit 3) on an error finding. ``--no-lint`` skips the call.
    """
    if plan.direction != "up" or not plan.steps or not session.options.lint:
        return []
    findings = session.hooks.lint(session, LintRequest(plan.steps, apply=True), conn)
    for finding in findings:
        report(
            session,
            "lint.finding",
            "warning",
            finding_line(finding),
            rule=finding.rule,
            severity=finding.severity,
            path=relative_path(finding.path),
            line=finding.line,
            column=finding.column,
            migration_id=finding.migration,
            help=finding.help,
        )
    return findings


def confirm(
    session: Session,
    plan: Plan | None,
    what: str,
    findings: Sequence[LintFinding] = (),
) -> None:
    """Ask a person before SQL runs on a protected target.

    Plugins may veto; only the user typing ``yes`` or ``--yes`` approves. The plan's error
    findings from lint are listed with it.
    """
    hooks = session.hooks
    if not hooks.is_protected(session):
        return
    target = hooks.describe_target(session)
    lines = [
        f"{what} on protected environment {session.config.env or '(default)'}: {target.describe()}"
    ]
    if plan is not None:
        for migration in plan.steps:
            lines.append(f"  {plan.direction:4} {migration.id} {printable(migration.name)}")
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        lines.append(f"lint found {len(errors)} error{'s' if len(errors) != 1 else ''}:")
        lines.extend(f"  {finding_line(f)}" for f in errors)
    message = "\n".join(lines)
    report(session, "confirm.required", "warning", message, target=target.describe())
    vetoes = hooks.confirm_vetoed(session, target, plan)
    if vetoes is not None:
        who = ", ".join(repr(name) for name in vetoes)
        refused = Aborted(
            f"plugin{'s' if len(vetoes) > 1 else ''} {who} refused the command on this "
            "protected environment"
            if vetoes
            else "a plugin refused the command on this protected environment"
        )
        refused.plugin = ", ".join(vetoes) or None
        raise refused
    if session.options.yes:
        return
    # The output plugin owns the terminal: it asks and hands back what the person typed.
    # Without a terminal on stdin no plugin is asked (``Hooks.prompt``).
    answer = hooks.prompt(session, message, "Type 'yes' to continue: ")
    if answer is None:
        raise Aborted(
            f"environment {session.config.env or '(default)'} is protected and there is no "
            "terminal to confirm on",
            hint="pass --yes to confirm non-interactively",
        )
    if answer.strip() != "yes":
        raise Aborted("not confirmed; nothing was changed")


def _lock_name(session: Session) -> str:
    """The builtin ``lock``'s advisory lock by its id; a lock of another plugin by no number
    of ours (it describes itself where it can: ``LockHolder.lock``)."""
    impls = session.hooks.pm.hook.mg_lock_acquire.get_hookimpls()
    if all(impl.plugin_name == "lock" for impl in impls):
        return f"the migration lock {session.config.lock_id}"
    return "the migration lock"


def _lost_session(exc: BaseException) -> SqlError | None:
    """The server's error in ``exc`` (or the one it was made of) that says the session ended:
    terminated, the server shutting down or restarting, the connection broken."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SqlError) and (seen.sqlstate or "").startswith(("08", "57P")):
            return seen
        seen = seen.__cause__
    return None


def _server_words(exc: MgError) -> str:
    """What the server said of the lost session, else the error's own message."""
    lost = _lost_session(exc)
    return lost.message if lost is not None else exc.message


@contextmanager
def _lost_before_running(session: Session, conn: Any) -> Iterator[None]:
    """Under the lock, before the first migration: a connection lost meanwhile (the server
    ended the session, or restarted) is said as such, with what it means: no migration ran.

    An error of the database that is no lost session (a history table mg cannot create, for
    one) is left as it is; which one it is, when the server gave no SQLSTATE, a query on the
    same connection tells."""
    try:
        yield
    except (DatabaseError, SqlError) as exc:
        if isinstance(exc, SqlError) and _lost_session(exc) is None:
            raise
        if _lost_session(exc) is None:
            try:
                session.hooks.query(session, conn, "SELECT 1", ())
            except MgError:
                pass  # gone: the connection answers nothing
            else:
                raise
        raise DatabaseError(
            f"the database connection was lost after mg took {_lock_name(session)}, before "
            f"any migration ran: {_server_words(exc)}; nothing was changed",
            hint="run the command again",
        ) from exc


@contextmanager
def locked(session: Session, conn: Any) -> Iterator[None]:
    timeout = session.options.lock_timeout
    if timeout is None:
        timeout = session.config.lock_timeout
    try:
        session.hooks.lock_acquire(session, conn, timeout)
    except (DatabaseError, SqlError) as exc:
        if isinstance(exc, SqlError) and _lost_session(exc) is None:
            raise
        # The server ended the session (terminated, restarted, the network): said as what
        # the command was doing, before it changed anything.
        raise DatabaseError(
            f"the database connection was lost while waiting for {_lock_name(session)}: "
            f"{_server_words(exc)}; nothing was changed",
            hint="run the command again",
        ) from exc
    report(session, "lock.acquired", "debug", f"took {_lock_name(session)}")
    try:
        yield
    finally:
        _closing(session, session.hooks.lock_release, conn)


def _dry_run(session: Session, conn: Any, plan: Plan) -> int:
    """Try the plan through ``mg_dry_run`` (which shows its SQL and each result) and fail
    the command when a migration failed."""
    results = session.hooks.dry_run(session, conn, plan)
    failed = sum(1 for result in results if result.executed and not result.ok)
    skipped = sum(1 for result in results if not result.executed)
    report(
        session,
        "dryrun.finished",
        "info",
        f"dry run: {len(results) - failed - skipped} ok, {failed} failed, "
        f"{skipped} not executed; nothing was changed",
        failed=failed,
        skipped=skipped,
    )
    if failed:
        raise MigrationFailed(
            f"dry run: {failed} migration{'s' if failed != 1 else ''} failed; nothing was changed"
        )
    return 0


# What identifies a file's content without reading it: inode, size, modification and change
# times (nanoseconds).
_FileKey = tuple[int, int, int, int]

# A file modified this close to (or after) the moment mg started reading the migrations may
# have changed after it was read: its content is compared once the lock is held. (File
# times come from a clock that lags the system's by up to a tick.)
_RECENT_NS = 1_000_000_000


def _file_key(path: Path) -> _FileKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _seen_files(plan: Plan, read_from: int) -> dict[Path, _FileKey | None]:
    """The plan's files as they are now, just after they were read and planned: their keys,
    to tell once the lock is held which ones may have changed meanwhile (``None`` for one
    modified since ``read_from``, ``time.time_ns()`` when reading began: compared by
    content). Files that do not exist (a migration no file holds) are left out."""
    if plan.direction != "up":
        return {}
    seen: dict[Path, _FileKey | None] = {}
    for migration in plan.steps:
        key = _file_key(migration.path)
        if key is None:
            continue
        recent = max(key[2], key[3]) >= read_from - _RECENT_NS
        seen[migration.path] = None if recent else key
    return seen


def _differs_from(session: Session, migration: Migration) -> bool:
    """Whether the file of ``migration`` now holds another text than the one it was parsed
    from (the checksum, which ignores line endings and a BOM, tells)."""
    try:
        raw = read_bytes(migration.path)
    except OSError:
        return True
    if sha256_hex(raw) in (migration.checksum, migration.raw_checksum):
        return False
    try:  # new line endings, or a plugin's own format: its parser gives the checksum
        again = session.hooks.parse_migration(migration.path, raw)
    except MigrationFileError:
        return True
    return again.checksum != migration.checksum


def _ensure_files_unchanged(
    session: Session, plan: Plan, seen: dict[Path, _FileKey | None]
) -> None:
    """Under the lock, before anything runs: refuse (``MigrationFileError``, exit 2) when a
    file of the plan was replaced (``mg squash``), deleted or edited after mg read it.
    Applied as read, a squashed migration would run again with the file that replaced it,
    and an edited one would be recorded with a text its file no longer holds."""
    gone: list[Migration] = []
    edited: list[Migration] = []
    for migration in plan.steps:
        key = _file_key(migration.path)
        if migration.path not in seen:
            if key is None:
                continue  # no file holds it (and none did when planned)
        elif key is None:
            gone.append(migration)
            continue
        elif key == seen[migration.path]:
            continue
        if _differs_from(session, migration):
            edited.append(migration)
    problems = []
    if gone:
        many = len(gone) > 1
        problems.append(
            _changed_files(gone)
            + f"{'they are' if many else 'it is'} gone (replaced by mg squash, or deleted)"
        )
    if edited:
        many = len(edited) > 1
        problems.append(
            _changed_files(edited)
            + f"{'they were' if many else 'it was'} edited after mg read {'them' if many else 'it'}"
        )
    if problems:
        raise MigrationFileError(
            [
                f"{problem}; nothing was applied: run the command again to apply the files "
                "as they are now"
                for problem in problems
            ]
        )


def _changed_files(found: Sequence[Migration]) -> str:
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{display_path(found[0].path)}{more} changed while waiting for the migration lock: "


def _execute_plan(
    session: Session,
    conn: Any,
    plan: Plan,
    replan: Any,
    confirmed: set[str] | None,
    nothing: Callable[[], str],
    seen: dict[Path, _FileKey | None],
) -> int:
    """Under the lock: recompute the plan, fire the before hooks, prepare history, run it.

    History is prepared after ``mg_before_apply``/``mg_before_rollback``, so a gate that
    refuses (a failing ``pre_*`` shell hook) leaves even a fresh database untouched; the plan
    is read without it as it is before the lock. ``seen`` is what ``_seen_files`` found of
    the plan's files after they were read.
    """
    hooks = session.hooks
    up = plan.direction == "up"
    with locked(session, conn):
        with _lost_before_running(session, conn):
            plan = replan()
        if not plan.steps:
            # Another run did it while this one waited: say so as the command would have.
            report(session, "command.nothing", "info", nothing())
            return 0
        if confirmed is not None and not set(plan.ids) <= confirmed:
            raise Aborted("the plan changed while waiting for the lock; run the command again")
        if up:
            _ensure_files_unchanged(session, plan, seen)
        current: list[Migration] = []
        done: list[MigrationResult] = []
        try:
            (hooks.before_apply if up else hooks.before_rollback)(session, plan)
            with _lost_before_running(session, conn):
                hooks.history_prepare(session, conn)
            results = run_plan(session, conn, plan, current, done)
        except MgError as exc:
            failed = current[-1] if current else None
            hooks.on_failure(session, plan, failed, exc.message, done)
            if failed is not None:
                m = failed
                report(
                    session,
                    "migration.failed",
                    "error",
                    f"migration {m.id} {m.name} failed",
                    migration_id=m.id,
                    migration_name=m.name,
                    direction=plan.direction,
                    error=exc.message,
                )
            raise
        verb = "applied" if up else "rolled back"
        report(
            session,
            "apply.finished" if up else "rollback.finished",
            "info",
            f"{verb} {len(results)} migration{'s' if len(results) != 1 else ''}",
            count=len(results),
        )
        (hooks.after_apply if up else hooks.after_rollback)(session, plan, results)
        command = session.options.command or ("apply" if up else "rollback")
        hooks.after_command(session, command, results, {"direction": plan.direction})
    return 0


def apply(session: Session, request: ApplyRequest) -> int:
    # The plan made before the lock: `mg up` applies the migration its user saw as the next.
    first: list[Plan] = []

    def planner(state: State, check_blocked: bool) -> Plan:
        plan = plan_apply(
            state,
            request,
            check_blocked,
            lambda early: validate(session, early, early=[m.id for m in early]),
        )
        if not first:
            first.append(plan)
        elif request.limit is not None and not set(plan.ids) <= set(first[0].ids):
            return _replan_up(state, first[0])
        return plan

    def nothing(state: State) -> str:
        if request.limit is not None and first and first[0].steps:
            return "nothing to apply: " + _done_elsewhere(first[0].steps, "applied")
        to = None if request.to is None else resolve_id(request.to, state.migrations)
        later = [m for m in state.pending if to is not None and m.id > to]
        if later:
            count = len(later)
            return (
                f"nothing to apply up to {to}; {count} later "
                f"migration{'s' if count != 1 else ''} pending"
            )
        return "nothing to apply: already up to date"

    return _run(session, planner, "apply", nothing)


def rollback(session: Session, request: RollbackRequest) -> int:
    # The plan made before the lock: "the last N" names the migrations its user saw.
    first: list[Plan] = []

    def planner(state: State, check_blocked: bool) -> Plan:
        if first and request.to is None:
            return _replan_rollback(session, state, request, first[0], check_blocked)
        plan = plan_rollback(state, request, check_blocked)
        first.append(plan)
        return plan

    def nothing(state: State) -> str:
        if request.to is not None:
            # --to names an applied migration (checked when planning): it is the head
            to = resolve_id(request.to, state.migrations, state.history, what="--to")
            return f"nothing to roll back: {to} is the last applied migration"
        if first and first[0].steps and state.applied:
            return "nothing to roll back: " + _done_elsewhere(first[0].steps)
        reasons = rollback_shortfall(state)
        return "nothing to roll back: no migration is applied" + (
            f" ({reasons})" if reasons else ""
        )

    def explain(state: State, plan: Plan) -> None:
        asked = request.count if request.to is None else None
        if asked is None or not plan.steps or len(plan.steps) >= asked:
            return
        count = len(plan.steps)
        reasons = rollback_shortfall(state)
        report(
            session,
            "rollback.fewer",
            "warning",
            f"rolling back {count} of the {asked} asked for: only {count} "
            f"migration{' is' if count == 1 else 's are'} applied"
            + (f" ({reasons})" if reasons else ""),
            asked=asked,
            count=count,
        )

    return _run(session, planner, "rollback", nothing, explain)


def _replan_rollback(
    session: Session, state: State, request: RollbackRequest, planned: Plan, check_blocked: bool
) -> Plan:
    """Under the lock, "roll back the last N" undoes what it planned before the lock, as far
    as it is still applied: another run may have rolled back some or all of it meanwhile
    (two `mg down` started together undo the head once), and a migration applied meanwhile
    is not the one the user saw as the head, so it is never rolled back in its place."""
    if check_blocked:  # a rollback of the plan that failed elsewhere is no rollback done
        ensure_not_blocked(state)
    ids = {m.id for m in planned.steps}
    applied = list(reversed(state.applied))
    still = [e for e in applied if e.id in ids]
    newer = []
    for entry in applied:
        if entry.id in ids:
            break
        newer.append(entry)
    if still and [e.id for e in applied[: len(still)]] != [e.id for e in still]:
        newer = [e for e in applied[: len(still)] if e.id not in ids]
    if still and newer:
        named = ", ".join(f"{e.id} ({printable(e.name)})" for e in reversed(newer))
        raise StateError(
            f"the history changed while waiting for the migration lock: {named} "
            f"{'was' if len(newer) == 1 else 'were'} applied while this one waited, after the "
            "migrations this rollback was to undo; nothing was rolled back",
            hint="run the command again to roll back the newest migrations as they are now",
        )
    if len(still) == len(planned.steps):
        return plan_rollback(state, request, check_blocked)
    if still:
        gone = [m for m in planned.steps if m.id not in {e.id for e in still}]
        report(
            session,
            "rollback.fewer",
            "warning",
            f"rolling back {len(still)} of the {len(planned.steps)} planned: "
            + _done_elsewhere(gone),
            asked=len(planned.steps),
            count=len(still),
        )
    if not still:
        return Plan("down", ())
    return plan_rollback(state, dataclasses.replace(request, count=len(still)), check_blocked)


def _replan_up(state: State, planned: Plan) -> Plan:
    """Under the lock, `mg up` whose planned migration is no longer the next pending one:
    another run applied it (nothing to do; the one after it is not what was asked for), or
    rolled back an earlier one (the history changed: nothing is applied)."""
    ids = set(planned.ids)
    if not any(m.id in ids for m in state.pending):
        return Plan("up", ())
    earlier = [m for m in state.pending if m.id < min(ids)]
    named = ", ".join(f"{m.id} ({printable(m.name)})" for m in earlier)
    raise StateError(
        f"the history changed while waiting for the migration lock: {named} "
        f"{'was' if len(earlier) == 1 else 'were'} rolled back while this one waited, and "
        "would come before the migration this command was to apply; nothing was applied",
        hint="run the command again to apply the next migration as it is now",
    )


def _done_elsewhere(steps: Sequence[Migration], done: str = "rolled back") -> str:
    named = ", ".join(f"{m.id} ({printable(m.name)})" for m in steps)
    return (
        f"{named} {'was' if len(steps) == 1 else 'were'} {done} by another run while this "
        "one waited for the migration lock"
    )


def _run(
    session: Session,
    planner: Callable[[State, bool], Plan],
    what: str,
    nothing: Callable[[State], str],
    explain: Callable[[State, Plan], None] | None = None,
) -> int:
    """Plan, check, confirm, then (dry-)run under the lock, planning again once it is held."""
    with keeping_file_bytes():
        return _run_kept(session, planner, what, nothing, explain)


def _run_kept(
    session: Session,
    planner: Callable[[State, bool], Plan],
    what: str,
    nothing: Callable[[State], str],
    explain: Callable[[State, Plan], None] | None,
) -> int:
    read_from = time.time_ns()
    migrations = load_migrations(session)
    with connected(session) as conn:
        state = read_state(session, conn, migrations)
        if what == "apply":
            _warn_missing(session, state)
        _warn_tampered(session, state)
        # Before the lock, a `running` row may be another process at work: wait for the lock
        # and judge it then (under the lock it can only mean an interrupted run).
        live = bool(state.running)
        plan = planner(state, not live)
        # The plan's files as read: one replaced, deleted or edited by the time the lock is
        # held (while lint runs, the user confirms, or another run holds the lock) is not
        # applied from the text read here.
        seen = {} if session.options.dry_run else _seen_files(plan, read_from)
        checked: set[tuple[str, str]] = set()
        # A large file's text is read once for the pre-flight checks and lint, and dropped
        # before anything runs.
        with read_once():
            validate(session, plan.steps, checked, [m.id for m in state.out_of_order])
            _warn_no_sql(session, plan)
            if not plan.steps and not live:
                report(session, "command.nothing", "info", nothing(state))
                if session.options.dry_run and session.options.output_format == "json":
                    # --format json promises one document on stdout: the empty plan's
                    session.hooks.dry_run(session, conn, plan)
                return 0
            if explain is not None:
                explain(state, plan)
            findings = lint_plan(session, conn, plan)
        confirm(session, plan, what if not session.options.dry_run else "dry run", findings)
        if session.options.dry_run:
            ensure_not_blocked(state)
            return _dry_run(session, conn, plan)
        confirmed = set(plan.ids) if session.hooks.is_protected(session) else None

        latest = [state]

        def replan() -> Plan:
            latest[0] = _settled_state(session, conn, migrations)
            fresh = planner(latest[0], True)
            validate(session, fresh.steps, checked, [m.id for m in latest[0].out_of_order])
            return fresh

        return _execute_plan(
            session, conn, plan, replan, confirmed, lambda: nothing(latest[0]), seen
        )


# How often a run holding the lock reads again a `running` row whose session is still
# connected, and how often it says it still waits.
RUNNING_POLL = 0.25
RUNNING_REPORT_EVERY = 5.0


def _settled_state(session: Session, conn: Any, migrations: Sequence[Migration]) -> State:
    """Under the lock: the history once no `running` row belongs to a session that is still
    connected.

    Such a row is another run's no-transaction migration at work after that migration
    released the lock (``DISCARD ALL``, ``pg_advisory_unlock_all()``), not an interrupted one:
    this run waits for it as it waited for the lock, then judges what it left (`applied`,
    `failed`, or `running` with its session gone: interrupted). The wait is bounded by the
    lock timeout (exit 4).
    """
    state = read_state(session, conn, migrations)
    busy = state.at_work
    if not busy:
        return state
    timeout = session.options.lock_timeout
    if timeout is None:
        timeout = session.config.lock_timeout
    started = time.monotonic()
    next_report = 0.0
    while busy:
        entry = busy[0]
        waited = time.monotonic() - started
        said = (
            f"migration {entry.id} ({printable(entry.name)}) is `running` in database session "
            f"{entry.session_id}, which no longer holds {_lock_name(session)} but is still "
            "connected: its no-transaction migration released the lock (DISCARD ALL, "
            "pg_advisory_unlock_all())"
        )
        if waited >= timeout:
            raise LockTimeout(
                f"{said}; gave up waiting for it to finish after {timeout:g}s; nothing was changed",
                hint="wait for that run to finish, or allow a longer wait with --lock-timeout",
            )
        if waited >= next_report:
            report(
                session,
                "migration.running_elsewhere",
                "warning",
                f"{said}; waiting for it to finish; waited {waited:.0f}s",
                migration_id=entry.id,
                migration_name=entry.name,
                session_id=entry.session_id,
                waited_s=round(waited, 1),
            )
            next_report = waited + RUNNING_REPORT_EVERY
        time.sleep(max(0.0, min(RUNNING_POLL, timeout - waited)))
        state = read_state(session, conn, migrations)
        busy = state.at_work
    return state


def _warn_no_sql(session: Session, plan: Plan) -> None:
    """A migration whose section holds only comments (``mg create``'s placeholder, left as
    written) is run, and changes nothing but the history: say so, in case its SQL was
    forgotten. (A down section of comments only is a deliberate no-op: not warned about.)"""
    if plan.direction != "up":
        return
    for migration in plan.steps:
        sql, _ = migration.section_kept("up")
        if isinstance(sql, str) and not has_sql(sql):
            report(
                session,
                "migration.no_sql",
                "warning",
                f"{migration.id} {printable(migration.name)}: its up section holds only "
                "comments, so applying it changes nothing but the history",
                migration_id=migration.id,
                hint=f"write its SQL in {display_path(migration.path)} after `-- migrate: up`",
            )


def _warn_tampered(session: Session, state: State) -> None:
    for problem in tampering_of(state):
        report(session, "history.problem", "warning", problem)


def _warn_missing(session: Session, state: State) -> None:
    for entry in state.missing:
        report(
            session,
            "migration.missing",
            "warning",
            f"migration {entry.id} ({entry.name}) is recorded as {entry.status} "
            "but its file is gone",
            migration_id=entry.id,
            migration_name=entry.name,
        )


def fix(session: Session, given: str, mode: str) -> int:
    """Resolve a failed or running migration after a person looked at the database.

    ``given`` names it as people type it (id, id prefix, name or file name).
    """
    if mode not in ("applied", "remove"):
        raise UsageError("fix needs --applied or --remove")
    migrations = load_migrations(session)
    with connected(session) as conn:
        state = read_state(session, conn, migrations)
        ident = resolve_id(given, migrations, state.history)
        entry = state.entries.get(ident)
        if entry is None:
            raise UsageError(f"migration {ident} has no history row; nothing to fix")
        confirm(session, None, f"fix {ident} --{mode}")
        seen = entry.status
        with locked(session, conn):
            session.hooks.history_prepare(session, conn)
            state = read_state(session, conn, migrations)
            entry = state.entries.get(ident)
            if entry is None:
                raise UsageError(f"migration {ident} has no history row; nothing to fix")
            if entry.status != seen:
                # Another run holding the lock finished (or failed) the migration meanwhile:
                # what the person decided on is no longer what the row says.
                raise StateError(
                    f"migration {ident} ({printable(entry.name)}) was `{seen}` when mg fix "
                    f"started and is now `{entry.status}`: another run changed it while mg fix "
                    "waited for the migration lock; nothing was changed",
                    hint="see `mg status`, then run mg fix again if it is still needed",
                )
            if at_work(entry):
                # Another run's no-transaction migration that released the lock (DISCARD ALL)
                # and goes on: neither way out describes a migration still at work.
                raise StateError(
                    f"migration {ident} ({printable(entry.name)}) is `running` in database "
                    f"session {entry.session_id}, which is still connected: another run may "
                    "still be applying it (its no-transaction migration released the migration "
                    "lock); nothing was changed",
                    hint="let that run finish and see `mg status`; if its session is stuck, end "
                    "it (pg_terminate_backend) and run mg fix again",
                )
            migration = state.by_id.get(ident)
            checksum = migration.checksum if migration else entry.checksum
            name = migration.name if migration else entry.name
            with session.hooks.transaction(session, conn):
                session.hooks.history_write(
                    session,
                    conn,
                    HistoryChange(
                        ident, name, checksum, "FIX", "applied" if mode == "applied" else None
                    ),
                )
    verb = "marked applied" if mode == "applied" else "removed from history"
    shown = f"{ident} {printable(name)}: {verb}"
    report(session, "migration.fixed", "info", shown, migration_id=ident)
    session.hooks.after_command(session, "fix", (), {"migration_id": ident, "mode": mode})
    return 0
