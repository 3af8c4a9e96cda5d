"""A plugin's own mg.yaml section: YAML types kept, read-only, and typed readers.

The core's keys keep the text the user wrote (``password: 0123`` stays ``"0123"``), but a
section a plugin owns keeps what YAML says: ``enabled: false`` is ``False``, ``retries: 3`` is
``3``, a list is a ``list`` and a mapping a ``dict``. They are frozen (``FrozenList``,
``FrozenDict``), so one plugin cannot change what the next one reads.

``plugin_settings(config, "notify")`` wraps a section in ``Section``, whose readers accept
what people write (``"30s"``, ``"yes"``, a single value for a list, an interpolated
``"${FLAG}"``) and fail with a ``ConfigError`` naming ``section.key``. A plugin may declare
its keys once (``Key``: name, type, default, help) and read them all with ``Section.read``.

A plugin may also own top-level keys (the builtins' ``seeds_dir``, ``hook_timeout``,
``protected``): it names them in ``mg_config_sections`` and reads each with
``top_level_setting(config, key)``, whose errors name ``key`` alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from migretti_core.errors import ConfigError
from migretti_core.types import Key as Key  # declared with the types, read here

if TYPE_CHECKING:
    from migretti_core.types import Config

T = TypeVar("T")

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _read_only(*_: object, **__: object) -> NoReturn:
    raise TypeError("mg.yaml settings are read-only; copy them to change them")


class FrozenList(list[Any]):
    """A ``list`` (``isinstance(x, list)`` holds) that refuses every change."""

    __slots__ = ()
    append = extend = insert = remove = pop = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))


class FrozenDict(dict[str, Any]):
    """A ``dict`` (``isinstance(x, dict)`` holds) that refuses every change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


def freeze(value: Any) -> Any:
    """Deep read-only copy of plain YAML data (dicts, lists and scalars)."""
    if isinstance(value, Mapping):
        return FrozenDict({str(key): freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList(freeze(item) for item in value)
    return value


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


class Section(Mapping[str, Any]):
    """One plugin's mg.yaml section with typed readers; missing or empty keys give defaults."""

    def __init__(self, name: str, data: Mapping[str, Any], label: str = "mg.yaml") -> None:
        self.name = name
        self.label = label
        self._data = data

    # --- Mapping ----------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Section({self.name!r}, {dict(self._data)!r})"

    # --- errors -------------------------------------------------------------------------

    def error(self, key: str, problem: str) -> ConfigError:
        """A ``ConfigError`` naming the file and ``section.key``, for checks of your own."""
        where = f"{self.name}.{key}" if self.name else key
        return ConfigError(f"{self.label}: {where}: {problem}")

    def _value(self, key: str) -> Any:
        value = self._data.get(key)
        return None if value == "" else value

    # --- typed readers ------------------------------------------------------------------

    def text(self, key: str, default: str | None = None) -> str | None:
        """Text; numbers and booleans are turned back into text."""
        value = self._value(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise self.error(key, f"expected a single value, got {_kind(value)}")

    def boolean(self, key: str, default: bool = False) -> bool:
        """true/false, yes/no, on/off, 1/0 (any case)."""
        value = self._value(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self.error(key, f"expected true or false, got {_kind(value)}")

    def integer(self, key: str, default: int | None = None) -> int | None:
        value = self._value(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise self.error(key, f"expected an integer, got {_kind(value)}")

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self._value(key)
        if value is None:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise self.error(key, f"expected a number, got {_kind(value)}")

    def duration(self, key: str, default: float | None = None) -> float | None:
        """Seconds, from ``30``, ``30s``, ``500ms``, ``2m``, ``1h`` or ``1m30s``."""
        from migretti_core.durations import parse_duration

        value = self._value(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(key, f"expected a duration such as 30s, got {_kind(value)}")
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def strings(self, key: str, default: Sequence[str] = ()) -> list[str]:
        """A list of text; a single value is a list of one."""
        value = self._value(key)
        if value is None:
            return list(default)
        if isinstance(value, Mapping):
            raise self.error(key, f"expected a list of names, got {_kind(value)}")
        items = value if isinstance(value, list | tuple) else [value]
        result: list[str] = []
        for index, item in enumerate(items):
            if isinstance(item, Mapping | list | tuple) or item is None:
                raise self.error(f"{key}[{index}]", f"expected a single value, got {_kind(item)}")
            result.append(str(item).lower() if isinstance(item, bool) else str(item))
        return result

    def mapping(self, key: str) -> Mapping[str, Any]:
        """A nested mapping (empty when the key is missing)."""
        value = self._value(key)
        if value is None:
            return FrozenDict()
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {_kind(value)}")
        return value

    def choice(self, key: str, choices: Sequence[T], default: T) -> T:
        """One of ``choices`` (compared as text)."""
        value = self._value(key)
        if value is None:
            return default
        for choice in choices:
            if str(choice) == str(value):
                return choice
        allowed = ", ".join(str(c) for c in choices)
        raise self.error(key, f"expected one of {allowed}, got {_kind(value)}")

    def read(self, keys: Sequence[Key]) -> dict[str, Any]:
        """The section read against its declared ``keys`` (see ``Key``)."""
        return read_keys(self, keys)

    def check_keys(self, known: Sequence[str]) -> None:
        """Refuse keys this plugin does not know, with a did-you-mean."""
        for key in self._data:
            if key not in known:
                import difflib  # only once a key is wrong: mg's start-up does without it

                close = difflib.get_close_matches(key, list(known), n=1)
                guess = f"; did you mean '{close[0]}'?" if close else ""
                raise self.error(key, f"unknown key{guess} (valid keys: {', '.join(known)})")


def read_keys(section: Section, keys: Sequence[Key]) -> dict[str, Any]:
    """Every declared key read with its reader and default; unknown keys are refused."""
    section.check_keys([key.name for key in keys])
    return {key.name: read_key(section, key) for key in keys}


def read_key(section: Section, key: Key) -> Any:
    """One declared key, read with its reader and default."""
    if key.kind == "mapping":
        return section.mapping(key.name)
    if key.kind == "strings":
        return section.strings(key.name, key.default or ())
    if key.kind == "boolean":
        return section.boolean(key.name, bool(key.default))
    return getattr(section, key.kind)(key.name, key.default)


def name_the_profile(
    error: ConfigError, label: str, env: str | None, source: Mapping[str, Any]
) -> ConfigError:
    """``mg.yaml: lock_id: ...`` about a value the selected profile sets becomes
    ``mg.yaml: envs.staging.lock_id: ...``, so the user looks where the value is written.

    ``source`` is the file as written. A key path the profile does not set all the way down
    (``database.host`` when the profile sets only ``database.port``) stays as it was.
    """
    import re

    prefix = f"{label}: "
    profiles = source.get("envs")
    profile = profiles.get(env) if env and isinstance(profiles, Mapping) else None
    if not isinstance(profile, Mapping) or not error.message.startswith(prefix):
        return error
    rest = error.message[len(prefix) :]
    found = re.match(r"[A-Za-z_][\w.\[\]-]*", rest)
    if found is None:
        return error
    written: Any = profile
    for part in re.sub(r"\[\d+\]", "", found.group(0)).rstrip(".").split("."):
        if not isinstance(written, Mapping) or part not in written:
            return error
        written = written[part]
    error.message = f"{prefix}envs.{env}.{rest}"
    error.args = (error.message,)
    return error


def top_level_setting(config: Config, key: Key) -> Any:
    """A top-level mg.yaml key a plugin owns (named in its ``mg_config_sections``), read
    with its declared reader and default; errors name the file and the key."""
    label = config.label
    return read_key(Section("", config.settings, label), key)


def plugin_settings(config: Config, name: str) -> Section:
    """The section ``name`` of mg.yaml (empty when absent); an error when it is no mapping."""
    label = config.label
    value = config.settings.get(name)
    if value is None or value == "":
        return Section(name, FrozenDict(), label)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: {name}: expected a mapping of settings, got {_kind(value)}")
    return Section(name, value, label)
