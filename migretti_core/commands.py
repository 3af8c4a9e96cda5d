"""The builtin ``mg`` commands: thin click wrappers around the engine."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from migretti_core import reporting
from migretti_core.cli import (
    BASE_FORMATS,
    app_of,
    complete_ids,
    dry_run_option,
    emit_result,
    format_option,
    init_project,
    lock_timeout_option,
    parse_lock_timeout,
)
from migretti_core.errors import EXIT_BLOCKED, MgError, NoPluginAnswers, PluginFailed, UsageError
from migretti_core.formats import DocumentChoice
from migretti_core.types import Config, Session

if TYPE_CHECKING:
    from migretti_core import planning
    from migretti_core.app import App

# planning, running and views are imported by the commands that use them: `mg --help` and the
# commands that do not run migrations do not pay for them.


def _emit(ctx: click.Context, kind: str, data: Any, fmt: str) -> None:
    emit_result(ctx, kind, data, fmt)


def register(cli: click.Group) -> None:
    for command in (
        init,
        create,
        apply,
        migrate,
        up,
        down,
        rollback,
        status,
        list_,
        head,
        verify,
        fix,
        plugins,
    ):
        cli.add_command(command)


@click.command()
@click.option("--embedded", is_flag=True, help="Use a PostgreSQL server that mg starts itself.")
@click.pass_context
def init(ctx: click.Context, embedded: bool) -> None:
    """Create mg.yaml and migrations/ in the current directory.

    With --config PATH (or MG_CONFIG), the configuration is written to PATH instead, and
    migrations/ beside it; later commands need the same --config to find it.
    """
    app = app_of(ctx)
    written = init_project(app.new_config_path(), embedded)
    for path, created in written:
        shown = reporting.display_path(path)
        if created:
            app.report("init.created", "info", f"created {shown}", path=str(path))
        else:
            app.report("init.extended", "info", f"added .mg/ to {shown}", path=str(path))


@click.command()
@click.argument("name")
@click.option("--up", "up_sql", default="", metavar="SQL", help="SQL for the up section.")
@click.option("--down", "down_sql", default="", metavar="SQL", help="SQL for the down section.")
@click.option(
    "--no-transaction",
    is_flag=True,
    help="Run it outside a transaction (writes the `-- migrate: no-transaction` line).",
)
@click.pass_context
def create(ctx: click.Context, name: str, up_sql: str, down_sql: str, no_transaction: bool) -> None:
    """Create a new migration file migrations/<ULID>_<name>.sql.

    NAME becomes the file name's slug (`Add users` gives add_users) and the
    `-- migration:` title. The file's lines that start with `-- migrate:` split it:

    \b
    -- migrate: up              the SQL that applies it (required)
    -- migrate: down            the SQL that rolls it back (optional)
    -- migrate: no-transaction  before `up`: run each statement on its own, outside a
                                transaction (for CREATE INDEX CONCURRENTLY, ALTER TYPE ...
                                ADD VALUE); a failure leaves the migration `failed`

    See docs/migration-files.md.
    """
    app = app_of(ctx)
    config = app.config()
    _refuse_nested_migrations_dir(config)
    path = app.hooks.create_migration(
        config, name, up_sql, down_sql, transactional=not no_transaction
    )
    if up_sql.strip() or down_sql.strip():
        _warn_what_apply_would_refuse(app, path)
    _warn_sorts_first(app, config, path)
    click.echo(reporting.display_path(path))


def _warn_sorts_first(app: Any, config: Config, path: Any) -> None:
    """Ids sort as text: a new ULID (``01...``) sorts before an older file's id written in
    another style (a timestamp, ``20240101120000``), and once that one is applied mg apply
    refuses the new file as out of order. Said when the file is made, not at deploy time."""
    import re

    prefix = re.compile(r"([A-Za-z0-9]{1,26})_")
    mine = prefix.match(path.name)
    if mine is None:
        return
    try:
        paths = app.hooks.discover_migrations(config)
    except (MgError, OSError):
        return  # a courtesy: the commands that read the directory say what is wrong
    later = []
    for other in paths:
        found = prefix.match(other.name)
        if found is not None and found.group(1) > mine.group(1):
            later.append((found.group(1), other))
    if not later:
        return
    latest_id, latest = max(later)
    app.report(
        "migration.sorts_first",
        "warning",
        f"{reporting.display_path(path)} sorts before {reporting.display_path(latest)} (ids "
        "sort as text): once that one is applied, mg apply refuses this one as out of order; "
        f"rename it with an id that sorts after {latest_id} (1-26 letters and digits), or "
        "apply it with --allow-out-of-order",
        path=str(path),
    )


def _warn_what_apply_would_refuse(app: Any, path: Any) -> None:
    """`mg create x --up "CREATE INDEX CONCURRENTLY ..."` without --no-transaction: the
    pre-flight checks of apply will refuse the file; say so now, with its line."""
    from migretti_core.textfiles import read_bytes

    try:
        if not path.is_file():
            return  # not a regular file (a plugin's choice): nothing to read safely
        migration = app.hooks.parse_migration(path, read_bytes(path))
        session = app.session("create")
        problems = session.hooks.validate_migration(session, migration)
    except (MgError, OSError):
        return  # a courtesy: apply checks the file again and says what is wrong
    for problem in problems:
        app.report(
            "migration.would_be_refused",
            "warning",
            f"mg apply will refuse {problem}",
            path=str(path),
        )


def _refuse_nested_migrations_dir(config: Config) -> None:
    """Without mg.yaml, ``mg create`` inside ``migrations/`` would write
    ``migrations/migrations/``: say what is missing instead."""
    directory = config.migrations_dir
    if (
        config.path is None
        and not directory.exists()
        and directory.parent.name == directory.name
        and directory.parent == config.root
    ):
        raise UsageError(
            f"no mg.yaml in {config.root} or its parents, and {config.root} is a "
            f"{directory.name} directory itself: not creating {directory.name}/ inside it",
            hint="run mg create from your project directory, or create a project with mg init",
        )


def _session(
    ctx: click.Context, command: str, dry_run: bool, lock_timeout: str | None, lint: bool = True
) -> Session:
    return app_of(ctx).session(
        command,
        dry_run=dry_run,
        lock_timeout=parse_lock_timeout(lock_timeout),
        lint=lint,
        table_lock_timeout=ctx.meta.get("table_lock_timeout"),
        statement_timeout=ctx.meta.get("statement_timeout"),
        output_format=ctx.meta.get("output_format", "text"),
        light_connection=not dry_run,
    )


def _output_format(ctx: click.Context, param: Any, value: str | None) -> None:
    if value is not None:
        ctx.meta["output_format"] = value


def dry_run_format_option(func: Any) -> Any:
    return click.option(
        "--format",
        type=DocumentChoice(["text", "json"]),
        expose_value=False,
        callback=_output_format,
        help="With --dry-run: json prints one document with each migration's result, the "
        "locks it took, the tables it rewrote and their size.",
    )(func)


def _timeout_value(ctx: click.Context, param: Any, value: str | None) -> None:
    """``--table-lock-timeout`` / ``--statement-timeout``: seconds, 0 for ``off``."""
    if value is None or param.name is None:
        return
    from migretti_core.durations import parse_server_timeout

    text = value.strip().lower()
    if text in ("off", "none", "false", "no"):
        ctx.meta[param.name] = 0.0
        return
    try:
        ctx.meta[param.name] = parse_server_timeout(value)
    except ValueError as exc:
        raise UsageError(f"--{param.name.replace('_', '-')}: {exc}") from exc


def table_lock_timeout_option(func: Any) -> Any:
    func = click.option(
        "--statement-timeout",
        metavar="DURATION",
        expose_value=False,
        callback=_timeout_value,
        help="PostgreSQL statement_timeout inside each migration (e.g. 10m, off). "
        "Default: statement_timeout, off.",
    )(func)
    return click.option(
        "--table-lock-timeout",
        metavar="DURATION",
        expose_value=False,
        callback=_timeout_value,
        help="How long each statement may wait for a table lock before the migration is "
        "retried (e.g. 2s, 500ms, off). Default: table_lock_timeout, 5s.",
    )(func)


def no_lint_option(func: Any) -> Any:
    return click.option("--no-lint", is_flag=True, help="Do not lint the plan before running it.")(
        func
    )


def _apply(
    ctx: click.Context,
    *,
    dry_run: bool,
    lock_timeout: str | None,
    request: planning.ApplyRequest,
    command: str,
    lint: bool = True,
) -> int:
    from migretti_core import running

    if ctx.meta.get("output_format") == "json" and not dry_run:
        # Only a dry run (or a fleet's summary, which runs elsewhere) prints a document.
        raise UsageError(f"mg {command} --format json needs --dry-run or --fleet NAME")
    return running.apply(_session(ctx, command, dry_run, lock_timeout, lint), request)


def _rollback(
    ctx: click.Context,
    *,
    dry_run: bool,
    lock_timeout: str | None,
    request: planning.RollbackRequest,
    command: str,
) -> int:
    from migretti_core import running

    return running.rollback(_session(ctx, command, dry_run, lock_timeout), request)


@click.command()
@click.option(
    "--to",
    "to",
    metavar="ID",
    help="Stop after this migration: its id, a unique id prefix, its name or file name.",
    shell_complete=complete_ids,
)
@click.option(
    "--allow-out-of-order", is_flag=True, help="Apply pending migrations older than head."
)
@click.option("--no-verify", is_flag=True, help="Do not compare applied files' checksums.")
@click.option("--single-transaction", is_flag=True, help="Apply the whole plan in one transaction.")
@dry_run_option
@lock_timeout_option
@table_lock_timeout_option
@no_lint_option
@dry_run_format_option
@click.pass_context
def apply(
    ctx: click.Context,
    to: str | None,
    allow_out_of_order: bool,
    no_verify: bool,
    single_transaction: bool,
    dry_run: bool,
    lock_timeout: str | None,
    no_lint: bool,
) -> int:
    """Apply all pending migrations."""
    from migretti_core import planning

    request = planning.ApplyRequest(
        to=to,
        allow_out_of_order=allow_out_of_order,
        verify=not no_verify,
        single_transaction=single_transaction,
    )
    return _apply(
        ctx,
        dry_run=dry_run,
        lock_timeout=lock_timeout,
        request=request,
        command="apply",
        lint=not no_lint,
    )


migrate = click.Command(
    "migrate",
    callback=apply.callback,
    params=apply.params,
    help="Same as `mg apply`: apply all pending migrations.",
    short_help="Same as `mg apply`.",
)


@click.command()
@click.option("--allow-out-of-order", is_flag=True, help="Apply it even if older than head.")
@click.option("--no-verify", is_flag=True, help="Do not compare applied files' checksums.")
@dry_run_option
@lock_timeout_option
@table_lock_timeout_option
@no_lint_option
@dry_run_format_option
@click.pass_context
def up(
    ctx: click.Context,
    allow_out_of_order: bool,
    no_verify: bool,
    dry_run: bool,
    lock_timeout: str | None,
    no_lint: bool,
) -> int:
    """Apply the next pending migration."""
    from migretti_core import planning

    request = planning.ApplyRequest(
        limit=1, allow_out_of_order=allow_out_of_order, verify=not no_verify
    )
    return _apply(
        ctx,
        dry_run=dry_run,
        lock_timeout=lock_timeout,
        request=request,
        command="up",
        lint=not no_lint,
    )


@click.command()
@click.option(
    "--allow-missing-down", is_flag=True, help="Without a down section, drop history only."
)
@click.option("--no-verify", is_flag=True, help="Do not compare the file's checksum.")
@dry_run_option
@lock_timeout_option
@table_lock_timeout_option
@click.pass_context
def down(
    ctx: click.Context,
    allow_missing_down: bool,
    no_verify: bool,
    dry_run: bool,
    lock_timeout: str | None,
) -> int:
    """Roll back the last applied migration."""
    from migretti_core import planning

    request = planning.RollbackRequest(
        count=1, allow_missing_down=allow_missing_down, verify=not no_verify
    )
    return _rollback(
        ctx, dry_run=dry_run, lock_timeout=lock_timeout, request=request, command="down"
    )


@click.command()
@click.argument("count", type=click.IntRange(min=1), required=False)
@click.option(
    "--to",
    "to",
    metavar="ID",
    help="Roll back everything applied after this one (id, unique id prefix, name or file name).",
    shell_complete=complete_ids,
)
@click.option(
    "--allow-missing-down", is_flag=True, help="Without a down section, drop history only."
)
@click.option("--no-verify", is_flag=True, help="Do not compare the files' checksums.")
@dry_run_option
@lock_timeout_option
@table_lock_timeout_option
@click.pass_context
def rollback(
    ctx: click.Context,
    count: int | None,
    to: str | None,
    allow_missing_down: bool,
    no_verify: bool,
    dry_run: bool,
    lock_timeout: str | None,
) -> int:
    """Roll back the last COUNT applied migrations (default 1).

    They are rolled back newest first, in reverse order of application.
    """
    from migretti_core import planning

    if count is not None and to is not None:
        raise UsageError("give either COUNT or --to, not both")
    request = planning.RollbackRequest(
        count=count if count is not None else 1,
        to=to,
        allow_missing_down=allow_missing_down,
        verify=not no_verify,
    )
    return _rollback(
        ctx, dry_run=dry_run, lock_timeout=lock_timeout, request=request, command="rollback"
    )


@click.command()
@format_option
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 3 when anything is pending, failed, running, changed or missing, or an "
    "INVALID index is left on the target (a CI gate).",
)
@click.pass_context
def status(ctx: click.Context, fmt: str, exit_code: bool) -> int:
    """Counts, current head, every problem and invalid indexes left on the target."""
    from migretti_core import views

    app = app_of(ctx)
    state, invalid, refused = views.current_status(app.session("status", read_only=True))
    data = views.status_data(state, app.hooks.redact, invalid, refused)
    _emit(ctx, "status", data, fmt)
    return EXIT_BLOCKED if exit_code and not data["ok"] else 0


@click.command("list")
@format_option
@click.pass_context
def list_(ctx: click.Context, fmt: str) -> None:
    """Every migration, from files and history together."""
    from migretti_core import views

    state = views.current_state(app_of(ctx).session("list", read_only=True))
    _emit(ctx, "list", [row.as_dict() for row in state.rows()], fmt)


@click.command()
@format_option
@click.pass_context
def head(ctx: click.Context, fmt: str) -> None:
    """The last applied migration."""
    from migretti_core import views

    state = views.current_state(app_of(ctx).session("head", read_only=True))
    _emit(ctx, "head", views.entry_dict(state.head), fmt)


@click.command()
@format_option
@click.pass_context
def verify(ctx: click.Context, fmt: str) -> int:
    """Check every applied migration against its file.

    Exits 3 when a file changed since it was applied or is missing.
    """
    from migretti_core import views

    state = views.current_state(app_of(ctx).session("verify", read_only=True))
    data = views.verify_data(state)
    _emit(ctx, "verify", data, fmt)
    return 0 if data["ok"] else EXIT_BLOCKED


def _fix_advice(ctx: click.Context, given: str) -> str | None:
    """Which of the two fits the migration, when its history can be read (best effort: the
    usage error stands without it)."""
    from migretti_core import views

    try:
        return views.fix_advice(app_of(ctx).session("fix", read_only=True), given)
    except MgError:
        return None


@click.command()
@click.argument("migration_id", metavar="ID", shell_complete=complete_ids)
@click.option(
    "--applied",
    is_flag=True,
    help="It is applied: you completed it by hand (or restored what its failed rollback undid).",
)
@click.option(
    "--remove",
    is_flag=True,
    help="It is not applied: you undid it by hand (or completed its failed rollback).",
)
@lock_timeout_option
@click.pass_context
def fix(
    ctx: click.Context, migration_id: str, applied: bool, remove: bool, lock_timeout: str | None
) -> int:
    """Resolve a failed or interrupted migration: --applied or --remove.

    ID is the migration's id, a unique id prefix, its name or its file name.
    """
    from migretti_core import running

    # Two flags, not one value both set: click would keep whichever came last, and the two
    # say opposite things about the database.
    if applied and remove:
        raise UsageError("give either --applied or --remove, not both")
    if not (applied or remove):
        raise UsageError(
            "say how it was resolved: --applied or --remove", hint=_fix_advice(ctx, migration_id)
        )
    mode = "applied" if applied else "remove"
    app = app_of(ctx)
    session = app.session("fix", lock_timeout=parse_lock_timeout(lock_timeout))
    return running.fix(session, migration_id, mode)


@click.command()
@format_option
@click.pass_context
def plugins(ctx: click.Context, fmt: str) -> None:
    """Every plugin: name, origin, version, status and hooks."""
    app = app_of(ctx)
    problem = app.config_problem
    if problem is not None:
        # The list works without the configuration, but it must not look complete.
        said = f"{problem.message}; plugins from the configuration are not listed"
        if not app.report("config.plugins_unknown", "warning", said, error=problem.message):
            from migretti_core.messages import emit

            emit("warning", app.hooks.redact(said))
    data = [info.describe() for info in app.loader.infos]
    try:
        _emit(ctx, "plugins", data, fmt)
    except NoPluginAnswers as exc:
        # The list that shows what is blocked works whatever is: with no plugin to render
        # it (``-p no:output``), the core prints it plainly.
        if exc.hook != "mg_format_result" or fmt not in BASE_FORMATS:
            raise
        click.echo(_plain_plugins(data, fmt), file=app.result_stream or sys.stdout)
    except MgError as exc:
        # ... and whatever is broken: a plugin whose mg_format_result raises or answers a
        # wrong type is named in a warning, and the list that shows it is printed plainly.
        if fmt not in BASE_FORMATS:
            raise
        _warn_plugin_failure(app, exc)
        click.echo(_plain_plugins(data, fmt), file=app.result_stream or sys.stdout)


def _warn_plugin_failure(app: App, exc: MgError) -> None:
    """Report a plugin's failure as a warning (event ``plugin.failed``), naming the plugin."""
    if isinstance(exc, PluginFailed) and exc.plugin and exc.__cause__ is not None:
        app.hooks.plugin_warning(exc.plugin, exc.hook, exc.__cause__)
        return
    fields = {"plugin": exc.plugin} if exc.plugin else {}
    try:
        shown = app.report("plugin.failed", "warning", exc.message, **fields)
    except MgError:
        shown = False
    if not shown:
        from migretti_core.messages import emit

        emit("warning", app.hooks.redact(exc.message))


def _plain_plugins(data: list[dict[str, Any]], fmt: str) -> str:
    """``mg plugins``'s list without the output plugin: the same columns, or JSON."""
    if fmt == "json":
        import json

        return json.dumps(data, indent=2, default=str)
    from migretti_core.messages import printable

    headers = ["NAME", "ORIGIN", "VERSION", "HOOKS", "STATUS"]
    rows = [
        [
            printable(cell)  # a .py plugin's name is its file's
            for cell in (
                p["name"],
                p["origin"],
                p.get("version") or "",
                ", ".join(p["hooks"]),
                f"{p['status']}: {p['error']}" if p.get("error") else p["status"],
            )
        ]
        for p in data
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )
