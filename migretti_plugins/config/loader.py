"""mg.yaml: profiles, ``.env``, ``${VAR}`` interpolation and the typed keys.

Scalars are read as the text the user wrote (YAML's base loader resolves no types), so
``password: 0123`` or ``password: yes`` reach the server unchanged; the few typed keys are
converted here, each error naming the file and the key.

Decisions (see also docs/configuration.md):

- An empty value (``key:``) means "not set": the default applies, an empty ``database`` or
  ``plugins`` is empty.
- A profile whose ``database`` sets ``url`` replaces the top-level ``database`` whole, so
  leftover top-level host or password parameters never override the profile's URL.
- ``database.embedded`` becomes a bool; every other ``database`` value stays a string.
- ``MG_DATABASE_URL`` or ``MG_LOCK_ID`` set to an empty string count as unset; with
  ``MG_DATABASE_URL`` set, the file's ``database`` is not interpolated at all.
- The loader knows only the core's keys. A builtin's top-level keys (``seeds_dir``,
  ``hook_timeout``, ``hooks``, ``protected``) are declared and read by that builtin, like any
  plugin's section (``migretti_core.settings.top_level_setting``).
- ``Config.source`` is the file as written (every profile, nothing resolved) and
  ``Config.environ`` the variables references were resolved against (the environment over
  ``.env``), for a plugin that checks every profile or resolves references itself: the
  ``shellhooks`` plugin turns each ``${VAR}`` of a hook command into an environment variable
  instead of text.
- ``Config.settings`` is the selected profile merged and interpolated (without ``envs``;
  a section whose owner declares it ``as_written`` stays as written, ``fleets`` and
  ``hooks`` among the builtins, for the plugin to resolve what it uses); its
  ``database`` is the effective one. The core's keys hold the text as written (use the
  ``Config`` fields for typed values); any other top-level key is a plugin's section and
  keeps its YAML types (bool, int, float, None, str, list, dict), frozen
  (``migretti_core.settings``). A quoted scalar is always text.
- Duplicate keys in one mapping are an error; YAML merge keys (``<<: *base``) work.
- ``.env`` is read with python-dotenv's own rules; a variable already set wins, inside its
  ``${VAR}`` references too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from migretti_core.durations import parse_duration, parse_server_timeout
from migretti_core.errors import ConfigError, ConfigRefused
from migretti_core.interpolation import interpolate, with_dotenv
from migretti_core.settings import FrozenDict, FrozenList
from migretti_core.types import (
    DEFAULT_LOCK_ID,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_TABLE_LOCK_RETRIES,
    DEFAULT_TABLE_LOCK_TIMEOUT,
    Config,
    ConfigRequest,
)

if TYPE_CHECKING:
    from yaml.nodes import Node

DEFAULT_FILE = "mg.yaml"
CORE_KEYS = frozenset(
    {
        "database",
        "lock_id",
        "lock_timeout",
        "envs",
        "plugins",
        "migrations_dir",
        "table_lock_timeout",
        "table_lock_retries",
        "statement_timeout",
    }
)
BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})

# Values built again through YAML aliases before mg refuses the file (see _Expansion).
ALIAS_BUDGET = 10_000


def load_config(request: ConfigRequest) -> Config:
    """Find, parse, merge and interpolate the configuration for the selected profile."""
    path, label = _locate(request)
    data: dict[str, Any] = _parse_yaml(path, label) if path is not None else {}
    return build_config(data, request, path, label)


def build_config(
    data: dict[str, Any], request: ConfigRequest, path: Path | None, label: str = DEFAULT_FILE
) -> Config:
    """The ``Config`` of parsed mg.yaml ``data`` (``migretti_core.testing`` builds through it)."""
    root = path.parent if path is not None else _absolute(request.cwd)
    environ = with_dotenv(root / ".env", request.environ, label)
    # --env, else MG_ENV of the environment, else MG_ENV of the .env beside the file
    env_name = request.env_name or environ.get("MG_ENV") or None
    try:
        return _checked(data, request, path, label, root, environ, env_name)
    except ConfigError as exc:
        _mask_passwords(exc, data, environ, env_name)
        raise


def _mask_passwords(
    exc: ConfigError, data: dict[str, Any], environ: Mapping[str, str], env_name: str | None
) -> None:
    """Mask in ``exc`` the passwords the file and the environment give, as every later
    message masks them: the error comes before mg knows them, and it may quote a password
    pasted into another key (``lock_id: <the password>``)."""
    sections = [data.get("database")]
    profiles = data.get("envs")
    if env_name is not None and isinstance(profiles, dict):
        profile = profiles.get(env_name)
        sections.append(profile.get("database") if isinstance(profile, dict) else None)
    values = [(str(k), v) for s in sections if isinstance(s, dict) for k, v in s.items()]
    values += [
        ("url", environ.get("MG_DATABASE_URL", "")),
        ("password", environ.get("PGPASSWORD", "")),
    ]
    from migretti_core.redact import redact, url_passwords

    secrets: set[str] = set()
    for key, value in values:
        if not isinstance(value, str) or not value:
            continue
        try:
            value = interpolate(value, environ, "", ())
        except ConfigError:
            continue  # an unset variable: no password to mask
        if key.lower().endswith("password"):
            secrets.add(value)
        if "@" in value:
            secrets.update(url_passwords(value))
    if secrets:
        exc.message = redact(exc.message, secrets)
        exc.hint = redact(exc.hint, secrets) if exc.hint else exc.hint
        exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)


def _checked(
    data: dict[str, Any],
    request: ConfigRequest,
    path: Path | None,
    label: str,
    root: Path,
    environ: dict[str, str],
    env_name: str | None,
) -> Config:
    """``build_config`` once the environment and the profile's name are known."""
    # Without check_unknown (a first pass before config-listed plugins declare their
    # sections), any top-level key is accepted.
    valid = CORE_KEYS | request.known_sections if request.check_unknown else None

    _check_keys(data, valid, label, "")
    profiles = _profiles(data.get("envs", ""), valid, label)
    merged = {key: value for key, value in data.items() if key != "envs"}
    if env_name is not None:
        if path is None:
            raise ConfigError(f"profile '{env_name}' is not defined: there is no {label} in {root}")
        if env_name not in profiles:
            defined = f"defined: {', '.join(profiles)}" if profiles else "no profiles defined"
            raise ConfigError(f"profile '{env_name}' is not defined in {label} ({defined})")
        if profiles[env_name].get("database") == "":
            # Replacing the top-level database by nothing would connect to libpq's defaults
            # (PG* variables, a local server): another database, without a word.
            raise ConfigError(
                f"{label}: envs.{env_name}.database: empty; leave it out to use the "
                "top-level database, or give its keys",
                hint="url: postgresql:// connects with libpq's defaults and PG* variables",
            )
        merged = _merge_profile(merged, profiles[env_name])

    try:
        return _build(merged, data, request, path, label, root, environ, env_name)
    except ConfigError as exc:
        from migretti_core.settings import name_the_profile

        name_the_profile(exc, label, env_name, data)
        raise


def _build(
    merged: dict[str, Any],
    data: dict[str, Any],
    request: ConfigRequest,
    path: Path | None,
    label: str,
    root: Path,
    environ: dict[str, str],
    env_name: str | None,
) -> Config:
    """The selected profile merged over the file's keys, read, checked and interpolated."""
    url = environ.get("MG_DATABASE_URL", "")
    if url:
        merged.pop("database", None)
    # Sections whose owners resolve ${VAR} themselves (Key.as_written) stay as written.
    written = request.written_sections
    if not request.check_unknown:
        # The first look, for ``plugins:``: a section no plugin has declared yet stays as
        # written, so an unset ${VAR} in it cannot hide that nobody owns it (the full read,
        # once plugins declared their sections, interpolates it or calls it unknown).
        written = written | (merged.keys() - CORE_KEYS - request.known_sections)
    settings = interpolate(
        {key: value for key, value in merged.items() if key not in written},
        environ,
        label,
        (),
    )
    settings.update({key: merged[key] for key in written if key in merged})
    database = {"url": url} if url else _database(settings.get("database", ""), label)
    settings["database"] = database

    lock_id = _lock_id(settings.get("lock_id", ""), label, "lock_id")
    if environ.get("MG_LOCK_ID", ""):
        lock_id = _lock_id(environ["MG_LOCK_ID"], "MG_LOCK_ID", "")

    return Config(
        path=path,
        root=root,
        env=env_name,
        settings=_freeze_settings(settings),
        database=_freeze(database),
        migrations_dir=_directory(settings.get("migrations_dir", ""), "migrations", root, label),
        lock_id=lock_id,
        lock_timeout=_timeout(settings, "lock_timeout", DEFAULT_LOCK_TIMEOUT, label, zero=True),
        table_lock_timeout=_timeout_or_off(
            settings, "table_lock_timeout", DEFAULT_TABLE_LOCK_TIMEOUT, label
        ),
        table_lock_retries=_count(
            settings.get("table_lock_retries", ""), DEFAULT_TABLE_LOCK_RETRIES, label
        ),
        statement_timeout=_timeout_or_off(settings, "statement_timeout", 0.0, label),
        plugins=_plugins(settings.get("plugins", ""), root, label),
        environ=MappingProxyType(environ),
        source=_as_written(data),
        label=label,
        url_origin=request.url_origin,
    )


def _locate(request: ConfigRequest) -> tuple[Path | None, str]:
    """The config file (None when there is no mg.yaml here or above) and its name."""
    from migretti_core.configfile import find_config

    return find_config(request.cwd, request.config_path)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _parse_yaml(path: Path, label: str) -> dict[str, Any]:
    from migretti_core.configfile import read_bounded

    raw = read_bounded(path, label)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not valid UTF-8 (byte {exc.start})") from None
    return parse_text(text, label)


def parse_text(text: str, label: str = DEFAULT_FILE) -> dict[str, Any]:
    """mg.yaml text as plain data: scalars as written, duplicate keys refused."""
    if _only_comments(text):
        return {}  # an empty YAML stream: what yaml.compose reads as nothing
    import yaml

    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    try:
        node = yaml.compose(text, Loader=loader)
        data = _construct(node, set(), _Expansion()) if node is not None else {}
    except _AliasBudget as exc:
        raise ConfigRefused(
            f"{label}: YAML aliases expand past {ALIAS_BUDGET} values (at line {exc.line}); "
            "mg does not expand them further"
        ) from None
    except RecursionError:
        raise ConfigRefused(f"{label}: nested too deeply") from None
    except yaml.reader.ReaderError as exc:
        # the reader gives a character position; the line is what a user looks for
        at = text.count("\n", 0, exc.position) + 1
        point = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        code = f"#x{point:04x}"
        raise ConfigError(
            f"{label}: invalid YAML at line {at}: character {code} is not allowed "
            "(a YAML file cannot hold control characters)"
        ) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        where = f" at line {line}" if line is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "unknown problem").split())
        raise ConfigError(f"{label}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {' '.join(str(exc).split())}") from None
    if data == "":
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of keys, not {_kind(data)}")
    return data


_BLANK_OR_COMMENT = frozenset("\t\n\r")


def _only_comments(text: str) -> bool:
    """True when ``text`` is blank lines and ``#`` comments only, in printable ASCII: an
    empty YAML document, known without importing PyYAML (about 90 M instructions, more
    than the rest of reading the configuration). A project whose database comes from the
    environment (``MG_DATABASE_URL``, ``PG*``) often has such an mg.yaml. Anything else,
    including a control character YAML would refuse, goes to the YAML parser."""
    if not text.isascii():
        return False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith("#"):
            return False
    return all(" " <= char < "\x7f" or char in _BLANK_OR_COMMENT for char in text)


class _AliasBudget(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Expansion:
    """Counts nodes built again through an alias (or ``<<``), so that nested aliases (a
    "billion laughs" file of a few hundred bytes) stop at ``ALIAS_BUDGET`` instead of
    taking minutes and gigabytes."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeated = 0

    def enter(self, node: Node) -> None:
        if id(node) not in self.seen:
            self.seen.add(id(node))
            return
        self.repeated += 1
        if self.repeated > ALIAS_BUDGET:
            raise _AliasBudget(node.start_mark.line + 1)


def _construct(node: Node, active: set[int], expansion: _Expansion) -> Any:
    """Plain data from a YAML node: scalars as written, duplicates refused, ``<<`` merged."""
    from yaml import MarkedYAMLError
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    expansion.enter(node)
    if isinstance(node, ScalarNode):
        if "\0" in node.value:
            # A path, a hook command or a connection setting cannot carry one: refused
            # here, in one line, instead of cutting the text short or failing deep inside.
            raise MarkedYAMLError(
                problem="a NUL character (\\0) in a value", problem_mark=node.start_mark
            )
        return _Plain(node.value) if node.style in (None, "") and node.tag == _STR else node.value
    if id(node) in active:
        raise MarkedYAMLError(problem="recursive alias", problem_mark=node.start_mark)
    active = active | {id(node)}
    if isinstance(node, SequenceNode):
        return [_construct(item, active, expansion) for item in node.value]
    if not isinstance(node, MappingNode):
        raise MarkedYAMLError(problem="unsupported node", problem_mark=node.start_mark)
    own: dict[str, Any] = {}
    inherited: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if (
            isinstance(key_node, ScalarNode)
            and key_node.style in (None, "")
            and (key_node.value == "<<")
        ):
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                merged = _construct(source, active, expansion)
                if not isinstance(merged, dict):
                    raise MarkedYAMLError(
                        problem="'<<' expects a mapping or a list of mappings",
                        problem_mark=source.start_mark,
                    )
                for key, value in merged.items():
                    inherited.setdefault(key, value)
            continue
        if not isinstance(key_node, ScalarNode):
            raise MarkedYAMLError(
                problem="a key must be a plain string", problem_mark=key_node.start_mark
            )
        if key_node.value in own:
            raise MarkedYAMLError(
                problem=f"duplicate key '{key_node.value}'", problem_mark=key_node.start_mark
            )
        own[key_node.value] = _construct(value_node, active, expansion)
    return {**inherited, **own}


_STR = "tag:yaml.org,2002:str"


class _Plain(str):
    """An unquoted scalar: text for the core's keys, its YAML type in a plugin's section."""

    __slots__ = ()


def _typed(value: Any) -> Any:
    """A plugin's section as YAML types it (bool, int, float, None, str, list, dict), frozen."""
    if isinstance(value, dict):
        return FrozenDict({key: _typed(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList(_typed(item) for item in value)
    if isinstance(value, _Plain):
        from yaml.constructor import SafeConstructor
        from yaml.nodes import ScalarNode
        from yaml.resolver import Resolver

        text = str(value)
        tag = Resolver().resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        if tag.rsplit(":", 1)[-1] in ("bool", "int", "float", "null"):
            return SafeConstructor().construct_object(ScalarNode(tag, text))
        return text
    return value


def _check_keys(
    data: Mapping[str, Any], valid: frozenset[str] | None, label: str, where: str
) -> None:
    """Refuse unknown keys (``valid`` None accepts any) and ``envs`` in a profile."""
    prefix = f"{label}: {where}: " if where else f"{label}: "
    if where and "envs" in data:
        raise ConfigError(f"{prefix}a profile cannot define 'envs'")
    choices = sorted(valid - {"envs"} if where else valid) if valid is not None else []
    for key in data:
        if valid is None or key in choices:
            continue
        import difflib

        close = difflib.get_close_matches(key, choices, n=1)
        guess = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{prefix}unknown key '{key}'{guess} (valid keys: {', '.join(choices)})")


def _profiles(envs: Any, valid: frozenset[str] | None, label: str) -> dict[str, dict[str, Any]]:
    if envs == "":
        return {}
    if not isinstance(envs, dict):
        raise ConfigError(f"{label}: envs: expected a mapping of profiles, got {_kind(envs)}")
    profiles: dict[str, dict[str, Any]] = {}
    for name, profile in envs.items():
        if profile == "":
            profile = {}
        if not isinstance(profile, dict):
            raise ConfigError(f"{label}: envs.{name}: expected a mapping, got {_kind(profile)}")
        _check_keys(profile, valid, label, f"envs.{name}")
        profiles[name] = profile
    return profiles


def _merge_profile(base: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    database = profile.get("database")
    if isinstance(database, dict) and "url" in database:
        base = {key: value for key, value in base.items() if key != "database"}
    return _deep_merge(base, profile)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merged recursively; any other value in ``over`` replaces the base one."""
    result = dict(base)
    for key, value in over.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            result[key] = _deep_merge(current, value)
        else:
            result[key] = value
    return result


def _database(value: Any, label: str) -> dict[str, Any]:
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{label}: database: expected a mapping of connection parameters "
            f"(host, port, user, dbname, ... or url), got {_kind(value)}"
        )
    database: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(
                f"{label}: database.{key}: expected a single value, got {_kind(item)}"
            )
        if key == "embedded":
            database[key] = _bool(item, label, "database.embedded")
        else:
            database[key] = str(item)
        _check_connection_value(str(key), str(item), label)
    return database


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _check_connection_value(key: str, value: str, label: str) -> None:
    """Values libpq would only refuse when connecting (exit 1, "cannot connect"), refused as
    the configuration errors they are: a port out of range, an sslmode that is none."""
    if key == "port":
        for part in value.split(","):
            if part.strip().isdigit() and not 1 <= int(part) <= 65535:
                raise ConfigError(
                    f"{label}: database.port: {value!r} is not a port number (1 to 65535)"
                )
    elif key == "sslmode" and value.strip() not in _SSLMODES:
        import difflib

        close = difflib.get_close_matches(value.strip().lower(), _SSLMODES, n=1)
        also = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"{label}: database.sslmode: {value!r} is not an sslmode ({', '.join(_SSLMODES)}){also}"
        )


def _is_set(value: Any) -> bool:
    return value is not None and value != ""


def _lock_id(value: Any, label: str, key: str) -> int:
    if not _is_set(value):
        return DEFAULT_LOCK_ID
    prefix = f"{label}: {key}" if key else label
    if not isinstance(value, str) or not re.fullmatch(r"\s*[+-]?\d+\s*", value):
        raise ConfigError(f"{prefix}: expected an integer, got {_kind(value)}")
    number = int(value)
    if not BIGINT_MIN <= number <= BIGINT_MAX:
        raise ConfigError(f"{prefix}: {number} is outside the bigint range of advisory locks")
    return number


def _timeout(
    settings: Mapping[str, Any],
    key: str,
    default: float,
    label: str,
    *,
    zero: bool,
    parse: Callable[[str], float] = parse_duration,
) -> float:
    """Seconds; ``zero`` allows 0 (for the lock: try once, do not wait)."""
    value = settings.get(key, "")
    if not _is_set(value):
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{label}: {key}: expected a duration such as 30s, got {_kind(value)}")
    try:
        seconds = parse(value)
    except ValueError as exc:
        raise ConfigError(f"{label}: {key}: {exc}") from None
    if seconds == 0 and not zero:
        raise ConfigError(f"{label}: {key}: must be more than zero, got {value!r}")
    return seconds


def _timeout_or_off(settings: Mapping[str, Any], key: str, default: float, label: str) -> float:
    """Seconds, or 0 for ``off`` (PostgreSQL's own meaning of a zero timeout)."""
    value = settings.get(key, "")
    if isinstance(value, str) and value.strip().lower() in _FALSE | {"none"}:
        return 0.0
    return _timeout(settings, key, default, label, zero=True, parse=parse_server_timeout)


def _count(value: Any, default: int, label: str) -> int:
    if not _is_set(value):
        return default
    text = str(value).strip()
    if not text.isdigit():
        raise ConfigError(f"{label}: table_lock_retries: expected a whole number, got {value!r}")
    return int(text)


def _bool(value: Any, label: str, key: str) -> bool:
    if not _is_set(value):
        return False
    if isinstance(value, str):
        lowered = value.strip().lower()
        # The words every boolean of mg.yaml takes (protected, lint.*: Settings.boolean).
        if lowered in _TRUE or lowered == "1":
            return True
        if lowered in _FALSE or lowered == "0":
            return False
    raise ConfigError(f"{label}: {key}: expected true or false, got {_kind(value)}")


def _directory(value: Any, default: str, root: Path, label: str) -> Path:
    if not _is_set(value):
        value = default
    if not isinstance(value, str):
        raise ConfigError(f"{label}: migrations_dir: expected a directory path, got {_kind(value)}")
    return Path(os.path.normpath(root / os.path.expanduser(value)))


def _plugins(value: Any, root: Path, label: str) -> tuple[str, ...]:
    if not _is_set(value):
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{label}: plugins: expected a list of names, got {_kind(value)}")
    plugins: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"{label}: plugins[{index}]: expected a module name or .py path, got {_kind(item)}"
            )
        name = item.strip()
        if name.startswith("no:"):
            blocked = name[3:].strip() or "NAME"
            raise ConfigError(
                f"{label}: plugins[{index}]: {name!r} would block a plugin, which {label} "
                f"cannot do: it lists plugins to load",
                hint=f"block it with -p no:{blocked} or MG_DISABLE_PLUGINS={blocked}",
            )
        if name.endswith(".py"):
            name = os.path.normpath(root / os.path.expanduser(name))
        plugins.append(name)
    return tuple(plugins)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _freeze(value: Any) -> Any:
    """Read-only copies, so a plugin cannot change what the next one reads."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return str(value) if isinstance(value, _Plain) else value


def _as_written(value: Any) -> Any:
    """The file's data as written: text, read-only lists and mappings."""
    if isinstance(value, dict):
        return FrozenDict({key: _as_written(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList(_as_written(item) for item in value)
    return str(value) if isinstance(value, str) else value


def _freeze_settings(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """The core's keys as text; every other top-level key is a plugin's section, typed."""
    return MappingProxyType(
        {
            key: _freeze(value) if key in CORE_KEYS else _typed(value)
            for key, value in settings.items()
        }
    )
