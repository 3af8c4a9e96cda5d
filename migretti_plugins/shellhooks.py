"""Builtin ``shellhooks``: the ``hooks:`` commands of mg.yaml (SPEC §9), see docs/hooks.md.

A hook runs with ``/bin/sh -c`` in the config file's directory, in a session of its own (so a
timeout or Ctrl-C ends the whole process group), with stdin from /dev/null and the ``MG_*``
and libpq ``PG*`` variables set. Its stdout and stderr are read by mg, passed through the same
redaction as every other output and reported line by line as ``hook.output`` events: on
stderr for people, as JSON lines with ``--json-log``; mg's stdout stays reserved for results.
The command text is never reported, only the hook's name, because interpolation may have put
a secret in it.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from migretti_core import hookimpl
from migretti_core.engine import report
from migretti_core.errors import HookFailed
from migretti_core.types import Level, Migration, MigrationResult, Plan, Session

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
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}

# Seconds a hook gets to exit after SIGTERM before its process group is killed.
KILL_GRACE = 2.0
# Seconds output is still relayed after the shell exited (a background child may hold it).
OUTPUT_GRACE = 1.0
_CONNINFO = re.compile(r"^\s*(postgres(ql)?://|\w+\s*=)")


def pg_environment(params: Mapping[str, object]) -> dict[str, str]:
    """The ``PG*`` variables that make libpq tools reach the target exactly as mg does.

    A ``dbname`` (or ``url``) holding a whole connection string is expanded first, since
    libpq reads ``PGDATABASE`` as a plain name. A unix-socket host is a directory, which is
    what ``PGHOST`` expects. Parameters libpq has no variable for are left out.
    """
    flat: dict[str, str] = {}
    for key in ("url", "dbname"):
        value = params.get(key)
        if isinstance(value, str) and _CONNINFO.match(value):
            from psycopg.conninfo import conninfo_to_dict

            flat.update({k: str(v) for k, v in conninfo_to_dict(value).items() if v is not None})
    for key, value in params.items():
        if key == "url" or not isinstance(value, (str, int)) or isinstance(value, bool):
            continue
        if key == "dbname" and _CONNINFO.match(str(value)):
            continue
        flat[key] = str(value)
    return {PG_ENVIRONMENT[k]: v for k, v in flat.items() if k in PG_ENVIRONMENT and v != ""}


@dataclass(frozen=True)
class Outcome:
    """How one hook run ended: ``exit_code`` is None when it timed out or was killed."""

    exit_code: int | None
    duration_ms: int
    timed_out: bool = False
    signal_name: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self, timeout: float) -> str:
        if self.error is not None:
            return self.error
        if self.timed_out:
            return f"timed out after {format_seconds(timeout)}"
        if self.signal_name is not None:
            return f"was killed by {self.signal_name}"
        return f"failed with exit code {self.exit_code}"


def format_seconds(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def run_command(
    command: str,
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout: float,
    on_line: Callable[[str], None],
) -> Outcome:
    """Run ``command`` with ``/bin/sh -c``, relaying each output line to ``on_line``.

    On timeout or interruption the whole process group is terminated, then killed.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        timed_out = not _relay(proc, proc.stdout.fileno(), started + timeout, on_line)
    except BaseException:
        _terminate(proc)
        raise
    finally:
        proc.stdout.close()
    if timed_out:
        _terminate(proc)
    duration_ms = int((time.monotonic() - started) * 1000)
    code = proc.returncode
    if timed_out:
        return Outcome(None, duration_ms, timed_out=True)
    if code < 0:
        return Outcome(None, duration_ms, signal_name=_signal_name(-code))
    return Outcome(code, duration_ms)


def _relay(
    proc: subprocess.Popen[bytes], fd: int, deadline: float, on_line: Callable[[str], None]
) -> bool:
    """Pass output on until the shell exited and its output closed; False on timeout."""
    pending = b""
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if exited_at is None and _exited(proc):
                exited_at = now
            if exited_at is not None and now - exited_at > OUTPUT_GRACE:
                break
            if exited_at is None and now >= deadline:
                _flush(pending, on_line)
                return False
            wait = 0.2 if exited_at is not None else min(0.2, max(deadline - now, 0.0))
            if not selector.select(timeout=wait):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r"))
            if cut >= 0:
                _flush(pending[: cut + 1], on_line)
                pending = pending[cut + 1 :]
    _flush(pending, on_line)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        return False
    return True


def _flush(data: bytes, on_line: Callable[[str], None]) -> None:
    if not data:
        return
    text = data.decode("utf-8", errors="replace")
    for line in re.split(r"\r\n|\n|\r", text.rstrip("\r\n")):
        on_line(line)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the shell exited, without reaping it.

    An unreaped shell keeps its pid, and with it the process group id, from being reused, so
    signalling the group can never reach an unrelated process.
    """
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the hook's process group, then SIGKILL whatever is left of it."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while not _exited(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.returncode is not None:
        return  # reaped: its group id may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- running one configured hook ---------------------------------------------------------


def _redactor(session: Session, params: Mapping[str, object]) -> Callable[[str], str]:
    secrets = {str(params["password"])} if params.get("password") else set()

    def redact(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "****")
        return session.hooks.redact(text)

    return redact


def hook_environment(
    session: Session, name: str, plan: Plan, params: Mapping[str, object]
) -> dict[str, str]:
    """mg's own environment plus the target's ``PG*`` variables and the ``MG_*`` context."""
    env = dict(os.environ)
    env.update(pg_environment(params))
    env.update(
        {
            "MG_EVENT": name,
            "MG_ENV": session.config.env or "",
            "MG_MIGRATIONS": ",".join(plan.ids),
            "MG_DIRECTION": plan.direction,
        }
    )
    if session.config.path is not None:
        env["MG_CONFIG"] = str(session.config.path)
    return env


def run_hook(
    session: Session, name: str, plan: Plan, extra: Mapping[str, str] | None = None
) -> Outcome | None:
    """Run the hook configured for ``name``; None when there is none.

    Never raises for a hook that cannot be started: the outcome says why, so the caller
    decides whether that aborts the command.
    """
    command = session.config.hooks.get(name)
    if not command or not command.strip():
        return None
    fields = {"hook": name, "direction": plan.direction}
    report(session, "hook.started", "info", f"running {name} hook", **fields)
    timeout = session.config.hook_timeout
    try:
        params = session.hooks.connection_params(session)
        redact = _redactor(session, params)
        env = hook_environment(session, name, plan, params)
        env.update({key: redact(value) for key, value in (extra or {}).items()})

        def on_line(line: str) -> None:
            report(session, "hook.output", "info", redact(line), **fields)

        outcome = run_command(
            command, cwd=str(session.config.root), env=env, timeout=timeout, on_line=on_line
        )
    except Exception as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        outcome = Outcome(None, 0, error=f"could not be run: {session.hooks.redact(reason)}")
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
    timeout = session.config.hook_timeout
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
