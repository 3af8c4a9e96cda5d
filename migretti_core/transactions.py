"""Which statements end or nest the transaction they run in, by their first two words.

Shared by the builtins that refuse them before anything runs (``split`` for migrations,
``seeds`` for seeds); each reads those words its own way.
"""

from __future__ import annotations


def transaction_control(first: str, second: str) -> str | None:
    """The name of a statement starting with the lower-case words ``first`` and ``second``
    if it would end or nest the transaction around it, else None. ``ROLLBACK TO
    SAVEPOINT``, ``COMMIT PREPARED`` and ``BEGIN ATOMIC`` (a function body) do neither."""
    if first in ("commit", "abort", "end") and second != "prepared":
        return first.upper()
    if first == "rollback" and second not in ("to", "prepared"):
        return "ROLLBACK"
    if first == "begin" and second != "atomic":
        return "BEGIN"
    if first in ("start", "prepare") and second == "transaction":
        return f"{first.upper()} TRANSACTION"
    return None
