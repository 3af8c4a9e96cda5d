"""Post a JSON message to a webhook after apply, rollback, fix and seed, and on failure.

An in-house plugin: one file beside mg.yaml, no packaging, standard library only.

    plugins:
      - notify_webhook.py
    notify_webhook:
      url: ${DEPLOY_WEBHOOK_URL}
      timeout: 5s                         # default 5s
      events: [apply, rollback, failure]  # default: apply, rollback, failure, fix, seed
      headers:                            # optional
        Authorization: Bearer ${DEPLOY_WEBHOOK_TOKEN}

An empty ``url`` turns notifications off (handy as ``${DEPLOY_WEBHOOK_URL:-}``), and so does
``--no-notify`` on the commands that change the database. A webhook that cannot be reached
gives a warning; the migration's own result and exit code stand.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import click

from migretti_core.api import (
    Config,
    Key,
    Migration,
    MigrationResult,
    Plan,
    Session,
    hookimpl,
    plugin_settings,
    report,
)

__version__ = "1.0.0"

SECTION = "notify_webhook"
EVENTS = ("apply", "rollback", "failure", "fix", "seed")
DEFAULT_EVENTS = EVENTS
DEFAULT_TIMEOUT = 5.0
QUIET_COMMANDS = ("apply", "up", "rollback", "down", "fix", "seed")
KEYS = (
    Key("url", "text", "", "the webhook URL (http or https); empty turns notifications off"),
    Key("timeout", "duration", DEFAULT_TIMEOUT, "how long to wait for the webhook"),
    Key("events", "strings", DEFAULT_EVENTS, f"which of {', '.join(EVENTS)} to send"),
    Key("headers", "mapping", None, "extra HTTP headers, e.g. Authorization"),
)


@hookimpl
def mg_config_sections() -> list[str]:
    return [SECTION]


@hookimpl
def mg_configure(config: Config) -> None:
    """Check the section once, so a typo fails before any migration runs."""
    settings(config)


@hookimpl
def mg_command_options(command: str) -> list[click.Parameter] | None:
    """``--no-notify`` on every command that would send a message."""
    if command not in QUIET_COMMANDS:
        return None
    return [click.Option(["--no-notify"], is_flag=True, help="Send no webhook message.")]


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
def mg_after_command(
    session: Session, command: str, results: Sequence[MigrationResult], details: Mapping[str, Any]
) -> None:
    """``fix`` and ``seed`` (apply and rollback have their own hooks above)."""
    if command == "fix":
        verb = "marked applied" if details.get("mode") == "applied" else "removed from history"
        _notify(session, "fix", f"{details.get('migration_id')} {verb}", dict(details))
    elif command == "seed":
        ran = list(details.get("ran", ()))
        _notify(session, "seed", f"ran {len(ran)} seed{'s' if len(ran) != 1 else ''}", {"ran": ran})


@hookimpl
def mg_on_failure(
    session: Session,
    plan: Plan,
    migration: Migration | None,
    error: str,
    results: Sequence[MigrationResult],
) -> None:
    what = f"migration {migration.id} {migration.name}" if migration else session.options.command
    _notify(
        session,
        "failure",
        f"{what} failed",
        {
            "direction": plan.direction,
            "migration": _migration(migration) if migration else None,
            "planned": list(plan.ids),
            "done_before": [_result(r) for r in results],
            "error": session.hooks.redact(error),
        },
    )


# --- configuration -------------------------------------------------------------------------


def settings(config: Config) -> dict[str, Any]:
    """The validated ``notify_webhook`` section; ``url`` is "" when notifications are off."""
    if SECTION not in config.settings:
        raise plugin_settings(config, SECTION).error(
            "url", f"add a '{SECTION}:' section with a url to mg.yaml"
        )
    section = plugin_settings(config, SECTION)
    values = section.read(KEYS)
    url = values["url"] or ""
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise section.error("url", "expected an http:// or https:// URL")
    unknown = sorted(set(values["events"]) - set(EVENTS))
    if unknown:
        raise section.error("events", f"unknown event {unknown[0]!r} (events: {', '.join(EVENTS)})")
    return {
        "url": url,
        "timeout": values["timeout"],
        "events": set(values["events"]),
        "headers": {str(k): str(v) for k, v in values["headers"].items()},
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
    if not conf["url"] or event not in conf["events"] or session.options.option("no_notify"):
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
