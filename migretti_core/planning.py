"""Planning: what to run, decided from the files and the history, before anything runs.

Loading and validating migration files, the checks that refuse a plan (blocked, changed
since applied, out of order) and the plans of apply and rollback. Pure apart from the file
hooks: nothing here connects to a database.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Collection, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from migretti_core.errors import (
    ConfigError,
    MigrationFileError,
    StateError,
    UsageError,
)
from migretti_core.messages import printable
from migretti_core.reporting import display_path, relative_path, report
from migretti_core.resolve import resolve_id
from migretti_core.state import State, at_work, checksum_matches
from migretti_core.textfiles import ChangedWhileReading, read_bytes
from migretti_core.types import (
    ON_DEMAND_BYTES,
    HistoryEntry,
    Migration,
    Plan,
    Session,
    keep_file_bytes,
    read_once,
)

FIX_HINT = (
    "resolve it with `mg fix {id} --applied` if you completed it by hand, "
    "or `mg fix {id} --remove` if you undid it"
)

# A no-transaction rollback that failed part way: finishing its down by hand means the
# migration is no longer applied (`--remove`); undoing the partial down means it still is.
FIX_HINT_DOWN = (
    "resolve it with `mg fix {id} --remove` if you completed its rollback by hand, "
    "or `mg fix {id} --applied` if you restored what the rollback undid"
)

# When the history cannot tell which way it was going (no _migrations_log): both ways out.
FIX_HINT_EITHER = (
    FIX_HINT + "; if it was being rolled back, `mg fix {id} --remove` if you completed its "
    "rollback by hand, or `mg fix {id} --applied` if you restored what the rollback undid"
)


def require_project(session: Session, what: str) -> None:
    """Refuse to report on nothing outside a project: without mg.yaml and without a
    migrations directory, ``mg lint`` and ``mg check`` run in the wrong directory (a CI job's
    ``working-directory`` forgotten), and "0 migrations, ok" would pass that job."""
    config = session.config
    if config.path is None and not os.path.lexists(config.migrations_dir):
        raise ConfigError(
            f"no mg.yaml in {config.root} or its parents, and no "
            f"{display_path(config.migrations_dir)}/ directory: no migrations to {what}",
            hint="run mg in your project, or pass --config PATH",
        )


def fix_hint(entry: HistoryEntry) -> str:
    """How to resolve a failed or running migration, by the way it was going."""
    if entry.direction == "down":
        return "it was being rolled back; " + FIX_HINT_DOWN.format(id=entry.id)
    if entry.direction == "up":
        return FIX_HINT.format(id=entry.id)
    return FIX_HINT_EITHER.format(id=entry.id)


CHECKSUM_HINT = (
    "restore the file; or, if the edit is right and the database already matches it, accept "
    "it with `mg fix {id} --applied`; or pass --no-verify to {verb} anyway"
)


def load_migrations(session: Session) -> list[Migration]:
    """Parse every migration file, reporting all problems of the directory at once."""
    # Parsing 10,000 files makes some 100,000 objects, none of them part of a reference
    # cycle, and the cyclic collector ran over all of them (and everything imported before)
    # again and again (34 M instructions of `mg status` with 10,000 files). It is paused
    # while they are made; objects freed meanwhile are freed by reference counting as ever.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_migrations(session)
    finally:
        if enabled:
            gc.enable()


def _load_migrations(session: Session) -> list[Migration]:
    hooks = session.hooks
    problems: list[str] = []
    migrations: list[Migration] = []
    # Files that failed to parse but whose name gives an id, for the duplicate check.
    broken: list[tuple[str, Path]] = []
    paths = hooks.discover_migrations(session.config)
    _warn_ignored(session, getattr(paths, "ignored", ()))
    for path in paths:
        try:
            raw = read_bytes(path)
        except ChangedWhileReading as exc:
            problems.append(f"{display_path(path)}: {exc.strerror}")
            continue
        except OSError as exc:
            problems.append(f"{display_path(path)}:1: cannot be read: {exc.strerror}")
            continue
        nul = nul_problem(path, raw) or name_problem(path)
        if nul is not None:
            problems.append(nul)
            continue
        try:
            migration = hooks.parse_migration(path, raw)
            if len(raw) >= ON_DEMAND_BYTES:
                keep_file_bytes(path, migration, raw)
            migrations.append(migration)
        except MigrationFileError as exc:
            problems.extend(_prefix_dir(path, p) for p in exc.problems)
            if exc.migration_id is not None:
                broken.append((exc.migration_id, path))
    seen: dict[str, Migration] = {}
    first_path: dict[str, Path] = {}
    named = [(m.id, m.path, m) for m in migrations] + [(i, p, None) for i, p in broken]
    for migration_id, path, parsed in sorted(named, key=lambda n: (n[0], n[1].name)):
        first = first_path.get(migration_id)
        if first is not None:
            problems.append(
                f"{display_path(path)}:1: duplicate id {migration_id}: "
                f"also used by {display_path(first)}"
            )
            continue
        first_path[migration_id] = path
        if parsed is not None:
            seen[migration_id] = parsed
    if problems:
        raise MigrationFileError(problems)
    return sorted(seen.values(), key=lambda m: m.id)


# Files a discovery plugin left out and said why (the builtin ``files``: ``0002_x.SQL``), already
# warned about in this process: commands load the migrations more than once (again under the
# lock), a fleet once per member; the warning is about the file.
_IGNORED_SAID: set[tuple[str, str]] = set()
_IGNORED_LOCK = threading.Lock()


def _warn_ignored(session: Session, ignored: Sequence[tuple[Path, str]]) -> None:
    """Say once per process which files the discovery left out that look meant to be
    migrations (``ignored`` of the list ``mg_discover_migrations`` answered)."""
    for path, reason in ignored:
        said = (os.path.abspath(path), reason)
        with _IGNORED_LOCK:
            if said in _IGNORED_SAID:
                continue
            _IGNORED_SAID.add(said)
        report(
            session,
            "migration.file_ignored",
            "warning",
            f"{display_path(path)} is not read as a migration: {printable(reason)}",
            path=relative_path(path),
        )


def nul_problem(path: Path, raw: bytes) -> str | None:
    """``file:line: ...`` when ``raw`` holds a NUL byte, else None.

    libpq sends a query as a C string, so PostgreSQL would receive the text only up to the
    NUL: a ``DELETE ... WHERE`` cut short deletes every row and the history statements
    after it never arrive. Such a file is refused before anything runs.
    """
    at = raw.find(b"\0")
    if at == -1:
        return None
    before = raw[:at].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    line = before.count(b"\n") + 1
    column = at - max(raw.rfind(b"\n", 0, at), raw.rfind(b"\r", 0, at))
    hint = " (is the file UTF-16? save it as UTF-8)" if raw.count(b"\0") * 4 > len(raw) else ""
    return (
        f"{display_path(path)}:{line}: NUL character (byte 0) at column {column}; PostgreSQL "
        f"cannot receive it and the SQL would be cut short there{hint}"
    )


def name_problem(path: Path) -> str | None:
    """``file:1: ...`` when the file's name is not valid UTF-8 (a byte such as 0xff, which
    Python keeps as a lone surrogate), else None.

    The name is recorded in the history, and PostgreSQL cannot store such a name: the file is
    refused before anything runs rather than when its history row is written.
    """
    name = path.name
    if name.isascii():
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"{display_path(path)}:1: the file name is not valid UTF-8, so its name cannot be "
            "recorded in the history; rename the file"
        )
    return None


def _prefix_dir(path: Path, problem: str) -> str:
    if problem.startswith(path.name + ":"):
        return display_path(path.parent / problem)
    return problem


def ensure_not_blocked(state: State) -> None:
    blocking = state.blocking
    if not blocking:
        return
    if all(at_work(e) for e in blocking):
        raise StateError(
            blocked_lines(blocking, errors=True), hint=WAIT_HINT + "; nothing was changed"
        )
    raise StateError(
        blocked_lines(blocking, errors=True) + "\n  " + blocked_hint(blocking),
        hint="nothing was changed",
    )


# A `running` row another run is at work on: nothing to fix, something to wait for.
WAIT_HINT = "wait for the other run to finish (`mg status` shows it), then run the command again"


def blocked_hint(blocking: Sequence[HistoryEntry]) -> str:
    """How to resolve the first stopped (failed or interrupted) row; when every row is at work
    in another run (``at_work``), to wait for that run."""
    stopped = [e for e in blocking if not at_work(e)]
    return fix_hint(stopped[0]) if stopped else WAIT_HINT


def blocked_lines(blocking: Sequence[HistoryEntry], errors: bool) -> str:
    """``migration ID (NAME) failed at statement N[: error]; ...`` for failed or running
    rows; ``errors`` adds each row's error text. A running row another run is at work on
    (``at_work``) is said to be so, not interrupted."""
    lines = []
    for entry in blocking:
        if at_work(entry):
            lines.append(
                f"migration {entry.id} ({printable(entry.name)}) is running right now in "
                f"database session {entry.session_id}, which is still connected: another run "
                f"is {'rolling it back' if entry.direction == 'down' else 'applying it'} (it was "
                "not interrupted)"
            )
            continue
        what = "failed" if entry.status == "failed" else "is still marked running (interrupted?)"
        detail = ""
        if entry.failed_statement:
            detail += f" at statement {entry.failed_statement}"
        if errors and entry.error:
            detail += f": {printable(entry.error)}"  # one line, whatever the row holds
        lines.append(f"migration {entry.id} ({printable(entry.name)}) {what}{detail}")
    return "; ".join(lines)


def ensure_checksums(state: State, steps: Sequence[Migration] | None = None) -> None:
    """Refuse when an applied migration's file no longer matches what ran."""
    modified = state.modified
    if steps is not None:
        ids = {m.id for m in steps}
        modified = [(m, e) for m, e in modified if m.id in ids]
    if not modified:
        return
    names = ", ".join(display_path(m.path) for m, _ in modified)
    raise StateError(
        f"applied migration changed since it ran: {names}",
        hint=CHECKSUM_HINT.format(id=modified[0][0].id, verb="go on"),
    )


# The ids of the pending migrations that sort before an applied one, while the pre-flight
# checks run: a check may look further at those (the builtin squash: is it an original a
# squashed migration already applied replaces?) without doing so for every migration.
_SORTS_BEFORE_APPLIED: ContextVar[frozenset[str]] = ContextVar(
    "mg_sorts_before_applied", default=frozenset()
)


def sorts_before_applied(migration: Migration) -> bool:
    """During the pre-flight checks: whether ``migration`` is pending and sorts before a
    migration the history records (out of order)."""
    return migration.id in _SORTS_BEFORE_APPLIED.get()


def validate(
    session: Session,
    steps: Sequence[Migration],
    done: set[tuple[str, str]] | None = None,
    early: Collection[str] = (),
) -> None:
    """Pre-flight checks; ``done`` remembers migrations already checked (by id and checksum),
    ``early`` names those that sort before an applied one."""
    problems: list[str] = []
    token = _SORTS_BEFORE_APPLIED.set(frozenset(early))
    try:
        for migration in steps:
            key = (migration.id, migration.checksum)
            if done is not None and key in done:
                continue
            found = session.hooks.validate_migration(session, migration)
            problems.extend(found)
            if done is not None and not found:
                done.add(key)
    finally:
        _SORTS_BEFORE_APPLIED.reset(token)
    if problems:
        # one problem several files lead to (a squashed migration and each original beside
        # it) is said once
        raise MigrationFileError(list(dict.fromkeys(problems)))


def preflight_problems(session: Session, state: State) -> list[str]:
    """What the pre-flight checks of ``mg apply`` would refuse in the pending migrations."""
    problems: list[str] = []
    token = _SORTS_BEFORE_APPLIED.set(frozenset(m.id for m in state.out_of_order))
    try:
        with read_once():
            for migration in state.pending:
                problems.extend(session.hooks.validate_migration(session, migration))
    finally:
        _SORTS_BEFORE_APPLIED.reset(token)
    return list(dict.fromkeys(problems))


def tampering_of(state: State) -> list[str]:
    """History rows mg did not write that way: each is a problem, never silently skipped."""
    problems: list[str] = []
    for entry in state.unknown_status:
        problems.append(
            f"unknown status: {entry.id} {printable(entry.name)} is recorded "
            f"{_recorded_status(entry)}, which mg does not know (applied, failed or running), "
            "so it counts as neither applied nor pending — " + FIX_HINT.format(id=entry.id)
        )
    for entry in state.unverifiable:
        problems.append(
            f"no checksum: {entry.id} {printable(entry.name)} is applied but its row has no "
            f"checksum, so its file cannot be verified — `mg fix {entry.id} --applied` "
            "records the file's current checksum"
        )
    for ident, rows in state.duplicates.items():
        statuses = ", ".join(str(e.status) for e in rows)
        problems.append(
            f"duplicate rows: {ident} {printable(rows[0].name)} has {len(rows)} rows in the "
            f"history ({statuses}; was the primary key of _migrations dropped?) — "
            f"`mg fix {ident} --applied` or `--remove` leaves one"
        )
    for seq, rows in sorted(state.shared_positions.items()):
        named = " and ".join(f"{e.id} {printable(e.name)}" for e in rows)
        problems.append(
            f"shared position: {named} are recorded at the same position (apply_seq {seq}), "
            "so rollback cannot tell which was applied last — give each its own apply_seq "
            "in _migrations, in the order they were applied"
        )
    return problems


def _recorded_status(entry: HistoryEntry) -> str:
    """How a row's status is named: its value, or that it has none (NULL or empty)."""
    return (
        f"as {printable(repr(entry.status))}" if entry.status else "with no status (NULL or empty)"
    )


@dataclass(frozen=True)
class ApplyRequest:
    to: str | None = None
    limit: int | None = None
    allow_out_of_order: bool = False
    verify: bool = True
    single_transaction: bool = False


@dataclass(frozen=True)
class RollbackRequest:
    count: int | None = 1
    to: str | None = None
    allow_missing_down: bool = False
    verify: bool = True


def plan_apply(
    state: State,
    request: ApplyRequest,
    check_blocked: bool = True,
    check_files: Callable[[Sequence[Migration]], None] | None = None,
) -> Plan:
    """The plan of ``mg apply``; ``check_files`` (the pre-flight checks) is given the pending
    migrations that sort before an applied one first, so a file apply refuses anyway (an
    original a squashed migration already applied replaces) says why instead of suggesting
    --allow-out-of-order."""
    # A --to that names no migration is the command line's mistake: said before the state's.
    to = None if request.to is None else resolve_id(request.to, state.migrations, what="--to")
    if check_blocked:
        ensure_not_blocked(state)
    if request.verify:
        ensure_checksums(state)
    pending = state.pending
    if to is not None:
        pending = [m for m in pending if m.id <= to]
    if request.limit is not None:
        pending = pending[: request.limit]
    out_of_order = {m.id for m in state.out_of_order}
    early = [m for m in pending if m.id in out_of_order]
    if early and not request.allow_out_of_order:
        if check_files is not None:
            check_files(early)
        raise StateError(
            "pending migration sorts before the newest applied one ("
            f"{state.newest_recorded_id}): " + ", ".join(display_path(m.path) for m in early),
            hint="pass --allow-out-of-order to apply it anyway",
        )
    if request.single_transaction:
        no_tx = [m for m in pending if not m.transactional]
        if no_tx:
            raise UsageError(
                "--single-transaction cannot include no-transaction migrations: "
                + ", ".join(display_path(m.path) for m in no_tx)
            )
    return Plan("up", tuple(pending), single_transaction=request.single_transaction)


def plan_rollback(state: State, request: RollbackRequest, check_blocked: bool = True) -> Plan:
    # The command line's mistakes (a --to that names no migration, a count below 1) are said
    # before the state's.
    count = request.count if request.count is not None else 1
    to = None
    if request.to is not None:
        to = resolve_id(request.to, state.migrations, state.history, what="--to")
    elif count < 1:
        raise UsageError("the number of migrations to roll back must be at least 1")
    if check_blocked:
        ensure_not_blocked(state)
    applied = list(reversed(state.applied))
    if to is not None:
        ids = [e.id for e in applied]
        if to not in ids:
            raise UsageError(f"--to {request.to}: migration {to} is not applied")
        chosen = applied[: ids.index(to)]
    else:
        chosen = applied[:count]
    by_id = state.by_id
    steps: list[Migration] = []
    for entry in chosen:
        migration = by_id.get(entry.id)
        if migration is None:
            raise StateError(
                f"migration {entry.id} ({printable(entry.name)}) is applied but its file is gone, "
                "so it cannot be rolled back",
                hint="restore the file from version control",
            )
        if not migration.has_down and not request.allow_missing_down:
            raise StateError(
                f"{display_path(migration.path)} has no down section",
                hint="pass --allow-missing-down to remove only its history row",
            )
        if request.verify and not checksum_matches(migration, entry):
            raise StateError(
                f"applied migration changed since it ran: {display_path(migration.path)}",
                hint=CHECKSUM_HINT.format(id=migration.id, verb="roll back"),
            )
        steps.append(migration)
    return Plan("down", tuple(steps))


def rollback_shortfall(state: State) -> str:
    """Why rows of the history are not counted as applied migrations to roll back."""
    reasons = [
        f"{e.id} is recorded {_recorded_status(e)}, a status mg does not know, so it is not "
        "rolled back"
        for e in state.unknown_status
    ]
    reasons += [
        f"{ident} has {len(rows)} rows in the history and counts once"
        for ident, rows in state.duplicates.items()
        if any(e.status == "applied" for e in rows)
    ]
    return "; ".join(reasons)
