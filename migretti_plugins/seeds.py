"""Builtin ``seeds``: ``mg seed create NAME`` and ``mg seed [NAME...]``.

A seed is a plain SQL file in ``seeds_dir``. Each one runs as a single query in its own
transaction together with its row in ``_migrations_seeds``, so after any crash a seed's data
exists exactly when its row does. The row holds the checksum of the content that ran: a seed
runs again only when its file changed, or with ``--all``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from migretti_core import hookimpl, reporting
from migretti_core.cli import app_of, parse_lock_timeout
from migretti_core.errors import (
    Aborted,
    ConfigError,
    DatabaseError,
    MgError,
    MigrationFailed,
    MigrationFileError,
    SqlError,
    UsageError,
)
from migretti_core.messages import lost_connection_reason, printable
from migretti_core.records import record
from migretti_core.transactions import transaction_control
from migretti_core.types import Config, Key, Migration, MigrationResult, Session

if TYPE_CHECKING:
    from pathlib import Path

SEED_TABLE = "_migrations_seeds"

CREATE_TABLE = f"""CREATE TABLE IF NOT EXISTS {SEED_TABLE} (
    name text PRIMARY KEY,
    checksum varchar(64) NOT NULL,
    ran_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer
)"""
TABLE_EXISTS = f"SELECT to_regclass('{SEED_TABLE}') IS NOT NULL"
READ_ROWS = f"SELECT name, checksum FROM {SEED_TABLE}"
# Where prepare_table found or created the table, schema-qualified: a seed may change
# search_path for the session (pg_dump's preamble empties it), and its row must still be
# written to the table the run started with.
QUALIFIED_NAME = (
    "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) "
    "FROM pg_catalog.pg_class AS c "
    "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
    f"WHERE c.oid = pg_catalog.to_regclass('{SEED_TABLE}')"
)
RECORD_ROW = (
    "INSERT INTO {table} (name, checksum, ran_at, duration_ms) "
    "VALUES (%s, %s, now(), %s) "
    "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, "
    "ran_at = EXCLUDED.ran_at, duration_ms = EXCLUDED.duration_ms "
    "RETURNING name"
)

# Regular expressions are compiled on first use (re's cache), not at every start of mg.
# The name part is anything a file name may hold, line breaks included (``(?s:...)``).
_SEED_NAME_RE = r"(?P<id>[A-Za-z0-9]{1,26})_(?P<slug>(?s:.+))"
_MAX_FILENAME_BYTES = 255

SEEDS_DIR = Key("seeds_dir", "text", "seeds", "the directory of seed files, relative to mg.yaml")


def seeds_dir(config: Config) -> Path:
    """``seeds_dir`` of mg.yaml, made absolute against the configuration's directory."""
    from migretti_core.settings import top_level_setting

    value = config.settings.get(SEEDS_DIR.name)
    if isinstance(value, dict | list):
        label = config.label
        kind = "a mapping" if isinstance(value, dict) else "a list"
        raise ConfigError(f"{label}: seeds_dir: expected a directory path, got {kind}")
    text = str(top_level_setting(config, SEEDS_DIR))
    from pathlib import Path

    return Path(os.path.normpath(config.root / os.path.expanduser(text)))


@record(frozen=True)
class Seed:
    """One seed file; ``name`` (the file name) is its key in the tracking table."""

    name: str
    path: Path
    text: str
    checksum: str

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".sql")

    @property
    def id(self) -> str | None:
        match = re.fullmatch(_SEED_NAME_RE, self.stem)
        return match.group("id") if match else None

    @property
    def slug(self) -> str:
        match = re.fullmatch(_SEED_NAME_RE, self.stem)
        return match.group("slug") if match else self.stem

    def as_migration(self) -> Migration:
        """The shape the engine's error formatting expects, so failures name file and line."""
        return Migration(
            id=self.id or self.stem,
            name=self.slug,
            path=self.path,
            text=self.text,
            checksum=self.checksum,
            up_sql=self.text,
            up_line=1,
        )


# --- files -------------------------------------------------------------------------------


def seed_paths(directory: Path) -> list[Path]:
    """Seed files in file order; hidden files and subdirectories are not seeds."""
    if not os.path.lexists(directory):
        return []
    try:
        candidates = [
            entry
            for entry in directory.iterdir()
            if entry.suffix == ".sql" and not entry.name.startswith(".")
        ]
    except OSError as exc:
        shown = reporting.display_path(directory)
        raise UsageError(f"{shown}: cannot be read: {exc.strerror or exc}") from None
    found = [entry for entry in candidates if entry.is_file()]
    # A dangling symbolic link, a device or a FIFO is no seed, and never skipped silently.
    odd = [entry for entry in candidates if not entry.is_file() and not entry.is_dir()]
    if odd:
        raise MigrationFileError(
            [f"{reporting.display_path(entry)}: not a regular file" for entry in sorted(odd)]
        )
    return sorted(found, key=lambda entry: entry.name)


def load_seed(path: Path) -> Seed:
    from migretti_core import planning
    from migretti_core.textfiles import ChangedWhileReading, checksum, normalize_text, read_bytes

    try:
        raw = read_bytes(path)
    except ChangedWhileReading as exc:
        raise MigrationFileError([f"{reporting.display_path(path)}: {exc.strerror}"]) from None
    except OSError as exc:
        raise UsageError(f"{reporting.display_path(path)}: cannot be read: {exc.strerror}") from exc
    nul = planning.nul_problem(path, raw) or planning.name_problem(path)
    if nul is not None:
        raise MigrationFileError([nul])
    try:
        text = normalize_text(raw, path)
    except MigrationFileError as exc:  # "NAME:LINE: ...": say where, as for migrations
        where = reporting.display_path(path)
        raise MigrationFileError(
            [
                where + p.removeprefix(path.name) if p.startswith(path.name + ":") else p
                for p in exc.problems
            ]
        ) from None
    return Seed(path.name, path, text, checksum(text))


def load_seeds(paths: Sequence[Path]) -> list[Seed]:
    """Every seed, or one error listing the problems of all of them: none runs while any
    file is broken."""
    seeds: list[Seed] = []
    problems: list[str] = []
    for path in paths:
        try:
            seeds.append(load_seed(path))
        except MigrationFileError as exc:
            problems.extend(exc.problems)
    if problems:
        raise MigrationFileError(problems)
    return seeds


# Words that start transaction control; a seed holding none of them needs no splitting.
_CONTROL_WORD = r"(?i)(?<![\w$])(?:abort|begin|commit|end|prepare|rollback|start)(?![\w$])"
_LEADING_COMMENTS = r"(?:\s+|--[^\n]*|/\*.*?\*/)*"


def _control_statement(text: str) -> str | None:
    """The name of a statement that would end or nest the transaction a seed runs in."""
    head = re.match(_LEADING_COMMENTS, text, re.DOTALL)
    words: list[str] = re.findall(r"[a-z]+", text[head.end() if head else 0 :][:40].lower())
    first, second = [*words, "", ""][:2]
    return transaction_control(first, second)


def transaction_problems(session: Session, seeds: Sequence[Seed]) -> list[str]:
    """``file:line`` problems for BEGIN, COMMIT, ROLLBACK ... in the seeds.

    A seed runs in a transaction with its tracking row (a dry run in a savepoint of one that
    is rolled back): a COMMIT would commit the seed, or in a dry run the seeds before it,
    apart from that, and nothing after the fact can take it back. So such a seed is refused
    before any seed runs, as a transactional migration is.
    """
    problems: list[str] = []
    for item in seeds:
        if re.search(_CONTROL_WORD, item.text) is None:
            continue
        for statement in session.hooks.split_statements(item.text):
            name = _control_statement(statement.text)
            if name is not None:
                problems.append(
                    f"{reporting.display_path(item.path)}:{statement.line}: {name} would end "
                    f"or nest the transaction mg runs this seed in (with its row in "
                    f"{SEED_TABLE}); remove it: each seed runs in a transaction of its own"
                )
    return problems


def select_paths(directory: Path, paths: Sequence[Path], names: Iterable[str]) -> list[Path]:
    """The seeds the user named, in file order.

    A name may be the file name, the name without ``.sql``, the id or the slug. A name with a
    path separator is a path, relative to the working directory, and selects the seed it
    names only when it lies in ``directory`` itself (``seeds/x.sql``): a file anywhere else is
    no seed of this project, even if a seed has the same file name. Unknown, ambiguous and
    outside names are refused before anything runs.
    """
    chosen: set[Path] = set()
    problems: list[str] = []
    where = _shown_directory(directory)
    for given in names:
        if "/" in given or os.sep in given:
            if not _in_directory(directory, given):
                problems.append(
                    f"{given} is not a seed: seeds are the .sql files directly in {where}"
                )
                continue
            wanted = os.path.basename(os.path.normpath(given))
            matches = [p for p in paths if wanted in (p.name, p.stem)]
        else:
            matches = [p for p in paths if given in (p.name, p.stem)]
            if not matches:
                matches = [p for p in paths if _split_name(p)[0] == given]
            if not matches:
                matches = [p for p in paths if _split_name(p)[1] == given]
        if not matches:
            problems.append(f"no seed named {given!r} in {where}")
        elif len(matches) > 1:
            names_found = ", ".join(printable(p.name) for p in matches)
            problems.append(f"seed name {given!r} is ambiguous: {names_found}")
        else:
            chosen.add(matches[0])
    if problems:
        known = ", ".join(printable(p.name) for p in paths) or "none"
        hint = f"seeds in {where}: {known}"
        first = next(iter(names), "")
        if problems[0] == f"no seed named {first!r} in {where}" and _looks_like_create(first):
            # `mg seed craete users`: a misspelt subcommand read as the names of seeds
            hint = f"did you mean `mg seed create`? {hint}"
        raise UsageError("; ".join(problems), hint=hint)
    return [p for p in paths if p in chosen]


def _looks_like_create(word: str) -> bool:
    import difflib

    return word != "create" and bool(difflib.get_close_matches(word.lower(), ["create"], n=1))


def _shown_directory(directory: Path) -> str:
    return reporting.display_path(directory).rstrip(os.sep) + os.sep


def _in_directory(directory: Path, given: str) -> bool:
    """Whether ``given``, a path from the working directory, names a file directly in
    ``directory`` (reached through a symbolic link or not)."""
    parent = os.path.dirname(os.path.abspath(given))
    if os.path.normpath(parent) == os.path.normpath(directory):
        return True
    try:
        return os.path.samefile(parent, directory)
    except OSError:  # either one missing
        return False


def _split_name(path: Path) -> tuple[str | None, str]:
    match = re.fullmatch(_SEED_NAME_RE, path.stem)
    if match is None:
        return None, path.stem
    return match.group("id"), match.group("slug")


def render_seed_template(title: str, seed_id: str) -> str:
    """A new seed: comments only, so it is valid SQL that does nothing until filled in."""
    return (
        f"-- seed: {title}\n"
        f"-- id: {seed_id}\n"
        "--\n"
        "-- Runs with `mg seed` in its own transaction; it runs again whenever this file\n"
        "-- changes, so write it to be safe to repeat (e.g. INSERT ... ON CONFLICT DO NOTHING).\n"
        "\n"
    )


def create_seed_file(directory: Path, title: str) -> Path:
    """Write ``<ULID>_<slug>.sql`` in ``directory``, never replacing a file."""
    from ulid import ULID

    from migretti_core.textfiles import slugify, write_new_file

    seed_id = str(ULID())
    filename = f"{seed_id}_{slugify(title, 'seed')}.sql"
    if len(filename.encode("utf-8")) > _MAX_FILENAME_BYTES:
        raise UsageError(f"seed name {title!r} is too long for a file name; shorten it")
    one_line_title = re.sub(r"[\r\n]+", " ", title)
    content = render_seed_template(one_line_title, seed_id).encode("utf-8")
    return write_new_file(directory / filename, content)


# --- database ----------------------------------------------------------------------------


def read_checksums(session: Session, conn: Any) -> dict[str, str]:
    """What ran, by seed name; never creates the table (dry runs and previews read too)."""
    hooks = session.hooks
    exists = hooks.query(session, conn, TABLE_EXISTS, ())
    if not exists or not exists[0][0]:
        return {}
    return {
        str(name): str(checksum) for name, checksum in hooks.query(session, conn, READ_ROWS, ())
    }


def prepare_table(session: Session, conn: Any) -> str:
    """Create the tracking table when missing; its schema-qualified name."""
    hooks = session.hooks
    with hooks.transaction(session, conn):
        hooks.execute(session, conn, CREATE_TABLE)
    rows = hooks.query(session, conn, QUALIFIED_NAME, ())
    return str(rows[0][0]) if rows and rows[0][0] else SEED_TABLE


def _needs_run(seed: Seed, ran: dict[str, str], force: bool) -> bool:
    return force or ran.get(seed.name) != seed.checksum


_DEFERRED_NOTE = "raised by a deferred constraint when the seed's transaction commits"


def _failure(
    seed: Seed, exc: SqlError, note: str | None = None, sql: str | None = None
) -> MigrationFailed:
    """The server's error placed in the seed file; ``sql=""`` when the error has no position
    in it (raised at COMMIT)."""
    from migretti_core import running

    text = seed.text if sql is None else sql
    return running.sql_failure(seed.as_migration(), exc, text, 1, note)


def run_seed(session: Session, conn: Any, seed: Seed, table: str = SEED_TABLE) -> int:
    """Run one seed and record it in ``table`` in one transaction; return its duration in
    milliseconds."""
    from migretti_core.textfiles import has_sql

    hooks = session.hooks
    started = time.perf_counter()
    check = hooks.lock_check_sql(session, conn)
    committing = False
    try:
        with hooks.transaction(session, conn):
            if check:
                # the lock is confirmed before each seed, as before each migration: a seed
                # before this one may have released it (pg_advisory_unlock_all, DISCARD ALL),
                # and another mg seed may now be running the same seeds
                try:
                    hooks.execute(session, conn, check)
                except SqlError as exc:
                    raise MigrationFailed(
                        f"the migration lock {session.config.lock_id} was lost before seed "
                        f"{printable(seed.name)} started; it was not run, and mg stopped "
                        "because another run may now be running seeds",
                        hint="a seed calling pg_advisory_unlock_all() or DISCARD ALL releases the "
                        "lock, as does a pooler in transaction mode",
                    ) from exc
            if has_sql(seed.text):
                try:
                    hooks.execute(session, conn, seed.text)
                except SqlError as exc:
                    note = (
                        f"seed {printable(seed.name)} was rolled back; the seeds before it stay "
                        "committed"
                    )
                    raise _failure(seed, exc, note) from exc
            duration = int((time.perf_counter() - started) * 1000)
            record = RECORD_ROW.format(table=table)
            hooks.query(session, conn, record, (seed.name, seed.checksum, duration))
            committing = True
    except DatabaseError as exc:
        # the session ended (terminated, server restart, network): name the seed
        raise DatabaseError(
            f"the database connection was lost while seed {reporting.display_path(seed.path)} "
            f"ran: {lost_connection_reason(exc.message)}",
            hint="its transaction was rolled back, unless the server committed it just before "
            "the connection dropped; run `mg seed` again: the seeds that committed are skipped",
        ) from exc
    except SqlError as exc:
        if not committing:
            raise
        # the seed and its row went through; COMMIT refused them (a deferred constraint)
        note = (
            f"{_DEFERRED_NOTE}; seed {printable(seed.name)} was rolled back, the seeds before "
            "it stay committed"
        )
        raise _failure(seed, exc, note, sql="") from exc
    return int((time.perf_counter() - started) * 1000)


def _fields(seed: Seed, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "seed": seed.name,
        "seed_id": seed.id,
        "path": reporting.relative_path(seed.path),
    }
    fields.update(extra)
    return fields


def _started(session: Session, seed: Seed) -> None:
    reporting.report(session, "seed.started", "debug", f"seeding {seed.name}", **_fields(seed))


def _skipped(session: Session, seed: Seed) -> None:
    reporting.report(
        session,
        "seed.skipped",
        "info",
        f"skipped {seed.name} (unchanged since it ran)",
        **_fields(seed, reason="unchanged"),
    )


def _describe(seeds: Sequence[Seed]) -> str:
    shown = ", ".join(printable(s.name) for s in seeds[:5])
    more = f" and {len(seeds) - 5} more" if len(seeds) > 5 else ""
    return f"{shown}{more}"


def _refuse_a_file_in_place(config: Config, directory: Path) -> None:
    """A file (or a dangling link) where the seeds directory should be: named, instead of
    mkdir's "File exists" or a bare "Not a directory"."""
    if not os.path.lexists(directory) or directory.is_dir():
        return
    if SEEDS_DIR.name in config.settings:
        where = f" in {config.label}" if config.path is not None else ""
        shown = reporting.display_path(directory)
        name = f"seeds_dir {config.settings[SEEDS_DIR.name]!r}{where}: {shown}"
        hint = "move it out of the way, or correct seeds_dir"
    else:
        name = f"the seeds directory {reporting.display_path(directory)}"
        hint = "move it out of the way, or set seeds_dir in mg.yaml"
    problem = "is a dangling symlink" if not directory.exists() else "is not a directory"
    raise ConfigError(f"{name} {problem}", hint=hint)


def seed(session: Session, names: Sequence[str] = (), *, force: bool = False) -> int:
    """Run the selected seeds (all when ``names`` is empty) that need running."""
    from migretti_core import running

    directory = seeds_dir(session.config)
    default = os.path.normpath(session.config.root / SEEDS_DIR.default)
    if (
        SEEDS_DIR.name in session.config.settings
        and str(directory) != default
        and not os.path.lexists(directory)
    ):
        # named in mg.yaml but not there: a typo must not read as "no seeds" (the default
        # directory, which `mg init` writes out, may be missing until the first seed)
        where = f" in {session.config.label}" if session.config.path is not None else ""
        given = session.config.settings[SEEDS_DIR.name]
        raise ConfigError(
            f"seeds_dir {given!r}{where}: {reporting.display_path(directory)} does not exist",
            hint="create it (mg seed create does), or correct seeds_dir",
        )
    _refuse_a_file_in_place(session.config, directory)
    paths = seed_paths(directory)
    if names:
        paths = select_paths(directory, paths, names)
    seeds = load_seeds(paths)
    problems = transaction_problems(session, seeds)
    if problems:
        raise MigrationFileError(problems)
    if not seeds:
        where = reporting.display_path(seeds_dir(session.config))
        reporting.report(session, "command.nothing", "info", f"no seeds in {where}")
        return 0
    with running.connected(session) as conn:
        ran = read_checksums(session, conn)
        todo = [s for s in seeds if _needs_run(s, ran, force)]
        if not todo:
            for item in seeds:
                _skipped(session, item)
            _summary(session, 0, len(seeds))
            return 0
        what = "seed dry run" if session.options.dry_run else "seed"
        running.confirm(session, None, f"{what} ({_describe(todo)})")
        if session.options.dry_run:
            return _dry_run(session, conn, seeds, todo)
        confirmed = {s.name for s in todo} if session.hooks.is_protected(session) else None
        with running.locked(session, conn):
            table = prepare_table(session, conn)
            ran = read_checksums(session, conn)
            todo = [s for s in seeds if _needs_run(s, ran, force)]
            if confirmed is not None and not {s.name for s in todo} <= confirmed:
                raise Aborted("the seeds to run changed while waiting for the lock; run again")
            return _run(session, conn, seeds, todo, table)


def _run(
    session: Session, conn: Any, seeds: Sequence[Seed], todo: Sequence[Seed], table: str
) -> int:
    pending = {s.name for s in todo}
    count = 0
    results: list[MigrationResult] = []
    skipped: list[str] = []
    for item in seeds:
        if item.name not in pending:
            _skipped(session, item)
            skipped.append(item.name)
            continue
        _started(session, item)
        try:
            duration = run_seed(session, conn, item, table)
        except MgError as exc:
            reporting.report(
                session,
                "seed.failed",
                "debug",
                f"seed {item.name} failed",
                **_fields(item, error=exc.message),
            )
            raise
        count += 1
        reporting.report(
            session,
            "seed.ran",
            "info",
            f"ran {item.name} ({duration} ms)",
            **_fields(item, duration_ms=duration),
        )
        results.append(MigrationResult(item.as_migration(), "up", True, duration))
    _summary(session, count, len(seeds) - count)
    details = {"ran": [r.migration.filename for r in results], "skipped": skipped}
    session.hooks.after_command(session, "seed", results, details)
    return 0


def _summary(session: Session, ran: int, skipped: int) -> None:
    reporting.report(
        session,
        "seed.finished",
        "info",
        f"seeds: {ran} ran, {skipped} skipped",
        ran=ran,
        skipped=skipped,
    )


def _dry_run(session: Session, conn: Any, seeds: Sequence[Seed], todo: Sequence[Seed]) -> int:
    """Run the seeds that would run inside one transaction that is rolled back."""
    from migretti_core.textfiles import has_sql

    hooks = session.hooks
    pending = {s.name for s in todo}
    ok = failed = 0
    with hooks.transaction(session, conn, rollback=True):
        for item in seeds:
            if item.name not in pending:
                _skipped(session, item)
                continue
            if failed:
                reporting.report(
                    session,
                    "seed.not_executed",
                    "info",
                    f"not executed: {item.name} (an earlier seed failed)",
                    **_fields(item),
                )
                continue
            _started(session, item)
            started = time.perf_counter()
            checking_deferred = False
            try:
                with hooks.transaction(session, conn):
                    if has_sql(item.text):
                        hooks.execute(session, conn, item.text)
                    # what COMMIT would check, in a savepoint rolled back at once, so the
                    # seeds after this one still see their constraints deferred
                    checking_deferred = True
                    with hooks.transaction(session, conn, rollback=True):
                        hooks.execute(session, conn, "SET CONSTRAINTS ALL IMMEDIATE")
            except SqlError as exc:
                failed += 1
                if checking_deferred:
                    error = _failure(item, exc, _DEFERRED_NOTE, sql="").message
                else:
                    error = _failure(item, exc).message
                reporting.report(
                    session,
                    "seed.failed",
                    "error",
                    f"would fail: {error}",
                    **_fields(item, error=error),
                )
                continue
            ok += 1
            duration = int((time.perf_counter() - started) * 1000)
            reporting.report(
                session,
                "seed.ran",
                "info",
                f"would run {item.name}: ok ({duration} ms)",
                **_fields(item, duration_ms=duration),
            )
    reporting.report(
        session,
        "seed.finished",
        "info",
        f"dry run: {ok} ok, {failed} failed, {len(seeds) - len(todo)} skipped; nothing was changed",
        ran=0,
        ok=ok,
        failed=failed,
        skipped=len(seeds) - len(todo),
    )
    return 1 if failed else 0


# --- command line ------------------------------------------------------------------------

_RUN = "run"
_HELP_FLAGS = ("-h", "--help")
_RUN_USAGE = "[NAME]... [--all] [--dry-run] [--lock-timeout DURATION]"


class SeedGroup(click.Group):
    """``mg seed create NAME`` is a subcommand; anything else is ``mg seed [NAME...]``.

    Arguments that do not start with ``create`` are handed to a hidden ``run`` command, so a
    seed may even be called ``run`` or ``create`` (by its file name or id).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else None
        if (first not in self.commands and first not in _HELP_FLAGS) or first == _RUN:
            args = [_RUN, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, _RUN_USAGE)
        formatter.write_usage(ctx.command_path, "create NAME", prefix="       ")


class _RunContext(click.Context):
    """``mg seed``, not ``mg seed run``, in usage errors (``Try 'mg seed --help'``)."""

    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent is not None else super().command_path


class _RunCommand(click.Command):
    """Shown to people as ``mg seed``: the ``run`` name is an implementation detail, and
    plugins add their options to it as to ``seed`` (``mg_command_options``)."""

    context_class = _RunContext
    options_of = "seed"

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        path = ctx.parent.command_path if ctx.parent else ctx.command_path
        formatter.write_usage(path, _RUN_USAGE)


@click.group(
    "seed",
    cls=SeedGroup,
    context_settings={"help_option_names": list(_HELP_FLAGS)},
)
def seed_group() -> None:
    """Run the seed files of seeds_dir; `mg seed create NAME` writes one.

    \b
    mg seed                 run every seed not yet run with its current content
    mg seed NAME...         only these (file name, id or slug)
    mg seed --all           run the selected seeds again even if unchanged
    mg seed --dry-run       try them in a transaction that is rolled back
    mg seed create NAME     write seeds/<ULID>_<name>.sql
    """


@seed_group.command(_RUN, cls=_RunCommand, hidden=True)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "force", is_flag=True, help="Run the seeds even if they are unchanged.")
@click.option("--dry-run", is_flag=True, help="Try the seeds in a transaction, then roll back.")
@click.option(
    "--lock-timeout",
    metavar="DURATION",
    help="How long to wait for the migration lock (e.g. 30s, 10m). Default: lock_timeout, 10m.",
)
@click.pass_context
def run_command(
    ctx: click.Context,
    names: tuple[str, ...],
    force: bool,
    dry_run: bool,
    lock_timeout: str | None,
) -> int:
    """Run seeds in file order, each in its own transaction."""
    app = app_of(ctx)
    session = app.session("seed", dry_run=dry_run, lock_timeout=parse_lock_timeout(lock_timeout))
    code = seed(session, names, force=force)
    if code and dry_run:
        # the run stops at the first seed that fails: the seeds after it are not tried
        raise MigrationFailed("dry run: 1 seed failed; nothing was changed")
    return code


@seed_group.command("create")
@click.argument("name")
@click.pass_context
def create_command(ctx: click.Context, name: str) -> None:
    """Create an empty seed file seeds/<ULID>_<name>.sql."""
    config = app_of(ctx).config()
    directory = seeds_dir(config)
    _refuse_a_file_in_place(config, directory)
    try:
        path = create_seed_file(directory, name)
    except OSError as exc:
        raise reporting.cannot_write(exc) from exc
    click.echo(reporting.display_path(path))


@hookimpl
def mg_config_sections() -> list[str]:
    return [SEEDS_DIR.name]


@hookimpl
def mg_configure(config: Config) -> None:
    seeds_dir(config)  # a bad value stops every command, as it always did


@hookimpl(trylast=True)
def mg_seed(session: Session, names: Sequence[str], force: bool) -> int:
    return seed(session, names, force=force)


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(seed_group)
