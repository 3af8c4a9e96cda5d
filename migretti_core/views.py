"""Read-only views: the data of ``mg status``, ``mg verify`` and the Python API's reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migretti_core.planning import fix_hint, load_migrations, preflight_problems, tampering_of
from migretti_core.reporting import display_path, relative_path
from migretti_core.running import connected, read_state
from migretti_core.state import State, at_work
from migretti_core.types import (
    HistoryEntry,
    Session,
)


def current_status(session: Session) -> tuple[State, list[dict[str, str]], list[str]]:
    """The state, the INVALID indexes failed concurrent builds left on the target, and what
    the pre-flight checks of ``mg apply`` refuse in the pending migrations."""
    migrations = load_migrations(session)
    with connected(session) as conn:
        state = read_state(session, conn, migrations)
        invalid = session.hooks.invalid_indexes(session, conn)
    return state, invalid, preflight_problems(session, state)


def current_state(session: Session) -> State:
    migrations = load_migrations(session)
    with connected(session) as conn:
        return read_state(session, conn, migrations)


def fix_advice(session: Session, given: str) -> str | None:
    """How to resolve migration ``given`` (as people name it) when it is failed or running,
    by the way it was going; None for any other."""
    from migretti_core.resolve import resolve_id

    state = current_state(session)
    entry = state.entries.get(resolve_id(given, state.migrations, state.history))
    if entry is None or entry.status not in ("failed", "running"):
        return None
    return fix_hint(entry)


def problems_of(state: State) -> list[str]:
    problems: list[str] = []
    for entry in state.failed:
        problems.append(
            f"failed: {entry.id} {entry.name}"
            + (f" (statement {entry.failed_statement})" if entry.failed_statement else "")
            + (f": {entry.error}" if entry.error else "")
            + " — "
            + fix_hint(entry)
        )
    for entry in state.running:
        if at_work(entry):
            # the session that marked it is still connected: at work, not stopped; `mg fix`
            # refuses it until it ends
            problems.append(
                f"running: {entry.id} {entry.name} is being run by database session "
                f"{entry.session_id}, still connected — wait for it to finish"
            )
            continue
        problems.append(
            f"running: {entry.id} {entry.name} was interrupted or is still running — "
            + fix_hint(entry)
        )
    for migration, _ in state.modified:
        problems.append(f"modified: {display_path(migration.path)} changed since it was applied")
    for entry in state.missing:
        problems.append(f"missing: {entry.id} {entry.name} is recorded but its file is gone")
    for migration in state.out_of_order:
        problems.append(
            f"out-of-order: {display_path(migration.path)} sorts before the newest applied "
            "migration (apply with --allow-out-of-order)"
        )
    problems.extend(tampering_of(state))
    return problems


def entry_dict(entry: HistoryEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "id": entry.id,
        "name": entry.name,
        "status": entry.status,
        "applied_at": entry.applied_at.isoformat() if entry.applied_at else None,
        "checksum": entry.checksum,
        "baseline": entry.baseline,
    }


def status_ok(state: State) -> bool:
    """Nothing pending, failed, running, changed since applied or missing: the CI gate
    (``status_data`` also fails it for any other problem ``mg status`` reports)."""
    return not (state.pending or state.blocking or state.modified or state.missing)


def status_data(
    state: State,
    redact: Callable[[str], str] | None = None,
    invalid_indexes: Sequence[Mapping[str, str]] = (),
    file_problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The document of ``mg status``; ``redact`` masks secrets in the problems, whose stored
    server errors may quote one (rows written before errors were masked, or by hand).

    INVALID indexes left on the target (by a failed ``CREATE INDEX CONCURRENTLY``) are a
    problem to act on too: they fail ``ok``, so ``mg status --exit-code`` exits 3 on them.
    So do ``file_problems``: what ``mg apply`` would refuse (exit 2) in a pending file."""
    problems = problems_of(state) + list(file_problems)
    if redact is not None:
        problems = [redact(problem) for problem in problems]
    return {
        "ok": status_ok(state) and not problems and not invalid_indexes,
        "counts": {
            "applied": len(state.applied),
            "pending": len(state.pending),
            "failed": len(state.failed),
            "running": len(state.running),
        },
        "baseline": sum(1 for e in state.applied if e.baseline),
        "head": entry_dict(state.head),
        "problems": problems,
        "invalid_indexes": [dict(index) for index in invalid_indexes],
    }


def verify_data(state: State) -> dict[str, Any]:
    mismatches = [
        {"id": m.id, "name": m.name, "file": relative_path(m.path)} for m, _ in state.modified
    ]
    missing = [{"id": e.id, "name": e.name} for e in state.missing if e.status == "applied"]
    problems = tampering_of(state)
    data: dict[str, Any] = {
        "ok": not mismatches and not missing and not problems,
        "checked": len(state.applied),
        "mismatches": mismatches,
        "missing": missing,
    }
    if problems:  # history rows edited by hand; the key is left out when there are none
        data["problems"] = problems
    return data
