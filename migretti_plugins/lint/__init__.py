"""Builtin ``lint``: squawk's rules, with what mg knows about the migrations it runs.

``mg lint`` is its command; ``apply``, ``up`` and dry runs ask it (hook ``mg_lint``) about
their plan. pglast, PostgreSQL's own parser, is imported only when something is linted, so
startup stays fast. Other code lints through ``session.hooks.lint(session, LintRequest(...))``
or :func:`lint_migrations`. Rules and their reasons: docs/lint.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from migretti_core import hookimpl
from migretti_core.messages import printable
from migretti_core.types import Config, LintFinding, LintRequest, Migration, Session

if TYPE_CHECKING:
    import click

__all__ = ["format_findings", "lint_migrations"]


def lint_migrations(
    session: Session,
    migrations: Sequence[Migration],
    *,
    plan: bool = True,
    server_version: int | None = None,
    target_version: int | None = None,
) -> list[LintFinding]:
    """Lint ``migrations`` (in the order they run) through the ``mg_lint`` hook."""
    request = LintRequest(
        tuple(migrations),
        server_version=server_version,
        target_version=target_version,
        plan=plan,
    )
    return session.hooks.lint(session, request)


@hookimpl
def mg_config_sections() -> list[str]:
    return ["lint"]


@hookimpl
def mg_configure(config: Config) -> None:
    from migretti_plugins.lint.settings import load

    load(config)


@hookimpl(trylast=True)
def mg_lint(session: Session, conn: Any, request: LintRequest) -> list[LintFinding] | None:
    from migretti_plugins.lint.linter import lint_cached, settings_of

    on_apply = settings_of(session).on_apply if request.apply else "warn"
    if on_apply == "off":
        return []
    if request.target_version is None and conn is not None:
        request = dataclasses.replace(request, target_version=server_version_of(session, conn))
    findings = lint_cached(session, request)
    errors = [f for f in findings if f.severity == "error"]
    if on_apply == "block" and errors:
        from migretti_core.errors import StateError
        from migretti_core.reporting import finding_line

        raise StateError(
            f"lint found {len(errors)} error{'s' if len(errors) != 1 else ''} in the plan "
            "(lint.on_apply: block); nothing was changed\n"
            + "\n".join(f"  {finding_line(f)}" for f in errors),
            hint="rewrite them (mg lint shows how), accept one with "
            "`-- mg:lint-ignore RULE reason`, or pass --no-lint",
        )
    return findings


def server_version_of(session: Session, conn: Any) -> int | None:
    """The target's major version: from psycopg's connection info, else by asking."""
    from migretti_core.errors import MgError
    from migretti_plugins.lint.settings import parse_server_version

    number = getattr(getattr(conn, "info", None), "server_version", None)
    try:
        if not isinstance(number, int):
            rows = session.hooks.query(session, conn, "SHOW server_version_num", ())
            number = rows[0][0]
        return parse_server_version(number, "server_version_num")
    except (MgError, IndexError):
        return None


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    from migretti_plugins.lint.command import lint_command

    cli.add_command(lint_command)


@hookimpl
def mg_format_result(kind: str, data: Any, fmt: str) -> str | None:
    if kind != "lint" or fmt not in ("text", "github"):
        return None
    return format_findings(data.get("findings") or [], fmt)


def format_findings(findings: Sequence[dict[str, Any]], fmt: str = "text") -> str:
    """``PATH:LINE:COL: RULE: message`` plus a help line, or GitHub workflow annotations."""
    lines: list[str] = []
    for f in findings:
        if fmt == "github":
            level = "error" if f["severity"] == "error" else "warning"
            props = (
                f"file={_prop(f['path'])},line={f['line']},col={f['column']},"
                f"title={_prop(f['rule'])}"
            )
            body = f["message"] + (f"\n{f['help']}" if f.get("help") else "")
            lines.append(f"::{level} {props}::{_data(body)}")
            continue
        message = printable(str(f["message"]))  # one line, and nothing the terminal acts on
        lines.append(f"{printable(f['path'])}:{f['line']}:{f['column']}: {f['rule']}: {message}")
        if f.get("help"):
            lines.append(f"  help: {f['help']}")
    return "\n".join(lines)


def _data(text: str) -> str:
    # A line break is the runner's escape; any other control character (a file name's ESC)
    # is written as text, so the annotation cannot redraw the terminal or the log viewer.
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
