"""Files and history rows combined: what is applied, pending, broken or out of order.

Pure functions over data, so the rules can be tested without a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from migretti_core.textfiles import sha256_hex
from migretti_core.types import HistoryEntry, Migration


def at_work(entry: HistoryEntry) -> bool:
    """A ``running`` row whose database session is still connected: another run's
    no-transaction migration at work right now (it may have released the migration lock with
    ``DISCARD ALL``), not an interrupted one, which ``mg fix`` resolves."""
    return entry.status == "running" and entry.session_connected


@dataclass(frozen=True)
class Row:
    """One line of ``mg list``: a file, a history row, or both."""

    id: str
    name: str
    status: str
    applied_at: datetime | None
    migration: Migration | None
    entry: HistoryEntry | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "file": self.migration.filename if self.migration else None,
            "baseline": bool(self.entry and self.entry.baseline),
        }


KNOWN_STATUSES = ("applied", "failed", "running")


def checksum_matches(migration: Migration, entry: HistoryEntry) -> bool:
    """A missing stored checksum is not a mismatch; ``State.unverifiable`` reports it."""
    if entry.checksum is None or entry.checksum == "":
        return True
    if entry.checksum in (migration.checksum, migration.raw_checksum):
        return True
    return entry.checksum in _line_end_checksums(migration.text)


_BOM = "\ufeff"


def _line_end_checksums(text: str) -> set[str]:
    """Checksums migretti 0.10 recorded for ``text`` (normalised: LF, no BOM) saved with CRLF
    or CR line ends or a BOM: it took the raw bytes. The file as it is now may have other line
    ends (git's autocrlf) and is still the same migration. Computed only when the plain
    checksums differ, so a matching file costs nothing more."""
    variants = {text.replace("\n", "\r\n"), text.replace("\n", "\r")}
    variants |= {_BOM + v for v in variants} | {_BOM + text}
    return {sha256_hex(v.encode("utf-8")) for v in variants}


@dataclass(frozen=True)
class State:
    """Everything the engine decides from: the files and the history, joined by id."""

    migrations: tuple[Migration, ...]
    history: tuple[HistoryEntry, ...]

    @property
    def by_id(self) -> dict[str, Migration]:
        return {m.id: m for m in self.migrations}

    @property
    def entries(self) -> dict[str, HistoryEntry]:
        return {e.id: e for e in self.history}

    @property
    def applied(self) -> list[HistoryEntry]:
        """Applied rows in application order (oldest first), one per id."""
        seen: set[str] = set()
        applied: list[HistoryEntry] = []
        for entry in self.history:
            if entry.status == "applied" and entry.id not in seen:
                seen.add(entry.id)
                applied.append(entry)
        return applied

    @property
    def unknown_status(self) -> list[HistoryEntry]:
        """Rows whose status mg does not know (``APPLIED``, ``skipped``, ...): edited by hand,
        they count as neither applied nor pending."""
        return [e for e in self.history if e.status not in KNOWN_STATUSES]

    @property
    def unverifiable(self) -> list[HistoryEntry]:
        """Applied rows without a checksum (NULL or empty): their file cannot be verified."""
        return [e for e in self.applied if not e.checksum]

    @property
    def duplicates(self) -> dict[str, list[HistoryEntry]]:
        """Ids with more than one row, possible only once the primary key was dropped."""
        rows: dict[str, list[HistoryEntry]] = {}
        for entry in self.history:
            rows.setdefault(entry.id, []).append(entry)
        return {ident: found for ident, found in rows.items() if len(found) > 1}

    @property
    def shared_positions(self) -> dict[int, list[HistoryEntry]]:
        """Positions (``apply_seq``) recorded for more than one id: rollback cannot tell which
        of them was applied last."""
        rows: dict[int, dict[str, HistoryEntry]] = {}
        for entry in self.history:
            if entry.seq is not None:
                rows.setdefault(entry.seq, {}).setdefault(entry.id, entry)
        return {seq: list(found.values()) for seq, found in rows.items() if len(found) > 1}

    @property
    def tampered(self) -> bool:
        return bool(
            self.unknown_status or self.unverifiable or self.duplicates or self.shared_positions
        )

    @property
    def failed(self) -> list[HistoryEntry]:
        return [e for e in self.history if e.status == "failed"]

    @property
    def running(self) -> list[HistoryEntry]:
        return [e for e in self.history if e.status == "running"]

    @property
    def at_work(self) -> list[HistoryEntry]:
        """The ``running`` rows another run is at work on right now (``at_work``)."""
        return [e for e in self.history if at_work(e)]

    @property
    def blocking(self) -> list[HistoryEntry]:
        return [e for e in self.history if e.status in ("failed", "running")]

    @property
    def pending(self) -> list[Migration]:
        entries = self.entries
        return [m for m in self.migrations if m.id not in entries]

    @property
    def newest_recorded_id(self) -> str | None:
        return max((e.id for e in self.history), default=None)

    @property
    def out_of_order(self) -> list[Migration]:
        newest = self.newest_recorded_id
        if newest is None:
            return []
        return [m for m in self.pending if m.id < newest]

    @property
    def modified(self) -> list[tuple[Migration, HistoryEntry]]:
        by_id = self.by_id
        return [
            (by_id[e.id], e)
            for e in self.applied
            if e.id in by_id and not checksum_matches(by_id[e.id], e)
        ]

    @property
    def missing(self) -> list[HistoryEntry]:
        by_id = self.by_id
        return [e for e in self.history if e.id not in by_id]

    @property
    def head(self) -> HistoryEntry | None:
        applied = self.applied
        return applied[-1] if applied else None

    def rows(self) -> list[Row]:
        """One row per migration, files and history together, sorted by id."""
        by_id = self.by_id
        entries = self.entries
        out_of_order = {m.id for m in self.out_of_order}
        modified = {m.id for m, _ in self.modified}
        rows: list[Row] = []
        for ident in sorted(set(by_id) | set(entries)):
            migration = by_id.get(ident)
            entry = entries.get(ident)
            if entry is None:
                status = "out-of-order" if ident in out_of_order else "pending"
            elif migration is None:
                status = "missing"
            elif entry.status != "applied":
                status = entry.status or "(no status)"
            elif ident in modified:
                status = "modified"
            else:
                status = "applied"
            name = migration.name if migration else entry.name if entry else ""
            rows.append(
                Row(ident, name, status, entry.applied_at if entry else None, migration, entry)
            )
        return rows


def order_history(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """Application order: the apply sequence, then the time applied, then the id.

    A row without an apply sequence comes after every row with one: migretti 0.10 (which
    does not know the column) recorded it after mg had numbered the rows it found, and the
    next write numbers it so (history's backfill). A database only 0.10 wrote has no
    numbers at all, and its rows follow their times."""
    return sorted(
        entries,
        key=lambda e: (
            e.seq is None,
            e.seq if e.seq is not None else 0,
            e.applied_at.timestamp() if e.applied_at else 0.0,
            e.id,
        ),
    )
