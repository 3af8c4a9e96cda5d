"""Builtin ``squash``: ``mg squash NAME`` folds the pending migrations into one.

Only migrations that no database row mentions are squashed, and only in the selected
database: squash reads the history and never writes to the database. The sections are
copied as written (comments included); a statement left without its semicolon gets one, and
every section ends on a new line, so a trailing ``--`` comment cannot swallow what follows.
The result is parsed and split again before it is written, and it is on disk (fsynced)
before the originals are removed, so a crash leaves the originals, or both, never neither.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import click

from migretti_core import hookimpl, reporting
from migretti_core.cli import app_of
from migretti_core.errors import (
    Interrupted,
    MgError,
    MigrationFileError,
    StateError,
    Terminated,
    UsageError,
)
from migretti_core.messages import printable
from migretti_core.records import record
from migretti_core.types import Migration, Session, Statement

if TYPE_CHECKING:
    from pathlib import Path

    from migretti_core.state import State

Splitter = Callable[[str], list[Statement]]

# Appended after a section to learn whether its last statement is closed: if the probe
# becomes a statement of its own, nothing that follows can join the section's last one.
_PROBE = "\nSELECT 1"


@record(frozen=True)
class Squashed:
    """A squash ready to write: the new file's name and text, and what it replaces."""

    id: str
    filename: str
    text: str
    replaces: tuple[Migration, ...]
    warnings: tuple[str, ...] = ()


def _where(migration: Migration, line: int | None) -> str:
    return f"{reporting.display_path(migration.path)}:{line or 1}"


def terminate(sql: str, split: Splitter, where: str) -> str:
    """Return the section with its blank edges trimmed and its last statement closed by ``;``.

    Raise UsageError when no semicolon can close it: the section ends inside a string,
    quoted identifier, dollar quote or block comment.
    """
    body = sql.strip("\n").rstrip()
    count = len(split(body))
    if count == 0:
        return body
    for suffix in ("", ";", "\n;"):
        candidate = body + suffix
        if len(split(candidate + _PROBE)) == count + 1:
            return candidate
    raise UsageError(
        f"{where}: the section ends inside a string, quoted identifier, dollar quote or "
        "comment, so it cannot be combined with other migrations",
        hint="close it in the original migration first",
    )


def _block(parts: Sequence[tuple[Migration, str]]) -> str:
    chunks = []
    for migration, body in parts:
        chunk = f"-- from {printable(migration.filename)}\n"
        if body:
            chunk += body + "\n"
        chunks.append(chunk)
    return "\n".join(chunks)


def sections(migrations: Sequence[Migration], split: Splitter) -> tuple[str, str | None, list[str]]:
    """The squashed up and down sections, and warnings for the user.

    Up sections come in id order and down sections in reverse; when any migration lacks a
    down section the result has none (None), since no down could undo that migration.
    """
    ups = [(m, terminate(m.up_sql, split, _where(m, m.up_line))) for m in migrations]
    warnings: list[str] = []
    down: str | None = None
    without_down = [m for m in migrations if not m.has_down]
    if without_down:
        names = ", ".join(printable(m.filename) for m in without_down)
        warnings.append(
            f"{names} {'has' if len(without_down) == 1 else 'have'} no down section, so the "
            "squashed migration has none either (rolling it back needs --allow-missing-down)"
        )
    else:
        downs = [
            (m, terminate(m.down_sql or "", split, _where(m, m.down_line)))
            for m in reversed(migrations)
        ]
        down = _block(downs)
    return _block(ups), down, warnings


def _statements(sql: str | None, split: Splitter) -> list[str]:
    return [s.text for s in split(sql)] if sql else []


def check_equivalent(migrations: Sequence[Migration], squashed: Migration, split: Splitter) -> None:
    """The new sections must split into exactly the original statements, in order."""
    up = [t for m in migrations for t in _statements(m.up_sql, split)]
    ok = _statements(squashed.up_sql, split) == up
    if squashed.down_sql is not None:
        down = [t for m in reversed(migrations) for t in _statements(m.down_sql, split)]
        ok = ok and _statements(squashed.down_sql, split) == down
    if not ok or squashed.transactional != migrations[0].transactional:
        raise UsageError(
            "squashing these migrations would change their statements; nothing was written",
            hint="report this with the migrations involved",
        )


def refuse_too_few_files(session: Session, migrations: Sequence[Migration]) -> None:
    """Refuse before connecting when the files alone leave fewer than two to squash."""
    if len(migrations) >= 2:
        return
    where = reporting.display_path(session.config.migrations_dir).rstrip(os.sep) + os.sep
    count = "no migration" if not migrations else "only one migration"
    raise UsageError(
        f"nothing to squash: {where} holds {count}, and squash needs at least two pending"
    )


def _one_line(title: str) -> str:
    """The ``-- migration:`` title: NAME with its line breaks turned into spaces."""
    return re.sub(r"[\r\n]+", " ", title).strip()


def refuse_unusable_name(session: Session, title: str) -> None:
    """Refuse a NAME that gives no file name (``###``, too long) before connecting: never
    after waiting for the lock, or instead of saying that the database cannot be reached.
    The file-format plugin names files, so it is asked, with a stand-in migration."""
    from ulid import ULID

    session.hooks.render_migration(
        session.config,
        str(ULID()),
        _one_line(title),
        "SELECT 1;",
        None,
        transactional=True,
        notes=(),
    )


def refuse_blocked(state: State) -> None:
    """Refuse (exit 3) while a migration is failed or running: the pending ones behind it
    would be squashed around it, and its file, row and the new migration no longer agree."""
    from migretti_core.planning import blocked_hint, blocked_lines

    blocking = state.blocking
    if not blocking:
        return
    it = "it" if len(blocking) == 1 else "them"
    raise StateError(
        f"cannot squash: {blocked_lines(blocking, errors=False)}; squashing the migrations "
        f"pending behind {it} "
        f"would lose track of {it}",
        hint=f"{blocked_hint(blocking)}; nothing was changed",
    )


def refuse_unsquashable(
    state_pending: Sequence[Migration], out_of_order: Sequence[Migration]
) -> None:
    """Refuse what cannot be squashed into one equivalent migration (exit 2)."""
    if out_of_order:
        names = ", ".join(reporting.display_path(m.path) for m in out_of_order)
        raise UsageError(
            f"cannot squash: pending migration sorts before an applied one: {names}",
            hint="apply it with `mg apply --allow-out-of-order` or give it a newer id first",
        )
    if len(state_pending) < 2:
        count = "no migration is" if not state_pending else "only one migration is"
        raise UsageError(f"cannot squash: {count} pending; squash needs at least two")
    kinds = {m.transactional for m in state_pending}
    if len(kinds) > 1:
        no_tx = ", ".join(printable(m.filename) for m in state_pending if not m.transactional)
        raise UsageError(
            "cannot squash transactional and no-transaction migrations together "
            f"(no-transaction: {no_tx})",
            hint="squash them in separate groups, or apply some of them first",
        )


def build(
    session: Session,
    pending: Sequence[Migration],
    title: str,
    recorded_ids: Sequence[str],
    new_id: str | None = None,
) -> Squashed:
    """Render and self-check the squashed migration without touching any file.

    The text comes from the file-format plugin (``mg_render_migration``) and is parsed back
    through ``mg_parse_migration``, so a project with its own ``files`` plugin squashes into
    its own format.
    """
    if new_id is None:
        from ulid import ULID

        new_id = str(ULID())
    newest = max(recorded_ids, default="")
    if new_id <= newest:
        raise UsageError(
            f"cannot squash: the new id {new_id} would sort before {newest}, which the "
            "database already records, so the squashed migration would be out of order",
            hint="new ids are ULIDs from the current time; check the system clock",
        )
    hooks = session.hooks
    up, down, warnings = sections(pending, hooks.split_statements)
    filename, text = hooks.render_migration(
        session.config,
        new_id,
        _one_line(title),
        up,
        down,
        transactional=pending[0].transactional,
        notes=("squashed: " + ", ".join(m.id for m in pending),),
    )
    directory = session.config.migrations_dir
    try:
        parsed = hooks.parse_migration(directory / filename, text.encode("utf-8"))
    except MigrationFileError as exc:
        raise UsageError(
            "the squashed migration would not parse; nothing was written:\n  "
            + "\n  ".join(exc.problems)
        ) from exc
    check_equivalent(pending, parsed, hooks.split_statements)
    return Squashed(new_id, filename, text, tuple(pending), tuple(warnings))


def write(directory: Path, squashed: Squashed) -> Path:
    """Write the new file durably, never over another, then remove the originals.

    When an original cannot be removed (a file of another user in a sticky directory, an
    immutable file), the squash is undone: the originals removed so far are written back and
    the new file removed, so the directory is as it was.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / squashed.filename
    # named by the id alone: the final name may already be as long as file names can be
    temp = directory / f".{squashed.id}.{os.getpid()}.squash.tmp"
    try:
        _write_and_replace(directory, squashed, final, temp)
    except KeyboardInterrupt as exc:
        if temp.exists() or not final.exists() or any(m.path.exists() for m in squashed.replaces):
            raise
        # held back while the files were replaced, delivered once they were: the squash is
        # done, which a bare "interrupted" would leave the user to find out
        reason = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        raise Interrupted(
            f"{reason} came while the originals were replaced, so that was finished first: "
            f"wrote {reporting.display_path(final)}, replacing {len(squashed.replaces)} "
            f"migrations ({', '.join(m.id for m in squashed.replaces)})"
        ) from None
    return final


def _write_and_replace(directory: Path, squashed: Squashed, final: Path, temp: Path) -> None:
    from migretti_core.interrupts import signals_held
    from migretti_core.textfiles import create_durably, fsync_directory, read_bytes

    with contextlib.ExitStack() as uninterrupted:
        try:
            create_durably(temp, squashed.text.encode("utf-8"))
            try:
                # From the new file's name to the last original removed, Ctrl-C (SIGTERM,
                # SIGHUP) waits: stopped between the two, the new file and the originals
                # left would all run at the next apply.
                uninterrupted.enter_context(signals_held())
                _publish(temp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        except OSError as exc:  # a read-only directory, a full disk: nothing was changed
            raise reporting.cannot_write(OSError(exc.errno, exc.strerror, str(final))) from exc
        fsync_directory(directory)
        removed: list[tuple[Path, bytes]] = []
        for migration in squashed.replaces:
            try:
                content = read_bytes(migration.path)
                migration.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                _undo(directory, final, squashed, removed, migration, exc)
            removed.append((migration.path, content))
        for parent in {m.path.parent for m in squashed.replaces}:
            fsync_directory(parent)


def _undo(
    directory: Path,
    final: Path,
    squashed: Squashed,
    removed: Sequence[tuple[Path, bytes]],
    stuck: Migration,
    error: OSError,
) -> NoReturn:
    """Put back the originals removed so far and remove the new file, then raise."""
    from migretti_core.textfiles import create_durably, fsync_directory

    why = f"cannot remove {reporting.display_path(stuck.path)}: {error.strerror or error}"
    lost: list[str] = []
    for path, content in removed:
        try:
            create_durably(path, content)
        except OSError:
            lost.append(reporting.display_path(path))
    if lost:
        # the new file is all that holds those migrations now: it must stay
        left = [m for m in squashed.replaces if m.path.exists()]
        raise MgError(
            f"{why}; wrote {reporting.display_path(final)} but could not put back "
            + ", ".join(lost),
            hint="remove "
            + ", ".join(reporting.display_path(m.path) for m in left)
            + " by hand before the next apply, or they would run twice",
        )
    try:
        final.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise MgError(
            f"{why}; the originals are back, but {reporting.display_path(final)} could not be "
            f"removed: {exc.strerror or exc}",
            hint=f"remove {reporting.display_path(final)} by hand before the next apply, or "
            "its migrations would run twice",
        ) from exc
    fsync_directory(directory)
    raise MgError(
        f"{why}; the squash was undone, nothing was changed",
        hint=f"squash removes the migrations it replaces: check who may delete files in "
        f"{reporting.display_path(directory)}",
    )


def _publish(temp: Path, final: Path) -> None:
    """Give the written file its name, refusing to replace one that exists."""
    try:
        os.link(temp, final)
        return
    except FileExistsError:
        raise UsageError(
            f"{reporting.display_path(final)} already exists; not overwriting it"
        ) from None
    except OSError:
        pass  # no hard links on this file system
    if final.exists():
        raise UsageError(f"{reporting.display_path(final)} already exists; not overwriting it")
    os.rename(temp, final)


def squash(session: Session, title: str) -> int:
    """Squash the migrations pending in the selected database; ``--dry-run`` only prints."""
    from migretti_core import planning, running

    migrations = planning.load_migrations(session)
    refuse_too_few_files(session, migrations)
    refuse_unusable_name(session, title)
    dry_run = session.options.dry_run
    # A real squash holds the migration lock from reading the history until the originals are
    # gone: an apply running meanwhile would otherwise apply migrations this squash still reads
    # as pending, and the next apply would run them again in the new file.
    with (
        running.connected(session) as conn,
        contextlib.nullcontext() if dry_run else running.locked(session, conn),
    ):
        if not dry_run:
            # Read again under the lock: another squash that held it meanwhile replaced the
            # files read before, and squashing them as first read would write a second file
            # holding the same migrations (both would run at the next apply).
            migrations = planning.load_migrations(session)
            refuse_too_few_files(session, migrations)
        state = running.read_state(session, conn, migrations)
        refuse_blocked(state)
        pending = state.pending
        refuse_unsquashable(pending, state.out_of_order)
        squashed = build(session, pending, title, [e.id for e in state.history])
        path = None if dry_run else write(session.config.migrations_dir, squashed)
    for warning in squashed.warnings:
        reporting.report(session, "squash.warning", "warning", warning)
    ids = ", ".join(m.id for m in pending)
    if path is None:
        # like every dry run's SQL, passwords masked (a role's PASSWORD '...')
        click.echo(printable(session.hooks.redact(squashed.text), lines=True), nl=False)
        reporting.report(
            session,
            "squash.dry_run",
            "info",
            f"dry run: would write {squashed.filename} replacing {len(pending)} migrations "
            f"({ids}); nothing was changed",
            migration_id=squashed.id,
            squashed=[m.id for m in pending],
        )
        return 0
    reporting.report(
        session,
        "squash.written",
        "info",
        f"wrote {reporting.display_path(path)}, replacing {len(pending)} migrations ({ids})",
        migration_id=squashed.id,
        migration_name=path.stem.partition("_")[2],
        squashed=[m.id for m in pending],
        path=reporting.relative_path(path),
    )
    click.echo(reporting.display_path(path))
    session.hooks.after_command(
        session,
        "squash",
        (),
        {"path": str(path), "migration_id": squashed.id, "removed": [m.id for m in pending]},
    )
    return 0


@click.command("squash")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Print the squashed migration; change nothing.")
@click.pass_context
def squash_command(ctx: click.Context, name: str, dry_run: bool) -> int:
    """Combine the pending migrations into one new migration NAME."""
    session = app_of(ctx).session("squash", dry_run=dry_run)
    return squash(session, name)


# The first line of each part of a squashed section: the file it was copied from.
_FROM_LINE = re.compile(r"^-- from (\S+\.sql)$", re.MULTILINE)
_SQUASHED_NOTE = re.compile(rb"^--[ \t]*squashed:[ \t]*(.*?)[ \t]*\r?$", re.MULTILINE)
_UP_MARK = b"-- migrate: up"


def _replaced_ids(path: Path) -> set[str]:
    """The ids a file's ``-- squashed:`` header lines name (none when it has none)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(1 << 16).split(_UP_MARK, 1)[0]
    except OSError:
        return set()
    replaced: set[str] = set()
    for note in _SQUASHED_NOTE.findall(header):
        replaced.update(i.strip() for i in note.decode("utf-8", "replace").split(","))
    return replaced


def _starts_as_squashed(migration: Migration) -> bool:
    """Whether the up section starts as squash writes it (``-- from FILE``)."""
    kept = migration.kept("up_sql")
    if isinstance(kept, str):
        start = kept[:4096].lstrip()[:1024]  # never a copy of a whole large text
    else:  # a large file's section, not held in memory: its first bytes tell
        try:
            with open(migration.path, "rb") as handle:
                handle.seek(getattr(kept, "start", 0))
                start = handle.read(1024).decode("utf-8", "replace").lstrip()
        except OSError:
            return False
    return _FROM_LINE.match(start) is not None


def _leftovers(migration: Migration) -> list[str]:
    """The files beside a squashed migration that it replaces (empty for any other)."""
    if not _starts_as_squashed(migration):
        return []
    directory = migration.path.parent
    named = dict.fromkeys(_FROM_LINE.findall(migration.up_sql))
    present = [n for n in named if n != migration.path.name and (directory / n).is_file()]
    if not present:
        return []
    replaced = _replaced_ids(migration.path)
    return [n for n in present if n.partition("_")[0] in replaced]


def _leftover_problem(path: Path, left: Sequence[str]) -> str:
    many = len(left) > 1
    shown = ", ".join(reporting.display_path(path.parent / n) for n in left)
    return (
        f"{reporting.display_path(path)}: mg squash wrote it to replace {shown}, "
        f"which {'are' if many else 'is'} still there (a squash stopped before removing "
        f"{'them' if many else 'it'}, or {'they were' if many else 'it was'} brought back): "
        f"{'their' if many else 'its'} statements would run twice; delete "
        f"{'them' if many else 'it'} (the migrations its `-- squashed:` line names)"
    )


# The squashed migrations of a directory, found once per process for each state of the
# directory (its mtime changes as a file is added, removed or renamed): {path: replaced ids}.
_SQUASHED_IN: dict[tuple[Path, int], dict[Path, set[str]]] = {}


def _squashed_beside(directory: Path) -> dict[Path, set[str]]:
    try:
        key = (directory, directory.stat().st_mtime_ns)
    except OSError:
        return {}
    found = _SQUASHED_IN.get(key)
    if found is not None:
        return found
    found = {}
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".sql") and e.is_file()]
    except OSError:
        entries = []
    for entry in entries:
        try:
            with open(entry.path, "rb") as handle:
                head = handle.read(4096)
        except OSError:
            continue
        if b"squashed:" not in head.split(_UP_MARK, 1)[0]:
            continue
        path = directory / entry.name
        replaced = _replaced_ids(path)
        if replaced:
            found[path] = replaced
    _SQUASHED_IN.clear()
    _SQUASHED_IN[key] = found
    return found


def _replacing(session: Session, migration: Migration) -> str | None:
    """The problem of an original beside the squashed migration that replaces it (that one
    already applied, or pending): run, it would run its statements a second time."""
    from migretti_core.textfiles import read_bytes

    for path, replaced in _squashed_beside(migration.path.parent).items():
        if migration.id not in replaced or path == migration.path:
            continue
        try:
            squashed = session.hooks.parse_migration(path, read_bytes(path))
        except (MgError, OSError):
            continue  # the command reads every file and says what is wrong with it
        left = _leftovers(squashed)
        if migration.filename in left:
            return _leftover_problem(path, left)
    return None


@hookimpl
def mg_validate_migration(session: Session, migration: Migration) -> list[str]:
    """Refuse a squashed migration while files it replaces are still beside it, and those
    files while the squashed migration is there.

    A squash stopped between writing the new file and removing the originals (kill -9, a
    power cut), or originals brought back (from an old branch), leaves both, and both would
    run: the same statements twice, whether the squashed migration ran first or not. Only a
    migration whose up section starts as squash writes it (``-- from FILE``) counts as
    squashed, and only its ``-- squashed:`` header decides which files it replaces, so a
    hand-written ``-- from`` comment is no problem. Both sides give the same problem, said
    once.
    """
    from migretti_core.planning import sorts_before_applied

    left = _leftovers(migration)
    if left:
        return [_leftover_problem(migration.path, left)]
    if not sorts_before_applied(migration):
        # an original sorts before its squashed migration: only once that one is applied
        # (and the original so sorts before it) is there a squashed migration to look for
        return []
    problem = _replacing(session, migration)
    return [] if problem is None else [problem]


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(squash_command)
