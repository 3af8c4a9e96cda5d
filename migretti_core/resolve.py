"""A migration named on the command line, the way people type it.

``--to`` (apply, rollback), ``mg fix`` and every other argument that takes a migration accept
the full id, a unique prefix of it, the name (the slug of the file name) or the file name
(``0002_add_users.sql``, with or without ``.sql``, a path such as ``migrations/0002_x.sql``
too; for a migration only the history knows, the file name it had). Ids compare
case-insensitively, as ULIDs are often typed in lower case. A text that matches several
migrations is refused (exit 2) listing them, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from migretti_core.errors import UsageError
from migretti_core.records import record
from migretti_core.types import HistoryEntry, Migration

if TYPE_CHECKING:
    pass

_SHOWN = 10


@record(frozen=True)
class Known:
    """Something a migration can be called by: its id, name and file name (None when only the
    history knows it)."""

    id: str
    name: str
    filename: str | None = None

    def describe(self) -> str:
        from migretti_core.messages import printable

        return printable(self.filename or f"{self.id} ({self.name}, recorded, no file)")


def known(migrations: Iterable[Migration], history: Iterable[HistoryEntry] = ()) -> list[Known]:
    """The files, then the history rows whose file is gone, one per id."""
    found: dict[str, Known] = {}
    for migration in migrations:
        found.setdefault(migration.id, Known(migration.id, migration.name, migration.filename))
    for entry in history:
        found.setdefault(entry.id, Known(entry.id, entry.name))
    return list(found.values())


def resolve_id(
    given: str,
    migrations: Sequence[Migration],
    history: Sequence[HistoryEntry] = (),
    *,
    what: str = "",
) -> str:
    """The id of the one migration ``given`` names among the files (and history rows);
    ``what`` (an option such as ``--to``) opens the error message."""
    return resolve_known(given, known(migrations, history), what=what).id


def resolve_migration(migrations: Sequence[Migration], given: str) -> Migration:
    """The one migration file ``given`` names."""
    ident = resolve_id(given, migrations)
    return next(m for m in migrations if m.id == ident)


def resolve_known(given: str, candidates: Sequence[Known], *, what: str = "") -> Known:
    """The one candidate ``given`` names: tried in turn as an exact id or file name, an id in
    any case, a name, then an id prefix; the first kind that matches decides."""
    label = f"{what} " if what else ""
    text = given.strip()
    if "/" in text or "\\" in text:
        from pathlib import PurePath

        text = PurePath(text.replace("\\", "/")).name
    stem = text.removesuffix(".sql")
    lowered = text.lower()

    def exact(k: Known) -> bool:
        if k.id == text:
            return True
        if k.filename is None:
            # only the history knows it: its file, now gone, was named <id>_<name>.sql
            return stem == f"{k.id}_{k.name}"
        from pathlib import PurePath

        return stem in (k.filename, PurePath(k.filename).stem)

    def any_case(k: Known) -> bool:
        return k.id.lower() == lowered

    def by_name(k: Known) -> bool:
        return k.name == text or k.name.lower() == lowered

    def by_prefix(k: Known) -> bool:
        return k.id.lower().startswith(lowered)

    steps: tuple[Callable[[Known], bool], ...] = (exact, any_case, by_name, by_prefix)
    for matches_step in steps:
        matches = [k for k in candidates if matches_step(k)] if text else []
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(k.describe() for k in matches[:_SHOWN])
            more = f" and {len(matches) - _SHOWN} more" if len(matches) > _SHOWN else ""
            raise UsageError(
                f"{label}{given!r} is ambiguous: it matches {len(matches)} migrations: "
                f"{listed}{more}",
                hint="give more of the id, or the whole file name",
            )
    raise UsageError(
        f"{label}{given!r}: no such migration (no id, id prefix, name or file name matches)",
        hint="give its id, a unique prefix of the id, its name or its file name",
    )
