"""Post a JSON message to a webhook after apply and rollback, and when a command fails.

An in-house plugin: one file beside mg.yaml, no packaging, standard library only.

    plugins:
      - notify_webhook.py
    notify_webhook:
      url: ${DEPLOY_WEBHOOK_URL}
      timeout: 5                          # seconds, default 5
      events: [apply, rollback, failure]  # default: all three
      headers:                            # optional
        Authorization: Bearer ${DEPLOY_WEBHOOK_TOKEN}

An empty ``url`` turns notifications off (handy as ``${DEPLOY_WEBHOOK_URL:-}``). A webhook
that cannot be reached gives a warning; the migration's own result and exit code stand.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from migretti_core import hookimpl
from migretti_core.engine import report
from migretti_core.errors import ConfigError
from migretti_core.types import Config, Migration, MigrationResult, Plan, Session

__version__ = "1.0.0"

SECTION = "notify_webhook"
EVENTS = ("apply", "rollback", "failure")
DEFAULT_TIMEOUT = 5.0


@hookimpl
def mg_config_sections() -> list[str]:
    return [SECTION]


@hookimpl
def mg_configure(config: Config) -> None:
    """Check the section once, so a typo fails before any migration runs."""
    settings(config)


@hookimpl
def mg_after_apply(session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
    count = len(results)
    _notify(
        session,
        "apply",
        f"applied {count} migration{'s' if count != 1 else ''}",
        {"migrations": [_result(r) for r in results]},
    )


@hookimpl
def mg_after_rollback(session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
    count = len(results)
    _notify(
        session,
        "rollback",
        f"rolled back {count} migration{'s' if count != 1 else ''}",
        {"migrations": [_result(r) for r in results]},
    )


@hookimpl
def mg_on_failure(session: Session, plan: Plan, migration: Migration | None, error: str) -> None:
    what = f"migration {migration.id} {migration.name}" if migration else session.options.command
    _notify(
        session,
        "failure",
        f"{what} failed",
        {
            "direction": plan.direction,
            "migration": _migration(migration) if migration else None,
            "planned": list(plan.ids),
            "error": session.hooks.redact(error),
        },
    )


# --- configuration -------------------------------------------------------------------------


def settings(config: Config) -> dict[str, Any]:
    """The validated ``notify_webhook`` section; ``url`` is "" when notifications are off."""
    section = config.settings.get(SECTION)
    if not isinstance(section, Mapping):
        raise ConfigError(f"{SECTION}: add a '{SECTION}:' section with a url to mg.yaml")
    url = section.get("url") or ""
    if not isinstance(url, str) or (url and urlsplit(url).scheme not in ("http", "https")):
        raise ConfigError(f"{SECTION}.url: expected an http:// or https:// URL")
    timeout = section.get("timeout", DEFAULT_TIMEOUT)
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"{SECTION}.timeout: expected a number of seconds") from None
    events = section.get("events", list(EVENTS))
    if (
        not isinstance(events, Sequence)
        or isinstance(events, str)
        or not set(events) <= set(EVENTS)
    ):
        raise ConfigError(f"{SECTION}.events: expected a list of {', '.join(EVENTS)}")
    headers = section.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ConfigError(f"{SECTION}.headers: expected a mapping of header to value")
    return {
        "url": url,
        "timeout": timeout,
        "events": set(events),
        "headers": {str(k): str(v) for k, v in headers.items()},
    }


# --- the message ---------------------------------------------------------------------------


def _migration(migration: Migration) -> dict[str, Any]:
    return {"id": migration.id, "name": migration.name}


def _result(result: MigrationResult) -> dict[str, Any]:
    return {**_migration(result.migration), "duration_ms": result.duration_ms}


def _target(session: Session) -> str | None:
    try:
        return session.hooks.describe_target(session).describe()
    except Exception:
        return None


def _notify(session: Session, event: str, summary: str, details: Mapping[str, Any]) -> None:
    conf = settings(session.config)
    if not conf["url"] or event not in conf["events"]:
        return
    target = _target(session)
    env = session.config.env
    where = " on ".join(part for part in (env and f"env {env}", target) if part)
    message = {
        "text": f"migretti: {summary}" + (f" ({where})" if where else ""),
        "event": event,
        "command": session.options.command,
        "env": env,
        "target": target,
        **details,
    }
    try:
        post(conf["url"], message, conf["headers"], conf["timeout"])
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        host = urlsplit(conf["url"]).netloc.rpartition("@")[2]
        report(
            session,
            "notify_webhook.failed",
            "warning",
            f"notify_webhook: could not post the {event} message to {host}: {reason}; "
            "the migration result stands",
            plugin=SECTION,
        )


def post(url: str, message: Mapping[str, Any], headers: Mapping[str, str], timeout: float) -> int:
    """POST ``message`` as JSON; return the HTTP status (an error status raises HTTPError)."""
    body = json.dumps(message, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", f"migretti-notify-webhook/{__version__}")
    for name, value in headers.items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status: int = response.status
        return status
