"""The ``lint:`` section of mg.yaml, checked when the configuration is loaded.

::

    lint:
      enable: [require-table-schema]      # or [all]
      disable: [prefer-robust-stmts]      # or [all]: only the rules in enable
      severity: {ban-drop-column: warning}
      server_version: 15                  # else the connected target's, else 13
      on_apply: warn                      # warn (default) | block | off
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any

from migretti_core.errors import ConfigError, UsageError
from migretti_core.records import record
from migretti_core.types import Config, Severity
from migretti_plugins.lint.catalogue import RULES

DEFAULT_SERVER_VERSION = 13
ON_APPLY = ("warn", "block", "off")
_KEYS = ("enable", "disable", "severity", "server_version", "on_apply")


@record(frozen=True)
class LintSettings:
    """The lint settings in force: rules enabled and disabled, and severities changed."""

    enable: frozenset[str] = frozenset()
    disable: frozenset[str] = frozenset()
    severity: Mapping[str, Severity] = field(default_factory=dict)
    server_version: int | None = None
    on_apply: str = "warn"

    def enabled(
        self, extra_enable: Iterable[str] = (), extra_disable: Iterable[str] = ()
    ) -> set[str]:
        """The rules that run: defaults, then mg.yaml, then the command line."""
        chosen = {name for name, rule in RULES.items() if rule.enabled}
        for enable, disable in (
            (self.enable, self.disable),
            (frozenset(extra_enable), frozenset(extra_disable)),
        ):
            if "all" in disable:
                chosen = set()
            if "all" in enable:
                chosen = set(RULES)
            chosen |= enable - {"all"}
            chosen -= disable - {"all"}
        return chosen

    def severity_of(self, rule: str) -> Severity:
        known = RULES.get(rule)
        return self.severity.get(rule) or (known.severity if known else "warning")


def check_rule_names(names: Iterable[str], where: str, error: type[Exception]) -> None:
    for name in names:
        if name != "all" and name not in RULES:
            close = __import__("difflib").get_close_matches(name, sorted(RULES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise error(f"{where}: unknown lint rule {name!r}{hint}")


def _names(value: Any, key: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"lint.{key}: expected a list of rule names")
    names = frozenset(value)
    check_rule_names(names, f"lint.{key}", ConfigError)
    return names


def parse_server_version(value: Any, where: str) -> int:
    """``13``, ``"16"``, ``16.2`` or ``"160002"`` (server_version_num) become a major version."""
    text = str(value).strip()
    try:
        number = int(float(text)) if "." in text else int(text)
    except ValueError:
        raise UsageError(f"{where}: {value!r} is not a PostgreSQL version") from None
    if number >= 10000:
        number //= 10000
    if not 9 <= number <= 99:
        raise UsageError(f"{where}: {value!r} is not a PostgreSQL version")
    return number


def load(config: Config) -> LintSettings:
    """Read and check ``lint:``; raise ``ConfigError`` naming the file and the key."""
    try:
        return _load(config)
    except ConfigError as exc:
        label = config.label
        raise ConfigError(f"{label}: {exc.message}", hint=exc.hint) from None


def _load(config: Config) -> LintSettings:
    section = config.settings.get("lint")
    if section is None:
        return LintSettings()
    if not isinstance(section, Mapping):
        raise ConfigError("lint: expected a mapping (enable, disable, severity, ...)")
    for key in section:
        if key not in _KEYS:
            raise ConfigError(f"lint.{key}: unknown key (known: {', '.join(_KEYS)})")
    severity_raw = section.get("severity") or {}
    if not isinstance(severity_raw, Mapping):
        raise ConfigError("lint.severity: expected a mapping of rule: error|warning")
    severity: dict[str, Severity] = {}
    for rule, level in severity_raw.items():
        if rule == "all":
            raise ConfigError(
                "lint.severity: 'all' is no rule; name each rule whose severity changes"
            )
        check_rule_names([str(rule)], "lint.severity", ConfigError)
        if level not in ("error", "warning"):
            raise ConfigError(f"lint.severity.{rule}: expected error or warning, not {level!r}")
        severity[str(rule)] = level
    version: int | None = None
    if section.get("server_version") is not None:
        try:
            version = parse_server_version(section["server_version"], "lint.server_version")
        except UsageError as exc:
            raise ConfigError(exc.message) from None
    on_apply = section.get("on_apply", "warn")
    if on_apply is False:
        on_apply = "off"
    if on_apply not in ON_APPLY:
        raise ConfigError(f"lint.on_apply: expected one of {', '.join(ON_APPLY)}, not {on_apply!r}")
    return LintSettings(
        enable=_names(section.get("enable"), "enable"),
        disable=_names(section.get("disable"), "disable"),
        severity=severity,
        server_version=version,
        on_apply=str(on_apply),
    )
