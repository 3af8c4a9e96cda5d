"""``mg COMMAND --fleet NAME``: resolve the members, confirm once, run, summarise."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from migretti_core.app import App
from migretti_core.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    Aborted,
    UsageError,
)
from migretti_core.messages import printable
from migretti_core.types import Event, Level, Session
from migretti_plugins.fleet import live
from migretti_plugins.fleet.members import DEFAULT_JOBS, Member, fleet_named, resolve
from migretti_plugins.fleet.runner import FleetRun, Invocation, Outcome, Schedule
from migretti_plugins.fleet.streams import routed

SHOWN_IN_CONFIRMATION = 5


def _number(value: str | None, option: str, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{option}: expected a whole number, not {value!r}") from None
    if number < minimum:
        raise UsageError(f"{option}: must be at least {minimum}")
    return number


def _requested_format(ctx: click.Context) -> str:
    return str(
        ctx.params.get("fmt")
        or ctx.meta.get("fleet_format")
        or ctx.meta.get("output_format")
        or "text"
    )


def _output_format(ctx: click.Context) -> str:
    return "json" if _requested_format(ctx) == "json" else "text"


# Formats whose result is a list of lines that name files (``mg lint --format github``):
# members' lines are shown as written, not prefixed, and each distinct line once.
ANNOTATION_FORMATS = frozenset({"github"})


def _confirm(session: Session, command: str, members: Sequence[Member]) -> None:
    """One question for the whole fleet on a protected profile (``--yes`` skips it)."""
    hooks = session.hooks
    if not hooks.is_protected(session):
        return
    env = session.config.env or "(default)"
    shown = ", ".join(m.name for m in members[:SHOWN_IN_CONFIRMATION])
    more = len(members) - SHOWN_IN_CONFIRMATION
    if more > 0:
        shown += f" and {more} more"
    count = f"{len(members)} database{'s' if len(members) != 1 else ''}"
    message = f"{command} on protected environment {env}, fleet of {count}: {shown}"
    session.hooks.report(
        session.options,
        _event("confirm.required", "warning", message, members=len(members)),
    )
    if session.options.yes:
        return
    answer = hooks.prompt(session, message, "Type 'yes' to continue: ")  # output asks
    if answer is None:
        raise Aborted(
            f"environment {env} is protected and there is no terminal to confirm on",
            hint="pass --yes to confirm non-interactively",
        )
    if answer.strip() != "yes":
        raise Aborted("not confirmed; nothing was changed")


def _event(name: str, level: Any, message: str, **fields: object) -> Any:
    from migretti_core.types import Event

    return Event(name, level, message, dict(fields))


def run_fleet(ctx: click.Context, app: App, fleet_name: str, command: str) -> int:
    globals_ = app.globals
    jobs = _number(globals_.jobs, "--jobs", 1)
    canary = _number(globals_.canary, "--canary", 0)
    dry_run = bool(ctx.params.get("dry_run"))
    session = app.session(command, dry_run=dry_run)
    fleet = fleet_named(session.config, fleet_name, app.environ)
    members = resolve(session, fleet, app.environ)
    fmt = _output_format(ctx)
    annotations = _requested_format(ctx) in ANNOTATION_FORMATS
    if not members:
        app.report(
            "fleet.empty",
            "warning",
            f"fleet {fleet_name} has no members; nothing to do",
            fleet=fleet_name,
        )
        if fmt == "json":
            click.echo(
                json.dumps({"ok": True, "fleet": fleet_name, "members": []}),
                file=app.result_stream or sys.stdout,
            )
        return 0
    confirmed = False
    if command in CHANGING_COMMANDS:
        _confirm(session, command, members)
        confirmed = True
    schedule = Schedule(
        jobs=jobs or fleet.jobs or DEFAULT_JOBS,
        canary=canary if canary is not None else (fleet.canary or 0),
        fail_fast=globals_.fail_fast,
        keep_stdout=fmt == "json" or annotations,
    )
    invocation = Invocation(
        path=_names_below_root(ctx) or (command,),
        params=dict(ctx.params),
        # A member prints a document of its own only for a dry run (apply's --format).
        meta={
            k: v
            for k, v in ctx.meta.items()
            if k != "fleet_format" and (k != "output_format" or ctx.params.get("dry_run"))
        },
    )
    app.report(
        "fleet.started",
        "info",
        f"{command} on fleet {fleet_name}: {len(members)} database"
        f"{'s' if len(members) != 1 else ''}, {schedule.jobs} at a time"
        + (f", canary {schedule.canary}" if schedule.canary else ""),
        fleet=fleet_name,
        members=len(members),
        jobs=schedule.jobs,
        canary=schedule.canary,
    )

    board = (
        live.Board(sys.stderr, fleet_name, len(members))
        if live.wanted(sys.stderr, fmt, globals_.json_log, dict(app.environ))
        else None
    )

    def observe(index: int, event: Event) -> None:
        state = live.state_of(event)
        if board is not None and state is not None:
            board.update(index, state)

    def on_event(kind: str, outcome: Outcome) -> None:
        if board is not None:
            if kind == "started":
                board.started(outcome.index, outcome.member.name)
            else:
                board.finished(outcome.index, outcome.ok)
        if kind == "started":
            app.report(
                "fleet.member.started",
                "debug",
                f"{outcome.member.name}: started",
                target=outcome.member.name,
            )
            return
        level: Level = "info"
        detail = f": {outcome.error}" if outcome.error and not outcome.ok else ""
        app.report(
            "fleet.member.finished",
            level,
            f"{outcome.member.name}: {outcome.result} in {outcome.duration_ms} ms{detail}",
            target=outcome.member.name,
            result=outcome.result,
            exit_code=outcome.exit_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
        )

    with routed() as streams:
        run = FleetRun(
            app,
            members,
            invocation,
            schedule,
            streams,
            confirmed,
            on_event,
            observe if board is not None else None,
        )
        if board is not None:
            board.start()
        try:
            outcomes = run.run()
        finally:
            if board is not None:
                board.stop()
    for outcome in outcomes:
        if outcome.result == "skipped" and outcome.error is None:
            outcome.error = "not started: an earlier member failed (--fail-fast)"
    ok = all(o.ok for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    # While a command writes a document, stdout is redirected; the summary is that document.
    out = app.result_stream or sys.stdout
    if fmt == "json":
        click.echo(json.dumps(_document(fleet_name, outcomes, ok), default=str), file=out)
    else:
        if annotations:
            click.echo(_annotations(outcomes), nl=False, file=out)
        click.echo(_table(outcomes), nl=False, file=out)
    app.report(
        "fleet.finished",
        "info" if ok else "warning",
        f"fleet {fleet_name}: {len(outcomes) - len(failed)} of {len(outcomes)} succeeded",
        fleet=fleet_name,
        ok=ok,
        succeeded=len(outcomes) - len(failed),
        failed=len([o for o in outcomes if o.result == "failed"]),
        interrupted=len([o for o in outcomes if o.result == "interrupted"]),
        skipped=len([o for o in outcomes if o.result == "skipped"]),
    )
    if run.interrupted:
        return EXIT_INTERRUPTED
    for outcome in outcomes:
        if outcome.exit_code:
            return outcome.exit_code
    return 0 if ok else EXIT_FAILURE


CHANGING_COMMANDS = frozenset(
    {"apply", "migrate", "up", "down", "rollback", "fix", "seed", "baseline"}
)


def _member_document(outcome: Outcome) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": outcome.member.name,
        "ok": outcome.ok,
        "result": outcome.result,
        "exit_code": outcome.exit_code,
        "applied": outcome.applied,
        "rolled_back": outcome.rolled_back,
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
    }
    text = outcome.stdout.strip()
    if text:
        try:
            doc["output"] = json.loads(text)
        except ValueError:
            doc["output"] = text
    return doc


def _document(fleet: str, outcomes: Sequence[Outcome], ok: bool) -> dict[str, Any]:
    return {"ok": ok, "fleet": fleet, "members": [_member_document(o) for o in outcomes]}


def _annotations(outcomes: Sequence[Outcome]) -> str:
    """Every member's result lines in fleet order, each distinct line once: an annotation
    names a file and a line, which every member shares, and GitHub reads a line only when
    it starts with ``::``."""
    seen: set[str] = set()
    lines: list[str] = []
    for outcome in outcomes:
        for line in outcome.stdout.splitlines():
            if line.strip() and line not in seen:
                seen.add(line)
                lines.append(line + "\n")
    return "".join(lines)


def _table(outcomes: Sequence[Outcome]) -> str:
    header = ("MEMBER", "RESULT", "APPLIED", "ROLLED BACK", "DURATION", "ERROR")
    rows = [header]
    for o in outcomes:
        # A name from ``query`` or a server's message may hold control characters: the
        # table shows them escaped (the JSON document keeps them; JSON escapes them).
        rows.append(
            (
                printable(o.member.name),
                o.result,
                str(len(o.applied)),
                str(len(o.rolled_back)),
                f"{o.duration_ms / 1000:.1f}s" if o.result not in ("skipped",) else "-",
                printable((o.error or "").splitlines()[0]) if o.error and not o.ok else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append(("  ".join(cells) + "  " + row[-1]).rstrip())
    ok = sum(1 for o in outcomes if o.ok)
    lines.append(f"{ok} of {len(outcomes)} succeeded")
    return "\n".join(lines) + "\n"


def _names_below_root(ctx: click.Context) -> tuple[str, ...]:
    """The names the command was found by under ``mg`` (``seed``, ``run``): not its
    ``command_path``, which a command may show otherwise (``mg seed`` for ``seed run``)."""
    names: list[str] = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return tuple(reversed(names))
