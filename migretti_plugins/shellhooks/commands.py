"""The ``hooks:`` section of mg.yaml: the commands to run, checked, with each ``${VAR}``
turned into a reference to an environment variable (see docs/hooks.md).

The commands are built from the file as written (``Config.source``) and the variables the
configuration was resolved against (``Config.environ``), not from ``Config.settings``,
where the loader pasted each value into the text like in every other section: a value
holding quotes, ``;`` or ``$(...)`` must reach the shell as data, never as code.

Decisions:

- Every profile's ``hooks`` is checked for unknown hook names, selected or not, so a typo in
  ``envs.prod.hooks`` stops every command, not only the deploy to prod.
- A profile's entry replaces the top-level one; an empty entry disables the hook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from migretti_core.errors import ConfigError
from migretti_core.interpolation import REFERENCE, resolve_reference
from migretti_core.types import Config

HOOK_NAMES = ("pre_apply", "post_apply", "pre_rollback", "post_rollback", "on_failure")


@dataclass(frozen=True)
class HookCommand:
    """A command for ``/bin/sh -c`` and the variables its ``${VAR}`` references became."""

    command: str
    environment: Mapping[str, str] = field(default_factory=dict)


def hook_commands(config: Config) -> dict[str, HookCommand]:
    """The selected profile's hooks by name; a ``ConfigError`` for anything wrong."""
    label = config.label
    source = config.source
    _check_names(source.get("hooks", ""), label, "hooks")
    profiles = source.get("envs")
    if isinstance(profiles, Mapping):
        for name, profile in profiles.items():
            if isinstance(profile, Mapping):
                _check_names(profile.get("hooks", ""), label, f"envs.{name}.hooks")
    commands: dict[str, HookCommand] = {}
    for hook, command in _hooks(_selected(source, config.env), label).items():
        text, values = _refer(command, config.environ, label, f"hooks.{hook}")
        commands[hook] = HookCommand(text, values)
    return commands


def _check_names(hooks: Any, label: str, where: str) -> None:
    if not isinstance(hooks, Mapping):
        return
    for name in hooks:
        if name not in HOOK_NAMES:
            raise ConfigError(
                f"{label}: {where}: unknown hook '{name}' (valid hooks: {', '.join(HOOK_NAMES)})"
            )


def _selected(source: Mapping[str, Any], env: str | None) -> Any:
    """``hooks`` of the selected profile merged over the top-level one, as written."""
    top = source.get("hooks", "")
    profiles = source.get("envs")
    profile = profiles.get(env) if env is not None and isinstance(profiles, Mapping) else None
    if not isinstance(profile, Mapping) or "hooks" not in profile:
        return top
    over = profile["hooks"]
    if isinstance(top, Mapping) and isinstance(over, Mapping):
        return {**top, **over}
    return over


def _hooks(value: Any, label: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{label}: hooks: expected a mapping of event to command, got {_kind(value)}"
        )
    hooks: dict[str, str] = {}
    for name, command in value.items():
        if not isinstance(command, str):
            raise ConfigError(
                f"{label}: hooks.{name}: expected a shell command, got {_kind(command)}"
            )
        if command.strip():
            hooks[name] = command
    return hooks


def _refer(
    command: str, environ: Mapping[str, str], label: str, key: str
) -> tuple[str, dict[str, str]]:
    """Each ``${VAR}`` (or ``${VAR:-default}``) is resolved as everywhere else, but its value
    goes into an environment variable ``MG_VAR_<VAR>`` and the command refers to that
    variable: quotes, ``;`` or ``$(...)`` in a value are never parsed by the shell.
    ``$${`` stays a literal ``${`` for the shell's own expansions.
    """
    values: dict[str, str] = {}
    if "${" not in command:
        return command, values

    def refer(match: re.Match[str]) -> str:
        text = resolve_reference(match, command, environ, label, key)
        if match.group(0) == "$${":
            return text
        variable = base = f"MG_VAR_{match.group(1)}"
        number = 1
        while values.get(variable, text) != text:
            number += 1
            variable = f"{base}_{number}"
        values[variable] = text
        return "${" + variable + "}"

    return REFERENCE.sub(refer, command), values


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)
