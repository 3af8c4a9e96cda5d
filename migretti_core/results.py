"""What the Python API returns: frozen values holding what ``--format json`` prints.

Each result has ``as_dict()``, which gives the document the matching ``mg ... --format json``
prints (for status, list, head and verify), so code and scripts read the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from migretti_core.errors import MgError
from migretti_core.types import Direction, LintFinding

T = TypeVar("T")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class HistoryRow:
    """One applied (or failed, or running) migration as the history records it."""

    id: str
    name: str
    status: str
    applied_at: datetime | None = None
    checksum: str | None = None
    baseline: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "applied_at": _iso(self.applied_at),
            "checksum": self.checksum,
            "baseline": self.baseline,
        }


@dataclass(frozen=True)
class MigrationOutcome:
    """What happened to one migration of an apply, rollback or dry run.

    ``file`` is the migration's path as the CLI shows it. In a dry run ``executed`` is False
    for a migration that was only printed (no-transaction, or after one), and ``ok`` False
    with ``error`` set for one that failed. A dry run also fills the lock report that
    ``mg apply --dry-run --format json`` prints: ``locks`` ``(relation, mode)``, the
    ``rewrites`` and ``tables`` ``(relation, estimated rows or None, bytes)``.
    """

    id: str
    name: str
    file: str
    direction: Direction
    duration_ms: int
    ok: bool = True
    executed: bool = True
    error: str | None = None
    locks: tuple[tuple[str, str], ...] = ()
    rewrites: tuple[str, ...] = ()
    tables: tuple[tuple[str, int | None, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "file": self.file,
            "direction": self.direction,
            "duration_ms": self.duration_ms,
            "ok": self.ok,
            "executed": self.executed,
            "error": self.error,
            **lock_report_fields(self.locks, self.rewrites, self.tables),
        }


def lock_report_fields(
    locks: Sequence[tuple[str, str]],
    rewrites: Sequence[str],
    tables: Sequence[tuple[str, int | None, int]],
) -> dict[str, Any]:
    """A dry run's lock report as JSON fields: the same keys in ``MigrationOutcome.as_dict``
    and ``mg apply --dry-run --format json``."""
    return {
        "locks": [{"relation": relation, "mode": mode} for relation, mode in locks],
        "rewrites": list(rewrites),
        "tables": [
            {"relation": relation, "rows": rows, "bytes": size} for relation, rows, size in tables
        ],
    }


@dataclass(frozen=True)
class RunResult:
    """The result of ``apply``, ``up``, ``down`` or ``rollback``.

    ``migrations`` lists, in the order they ran, the migrations applied or rolled back (or,
    with ``dry_run``, tried and undone). Empty when there was nothing to do.
    """

    command: str
    direction: Direction
    dry_run: bool
    migrations: tuple[MigrationOutcome, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.migrations)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.migrations)

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "direction": self.direction,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "migrations": [m.as_dict() for m in self.migrations],
        }


@dataclass(frozen=True)
class StatusResult:
    """``mg status``: counts, the current head and every problem (never raises on problems).

    ``baseline`` counts the applied migrations recorded by ``mg baseline`` (never run).

    ``ok`` is what ``mg status --exit-code`` gates on: nothing pending, failed, running,
    changed since applied or missing, and no INVALID index on the target.
    ``invalid_indexes`` are those INVALID indexes, left by failed concurrent builds
    (``index``, ``table``, ``drop``).
    """

    applied: int
    pending: int
    failed: int
    running: int
    head: HistoryRow | None
    problems: tuple[str, ...] = ()
    ok: bool = True
    baseline: int = 0
    invalid_indexes: tuple[Mapping[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "baseline": self.baseline,
            "counts": {
                "applied": self.applied,
                "pending": self.pending,
                "failed": self.failed,
                "running": self.running,
            },
            "head": self.head.as_dict() if self.head is not None else None,
            "problems": list(self.problems),
            "invalid_indexes": [dict(index) for index in self.invalid_indexes],
        }


@dataclass(frozen=True)
class MigrationRow:
    """One row of ``mg list``: files and history together."""

    id: str
    name: str
    status: str
    applied_at: datetime | None = None
    file: str | None = None
    baseline: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "applied_at": _iso(self.applied_at),
            "file": self.file,
            "baseline": self.baseline,
        }


@dataclass(frozen=True)
class Mismatch:
    """An applied migration whose file changed since it ran."""

    id: str
    name: str
    file: str


@dataclass(frozen=True)
class MissingFile:
    """An applied migration whose file is gone."""

    id: str
    name: str


@dataclass(frozen=True)
class VerifyResult:
    """``mg verify``: whether every applied migration matches its file."""

    ok: bool
    checked: int
    mismatches: tuple[Mismatch, ...] = ()
    missing: tuple[MissingFile, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "mismatches": [{"id": m.id, "name": m.name, "file": m.file} for m in self.mismatches],
            "missing": [{"id": m.id, "name": m.name} for m in self.missing],
        }


@dataclass(frozen=True)
class FixResult:
    """``mg fix``: the migration whose history row was resolved, and how."""

    id: str
    resolution: Literal["applied", "removed"]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "resolution": self.resolution}


@dataclass(frozen=True)
class SeedRun:
    """One seed that ran (in a dry run: that would run, and succeeded)."""

    name: str
    duration_ms: int


@dataclass(frozen=True)
class SeedResult:
    """``mg seed``: the seeds that ran and the ones skipped as unchanged, in file order."""

    ran: tuple[SeedRun, ...] = ()
    skipped: tuple[str, ...] = ()
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ran": [{"name": s.name, "duration_ms": s.duration_ms} for s in self.ran],
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True)
class MigrationCheckResult:
    """``mg check`` for one migration: whether down restores the schema and up repeats."""

    id: str
    name: str
    ok: bool
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    checked: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "ok": self.ok,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "checked": self.checked,
        }


@dataclass(frozen=True)
class CheckResult:
    """``mg check``: every migration's round trip on a scratch database, and the lint findings.

    ``failed`` is set when a migration could not be applied at all (``mg check`` exits 1).
    """

    ok: bool
    migrations: tuple[MigrationCheckResult, ...] = ()
    lint: tuple[Mapping[str, Any], ...] = ()
    seeds: tuple[str, ...] = ()
    failed: bool = False
    database: str = ""

    @classmethod
    def from_report(cls, report: Any, redact: Callable[[str], str] | None = None) -> CheckResult:
        """Freeze the check plugin's report; ``redact`` masks passwords in its texts, as
        ``mg check`` masks what it prints (a server error may quote one)."""

        def mask(value: Any) -> Any:
            return redact(value) if redact is not None and isinstance(value, str) else value

        return cls(
            ok=bool(report.ok),
            migrations=tuple(
                MigrationCheckResult(
                    m.id,
                    m.name,
                    m.ok,
                    tuple(mask(p) for p in m.problems),
                    tuple(mask(w) for w in m.warnings),
                    m.checked,
                )
                for m in report.migrations
            ),
            lint=tuple(
                MappingProxyType({key: mask(value) for key, value in f.items()})
                for f in report.lint
            ),
            seeds=tuple(mask(seed) for seed in report.seeds),
            failed=bool(report.failed),
            database=mask(str(report.database)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "migrations": [m.as_dict() for m in self.migrations],
            "lint": [dict(f) for f in self.lint],
            "seeds": list(self.seeds),
            "database": self.database,
        }


@dataclass(frozen=True)
class LintResult:
    """``mg lint``: the findings (``LintFinding``: path, line, column, rule, severity,
    message, help, migration) and how many migrations were linted."""

    findings: tuple[LintFinding, ...] = ()
    linted: int = 0

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> int:
        return len(self.findings) - self.errors

    @property
    def ok(self) -> bool:
        """No error-level finding (warnings allowed), as ``mg lint`` exits 0."""
        return self.errors == 0

    def as_dict(self) -> dict[str, Any]:
        from migretti_core.reporting import relative_path

        return {"findings": [f.as_dict(relative_path(f.path)) for f in self.findings]}


def _document(value: object) -> Any:
    """A member's result as ``--format json`` prints it."""
    if value is None:
        return None
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if isinstance(value, tuple):
        return [_document(item) for item in value]
    return value


MemberState = Literal["ok", "failed", "interrupted", "skipped"]


@dataclass(frozen=True)
class MemberResult(Generic[T]):
    """What one command did on one member of a fleet (``Migretti.fleet``).

    ``result`` is ``ok``, ``failed``, ``interrupted`` or ``skipped`` (never started: a canary
    or, with ``fail_fast``, an earlier member failed). ``output`` is the member's own result
    (what the same method returns for one database; on a failure whatever the error carried
    as ``.result``), ``exception`` the ``MgError`` it raised, whose ``exit_code`` is
    ``exit_code``; ``error`` is that error's first line.
    """

    name: str
    result: MemberState
    exit_code: int | None = None
    applied: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    error: str | None = None
    duration_ms: int = 0
    output: T | None = None
    exception: MgError | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def as_dict(self) -> dict[str, Any]:
        """One member of ``mg ... --fleet NAME --format json``'s document."""
        return {
            "name": self.name,
            "ok": self.ok,
            "result": self.result,
            "exit_code": self.exit_code,
            "applied": list(self.applied),
            "rolled_back": list(self.rolled_back),
            "error": self.error,
            "duration_ms": self.duration_ms,
            "output": _document(self.output),
        }


@dataclass(frozen=True)
class FleetResult(Generic[T]):
    """One command on every member of a fleet, in fleet order."""

    fleet: str
    members: tuple[MemberResult[T], ...] = ()

    @property
    def ok(self) -> bool:
        """Every member succeeded (a skipped member did not)."""
        return all(m.ok for m in self.members)

    @property
    def failed(self) -> tuple[MemberResult[T], ...]:
        """The members that did not succeed, skipped ones included."""
        return tuple(m for m in self.members if not m.ok)

    @property
    def exit_code(self) -> int:
        """``mg``'s exit code: 0, else the first failed member's in fleet order."""
        for member in self.members:
            if member.exit_code:
                return member.exit_code
        return 0 if self.ok else 1

    def __getitem__(self, name: str) -> MemberResult[T]:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """The document ``mg ... --fleet NAME --format json`` prints."""
        return {
            "ok": self.ok,
            "fleet": self.fleet,
            "members": [m.as_dict() for m in self.members],
        }


__all__ = [
    "CheckResult",
    "FixResult",
    "FleetResult",
    "HistoryRow",
    "LintResult",
    "MemberResult",
    "MigrationCheckResult",
    "MigrationOutcome",
    "MigrationRow",
    "Mismatch",
    "MissingFile",
    "RunResult",
    "SeedResult",
    "SeedRun",
    "StatusResult",
    "VerifyResult",
]
