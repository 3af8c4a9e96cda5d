"""``${VAR}``, ``${VAR:-default}`` and ``$${`` in configuration text.

Shared by the ``config`` plugin (mg.yaml) and the ``fleet`` plugin (fleet files), so neither
imports the other; errors name the file and the key, never quoting a possible secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from migretti_core.errors import ConfigError

SECRET_KEY = re.compile(r"(?i)pass|secret|token|url|dsn")
REFERENCE = re.compile(r"\$\$\{|\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})?")


def interpolate(value: Any, environ: Mapping[str, str], label: str, path: tuple[str, ...]) -> Any:
    """``value`` (text, or lists and mappings of it) with its references replaced; ``path``
    is where it stands (``("database", "host")``), for errors."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ, label, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [
            interpolate(item, environ, label, (*path, f"[{index}]"))
            for index, item in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value
    key = _key_path(path)
    return REFERENCE.sub(lambda match: resolve_reference(match, value, environ, label, key), value)


def resolve_reference(
    match: re.Match[str], value: str, environ: Mapping[str, str], label: str, key: str
) -> str:
    """The text one ``${VAR}``, ``${VAR:-default}`` or ``$${`` reference stands for."""
    if match.group(0) == "$${":
        return "${"
    name, default = match.group(1), match.group(2)
    if name is None or (default is not None and "${" in default):
        raise ConfigError(
            f"{label}: {key}: invalid reference {_snippet(value, match.start(), key)} "
            "(use ${VAR} or ${VAR:-default}; write $${ for a literal ${)"
        )
    current = environ.get(name)
    if default is not None and not current:
        return default
    if current is None:
        raise ConfigError(
            f"{label}: {key}: environment variable {name} is not set",
            hint=f"set {name}, put it in .env beside {label}, or write ${{{name}:-default}}",
        )
    return current


def _key_path(path: tuple[str, ...]) -> str:
    text = ""
    for part in path:
        text += part if part.startswith("[") or not text else f".{part}"
    return text


def _snippet(value: str, start: int, key: str) -> str:
    """Where the bad reference is; its text only for keys that cannot hold a secret.

    Under ``database`` (a password, a URL with one) and in any key naming a password, secret
    or token, no part of the value is quoted: only the character position.
    """
    where = f"at character {start + 1}"
    if key.startswith("database") or SECRET_KEY.search(key):
        return where
    end = value.find("}", start)
    return f"{where}: {value[start : end + 1] if end != -1 else value[start : start + 20]!r}"
