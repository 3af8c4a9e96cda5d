"""Builtin ``protect``: which environments need a person's confirmation.

A profile named prod, production or live (any case), or with ``protected: true``, is
protected. The core then shows the target and the plan and asks for ``yes``; this plugin
only decides *whether*. Block it with ``-p no:protect`` to turn the rule off.
"""

from __future__ import annotations

from migretti_core import hookimpl
from migretti_core.settings import Key, top_level_setting
from migretti_core.types import Config, Session

PROTECTED = Key("protected", "boolean", False, "ask for confirmation before executing SQL")
PROTECTED_NAMES = frozenset({"prod", "production", "live"})


@hookimpl
def mg_config_sections() -> list[str]:
    return [PROTECTED.name]


@hookimpl
def mg_configure(config: Config) -> None:
    top_level_setting(config, PROTECTED)  # a bad value stops every command, as it always did


@hookimpl
def mg_is_protected(session: Session) -> bool:
    config = session.config
    return (
        bool(top_level_setting(config, PROTECTED)) or (config.env or "").lower() in PROTECTED_NAMES
    )
