"""``${VAR}``, ``${VAR:-default}`` and ``$${`` in configuration text.

Shared by the ``config`` plugin (mg.yaml) and the ``fleet`` plugin (fleet files), so neither
imports the other; errors name the file and the key, never quoting a possible secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from migretti_core.errors import ConfigError

SECRET_KEY = re.compile(r"(?i)pass|secret|token|url|dsn")
REFERENCE = re.compile(r"\$\$\{|\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})?")


def interpolate(
    value: Any,
    environ: Mapping[str, str],
    label: str,
    path: tuple[str, ...],
    dotenv_beside: str | None = None,
) -> Any:
    """``value`` (text, or lists and mappings of it) with its references replaced; ``path``
    is where it stands (``("database", "host")``), for errors; ``dotenv_beside`` is the file
    the ``.env`` lies beside (default: ``label``), for the hint of an unset variable."""
    if isinstance(value, Mapping):
        return {
            key: interpolate(item, environ, label, (*path, str(key)), dotenv_beside)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            interpolate(item, environ, label, (*path, f"[{index}]"), dotenv_beside)
            for index, item in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value
    key = _key_path(path)
    return REFERENCE.sub(
        lambda match: resolve_reference(match, value, environ, label, key, dotenv_beside), value
    )


def resolve_reference(
    match: re.Match[str],
    value: str,
    environ: Mapping[str, str],
    label: str,
    key: str,
    dotenv_beside: str | None = None,
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
            hint=f"set {name}, put it in .env beside {dotenv_beside or label}, "
            f"or write ${{{name}:-default}}",
        )
    return current


def _key_path(path: tuple[str, ...]) -> str:
    text = ""
    for part in path:
        text += part if part.startswith("[") or not text else f".{part}"
    return text


def _snippet(value: str, start: int, key: str) -> str:
    """Where the bad reference is; its text only for keys that cannot hold a secret.

    Under ``database`` and ``fleets`` (a password, a URL with one), ``hooks`` (a command
    line may hold a token) and in any key naming a password, secret or token, no part of the
    value is quoted: only the character position.
    """
    where = f"at character {start + 1}"
    if key.startswith(("database", "fleets", "hooks")) or SECRET_KEY.search(key):
        return where
    end = value.find("}", start)
    return f"{where}: {value[start : end + 1] if end != -1 else value[start : start + 20]!r}"


def with_dotenv(
    dotenv_path: Path, environ: Mapping[str, str], config_label: str | None = None
) -> dict[str, str]:
    """``.env`` values under the real environment: a variable already set always wins.

    A ``.env`` that exists but cannot be read (permissions, not a regular file, 1 MiB or
    more, not UTF-8, a line python-dotenv cannot parse, a NUL in a value) is an error naming
    it, never silently skipped: as the file beside ``config_label`` (mg.yaml as messages
    name it: ``.env``, ``../.env``) when given, else by its path.
    """
    merged: dict[str, str] = {}
    if os.path.lexists(dotenv_path):
        import io

        from dotenv.main import DotEnv

        from migretti_core.configfile import read_bounded
        from migretti_core.messages import printable

        if config_label is not None:
            label = os.path.join(os.path.dirname(config_label), ".env")
        else:
            label = printable(str(dotenv_path))
        raw = read_bounded(dotenv_path, label, what="environment file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{label}: not valid UTF-8 (byte {exc.start})") from None
        from dotenv.parser import parse_stream

        for binding in parse_stream(io.StringIO(text)):
            if binding.error:
                # python-dotenv would skip the line with a warning of its own on stderr,
                # outside mg's output (and the JSON log): say which line, as for mg.yaml.
                raise ConfigError(
                    f"{label}:{binding.original.line}: not a NAME=value line python-dotenv "
                    "can read (an unterminated quote?)"
                )
        pairs = DotEnv(None, stream=io.StringIO(text), interpolate=False).parse()
        values = _resolve_dotenv(pairs, environ)
        for key, value in values.items():
            if value is not None and "\0" in value:
                raise ConfigError(f"{label}: {key}: a NUL character (\\0) in its value")
        merged.update({key: value for key, value in values.items() if value is not None})
    merged.update(environ)
    return merged


def _resolve_dotenv(
    pairs: Iterable[tuple[str, str | None]], environ: Mapping[str, str]
) -> dict[str, str | None]:
    """``.env``'s ``${VAR}`` references resolved as python-dotenv's ``load_dotenv`` (without
    ``override``) does: from the lines above, under the environment, so a variable already
    set wins inside them too, as it wins for the variable itself."""
    from dotenv.variables import parse_variables

    resolved: dict[str, str | None] = {}
    for key, value in pairs:
        if value is None:
            resolved[key] = None
            continue
        scope: dict[str, str | None] = {**resolved, **environ}
        resolved[key] = "".join(atom.resolve(scope) for atom in parse_variables(value))
    return resolved
