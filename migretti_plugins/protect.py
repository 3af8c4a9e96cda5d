"""Builtin ``protect``: which environments need a person's confirmation.

A profile named prod, production or live (any case), or with ``protected: true``, is
protected. The core then shows the target and the plan and asks for ``yes``; this plugin
only decides *whether*. Block it with ``-p no:protect`` to turn the rule off.
"""

from __future__ import annotations

from migretti_core import hookimpl
from migretti_core.types import Session

PROTECTED_NAMES = frozenset({"prod", "production", "live"})


@hookimpl
def mg_is_protected(session: Session) -> bool:
    config = session.config
    return config.protected or (config.env or "").lower() in PROTECTED_NAMES
