"""Builtin ``output``: human output.

Results (one line per migration applied or rolled back, tables of ``status`` and ``list``) go
to stdout; progress and diagnostics go to stderr, unless ``--json-log`` hands diagnostics to
the ``jsonlog`` plugin. On a terminal, the running migration is shown with its elapsed time
(``output/progress.py``).

Whatever reaches the terminal has its control characters escaped (``messages.printable``): a
file or migration name cannot rewrite the terminal. Only a shell hook's output, the user's own
command's, passes as it is.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from migretti_core import hookimpl
from migretti_core.messages import printable, render
from migretti_core.types import Event, Options, Session

RESULT_EVENTS = frozenset(
    {
        "migration.applied",
        "migration.rolled_back",
        "migration.fixed",
        "dryrun.sql",
        "migration.baselined",
        "baseline.planned",
        "dryrun.ok",
        "dryrun.locks",
        "dryrun.failed",
        "dryrun.skipped",
        "seed.ran",
        "seed.skipped",
    }
)

_progress_shown = False


def _clear_progress() -> None:
    global _progress_shown
    if _progress_shown:
        from migretti_plugins.output import progress

        progress.stop()
        _progress_shown = False


def _shown(event: Event) -> str:
    """The message for a terminal: the migration's or seed's name (the ``migration_name`` or
    ``seed`` field) escaped whole, a line break in it too, then every other control character
    but the message's own line breaks and tabs."""
    message = event.message
    for key in ("migration_name", "seed"):
        name = event.fields.get(key)
        if isinstance(name, str) and name and not name.isprintable():
            message = message.replace(name, printable(name))
    return printable(message, lines=True)


@hookimpl(trylast=True)
def mg_report(options: Options, event: Event) -> bool | None:
    global _progress_shown
    if event.name in RESULT_EVENTS:
        _clear_progress()
        print(_shown(event), flush=True)
        return True
    if options.json_log:
        return None
    if event.name == "migration.started":
        # The message is "[i/n] ID name"; on a terminal it stays shown with its elapsed time.
        _clear_progress()
        if sys.stderr.isatty():
            from migretti_plugins.output import progress

            progress.show(_shown(event))
            _progress_shown = True
        elif options.verbose:
            print(_shown(event), file=sys.stderr)
        return True
    if event.level == "debug" and not options.verbose:
        return None
    if event.name in ("migration.failed", "schema.not_written"):
        return None  # the command's error message says it (with file and line)
    _clear_progress()
    if event.name == "hook.output":  # the user's own command: its output as it wrote it
        print(event.message, file=sys.stderr, flush=True)
        return True
    hint = event.fields.get("hint") if event.level == "error" else None
    print(
        render(event.level, _shown(event), hint if isinstance(hint, str) else None),
        file=sys.stderr,
    )
    trace = event.fields.get("traceback")
    if isinstance(trace, str) and event.name == "plugin.failed":
        sys.stderr.write(printable(trace, lines=True))
    sys.stderr.flush()
    return True


def _controlling_terminal() -> TextIO | None:
    """The process's controlling terminal opened for writing; None without one."""
    try:
        return open("/dev/tty", "w", encoding="utf-8")
    except OSError:
        return None


@hookimpl(trylast=True)
def mg_prompt(session: Session, message: str, question: str) -> str | None:
    if not sys.stdin.isatty():
        return None
    # The question is for the person at the terminal. When stderr is not that terminal (a
    # redirect to a file, a JSON log for a shipper), it goes to the controlling terminal with
    # what is confirmed, so it is neither hidden in the file nor mixed into the log.
    terminal = None if sys.stderr.isatty() else _controlling_terminal()
    stream = terminal or sys.stderr
    try:
        if session.options.json_log or terminal is not None:
            # the warning went to the log or the file: show what is confirmed
            print(printable(message, lines=True), file=stream)
        stream.write(printable(question, lines=True))
        stream.flush()
        # End of input declines (exit 5); Ctrl-C or SIGTERM at the question interrupts the
        # command (exit 130), as anywhere else.
        try:
            answer = sys.stdin.readline()
        except EOFError:
            answer = ""
        if not answer.endswith("\n"):
            # Ctrl-D echoes nothing: end the question's line, so what follows starts its own
            stream.write("\n")
            stream.flush()
        return answer
    finally:
        if terminal is not None:
            terminal.close()


@hookimpl(trylast=True)
def mg_format_result(kind: str, data: Any, fmt: str) -> str | None:
    if fmt == "json":
        import json

        return json.dumps(data, indent=2, default=str)
    if fmt != "text":
        return None
    render = _RENDERERS.get(kind)
    if render is None:
        import json

        return json.dumps(data, indent=2, default=str)
    text: str = render(data)
    return text


def _table(headers: list[str], rows: list[list[str]]) -> str:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _status(data: dict[str, Any]) -> str:
    counts = data["counts"]
    head = data.get("head")
    baseline = f" (baseline: {data['baseline']})" if data.get("baseline") else ""
    lines = [
        f"applied: {counts['applied']}{baseline}  pending: {counts['pending']}  "
        f"failed: {counts['failed']}  running: {counts['running']}",
        f"head: {printable(head['id'])} {printable(head['name'])}"
        + (" (baseline)" if head.get("baseline") else "")
        if head
        else "head: (none)",
    ]
    problems = data.get("problems") or []
    invalid = data.get("invalid_indexes") or []
    if problems:
        lines.append(f"problems ({len(problems)}):")
        lines.extend(f"  {printable(p)}" for p in problems)
    elif not invalid:
        # An INVALID index is a problem to act on too (it fails --exit-code): "no problems"
        # is said only when there is none of either kind.
        lines.append("no problems")
    if invalid:
        lines.append(f"invalid indexes ({len(invalid)}), left by failed CREATE INDEX CONCURRENTLY:")
        lines.extend(printable(f"  {i['index']} on {i['table']}: {i['drop']}") for i in invalid)
    return "\n".join(lines)


def _list(data: list[dict[str, Any]]) -> str:
    if not data:
        return "no migrations"
    rows = [
        [
            r["id"],
            r["name"],
            r["status"] + (" (baseline)" if r.get("baseline") else ""),
            _applied_at(r["applied_at"]),
        ]
        for r in data
    ]
    return _table(["ID", "NAME", "STATUS", "APPLIED AT"], rows)


def _applied_at(value: str | None) -> str:
    """``2026-11-28 09:52:39+09:00``: to the second, with the offset of the session's time
    zone (the server's ``timezone``, or PGTZ), which says which 09:52 it was."""
    if not value:
        return ""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).isoformat(sep=" ", timespec="seconds")
    except ValueError:
        return value[:19].replace("T", " ")


def _head(data: dict[str, Any] | None) -> str:
    if not data:
        return "no migration applied"
    shown = printable(f"{data['id']} {data['name']}")
    return f"{shown} (applied {data['applied_at'] or 'at an unknown time'})"


def _verify(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for item in data["mismatches"]:
        lines.append(f"mismatch: {printable(item['file'])} changed since it was applied")
    for item in data["missing"]:
        shown = printable(f"{item['id']} {item['name']}")
        lines.append(f"missing: {shown} is applied but its file is gone")
    lines.extend(printable(p) for p in data.get("problems") or [])
    if data["ok"]:
        count = data["checked"]
        if count == 1:
            lines.append("ok: 1 applied migration matches its file")
        else:
            lines.append(f"ok: {count} applied migrations match their files")
    return "\n".join(lines)


def _plugins(data: list[dict[str, Any]]) -> str:
    rows = []
    for p in data:
        status = p["status"]
        if p.get("error"):
            status = f"{status}: {p['error']}"
        rows.append([p["name"], p["origin"], p.get("version") or "", ", ".join(p["hooks"]), status])
    return _table(["NAME", "ORIGIN", "VERSION", "HOOKS", "STATUS"], rows)


_RENDERERS: dict[str, Any] = {
    "status": _status,
    "list": _list,
    "head": _head,
    "verify": _verify,
    "plugins": _plugins,
}
