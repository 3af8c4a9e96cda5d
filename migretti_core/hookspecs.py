"""Hook specifications: the contract between the core and every plugin.

Every hook is prefixed ``mg_`` and declared with ``@spec(POLICY, ...)``: how the core calls
it (first answer wins, every answer collected, a gate that fails closed, a notification that
isolates failures; see ``hookpolicy``), the type its answer must have, and the version it
appeared in. Builtins are registered first and mostly ``trylast``, so any plugin overrides a
builtin simply by answering.

Implementations may accept any subset of a hook's arguments. The reference with examples is
``docs/plugins/hooks.md``; new hooks are added here the same way, with a section there and a
``test_hook_<name>`` test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from migretti_core.hookpolicy import (
    AFTER,
    COLLECT,
    FIRST,
    GATE,
    NOTIFY,
    SETUP,
    a_path,
    context_manager,
    held,
    instance_of,
    list_of,
    list_of_paths,
    mapping_of,
    nothing,
    spec,
)
from migretti_core.types import (
    Config,
    HistoryEntry,
    Key,
    LintFinding,
    Migration,
    MigrationResult,
    ScratchServer,
    Statement,
    StatementBatch,
    StatementInfo,
    Target,
)

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from migretti_core.types import (
        ConfigRequest,
        Direction,
        Event,
        HistoryChange,
        LintRequest,
        LockHolder,
        LockReport,
        Options,
        Plan,
        Session,
    )


def _click_parameters(value: Any) -> str | None:
    import click

    return list_of(click.Parameter)(value)


# --- configuration -------------------------------------------------------------------------


@spec(NOTIFY.refusing_wrong_answers(), returns=list_of((str, Key)))
def mg_config_sections() -> list[str | Key]:  # type: ignore[empty-body]
    """Top-level mg.yaml sections this plugin owns, so they are not rejected as unknown.

    A name, or a ``Key``; a ``Key`` with ``as_written`` is kept as written (``${VAR}``
    unresolved) for the plugin to resolve itself.
    """


@spec(FIRST.exiting(2), returns=instance_of(Config), required="configuration")
def mg_load_config(request: ConfigRequest) -> Config | None:
    """Find, read, merge and interpolate the configuration for the selected profile.

    Raise ``ConfigError`` for anything wrong. The builtin ``config`` plugin reads mg.yaml.
    """


@spec(SETUP)
def mg_configure(config: Config) -> None:
    """Called once the configuration is known and every plugin is registered."""


# --- migration discovery and parsing ------------------------------------------------------


@spec(FIRST, returns=list_of_paths(), required="migration discovery")
def mg_discover_migrations(config: Config) -> list[Path] | None:
    """Return the migration source files, in any order (the core sorts by id).

    The list may carry ``ignored``: ``(path, reason)`` pairs of files left out that look
    meant to be migrations, which the core warns about once per process."""


@spec(FIRST, returns=instance_of(Migration), required="a parser for {path.name}")
def mg_parse_migration(path: Path, raw: bytes) -> Migration | None:
    """Parse one source file; raise ``MigrationFileError`` listing every problem in it.

    Return None to leave the file to another plugin.
    """


@spec(GATE.exiting(2), returns=list_of(str))
def mg_validate_migration(session: Session, migration: Migration) -> list[str]:  # type: ignore[empty-body]
    """Pre-flight checks on a migration about to run; return problems (``file:line: text``).

    Called for every migration of a plan before anything is executed; any problem aborts
    the command with exit 2. A gate: an implementation that raises stops the command too
    (exit 2, plugin named), so a crashing check never lets a migration through.
    """


@spec(FIRST, returns=a_path(), required="migration creation")
def mg_create_migration(
    config: Config, title: str, up_sql: str, down_sql: str, transactional: bool
) -> Path | None:
    """Write a new migration file for ``mg create`` and return its path.

    ``up_sql``/``down_sql`` are the sections' SQL when given with ``--up``/``--down``, else "".
    ``transactional`` is False for ``mg create --no-transaction``: the file says
    ``-- migrate: no-transaction``.
    """


@spec(FIRST, since="1.1", returns=instance_of(tuple), required="migration rendering")
def mg_render_migration(
    config: Config,
    migration_id: str,
    title: str,
    up_sql: str,
    down_sql: str | None,
    transactional: bool,
    notes: Sequence[str],
) -> tuple[str, str] | None:
    """The file name and text of a new migration, without writing anything.

    ``mg squash`` renders the squashed migration through this hook, parses the text back with
    ``mg_parse_migration`` and writes it itself. ``down_sql`` None means no down section;
    ``notes`` are lines for the file's header (``squashed: 0001, 0002``).
    """


# --- statement splitting -----------------------------------------------------------------


@spec(FIRST, returns=list_of(Statement), required="statement splitting")
def mg_split_statements(sql: str) -> list[Statement] | None:
    """Split SQL into statements for no-transaction migrations (lines are 1-based in ``sql``)."""


# --- connection --------------------------------------------------------------------------


@spec(FIRST, returns=mapping_of(str), required="connection parameters")
def mg_connection_params(session: Session) -> Mapping[str, str] | None:
    """Return the libpq parameters of the target (``host``, ``port``, ``user``, ``password``, ...).

    Used to connect, to describe the target and to set ``PG*`` variables for shell hooks.
    """


@spec(FIRST, required="a database connection")
def mg_connect(session: Session) -> Any | None:
    """Open and return a connection object understood by the execution hooks."""


@spec(FIRST, returns=instance_of(bool))
def mg_disconnect(session: Session, conn: Any) -> bool | None:
    """Close a connection opened by ``mg_connect``; return True when handled."""


@spec(FIRST, returns=instance_of(Target), required="a target description")
def mg_describe_target(session: Session) -> Target | None:
    """Describe the target database for people (never a password)."""


@spec(COLLECT, since="1.1", returns=list_of_paths())
def mg_program_dirs(config: Config) -> list[Path]:  # type: ignore[empty-body]
    """Directories to put first on ``PATH`` for programs run against the target (shell
    hooks), so their ``pg_dump`` and ``psql`` match the server: the ``embedded`` plugin
    answers with its server's ``bin`` directory."""


@spec(COLLECT, since="1.1", returns=mapping_of(str))
def mg_program_environment(config: Config) -> Mapping[str, str]:  # type: ignore[empty-body]
    """Environment variables for programs run against the target (shell hooks), set after
    mg's own: a fleet member's ``MG_TARGET``."""


@spec(COLLECT, since="1.1", returns=list_of_paths())
def mg_spare_program_dirs(config: Config) -> list[Path]:  # type: ignore[empty-body]
    """Directories of PostgreSQL client programs of some version, whatever the target: where
    ``mg schema dump`` looks, after ``PATH``, for a ``pg_dump`` of the server's major version
    when the target has no programs of its own (``mg_program_dirs``). The ``embedded``
    plugin answers with its distribution's ``bin`` directory when the extra is installed."""


@spec(FIRST, since="1.1", returns=context_manager)
def mg_scratch_server(session: Session) -> AbstractContextManager[ScratchServer] | None:
    """A server where mg may create and drop a scratch database (``mg check``, ``mg drift``).

    Return a context manager yielding a ``ScratchServer``; it is entered when the scratch
    database is needed and left when it has been dropped, so a server started for it stops
    there. Asked only when ``check.database_url`` (or ``--database-url``) is not given; None
    when you have no server to offer. The ``embedded`` plugin answers with the project's
    embedded server when it is the target, else with a temporary one when the extra is
    installed.
    """


# --- locking -----------------------------------------------------------------------------


@spec(FIRST, returns=held, required="locking")
def mg_lock_acquire(session: Session, conn: Any, timeout: float) -> bool | None:
    """Take the run-wide lock, waiting at most ``timeout`` seconds.

    Return True once held; raise ``LockTimeout`` when the wait runs out. While waiting, call
    ``session.hooks.on_lock_wait(holder, waited)`` so users learn who holds it.
    """


@spec(FIRST, returns=instance_of(bool))
def mg_lock_release(session: Session, conn: Any) -> bool | None:
    """Release the lock taken by ``mg_lock_acquire``; return True when handled."""


@spec(FIRST, returns=instance_of(str))
def mg_lock_check_sql(session: Session, conn: Any) -> str | None:
    """One SQL statement that fails unless ``conn`` still holds the lock.

    The engine puts it at the start of each migration's query, so a lock lost in the
    middle of a run (a migration calling ``pg_advisory_unlock_all()``) stops the run before
    the next migration instead of letting two runs apply it. None: nothing to check.
    """


# --- execution ---------------------------------------------------------------------------


@spec(FIRST, returns=instance_of(bool), required="SQL execution")
def mg_execute(session: Session, conn: Any, sql: str) -> bool | None:
    """Send ``sql`` to the server as written, as one query; raise ``SqlError`` on failure.

    ``SqlError.position`` must be the 1-based character offset into ``sql`` when known.
    """


@spec(FIRST, returns=instance_of(bool))
def mg_execute_transaction(session: Session, conn: Any, parts: Sequence[str]) -> bool | None:
    """Run the concatenation of ``parts`` as a transaction of its own, in one go.

    Committed when every statement succeeds, rolled back when one fails; raise ``SqlError``
    as ``mg_execute`` does, ``position`` counting in the concatenated text. The engine sends
    each transactional migration this way (the lock check, the SQL, its history statements)
    when no transaction is open. None: not handled; the engine then opens
    ``mg_transaction`` and calls ``mg_execute``.
    """


@spec(FIRST, since="1.1", returns=instance_of(bool))
def mg_execute_each(session: Session, conn: Any, batch: StatementBatch) -> bool | None:
    """Run ``batch.statements`` (consecutive statements of a no-transaction migration) in
    order, each in a transaction of its own, as if each were sent alone; stop at the first
    that fails, in as few round trips as you can.

    Count each statement in ``batch.committed`` as it commits. You may stop after any
    statement that committed (the engine calls again with the rest), but run at least the
    first. When a statement fails, raise ``SqlError`` for it as ``mg_execute`` does,
    ``position`` counted in its own text: it is statement ``batch.committed + 1``. Set
    ``batch.settled`` false while statements you sent may have run unseen, so an
    interrupted run never claims more than it knows. None: not handled; the engine sends
    the first statement with ``mg_execute`` and asks again for the rest.
    """


@spec(FIRST, returns=context_manager, required="transactions")
def mg_transaction(
    session: Session, conn: Any, rollback: bool
) -> AbstractContextManager[Any] | None:
    """Return a context manager for a transaction (a savepoint when nested).

    It commits on normal exit unless ``rollback`` is true, and rolls back on an exception.
    """


@spec(FIRST, returns=list_of(tuple), required="queries")
def mg_query(
    session: Session, conn: Any, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]] | None:
    """Run a parameterised query and return its rows (for plugins that keep their own tables)."""


@spec(FIRST, returns=instance_of(str))
def mg_timeout_sql(
    session: Session, lock_timeout: float, statement_timeout: float, local: bool
) -> str | None:
    """SQL setting the timeouts a migration runs under (seconds; 0 means leave it alone).

    ``local`` is true inside the migration's transaction (``SET LOCAL``, sent in the same
    query as the migration), false for a no-transaction migration (session settings,
    undone with ``mg_timeout_sql(session, 0, 0, False)``, which should reset them).
    """


@spec(FIRST, since="1.1", returns=instance_of(str))
def mg_unflushed_commit_sql(session: Session) -> str | None:
    """SQL letting a transactional migration's COMMIT return before it is on disk.

    The engine starts the query of each transactional migration that another migration of
    the same run follows with it. The last migration's COMMIT waits for the disk as usual,
    and with a log written in order that makes every earlier one durable too: a run waits
    for the disk once, not once per migration. A run that stops early calls
    ``mg_wait_flushed``. "" or None: every COMMIT waits for the disk.
    """


@spec(FIRST, since="1.1", returns=instance_of(bool))
def mg_wait_flushed(session: Session, conn: Any) -> bool | None:
    """Return once what ``conn`` has committed is on disk.

    Called when a run stops (a failed migration, Ctrl-C, SIGTERM) after a migration that
    committed under ``mg_unflushed_commit_sql``, so that whatever mg reported applied is
    durable when it exits. Give up after a bounded wait; errors are ignored: the run's own
    error is what mg reports.
    """


@spec(FIRST, returns=context_manager)
def mg_lock_blockers(
    session: Session, conn: Any, after: float
) -> AbstractContextManager[list[LockHolder]] | None:
    """Watch a statement that may wait for table locks; yield a list to be filled.

    If the statement on ``conn`` is still running after ``after`` seconds, the list receives
    the sessions blocking it, so a lock timeout can name them.
    """


@spec(FIRST, returns=list_of(dict))
def mg_invalid_indexes(session: Session, conn: Any) -> list[dict[str, str]] | None:
    """Indexes a failed concurrent build left INVALID on the target, for ``mg status``.

    Each is ``{"index", "table", "drop"}``: schema-qualified names and the statement that
    removes it without blocking.
    """


@spec(FIRST, returns=instance_of(StatementInfo))
def mg_describe_statement(sql: str) -> StatementInfo | None:
    """What the backend knows of a no-transaction migration's statement that failed: its
    kind for the message, whether it may run again after a lock timeout, a note.

    Asked only after a statement failed, never on the way to running one.
    """


@spec(FIRST, returns=instance_of(str))
def mg_describe_lock_holder(holder: LockHolder) -> str | None:
    """One line naming a session that blocked a migration's table lock, for messages."""


@spec(FIRST, returns=context_manager)
def mg_lock_probe(session: Session, conn: Any) -> AbstractContextManager[list[LockReport]] | None:
    """Measure what the SQL run inside the block does to relations that existed before it.

    Entered inside a dry run's savepoint just before a migration's SQL; when the block ends
    without an error (before the savepoint is rolled back) the list receives one
    ``LockReport``: the relation locks taken, the tables rewritten, their rows and size.
    """


@spec(FIRST, returns=list_of(MigrationResult), required="dry runs")
def mg_dry_run(session: Session, conn: Any, plan: Plan) -> list[MigrationResult] | None:
    """Try a plan without keeping any change, reporting each migration ok or failed."""


@spec(FIRST, returns=list_of(LintFinding))
def mg_lint(session: Session, conn: Any, request: LintRequest) -> list[LintFinding] | None:
    """Lint migrations before they run; return every finding that counts.

    Configuration (enabled rules, severities) and ignore comments are already applied to the
    answer. ``conn`` is an open connection to the target when the caller has one (else None).
    With ``request.apply`` the caller is about to run them: the answer follows
    ``lint.on_apply`` (``off``: none; ``block``: raise ``StateError`` on an error finding).
    No answer (lint blocked) means no findings.
    """


# --- history -----------------------------------------------------------------------------


@spec(FIRST, returns=list_of(HistoryEntry), required="history")
def mg_history_read(session: Session, conn: Any) -> list[HistoryEntry] | None:
    """Return the recorded migrations in application order; never create or alter tables."""


@spec(FIRST, returns=instance_of(bool), required="history tables")
def mg_history_prepare(session: Session, conn: Any) -> bool | None:
    """Create or upgrade the history tables, idempotently (write commands only)."""


@spec(FIRST, returns=instance_of(bool), required="history recording")
def mg_history_write(session: Session, conn: Any, change: HistoryChange) -> bool | None:
    """Record one change, on ``conn`` and inside its current transaction if there is one."""


@spec(FIRST, returns=instance_of(str))
def mg_history_sql(session: Session, change: HistoryChange) -> str | None:
    """SQL text that records ``change``, sent in the same query as a migration's own SQL.

    Saves a round trip per transactional migration. ``change.duration_ms`` is None: the
    statement should measure it on the server. Return ``""`` to have the engine call
    ``mg_history_write`` after the migration's SQL instead (None only means "ask the next
    plugin", which is the builtin).
    """


# --- lifecycle events --------------------------------------------------------------------


@spec(GATE, returns=nothing)
def mg_before_apply(session: Session, plan: Plan) -> None:
    """Before the first migration of an apply runs (after the lock is taken).

    A gate: raise an ``MgError`` (for example ``HookFailed``) to abort before any change; any
    other exception aborts too (exit 1, plugin named).
    """


@spec(AFTER)
def mg_after_apply(session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
    """After every migration of an apply succeeded.

    Every implementation is told; an ``MgError`` from one then fails the command with that
    error's exit code (1 for ``HookFailed``); the migrations stay applied. Other exceptions
    are warnings.
    """


@spec(GATE, returns=nothing)
def mg_before_rollback(session: Session, plan: Plan) -> None:
    """Before the first migration of a rollback runs; a gate like ``mg_before_apply``."""


@spec(AFTER)
def mg_after_rollback(session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
    """After every migration of a rollback succeeded; errors as for ``mg_after_apply``."""


@spec(GATE, returns=nothing)
def mg_before_migration(session: Session, migration: Migration, direction: Direction) -> None:
    """Before one migration runs; a gate: any exception stops the command before it."""


@spec(NOTIFY)
def mg_after_migration(session: Session, result: MigrationResult) -> None:
    """After one migration ran successfully."""


@spec(NOTIFY)
def mg_on_failure(
    session: Session,
    plan: Plan,
    migration: Migration | None,
    error: str,
    results: Sequence[MigrationResult],
) -> None:
    """A command that changes the database failed; ``migration`` is the one that failed.

    ``results`` are the migrations of the plan that succeeded before it, with durations
    (in a single-transaction plan they were rolled back with it).
    """


@spec(NOTIFY)
def mg_on_lock_wait(session: Session, holder: LockHolder, waited: float) -> None:
    """Waiting for the lock another session holds; called every few seconds.

    ``holder.lock`` is the lock plugin's description of its lock, when it gives one.
    """


# --- confirmation --------------------------------------------------------------------------


@spec(COLLECT, returns=instance_of(bool))
def mg_is_protected(session: Session) -> bool | None:
    """Return True when the target must be confirmed by a person (any True wins)."""


@spec(COLLECT, returns=instance_of(bool))
def mg_confirm(session: Session, target: Target, plan: Plan | None) -> bool | None:
    """Veto a command on a protected target by returning False.

    Approval only ever comes from the user typing ``yes`` or from ``--yes``: a True or None
    answer does not approve anything.
    """


@spec(FIRST, returns=instance_of(str))
def mg_prompt(session: Session, message: str, question: str) -> str | None:
    """Ask the person at the terminal ``question`` and return the line they typed.

    ``message`` says what is being confirmed (already reported as ``confirm.required``).
    Return None when there is no one to ask. Never answer on the user's behalf: the core
    approves only the answer ``yes``.
    """


# --- output ------------------------------------------------------------------------------


@spec(NOTIFY, returns=instance_of(bool))
def mg_report(options: Options, event: Event) -> bool | None:
    """A diagnostic or progress event for people or logs (see docs/logging.md for names).

    Return True when the event was shown to a person or written to a log: when no
    implementation does so for a fatal error, the core prints it on stderr itself.
    """


@spec(FIRST, returns=instance_of(str), required="{fmt} output for {kind}")
def mg_format_result(options: Options, kind: str, data: Any, fmt: str) -> str | None:
    """Render a command's result (``kind``: status, list, head, verify, plugins) as ``fmt``.

    ``fmt`` is ``text``, ``json`` or a name a plugin added with ``mg_output_formats``.
    """


@spec(COLLECT, returns=list_of(str))
def mg_output_formats() -> list[str]:  # type: ignore[empty-body]
    """Names this plugin adds to every ``--format`` option; it renders them in
    ``mg_format_result``."""


# --- CLI -----------------------------------------------------------------------------------


@spec(NOTIFY)
def mg_register_commands(cli: click.Group) -> None:
    """Add click commands or groups to ``mg``."""


@spec(COLLECT, returns=_click_parameters)
def mg_command_options(command: str) -> list[click.Parameter] | None:
    """click options to add to the command ``command`` (``"apply"``, ``"seed create"``).

    Their values reach every hook as ``session.options.extra[NAME]`` (``NAME`` is the
    option's parameter name, ``allow_unsafe`` for ``--allow-unsafe``).
    """


@spec(AFTER)
def mg_after_command(
    session: Session,
    command: str,
    results: Sequence[MigrationResult],
    details: Mapping[str, Any],
) -> None:
    """After a command that changed the database or the migration files succeeded.

    Called after ``apply``, ``up``, ``rollback``, ``down``, ``fix``, ``seed``, ``squash`` and
    ``baseline`` (and by plugin commands that change the database). ``results`` are the
    migrations run; ``details`` says what else happened (``fix``: ``migration_id``, ``mode``;
    ``seed``: ``ran``, ``skipped``; ``squash``: ``path``, ``removed``; ``baseline``:
    ``recorded``). Errors as for ``mg_after_apply``.
    """


# --- seeds ---------------------------------------------------------------------------------


@spec(FIRST, since="1.1", returns=instance_of(int))
def mg_seed(session: Session, names: Sequence[str], force: bool) -> int | None:
    """Run the seeds as ``mg seed [NAME...] [--all]`` does and return its exit code.

    ``names`` selects seeds (all when empty); ``force`` runs them even if unchanged. The
    builtin ``seeds`` answers; ``mg check --seeds`` and ``Migretti.seed`` call it, so a plugin
    that replaces ``seeds`` is used there too. None: no plugin runs seeds.
    """
