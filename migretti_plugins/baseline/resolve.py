"""A migration named on the command line: full id, unique id prefix, name/slug or file name.

The rule is the core's (``migretti_core.resolve``), shared with ``--to`` and ``mg fix``.
"""

from __future__ import annotations

from collections.abc import Sequence

from migretti_core.resolve import resolve_migration
from migretti_core.types import Migration


def resolve(migrations: Sequence[Migration], given: str) -> Migration:
    """The one migration ``given`` names; exit 2 when none or several match."""
    return resolve_migration(migrations, given)
