"""A typed facade over the hook relay: one method per hook.

It keeps ``mypy --strict`` meaningful for callers, turns "no plugin answered" into a clear
error, and calls notification hooks one implementation at a time so that a broken notifier
is reported by name without silencing the others or masking the migration's own outcome.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migretti_core.errors import MgError, PluginError
from migretti_core.types import (
    Config,
    ConfigRequest,
    Direction,
    Event,
    HistoryChange,
    HistoryEntry,
    LintFinding,
    LintRequest,
    LockHolder,
    LockReport,
    Migration,
    MigrationResult,
    Options,
    Plan,
    Session,
    Statement,
    Target,
)

if TYPE_CHECKING:
    import click
    import pluggy


# Errors of writing to a file or pipe (mg's output), not of a notifier's network call.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EPIPE, errno.EFBIG, errno.EDQUOT, errno.EIO})


class Hooks:
    """Typed calls into the plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._relay = pm.hook
        self.options = Options()
        self.secrets: set[str] = set()
        # The first failure to write mg's own output in mg_report (a full disk, a closed
        # pipe): the command cannot end in success, see cli.run.
        self.output_error: OSError | None = None

    # --- plumbing ---------------------------------------------------------------------

    def _first(self, name: str, what: str, **kwargs: Any) -> Any:
        result = getattr(self._relay, name)(**kwargs)
        if result is None:
            raise PluginError(
                f"no plugin provides {what} (hook {name}); was a builtin blocked with -p no:NAME?"
            )
        return result

    def _each(self, name: str, *, abort: bool, defer: bool = False, **kwargs: Any) -> list[Any]:
        """Call every implementation on its own; MgError aborts when ``abort`` is set.

        With ``defer`` the first MgError is raised only after every implementation ran, so
        one notifier that fails the command does not keep the others from hearing about it.
        """
        caller = getattr(self._relay, name)
        results: list[Any] = []
        called: list[str] = []
        deferred: MgError | None = None
        started = time.perf_counter()
        try:
            for impl in reversed(caller.get_hookimpls()):
                if impl.hookwrapper or impl.wrapper:
                    continue
                called.append(impl.plugin_name)
                args = [kwargs[arg] for arg in impl.argnames]
                try:
                    res = impl.function(*args)
                except MgError as exc:
                    called[-1] += " (failed)"
                    if abort and not defer:
                        raise
                    if abort and deferred is None:
                        deferred = exc
                        continue
                    self._warn_plugin(impl.plugin_name, name, exc)
                    continue
                except Exception as exc:
                    called[-1] += " (failed)"
                    self._warn_plugin(impl.plugin_name, name, exc)
                    continue
                if res is not None:
                    results.append(res)
        finally:
            self._trace(name, called, started)
        if deferred is not None:
            raise deferred
        return results

    def _trace(self, hook: str, called: Sequence[str], started: float) -> None:
        """Hooks called here bypass pluggy's call monitor, so MG_TRACE_PLUGINS is fed directly."""
        trace = getattr(self.pm, "call_trace", None)
        if trace is not None:
            trace(hook, called, (time.perf_counter() - started) * 1000)

    def _warn_plugin(self, plugin: str, hook: str, exc: BaseException | None) -> None:
        text = f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}"
        try:
            self.report(self.options, Event("plugin.failed", "warning", text, {"plugin": plugin}))
        except Exception:
            print(f"mg: warning: {text}", file=sys.stderr)

    # --- configuration ----------------------------------------------------------------

    def config_sections(self) -> frozenset[str]:
        names: set[str] = set()
        for sections in self._each("mg_config_sections", abort=False):
            names.update(sections)
        return frozenset(names)

    def load_config(self, request: ConfigRequest) -> Config:
        result: Config = self._first("mg_load_config", "configuration", request=request)
        return result

    def configure(self, config: Config) -> None:
        """A plugin that cannot configure itself stops the run, named (exit 2)."""
        called: list[str] = []
        started = time.perf_counter()
        try:
            for impl in reversed(self._relay.mg_configure.get_hookimpls()):
                kwargs: dict[str, Any] = {"config": config}
                called.append(impl.plugin_name)
                try:
                    impl.function(*[kwargs[arg] for arg in impl.argnames])
                except MgError:
                    called[-1] += " (failed)"
                    raise
                except Exception as exc:
                    called[-1] += " (failed)"
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} failed in mg_configure: "
                        f"{type(exc).__name__}: {exc}",
                        hint=f"disable it with -p no:{impl.plugin_name}",
                    ) from exc
        finally:
            self._trace("mg_configure", called, started)

    # --- files ------------------------------------------------------------------------

    def discover_migrations(self, config: Config) -> list[Path]:
        result: list[Path] = self._first(
            "mg_discover_migrations", "migration discovery", config=config
        )
        return result

    def parse_migration(self, path: Path, raw: bytes) -> Migration:
        """Called once per file, so it skips pluggy's per-call machinery when it can.

        With thousands of files the generic call costs more than parsing; the semantics
        (last registered first, first non-None answer wins) are the same.
        """
        impls = self._relay.mg_parse_migration.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls) or self._tracing():
            result: Migration = self._first(
                "mg_parse_migration", f"a parser for {path.name}", path=path, raw=raw
            )
            return result
        kwargs: dict[str, Any] = {"path": path, "raw": raw}
        for impl in reversed(impls):
            answer: Any = impl.function(*[kwargs[arg] for arg in impl.argnames])
            if answer is not None:
                parsed: Migration = answer
                return parsed
        raise PluginError(f"no plugin provides a parser for {path.name} (hook mg_parse_migration)")

    def _tracing(self) -> bool:
        return getattr(self.pm, "call_trace", None) is not None

    def validate_migration(self, session: Session, migration: Migration) -> list[str]:
        problems: list[str] = []
        for found in self._relay.mg_validate_migration(session=session, migration=migration):
            problems.extend(found)
        return problems

    def create_migration(
        self,
        config: Config,
        title: str,
        up_sql: str = "",
        down_sql: str = "",
        *,
        transactional: bool = True,
    ) -> Path:
        result: Path = self._first(
            "mg_create_migration",
            "migration creation",
            config=config,
            title=title,
            up_sql=up_sql,
            down_sql=down_sql,
            transactional=transactional,
        )
        return result

    def split_statements(self, sql: str) -> list[Statement]:
        result: list[Statement] = self._first("mg_split_statements", "statement splitting", sql=sql)
        return result

    # --- connection -------------------------------------------------------------------

    def connection_params(self, session: Session) -> Mapping[str, str]:
        result: Mapping[str, str] = self._first(
            "mg_connection_params", "connection parameters", session=session
        )
        return result

    def connect(self, session: Session) -> Any:
        return self._first("mg_connect", "a database connection", session=session)

    def disconnect(self, session: Session, conn: Any) -> None:
        self._relay.mg_disconnect(session=session, conn=conn)

    def describe_target(self, session: Session) -> Target:
        result: Target = self._first("mg_describe_target", "a target description", session=session)
        return result

    # --- locking ----------------------------------------------------------------------

    def lock_acquire(self, session: Session, conn: Any, timeout: float) -> None:
        self._first("mg_lock_acquire", "locking", session=session, conn=conn, timeout=timeout)

    def lock_release(self, session: Session, conn: Any) -> None:
        self._relay.mg_lock_release(session=session, conn=conn)

    def lock_check_sql(self, session: Session, conn: Any) -> str | None:
        result: str | None = self._relay.mg_lock_check_sql(session=session, conn=conn)
        return result

    # --- execution --------------------------------------------------------------------

    def execute(self, session: Session, conn: Any, sql: str) -> None:
        self._first("mg_execute", "SQL execution", session=session, conn=conn, sql=sql)

    def execute_transaction(self, session: Session, conn: Any, parts: Sequence[str]) -> bool:
        """True when a plugin ran ``parts`` as one transaction; False leaves it to the caller."""
        done = self._relay.mg_execute_transaction(session=session, conn=conn, parts=parts)
        return bool(done)

    def transaction(
        self, session: Session, conn: Any, rollback: bool = False
    ) -> AbstractContextManager[Any]:
        result: AbstractContextManager[Any] = self._first(
            "mg_transaction", "transactions", session=session, conn=conn, rollback=rollback
        )
        return result

    def query(
        self, session: Session, conn: Any, sql: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = self._first(
            "mg_query", "queries", session=session, conn=conn, sql=sql, params=params
        )
        return result

    def timeout_sql(
        self, session: Session, lock_timeout: float, statement_timeout: float, local: bool
    ) -> str:
        """The SQL setting a migration's timeouts; "" when no plugin sets any."""
        result: str | None = self._relay.mg_timeout_sql(
            session=session,
            lock_timeout=lock_timeout,
            statement_timeout=statement_timeout,
            local=local,
        )
        return result or ""

    def lock_blockers(
        self, session: Session, conn: Any, after: float
    ) -> AbstractContextManager[list[LockHolder]]:
        """A watcher naming who blocks ``conn``; an empty list when no plugin can tell."""
        from contextlib import nullcontext

        result: AbstractContextManager[list[LockHolder]] | None = self._relay.mg_lock_blockers(
            session=session, conn=conn, after=after
        )
        return result if result is not None else nullcontext([])

    def invalid_indexes(self, session: Session, conn: Any) -> list[dict[str, str]]:
        """INVALID indexes on the target; none when no plugin can tell."""
        result: list[dict[str, str]] | None = self._relay.mg_invalid_indexes(
            session=session, conn=conn
        )
        return list(result or [])

    def lock_probe(self, session: Session, conn: Any) -> AbstractContextManager[list[LockReport]]:
        """A probe of the locks and rewrites of the SQL run inside it; none without a plugin."""
        from contextlib import nullcontext

        result: AbstractContextManager[list[LockReport]] | None = self._relay.mg_lock_probe(
            session=session, conn=conn
        )
        return result if result is not None else nullcontext([])

    def dry_run(self, session: Session, conn: Any, plan: Plan) -> list[MigrationResult]:
        result: list[MigrationResult] = self._first(
            "mg_dry_run", "dry runs", session=session, conn=conn, plan=plan
        )
        return result

    def lint(self, session: Session, request: LintRequest, conn: Any = None) -> list[LintFinding]:
        """Findings for ``request``; none when no plugin lints (``-p no:lint``)."""
        result: list[LintFinding] | None = self._relay.mg_lint(
            session=session, conn=conn, request=request
        )
        return list(result or [])

    # --- history ----------------------------------------------------------------------

    def history_read(self, session: Session, conn: Any) -> list[HistoryEntry]:
        result: list[HistoryEntry] = self._first(
            "mg_history_read", "history", session=session, conn=conn
        )
        return result

    def history_prepare(self, session: Session, conn: Any) -> None:
        self._first("mg_history_prepare", "history tables", session=session, conn=conn)

    def history_sql(self, session: Session, change: HistoryChange) -> str | None:
        result: str | None = self._relay.mg_history_sql(session=session, change=change)
        return result

    def history_write(self, session: Session, conn: Any, change: HistoryChange) -> None:
        self._first(
            "mg_history_write", "history recording", session=session, conn=conn, change=change
        )

    # --- lifecycle ----------------------------------------------------------------------

    def before_apply(self, session: Session, plan: Plan) -> None:
        self._each("mg_before_apply", abort=True, session=session, plan=plan)

    def after_apply(self, session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
        self._each(
            "mg_after_apply", abort=True, defer=True, session=session, plan=plan, results=results
        )

    def before_rollback(self, session: Session, plan: Plan) -> None:
        self._each("mg_before_rollback", abort=True, session=session, plan=plan)

    def after_rollback(
        self, session: Session, plan: Plan, results: Sequence[MigrationResult]
    ) -> None:
        self._each(
            "mg_after_rollback", abort=True, defer=True, session=session, plan=plan, results=results
        )

    def before_migration(
        self, session: Session, migration: Migration, direction: Direction
    ) -> None:
        self._each(
            "mg_before_migration",
            abort=True,
            session=session,
            migration=migration,
            direction=direction,
        )

    def after_migration(self, session: Session, result: MigrationResult) -> None:
        self._each("mg_after_migration", abort=False, session=session, result=result)

    def on_failure(
        self, session: Session, plan: Plan, migration: Migration | None, error: str
    ) -> None:
        self._each(
            "mg_on_failure",
            abort=False,
            session=session,
            plan=plan,
            migration=migration,
            error=error,
        )

    def on_lock_wait(self, session: Session, holder: LockHolder, waited: float) -> None:
        since = holder.since.isoformat(timespec="seconds") if holder.since else "an unknown time"
        who = f"pid {holder.pid}" if holder.pid is not None else "another session"
        app = f" ({holder.application_name})" if holder.application_name else ""
        self.report(
            session.options,
            Event(
                "lock.waiting",
                "warning",
                f"waiting for the migration lock {session.config.lock_id}, held by {who}{app} "
                f"since {since}; waited {waited:.0f}s",
                {
                    "env": session.config.env,
                    "dry_run": session.options.dry_run,
                    "holder_pid": holder.pid,
                    "holder_application": holder.application_name,
                    "holder_since": holder.since.isoformat() if holder.since else None,
                    "waited_s": round(waited, 1),
                },
            ),
        )
        self._each("mg_on_lock_wait", abort=False, session=session, holder=holder, waited=waited)

    # --- confirmation -------------------------------------------------------------------

    def is_protected(self, session: Session) -> bool:
        return any(self._relay.mg_is_protected(session=session))

    def confirm_vetoed(self, session: Session, target: Target, plan: Plan | None) -> bool:
        answers = self._each("mg_confirm", abort=True, session=session, target=target, plan=plan)
        return any(answer is False for answer in answers)

    # --- output ---------------------------------------------------------------------------

    def remember_secrets(self, config: Config) -> None:
        """Passwords from the configuration are masked in every event, whatever its source."""
        database = config.database
        password = database.get("password")
        if isinstance(password, str) and password:
            self.secrets.add(password)
        url = database.get("url")
        if isinstance(url, str) and "://" in url:
            from urllib.parse import unquote, urlsplit

            try:
                secret = urlsplit(url).password
            except ValueError:
                secret = None
            if secret:
                self.secrets.update({secret, unquote(secret)})

    def redact(self, text: str) -> str:
        """Hide every known secret and anything that looks like a password in ``text``."""
        from migretti_core.redact import redact

        return redact(text, self.secrets)

    def report(self, options: Options, event: Event) -> None:
        event = Event(
            event.name,
            event.level,
            self.redact(event.message),
            {k: self.redact(v) if isinstance(v, str) else v for k, v in event.fields.items()},
        )
        if not self._relay.mg_report.get_hookimpls():
            print(f"mg: {event.message}", file=sys.stderr)
            return
        called: list[str] = []
        started = time.perf_counter()
        for impl in reversed(self._relay.mg_report.get_hookimpls()):
            kwargs = {"options": options, "event": event}
            called.append(impl.plugin_name)
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:
                called[-1] += " (failed)"
                if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
                    self.output_error = self.output_error or exc
                    continue
                print(
                    f"mg: warning: plugin {impl.plugin_name!r} failed in mg_report: "
                    f"{type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
        self._trace("mg_report", called, started)

    def format_result(self, options: Options, kind: str, data: Any, fmt: str) -> str:
        result: str = self._first(
            "mg_format_result",
            f"{fmt} output for {kind}",
            options=options,
            kind=kind,
            data=data,
            fmt=fmt,
        )
        return result

    def register_commands(self, cli: click.Group) -> None:
        self._each("mg_register_commands", abort=False, cli=cli)
