"""A migration named on the command line: full id, unique id prefix, name/slug or file name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from migretti_core.errors import UsageError
from migretti_core.types import Migration


def resolve(migrations: Sequence[Migration], given: str) -> Migration:
    """The one migration ``given`` names; exit 2 when none or several match."""
    text = given.strip()
    if "/" in text or "\\" in text:
        text = Path(text).name
    exact = [
        m
        for m in migrations
        if text in (m.id, m.filename, m.path.stem) or text.lower() == m.id.lower()
    ]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [m for m in migrations if m.name == text or m.name == text.lower()]
    if not matches:
        matches = [
            m for m in migrations if m.id.startswith(text) or m.id.lower().startswith(text.lower())
        ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(
            f"no migration matches {given!r} (an id, an id prefix, a name or a file name)"
        )
    listed = ", ".join(m.filename for m in matches[:10])
    more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
    raise UsageError(f"{given!r} is ambiguous: it matches {listed}{more}")
