"""Builtin ``shellhooks``: the ``hooks:`` commands of mg.yaml, see docs/hooks.md.

A hook runs with ``/bin/sh -c`` in the config file's directory, in a session of its own (so a
timeout or Ctrl-C ends the whole process group), with stdin from /dev/null and the ``MG_*``
and libpq ``PG*`` variables set. Its stdout and stderr are read by mg, passed through the same
redaction as every other output and reported line by line as ``hook.output`` events: on
stderr for people, as JSON lines with ``--json-log``; mg's stdout stays reserved for results.
The command text is never reported, only the hook's name, because interpolation may have put
a secret in it.

The plugin owns its mg.yaml keys: ``hook_timeout`` and ``hooks``, whose commands it builds
itself from the file as written (``commands.py``), so each ``${VAR}`` reaches the shell as an
environment variable, never as shell text.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from migretti_core import hookimpl
from migretti_core.errors import ConfigError, HookFailed
from migretti_core.reporting import report
from migretti_core.types import Config, Key, Level, Migration, MigrationResult, Plan, Session

if TYPE_CHECKING:
    from migretti_plugins.shellhooks.runner import Outcome

# Longest MG_MIGRATIONS (about 3,700 ids) or MG_ERROR passed, in bytes: Linux starts no
# program given one variable of 128 KiB or more.
MAX_VARIABLE = 100_000

HOOK_TIMEOUT = Key("hook_timeout", "duration", 600.0, "how long one hook command may run")
HOOKS = Key(
    "hooks",
    "mapping",
    None,
    "shell commands run around the commands that change the database (docs/hooks.md)",
    as_written=True,  # each ${VAR} becomes an environment variable (commands.py)
)


def hook_timeout(config: Config) -> float:
    """``hook_timeout`` of mg.yaml in seconds (more than zero)."""
    from migretti_core.settings import top_level_setting

    seconds = float(top_level_setting(config, HOOK_TIMEOUT))
    if seconds == 0:
        label = config.label
        given = str(config.settings.get(HOOK_TIMEOUT.name))
        raise ConfigError(f"{label}: hook_timeout: must be more than zero, got {given!r}")
    return seconds


# libpq connection keywords and the environment variables libpq reads for them.
PG_ENVIRONMENT = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "min_protocol_version": "PGMINPROTOCOLVERSION",
    "max_protocol_version": "PGMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}

# Compiled on first use (re's cache), not at every start of mg.
_CONNINFO = r"^\s*(postgres(ql)?://|\w+\s*=)"


def pg_environment(params: Mapping[str, object]) -> dict[str, str]:
    """The ``PG*`` variables that make libpq tools reach the target exactly as mg does.

    A ``dbname`` (or ``url``) holding a whole connection string is expanded first, since
    libpq reads ``PGDATABASE`` as a plain name. A unix-socket host is a directory, which is
    what ``PGHOST`` expects. Parameters libpq has no variable for are left out.
    """
    flat: dict[str, str] = {}
    for key in ("url", "dbname"):
        value = params.get(key)
        if isinstance(value, str) and re.match(_CONNINFO, value):
            from psycopg.conninfo import conninfo_to_dict

            flat.update({k: str(v) for k, v in conninfo_to_dict(value).items() if v is not None})
    for key, value in params.items():
        if key == "url" or not isinstance(value, (str, int)) or isinstance(value, bool):
            continue
        if key == "dbname" and re.match(_CONNINFO, str(value)):
            continue
        flat[key] = str(value)
    return {PG_ENVIRONMENT[k]: v for k, v in flat.items() if k in PG_ENVIRONMENT and v != ""}


def service_environment(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``PG*`` variables for what connection service ``service`` sets."""
    from migretti_core.pgservice import service_settings

    settings = service_settings(service, environ)
    return {var: settings[key] for key, var in PG_ENVIRONMENT.items() if settings.get(key)}


def _redactor(session: Session, params: Mapping[str, object]) -> Callable[[str], str]:
    from migretti_core.redact import redact

    secrets = {*session.hooks.secrets, str(params.get("password") or "")}
    return lambda text: redact(text, secrets)


def hook_environment(
    session: Session, name: str, plan: Plan, params: Mapping[str, object]
) -> dict[str, str]:
    """mg's own environment plus the target's ``PG*`` variables and the ``MG_*`` context."""
    env = dict(os.environ)
    # A setting the connection gives as empty (none: the embedded server's ``hostaddr=``,
    # ``options=``) is no variable of the hook either: one left from the shell would lead
    # the hook's psql where mg's own connection does not go.
    cleared = {PG_ENVIRONMENT[k] for k, v in params.items() if v == "" and k in PG_ENVIRONMENT}
    for var in cleared:
        env.pop(var, None)
    target = pg_environment(params)
    service = target.pop("PGSERVICE", None) or env.get("PGSERVICE")
    if service:
        # libpq reads a service's settings before PGHOST, PGDATABASE, ...: a hook handed
        # PGSERVICE beside them would reach the service's database where mg's own settings
        # won. So the hook gets the service's settings as variables instead, under mg's own.
        for var, value in service_environment(service, env).items():
            if var not in cleared:
                target.setdefault(var, value)
        env.pop("PGSERVICE", None)
    env.update(target)
    env.update(
        {
            "MG_EVENT": name,
            "MG_ENV": session.config.env or "",
            "MG_MIGRATIONS": ",".join(plan.ids),
            "MG_DIRECTION": plan.direction,
        }
    )
    if len(env["MG_MIGRATIONS"]) > MAX_VARIABLE:
        # Linux refuses to start a program given one variable of 128 KiB or more ("Argument
        # list too long"): such a plan is in MG_MIGRATIONS_FILE only (run_hook).
        del env["MG_MIGRATIONS"]
    if session.config.path is not None:
        env["MG_CONFIG"] = str(session.config.path)
    # The embedded server's own pg_dump and psql (mg_program_dirs), before the user's PATH.
    first = [str(d) for d in session.hooks.program_dirs(session.config)]
    if first:
        rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in first]
        env["PATH"] = os.pathsep.join([*first, *rest])
    # What plugins add for programs run against the target (a fleet member's MG_TARGET).
    env.update(session.hooks.program_environment(session.config))
    return env


def run_hook(
    session: Session, name: str, plan: Plan, extra: Mapping[str, str] | None = None
) -> Outcome | None:
    """Run the hook configured for ``name``; None when there is none.

    Never raises for a hook that cannot be started: the outcome says why, so the caller
    decides whether that aborts the command.
    """
    from migretti_plugins.shellhooks.commands import hook_commands

    hook = hook_commands(session.config).get(name)
    if hook is None:
        return None
    fields = {"hook": name, "direction": plan.direction}
    report(session, "hook.started", "info", f"running {name} hook", **fields)
    timeout = hook_timeout(session.config)
    ids_file: str | None = None
    try:
        params = session.hooks.connection_params(session)
        redact = _redactor(session, params)
        env = hook_environment(session, name, plan, params)
        env.update(hook.environment)
        env.update({key: _fit(redact(value)) for key, value in (extra or {}).items()})
        # Without a writable temporary directory the hook gets MG_MIGRATIONS alone.
        with contextlib.suppress(OSError):
            ids_file = env["MG_MIGRATIONS_FILE"] = _write_ids(plan)

        def on_line(line: str) -> None:
            report(session, "hook.output", "info", redact(line), **fields)

        from migretti_plugins.shellhooks.runner import run_command

        outcome = run_command(
            hook.command, cwd=str(session.config.root), env=env, timeout=timeout, on_line=on_line
        )
    except Exception as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        from migretti_plugins.shellhooks.runner import Outcome

        outcome = Outcome(None, 0, error=f"could not be run: {session.hooks.redact(reason)}")
    finally:
        if ids_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(ids_file)
    if outcome.ok:
        report(
            session,
            "hook.finished",
            "info",
            f"{name} hook finished in {outcome.duration_ms} ms",
            exit_code=0,
            duration_ms=outcome.duration_ms,
            **fields,
        )
    else:
        _report_failure(session, name, outcome, outcome.describe(timeout), fields)
    return outcome


def _fit(value: str) -> str:
    """``value`` cut to fit in one environment variable (MG_ERROR of a huge error message)."""
    data = value.encode("utf-8", errors="surrogateescape")
    if len(data) <= MAX_VARIABLE:
        return value
    head = data[:MAX_VARIABLE].decode("utf-8", errors="ignore")
    return (
        f"{head}... ({len(data) - MAX_VARIABLE} more bytes cut; the whole error is in mg's output)"
    )


def _write_ids(plan: Plan) -> str:
    """A new file with the plan's ids, one a line, in execution order: MG_MIGRATIONS_FILE."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="mg-hook-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{ident}\n" for ident in plan.ids))
    return path


def _report_failure(
    session: Session, name: str, outcome: Outcome, reason: str, fields: Mapping[str, str]
) -> None:
    # A failing pre/post hook becomes the command's error; repeating it at error level
    # would print it twice, so only on_failure (which never fails the command) warns here.
    level: Level = "warning" if name == "on_failure" else "debug"
    report(
        session,
        "hook.failed",
        level,
        f"{name} hook {reason}",
        exit_code=outcome.exit_code,
        duration_ms=outcome.duration_ms,
        timed_out=outcome.timed_out,
        error=reason,
        **fields,
    )


def _check(session: Session, name: str, outcome: Outcome | None, consequence: str) -> None:
    if outcome is None or outcome.ok:
        return
    from migretti_plugins.shellhooks.runner import format_seconds

    timeout = hook_timeout(session.config)
    hint = (
        f"raise hook_timeout in mg.yaml (now {format_seconds(timeout)})"
        if outcome.timed_out
        else None
    )
    raise HookFailed(f"{name} hook {outcome.describe(timeout)}; {consequence}", hint=hint)


def _stay(plan: Plan, state: str) -> str:
    n = len(plan.steps)
    return f"the {n} migrations stay {state}" if n != 1 else f"the migration stays {state}"


# --- lifecycle hookimpls -----------------------------------------------------------------


@hookimpl
def mg_config_sections() -> list[str | Key]:
    return [HOOK_TIMEOUT.name, HOOKS]


@hookimpl
def mg_configure(config: Config) -> None:
    from migretti_plugins.shellhooks.commands import hook_commands

    # A bad value stops every command, as it always did.
    hook_timeout(config)
    hook_commands(config)


@hookimpl
def mg_before_apply(session: Session, plan: Plan) -> None:
    _check(session, "pre_apply", run_hook(session, "pre_apply", plan), "nothing was changed")


@hookimpl
def mg_after_apply(session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
    outcome = run_hook(session, "post_apply", plan)
    _check(session, "post_apply", outcome, _stay(plan, "applied"))


@hookimpl
def mg_before_rollback(session: Session, plan: Plan) -> None:
    outcome = run_hook(session, "pre_rollback", plan)
    _check(session, "pre_rollback", outcome, "nothing was changed")


@hookimpl
def mg_after_rollback(session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
    outcome = run_hook(session, "post_rollback", plan)
    _check(session, "post_rollback", outcome, _stay(plan, "rolled back"))


@hookimpl
def mg_on_failure(session: Session, plan: Plan, migration: Migration | None, error: str) -> None:
    # Its own failure is only reported (hook.failed, warning): the command's error stands.
    extra = {"MG_ERROR": error, "MG_FAILED_MIGRATION": migration.id if migration else ""}
    run_hook(session, "on_failure", plan, extra)
