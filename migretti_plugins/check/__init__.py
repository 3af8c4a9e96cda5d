"""Builtin ``check``: ``mg check`` and ``mg drift``, on scratch databases.

``mg check`` applies, undoes and reapplies every migration on an empty scratch database and
reports, per migration, whether down restores the schema and up can run again; then it lints.
``mg drift`` compares the target's schema with the one its applied migrations produce.

mg.yaml section ``check`` (all optional):

- ``database_url``: a server where mg may create and drop a scratch database (default: the
  embedded server, see ``scratch``);
- ``require_down``: ``true`` makes a migration without a down section a problem rather than a
  warning;
- ``ignore``: glob patterns of schema objects both commands leave out (``extension
  pg_stat_statements``, ``schema cron*``); an object's columns, indexes and constraints go
  with it.

Python callers use ``check()`` and ``drift()``, which return data and print nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from migretti_core import hookimpl
from migretti_core.formats import DocumentChoice, result_stream
from migretti_core.messages import printable
from migretti_core.types import Migration, Session

if TYPE_CHECKING:
    from migretti_core.settings import Section
    from migretti_plugins.check.roundtrip import CheckReport
    from migretti_plugins.check.schemadrift import DriftReport

SECTION = "check"

__all__ = ["check", "drift"]


# --- settings ------------------------------------------------------------------------------


def _settings(session: Session) -> Section:
    from migretti_core.settings import plugin_settings

    section = plugin_settings(session.config, SECTION)
    section.check_keys(["database_url", "require_down", "ignore"])
    return section


def _database_url(
    session: Session, given: str | None = None, label: str | None = None
) -> str | None:
    """``--database-url`` wins over ``check.database_url``; None means the embedded server.
    ``label`` is what an error calls ``given`` (default ``--database-url``)."""
    if given is not None and not given.strip():
        from migretti_core.errors import UsageError

        # Not "no option": an unset variable in `--database-url "$SCRATCH_URL"` must not
        # quietly become the embedded server.
        raise UsageError(
            f"{label or '--database-url'} needs a connection URL, not an empty value",
            hint="leave it out to use check.database_url, else the embedded server",
        )
    return given or _settings(session).text("database_url") or None


def _labelled(given: str | None, label: str | None) -> dict[str, str]:
    """What errors call the scratch server's URL, when its caller named it (the Python
    API's ``database_url``); else the plugin's own wording."""
    return {"url_label": label} if given is not None and label else {}


# --- the Python entry points ---------------------------------------------------------------


def check(
    session: Session,
    *,
    database_url: str | None = None,
    seeds: bool = False,
    require_down: bool | None = None,
    lint: bool = True,
    url_label: str | None = None,
) -> CheckReport:
    """Round-trip every migration on a scratch database and lint them; print nothing.

    ``url_label`` is what errors call ``database_url`` when it is given (the Python API
    names its argument); by default ``check.database_url / --database-url``."""
    from migretti_plugins.check.roundtrip import run_check

    if require_down is None:
        require_down = _settings(session).boolean("require_down")
    return run_check(
        session,
        database_url=_database_url(session, database_url, url_label),
        seeds=seeds,
        require_down=require_down,
        linter=_lint if lint else None,
        ignore=_settings(session).strings("ignore"),
        **_labelled(database_url, url_label),
    )


def drift(
    session: Session, *, database_url: str | None = None, url_label: str | None = None
) -> DriftReport:
    """The target's schema against its applied migrations'; never changes the target.
    ``url_label`` as for ``check``."""
    from migretti_plugins.check.schemadrift import run_drift

    return run_drift(
        session,
        database_url=_database_url(session, database_url, url_label),
        ignore=_settings(session).strings("ignore"),
        **_labelled(database_url, url_label),
    )


def _lint(
    session: Session, migrations: Sequence[Migration], server_version: int | None
) -> list[dict[str, Any]]:
    """Findings of the ``mg_lint`` hook (the ``lint`` plugin) for every migration, each judged
    on its own as ``mg lint --all`` does (in production the earlier ones ran long ago), for
    the scratch server's version; none without a linter."""
    from migretti_core.reporting import relative_path
    from migretti_core.types import LintRequest

    request = LintRequest(tuple(migrations), target_version=server_version, plan=False)
    findings = session.hooks.lint(session, request)
    return [finding.as_dict(relative_path(finding.path)) for finding in findings]


# --- hooks and commands --------------------------------------------------------------------


@hookimpl
def mg_config_sections() -> list[str]:
    return [SECTION]


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(check_command)
    cli.add_command(drift_command)


_database_url_option = click.option(
    "--database-url",
    metavar="URL",
    help="A server where mg may create and drop a scratch database "
    "(default: check.database_url, else the embedded server).",
)
_format_option = click.option(
    "--format",
    "fmt",
    type=DocumentChoice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)


@click.command("check")
@_database_url_option
@click.option("--seeds", is_flag=True, help="Run the seeds too, after the migrations.")
@_format_option
@click.pass_context
def check_command(ctx: click.Context, database_url: str | None, seeds: bool, fmt: str) -> int:
    """Apply, undo and reapply each migration on a scratch database.

    The migrations are linted too. Exit 0 when everything is fine, 3 when a migration has a
    problem, 1 when one cannot be applied at all. The project's own database is never touched.
    """
    from migretti_core.cli import app_of

    session = app_of(ctx).session("check")
    result = check(session, database_url=database_url, seeds=seeds)
    if fmt == "json":
        import json

        click.echo(json.dumps(_masked(session, result.as_dict()), indent=2), file=result_stream())
    else:
        click.echo(session.hooks.redact(render_check(result)))
    return result.exit_code


def _masked(session: Session, value: Any) -> Any:
    """``value`` with every string's passwords masked: a server error on the scratch database
    may quote one (of the project's target or of check.database_url), as anywhere else."""
    if isinstance(value, str):
        return session.hooks.redact(value)
    if isinstance(value, dict):
        return {key: _masked(session, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(session, item) for item in value]
    return value


def shown(problem: str) -> str:
    """A problem as the text output shows it: control characters escaped (a name or a server
    message quoting the migration's SQL may hold a terminal escape sequence). Its own
    continuation lines (``  DETAIL: ...``, ``  NOTE: ...``) are indented and stay; any
    other line break is content and is written ``\\n``, so that no text of a migration
    starts a line of its own that reads as a result (``ok    0002 ...``)."""
    first, *rest = problem.split("\n")
    text = first + "".join(("\n" if line.startswith("  ") else "\\n") + line for line in rest)
    return printable(text, lines=True)


def render_check(result: CheckReport) -> str:
    lines: list[str] = []
    for item in result.migrations:
        label = printable(f"{item.id} {item.name}")
        if item.ok and not item.warnings:
            lines.append(f"ok    {label}")
        for problem in item.problems:
            lines.append(f"{'skip' if not item.checked else 'FAIL':5} {label}: {shown(problem)}")
        for warning in item.warnings:
            lines.append(f"warn  {label}: {shown(warning)}")
    for problem in result.seeds:
        lines.append(f"FAIL  seeds: {shown(problem)}")
    for f in result.lint:
        where = f"{printable(f['path'])}:{f['line']}:{f['column']}"
        message = printable(f["message"])
        lines.append(f"lint  {where}: {f['rule']}: {message} ({f['severity']})")
    # Those after a migration that failed to apply were not checked: not counted as checked.
    checked = sum(1 for m in result.migrations if m.checked)
    skipped = len(result.migrations) - checked
    bad = sum(1 for m in result.migrations if m.checked and not m.ok)
    lines.append(
        f"{'ok' if result.ok else 'FAILED'}: {checked} migration"
        f"{'s' if checked != 1 else ''} checked, {bad} with problems, "
        + (f"{skipped} not checked, " if skipped else "")
        + f"{len(result.lint)} lint finding{'s' if len(result.lint) != 1 else ''}"
    )
    return "\n".join(lines)


@click.command("drift")
@_database_url_option
@_format_option
@click.pass_context
def drift_command(ctx: click.Context, database_url: str | None, fmt: str) -> int:
    """Compare the schema with what the applied migrations produce.

    Exit 0 when they match, 3 with every object that differs. Nothing is changed.
    """
    from migretti_core.cli import app_of
    from migretti_core.reporting import report

    session = app_of(ctx).session("drift")
    result = drift(session, database_url=database_url)
    for warning in result.warnings:
        report(session, "drift.warning", "warning", warning)
    if fmt == "json":
        import json

        click.echo(json.dumps(_masked(session, result.as_dict()), indent=2), file=result_stream())
    elif result.ok:
        noun = "migration" if result.applied == 1 else "migrations"
        click.echo(f"no drift: the schema matches the {result.applied} applied {noun}")
    else:
        click.echo(session.hooks.redact("\n".join(printable(m) for m in result.messages)))
        count = len(result.differences)
        verb = "differ" if count != 1 else "differs"
        # An event (on stderr as before): with --json-log it is a JSON line like the rest.
        report(
            session,
            "drift.found",
            "info",
            f"drift: {count} object{'s' if count != 1 else ''} {verb}",
            count=count,
        )
    return 0 if result.ok else 3
