"""``mg lint [MIGRATION ...]``: lint pending migrations, every file, or the ones named."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from migretti_core import reporting
from migretti_core.cli import app_of, complete_ids
from migretti_core.errors import EXIT_BLOCKED, MgError, UsageError
from migretti_core.formats import DocumentChoice, result_stream
from migretti_core.resolve import resolve_migration
from migretti_core.types import LintFinding, LintRequest, Migration, Session
from migretti_plugins.lint import server_version_of

if TYPE_CHECKING:
    from pathlib import Path


def select(migrations: Sequence[Migration], given: Sequence[str]) -> list[Migration]:
    """Migrations named by id, unique id prefix, name, file name or path, in id order (the
    rule of ``migretti_core.resolve``, shared with ``--to`` and ``mg fix``)."""
    chosen: dict[str, Migration] = {}
    problems: list[str] = []
    for text in given:
        try:
            found = resolve_migration(migrations, text)
        except UsageError as exc:
            problems.append(exc.message)
            continue
        chosen[found.id] = found
    if problems:
        raise UsageError("; ".join(problems))
    return sorted(chosen.values(), key=lambda m: m.id)


def plan_to_lint(
    session: Session, use_all: bool, names: Sequence[str]
) -> tuple[list[Migration], bool, int | None]:
    """The migrations to lint, whether they form a plan, and the server version if connected."""
    from migretti_core import planning, running

    planning.require_project(session, "lint")
    migrations = planning.load_migrations(session)
    if names:
        return select(migrations, names), False, None
    if use_all:
        return migrations, False, None
    try:
        with running.connected(session) as conn:
            state = running.read_state(session, conn, migrations)
            version = server_version_of(session, conn)
    except MgError as exc:
        reporting.report(
            session,
            "lint.offline",
            "warning",
            f"cannot read the history ({exc.message}); linting every migration",
        )
        return migrations, False, None
    return list(state.pending), True, version


def findings_data(findings: Sequence[LintFinding]) -> dict[str, Any]:
    shown: dict[Path, str] = {}
    for finding in findings:
        if finding.path not in shown:
            shown[finding.path] = reporting.relative_path(finding.path)
    return {"findings": [f.as_dict(shown[f.path]) for f in findings]}


@click.command("lint")
@click.argument("names", nargs=-1, metavar="[MIGRATION]...", shell_complete=complete_ids)
@click.option("--all", "use_all", is_flag=True, help="Lint every migration file, not only pending.")
@click.option(
    "--format",
    "fmt",
    type=DocumentChoice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="Output format (github: workflow annotations).",
)
@click.option("--strict", is_flag=True, help="Warnings count: exit 3 on any finding.")
@click.option("--enable", multiple=True, metavar="RULE", help="Enable a rule (or all).")
@click.option("--disable", multiple=True, metavar="RULE", help="Disable a rule.")
@click.option(
    "--server-version",
    metavar="N",
    help="PostgreSQL major version to judge for (default: lint.server_version, the "
    "target's, else 13).",
)
@click.pass_context
def lint_command(
    ctx: click.Context,
    names: tuple[str, ...],
    use_all: bool,
    fmt: str,
    strict: bool,
    enable: tuple[str, ...],
    disable: tuple[str, ...],
    server_version: str | None,
) -> int:
    """Check migrations for locks, rewrites and data loss (squawk's rules). Exit 3 on an error.

    MIGRATION is an id, a unique id prefix, a name or a file's path; none means the pending
    ones.
    """
    enable = tuple(p.strip() for e in enable for p in e.split(",") if p.strip())
    disable = tuple(p.strip() for d in disable for p in d.split(",") if p.strip())
    # Imported here: every start registers this command, only `mg lint` runs it.
    from migretti_plugins.lint.settings import check_rule_names, parse_server_version

    check_rule_names(enable, "--enable", UsageError)
    check_rule_names(disable, "--disable", UsageError)
    version = parse_server_version(server_version, "--server-version") if server_version else None
    app = app_of(ctx)
    session = app.session("lint")
    migrations, plan, connected_version = plan_to_lint(session, use_all, names)
    request = LintRequest(
        tuple(migrations),
        server_version=version,
        target_version=connected_version,
        plan=plan,
        enable=enable,
        disable=disable,
    )
    findings = session.hooks.lint(session, request)
    text = app.hooks.format_result(app.options, "lint", findings_data(findings), fmt)
    if text:
        click.echo(text, file=result_stream())
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if fmt == "text":
        reporting.report(
            session,
            "lint.finished",
            "info",
            f"{len(migrations)} migration{'s' if len(migrations) != 1 else ''} linted: "
            f"{errors} error{'s' if errors != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''}",
            errors=errors,
            warnings=warnings,
        )
    if errors or (strict and findings):
        return EXIT_BLOCKED
    return 0
