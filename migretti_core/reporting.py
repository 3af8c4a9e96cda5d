"""Events for people and logs, and how paths are shown in them.

``report`` is how the core and plugins say anything: it adds the run's common context
(env, dry_run) and hands the event to ``mg_report``; the core never prints.

``display_path`` is a path for people: its control characters are escaped (``\\x1b``), so a
hostile file name cannot rewrite the terminal. A document for programs (``--format json``,
an event's fields) carries ``relative_path``, the exact name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from migretti_core.errors import MgError
from migretti_core.messages import printable
from migretti_core.types import (
    Event,
    Level,
    LintFinding,
    Session,
)

if TYPE_CHECKING:
    from pathlib import Path


def report(session: Session, name: str, level: Level, message: str, **fields: Any) -> bool:
    """Emit an event with the run's common context (env, dry_run); True when it was shown."""
    context: dict[str, Any] = {"env": session.config.env, "dry_run": session.options.dry_run}
    context.update(fields)
    # Through ``Hooks.report``: a fleet member's runner wraps it to tag every event.
    return session.hooks.report(session.options, Event(name, level, message, context))


def display_path(path: Path) -> str:
    """A path as short as it can be shown (``relative_path``), each control character in it
    written as an escape (``\\x1b``, ``\\n``; a byte that is not UTF-8 as ``\\xff``)."""
    return printable(relative_path(path))


def cannot_write(exc: OSError) -> MgError:
    """The error for a new file (a migration, a seed) that the file system refused; exit 1,
    as for any output mg cannot write."""
    from pathlib import Path

    where = display_path(Path(exc.filename)) if exc.filename else "the new file"
    return MgError(f"cannot write {where}: {exc.strerror or exc}; nothing was written")


def relative_path(path: Path) -> str:
    """The path relative to the working directory when inside it, else as given; exact, for
    JSON documents and event fields."""
    try:
        from pathlib import Path

        # a symbolic link is named by where it is, not by where it points (which may be gone)
        resolved = path.parent.resolve() / path.name if path.is_symlink() else path.resolve()
        return str(resolved.relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # not below, or a symbolic-link loop
        return str(path)


def finding_line(finding: LintFinding) -> str:
    # one line per finding: the parser may quote a line break (`at or near "/*` + newline)
    message = printable(finding.message)
    return (
        f"{display_path(finding.path)}:{finding.line}:{finding.column}: {finding.rule}: {message}"
    )
