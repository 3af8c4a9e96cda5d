"""Builtin ``protect``: which environments need a person's confirmation.

A profile named prod, production or live (any case), or with ``protected: true``, is
protected. The core then shows the target and the plan and asks for ``yes``; this plugin
only decides *whether*. Block it with ``-p no:protect`` to turn the rule off.
"""

from __future__ import annotations

from migretti_core import hookimpl
from migretti_core.types import Config, Key, Session

PROTECTED = Key("protected", "boolean", False, "ask for confirmation before executing SQL")
PROTECTED_NAMES = frozenset({"prod", "production", "live"})


def protected(config: Config) -> bool:
    """``protected:`` of mg.yaml (the profile's name is the other rule)."""
    from migretti_core.settings import top_level_setting

    return bool(top_level_setting(config, PROTECTED))


@hookimpl
def mg_config_sections() -> list[str]:
    return [PROTECTED.name]


@hookimpl
def mg_configure(config: Config) -> None:
    protected(config)  # a bad value stops every command, as it always did


@hookimpl
def mg_is_protected(session: Session) -> bool:
    config = session.config
    return protected(config) or (config.env or "").lower() in PROTECTED_NAMES
