"""A typed facade over the hooks, and the one routine that calls them.

Each hook's policy is declared beside its specification (``hookspecs.py``, ``hookpolicy``).
When a plugin registers, each of its implementations is wrapped in a guard that applies the
hook's policy to that implementation alone: it names the plugin and the hook in any failure,
checks the type of the answer, and either stops the call (first-result, collecting and gate
hooks) or reports a warning and lets the other plugins run (notifications). Because the
policy sits in the implementation, pluggy's own calling (wrappers of both styles included)
works unchanged on every hook; without wrappers the routine walks the implementations itself,
which costs less than pluggy's generic call when a hook runs once per file.

The typed methods keep ``mypy --strict`` meaningful for callers and turn "no plugin
answered" into a clear error.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import field
from typing import TYPE_CHECKING, Any

from migretti_core.errors import MgError, NoPluginAnswers, PluginError, PluginFailed
from migretti_core.hookpolicy import HookInfo, info_of, wrong_answer_hint
from migretti_core.messages import emit, printable
from migretti_core.records import record
from migretti_core.types import (
    Config,
    ConfigRequest,
    Direction,
    Event,
    HistoryChange,
    HistoryEntry,
    Key,
    LintFinding,
    LintRequest,
    LockHolder,
    LockReport,
    Migration,
    MigrationResult,
    Options,
    Plan,
    ScratchServer,
    Session,
    Statement,
    StatementBatch,
    StatementInfo,
    Target,
)

if TYPE_CHECKING:
    from pathlib import Path

    import click
    import pluggy


# Errors of writing to a file or pipe (mg's output), not of a notifier's network call.
_OUTPUT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EPIPE, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EBADF}
)


@record
class _Frame:
    """One call in progress: which plugins failed in it, and a deferred ``MgError``."""

    hook: str
    failed: list[str] = field(default_factory=list)
    deferred: MgError | None = None


class _Plan:
    """How to call one hook: its implementations (the last registered first), whether a
    wrapper asks for pluggy's own calling, its declaration, and for each implementation what
    the routine needs (function, positional argument names, keyword argument names)."""

    __slots__ = ("calls", "firstresult", "impls", "info", "wrapped")

    def __init__(self, impls: list[Any], wrapped: bool, info: HookInfo) -> None:
        self.impls = impls
        self.wrapped = wrapped
        self.info = info
        self.firstresult = info.policy.firstresult
        self.calls: tuple[tuple[Callable[..., Any], tuple[str, ...], tuple[str, ...]], ...] = tuple(
            (impl.function, tuple(impl.argnames), tuple(impl.kwargnames)) for impl in impls
        )


class Hooks:
    """Typed calls into the plugin manager, all through ``call``."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._relay = pm.hook
        self.options = Options()
        # The selected profile, for the events the hooks emit themselves (plugin.failed)
        self.env: str | None = None
        self.secrets: set[str] = set()
        # The first failure to write mg's own output in mg_report (a full disk, a closed
        # pipe): the command cannot end in success, see cli.run.
        self.output_error: OSError | None = None
        self.trace_plugins = bool(getattr(pm, "mg_trace", False))
        # The plugin whose mg_register_commands runs, so the commands it adds can name it.
        self.registering: str | None = None
        # The calls in progress: a hook's name until one of its implementations fails, then
        # its _Frame (most calls never need one).
        self._frames: list[_Frame | str] = []
        # Reporters that failed in mg_report and are being reported on (see plugin_warning).
        self._failing_reporters: set[str] = set()
        self._warned_once: set[str] = set()
        # The plugins whose mg_confirm returned False in the call in progress.
        self._vetoes: list[str] = []
        self._plans: dict[str, _Plan] = {}
        self._batching: bool | None = None
        for plugin in pm.get_plugins():
            self.guard(plugin)
        listeners = getattr(pm, "mg_listeners", None)
        if isinstance(listeners, list):
            listeners.append(self._registered)

    # --- the calling routine ------------------------------------------------------------

    def _registered(self, plugin: object) -> None:
        self._plans.clear()
        self._batching = None
        if plugin is not None:
            self.guard(plugin)

    def guard(self, plugin: object) -> None:
        """Wrap each of ``plugin``'s implementations in its hook's policy (once)."""
        self._plans.clear()
        self._batching = None
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.spec is None:
                continue
            info = info_of(caller.spec.function, bool(caller.spec.opts.get("firstresult")))
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin or getattr(impl.function, "mg_guarded", False):
                    continue
                if impl.wrapper or impl.hookwrapper:
                    impl.function = self._guarded_wrapper(impl, caller.name, info)  # type: ignore[misc]
                else:
                    impl.function = self._guarded(impl, caller.name, info)  # type: ignore[misc]

    def _guarded(self, impl: Any, hook: str, info: HookInfo) -> Callable[..., Any]:
        function = impl.function
        plugin: str = impl.plugin_name
        policy = info.policy
        check = info.check

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                result = function(*args, **kwargs)
            except MgError as exc:
                self._mark_failed(plugin)
                if policy.on_mg_error == "raise":
                    raise
                if policy.on_mg_error == "defer" and self._defer(exc):
                    return None
                self.plugin_warning(plugin, hook, exc)
                return None
            except (Exception, SystemExit) as exc:  # a plugin's sys.exit() is a failure too
                self._mark_failed(plugin)
                if policy.on_crash == "raise":
                    raise PluginFailed(plugin, hook, exc, policy.crash_exit) from exc
                self.plugin_warning(plugin, hook, exc)
                return None
            if result is not None and check is not None:
                problem = check(result)
                if problem is not None:
                    self._mark_failed(plugin)
                    wrong = PluginError(
                        f"plugin {plugin!r} returned {problem} from {hook}",
                        hint=wrong_answer_hint(check, plugin),
                    )
                    if policy.on_wrong_answer == "raise":
                        raise wrong
                    self.plugin_warning(plugin, hook, wrong, text=wrong.message)
                    return None
            return result

        if hook == "mg_confirm":  # a veto is told by the name of the plugin that made it
            answering = guarded

            def guarded(*args: Any, **kwargs: Any) -> Any:
                result = answering(*args, **kwargs)
                if result is False:
                    self._vetoes.append(plugin)
                return result

        if hook == "mg_register_commands":  # once per run: the commands it adds are its own
            checked = guarded

            def guarded(*args: Any, **kwargs: Any) -> Any:
                self.registering = plugin
                try:
                    return checked(*args, **kwargs)
                finally:
                    self.registering = None

        guarded.mg_guarded = True  # type: ignore[attr-defined]
        guarded.__wrapped__ = function  # type: ignore[attr-defined]
        return guarded

    def _guarded_wrapper(self, impl: Any, hook: str, info: HookInfo) -> Callable[..., Any]:
        """A hook wrapper (either style) under its hook's policy: what the wrapper itself
        raises names the plugin (and is a warning for notifications, where the others'
        answers stand), and what it returns is checked. Exceptions of the implementations it
        wraps pass through it as pluggy gives them."""
        function = impl.function
        plugin: str = impl.plugin_name
        policy = info.policy
        check = info.check
        old_style = bool(impl.hookwrapper)

        def failure(exc: BaseException) -> MgError | None:
            """The error to raise for the wrapper's own exception, or None (reported)."""
            self._mark_failed(plugin)
            if isinstance(exc, MgError):
                if policy.on_mg_error == "raise" or (
                    policy.on_mg_error == "defer" and self._defer(exc)
                ):
                    return exc if policy.on_mg_error == "raise" else None
            elif policy.on_crash == "raise":
                error = PluginFailed(plugin, hook, exc, policy.crash_exit)
                error.__cause__ = exc
                return error
            self.plugin_warning(plugin, hook, exc)
            return None

        def checked(value: Any) -> PluginError | None:
            """The error for a wrong answer, None for a right one."""
            if value is None or check is None:
                return None
            if policy.firstresult:
                problem = check(value)
            elif not isinstance(value, list):
                problem = f"{type(value).__name__} {value!r:.40} instead of a list of answers"
            else:
                problem = next((p for p in map(check, value) if p is not None), None)
            if problem is None:
                return None
            self._mark_failed(plugin)
            return PluginError(
                f"plugin {plugin!r} returned {problem} from {hook}",
                hint=wrong_answer_hint(check, plugin),
            )

        def refused(wrong: PluginError) -> bool:
            """Whether a wrong answer stops the call; for a hook that only tells, it is a
            warning and what the implementations it wraps gave stands."""
            if policy.on_wrong_answer == "raise":
                return True
            self.plugin_warning(plugin, hook, wrong, text=wrong.message)
            return False

        def answer(stop: StopIteration, wrapped: Callable[[], Any]) -> Any:
            """What the wrapper returned, checked (``wrapped()`` when it is wrong and only
            warned about). A wrapper of a hook that collects answers that returns nothing
            (``yield`` without ``return``) leaves the answers it wrapped as they were."""
            if stop.value is None and not policy.firstresult:
                return wrapped()
            wrong = checked(stop.value)
            if wrong is None:
                return stop.value
            if refused(wrong):
                raise wrong from None
            return wrapped()

        def guarded(*args: Any, **kwargs: Any) -> Any:
            wrapper = function(*args, **kwargs)
            try:
                next(wrapper)
            except StopIteration:
                raise PluginError(
                    f"plugin {plugin!r}: its wrapper of {hook} did not yield", hint=None
                ) from None
            except (Exception, SystemExit) as exc:
                error = failure(exc)
                if error is not None:
                    raise error from exc
                return (yield)  # the others still answer
            if old_style:
                outcome = yield
                wrapped_result = None if outcome.exception else outcome.get_result()
                try:
                    wrapper.send(outcome)
                except StopIteration:
                    if outcome.exception is None:
                        wrong = checked(outcome.get_result())
                        if wrong is not None and refused(wrong):
                            outcome.force_exception(wrong)
                        elif wrong is not None:
                            outcome.force_result(wrapped_result)
                    return None
                except (Exception, SystemExit) as exc:
                    error = failure(exc)
                    if error is not None:
                        outcome.force_exception(error)
                    return None
                wrapper.close()
                raise PluginError(f"plugin {plugin!r}: its wrapper of {hook} yielded twice")
            try:
                result = yield
            except BaseException as inner:
                try:
                    wrapper.throw(inner)
                except StopIteration as stop:
                    thrown = inner

                    def rethrown() -> Any:
                        raise thrown

                    return answer(stop, rethrown)
                except (Exception, SystemExit) as exc:
                    if exc is inner:
                        raise
                    error = failure(exc)
                    if error is not None:
                        raise error from exc
                    raise inner from None
            else:
                try:
                    wrapper.send(result)
                except StopIteration as stop:
                    return answer(stop, lambda: result)
                except (Exception, SystemExit) as exc:
                    error = failure(exc)
                    if error is not None:
                        raise error from exc
                    return result
            wrapper.close()
            raise PluginError(f"plugin {plugin!r}: its wrapper of {hook} yielded twice")

        guarded.mg_guarded = True  # type: ignore[attr-defined]
        guarded.__wrapped__ = function  # type: ignore[attr-defined]
        return guarded

    def _frame(self) -> _Frame | None:
        """The current call's frame, made when first asked for."""
        if not self._frames:
            return None
        frame = self._frames[-1]
        if isinstance(frame, str):
            frame = self._frames[-1] = _Frame(frame)
        return frame

    def _mark_failed(self, plugin: str) -> None:
        frame = self._frame()
        if frame is not None:
            frame.failed.append(plugin)

    def _defer(self, exc: MgError) -> bool:
        """Keep the first deferred error of the current call; False for the next ones."""
        frame = self._frame()
        if frame is not None and frame.deferred is None:
            frame.deferred = exc
            return True
        return False

    def _plan(self, name: str) -> _Plan:
        plan = self._plans.get(name)
        if plan is None:
            caller = getattr(self._relay, name)
            impls = caller.get_hookimpls()
            spec = caller.spec
            info = info_of(
                spec.function if spec else None,
                bool(spec.opts.get("firstresult")) if spec else False,
            )
            wrapped = any(impl.wrapper or impl.hookwrapper for impl in impls)
            plan = _Plan(list(reversed(impls)), wrapped, info)
            self._plans[name] = plan
        return plan

    def call(self, name: str, **kwargs: Any) -> Any:
        """Call hook ``name`` by its policy.

        First-result hooks return the answer (None when nobody answered and the hook is
        optional); the others return the list of answers that are not None.
        """
        plan = self._plans.get(name) or self._plan(name)
        firstresult = plan.firstresult
        calls = plan.calls
        tracing = self.trace_plugins
        if not calls and not tracing:
            # Nobody implements it (``mg_before_migration`` without a plugin that does):
            # nothing can fail or be deferred.
            if not firstresult:
                return []
            result = None
        else:
            self._frames.append(name)
            started = time.perf_counter() if tracing else 0.0
            try:
                if plan.wrapped:
                    result = getattr(self._relay, name)(**kwargs)
                elif firstresult:
                    result = None
                    for function, argnames, kwargnames in calls:
                        if kwargnames:
                            extra = {k: kwargs[k] for k in kwargnames if k in kwargs}
                            answer = function(*map(kwargs.__getitem__, argnames), **extra)
                        else:
                            answer = function(*map(kwargs.__getitem__, argnames))
                        if answer is not None:
                            result = answer
                            break
                else:
                    result = []
                    for function, argnames, kwargnames in calls:
                        if kwargnames:
                            extra = {k: kwargs[k] for k in kwargnames if k in kwargs}
                            answer = function(*map(kwargs.__getitem__, argnames), **extra)
                        else:
                            answer = function(*map(kwargs.__getitem__, argnames))
                        if answer is not None:
                            result.append(answer)
            finally:
                frame = self._frames.pop()
                if tracing:
                    failed = frame.failed if isinstance(frame, _Frame) else []
                    self._trace(name, plan.impls, failed, started)
            if isinstance(frame, _Frame) and frame.deferred is not None:
                raise frame.deferred
        if firstresult and result is None and plan.info.required is not None:
            what = plan.info.required.format(**kwargs)
            raise NoPluginAnswers(
                f"no plugin provides {what} (hook {name}); was a builtin blocked with -p no:NAME?",
                hook=name,
            )
        return result

    def _trace(
        self, hook: str, impls: Sequence[Any], failed: Sequence[str], started: float
    ) -> None:
        ms = (time.perf_counter() - started) * 1000
        names = [
            f"{impl.plugin_name} (failed)" if impl.plugin_name in failed else impl.plugin_name
            for impl in impls
        ]
        print(f"mg: trace: {hook} [{', '.join(names) or '-'}] {ms:.2f} ms", file=sys.stderr)

    def plugin_warning(
        self, plugin: str, hook: str, exc: BaseException, text: str | None = None
    ) -> None:
        """Report a plugin's failure that does not stop the command, naming plugin and hook
        (``text`` says it otherwise, for an answer of the wrong type).

        With ``-v`` or ``MG_TRACE_PLUGINS=1`` the traceback goes along (passwords masked).
        """
        text = (
            text
            or f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {printable(str(exc))}"
        )
        if hook in ("mg_config_sections", "mg_report", "mg_on_lock_wait"):
            # asked several times while the configuration is read, once per event, or every
            # few seconds of a wait: the same failure is reported once per run
            if text in self._warned_once:
                return
            self._warned_once.add(text)
        fields: dict[str, Any] = {
            "env": self.env,
            "dry_run": self.options.dry_run,
            "plugin": plugin,
            "hook": hook,
        }
        if (self.options.verbose or self.trace_plugins) and exc.__traceback__ is not None:
            import traceback

            fields["traceback"] = "".join(traceback.format_exception(exc))
        if hook == "mg_report":
            if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
                # mg's own output cannot be written: the command cannot succeed (cli.run)
                self.output_error = self.output_error or exc
                return
            if self.options.json_log and self._report_past(plugin, text, fields):
                return  # a JSON line like every other diagnostic
            emit("warning", self.redact(text))
            if "traceback" in fields:
                trace = printable(self.redact(fields["traceback"]), lines=True)
                print(trace, file=sys.stderr, end="")
            return
        self.report(self.options, Event("plugin.failed", "warning", text, fields))

    def _report_past(self, failing: str, text: str, fields: dict[str, Any]) -> bool:
        """Hand the failure of reporter ``failing`` to the other reporters; True when one
        showed it. A reporter failing meanwhile is left out in turn, so this ends."""
        self._failing_reporters.add(failing)
        try:
            event = Event(
                "plugin.failed",
                "warning",
                self.redact(text),
                {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()},
            )
            arguments = {"options": self.options, "event": event}
            shown = False
            for impl in self._plan("mg_report").impls:
                if impl.plugin_name in self._failing_reporters or impl.wrapper or impl.hookwrapper:
                    continue
                answer = impl.function(*(arguments[name] for name in impl.argnames))
                shown = shown or answer is True
            return shown
        finally:
            self._failing_reporters.discard(failing)

    # --- configuration ----------------------------------------------------------------

    def config_sections(self) -> frozenset[str]:
        """The top-level mg.yaml keys plugins own (``mg_config_sections``)."""
        names: set[str] = set()
        for sections in self.call("mg_config_sections"):
            names.update(item if isinstance(item, str) else item.name for item in sections)
        return frozenset(names)

    def written_sections(self) -> frozenset[str]:
        """Those of them the loader keeps as written (``Key.as_written``)."""
        names: set[str] = set()
        for sections in self.call("mg_config_sections"):
            names.update(
                item.name for item in sections if isinstance(item, Key) and item.as_written
            )
        return frozenset(names)

    def load_config(self, request: ConfigRequest) -> Config:
        result: Config = self.call("mg_load_config", request=request)
        return result

    def configure(self, config: Config) -> None:
        """A plugin that cannot configure itself stops the run, named (exit 2)."""
        self.call("mg_configure", config=config)

    # --- files ------------------------------------------------------------------------

    def discover_migrations(self, config: Config) -> list[Path]:
        result: list[Path] = self.call("mg_discover_migrations", config=config)
        return result

    def parse_migration(self, path: Path, raw: bytes) -> Migration:
        result: Migration = self.call("mg_parse_migration", path=path, raw=raw)
        return result

    def validate_migration(self, session: Session, migration: Migration) -> list[str]:
        problems: list[str] = []
        for found in self.call("mg_validate_migration", session=session, migration=migration):
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
        result: Path = self.call(
            "mg_create_migration",
            config=config,
            title=title,
            up_sql=up_sql,
            down_sql=down_sql,
            transactional=transactional,
        )
        return result

    def render_migration(
        self,
        config: Config,
        migration_id: str,
        title: str,
        up_sql: str,
        down_sql: str | None,
        *,
        transactional: bool = True,
        notes: Sequence[str] = (),
    ) -> tuple[str, str]:
        """``(file name, text)`` of a new migration, from the file-format plugin."""
        result: tuple[str, str] = self.call(
            "mg_render_migration",
            config=config,
            migration_id=migration_id,
            title=title,
            up_sql=up_sql,
            down_sql=down_sql,
            transactional=transactional,
            notes=tuple(notes),
        )
        return result

    def split_statements(self, sql: str) -> list[Statement]:
        result: list[Statement] = self.call("mg_split_statements", sql=sql)
        return result

    # --- connection -------------------------------------------------------------------

    def connection_params(self, session: Session) -> Mapping[str, str]:
        result: Mapping[str, str] = self.call("mg_connection_params", session=session)
        return result

    def connect(self, session: Session) -> Any:
        return self.call("mg_connect", session=session)

    def disconnect(self, session: Session, conn: Any) -> None:
        self.call("mg_disconnect", session=session, conn=conn)

    def describe_target(self, session: Session) -> Target:
        result: Target = self.call("mg_describe_target", session=session)
        return result

    # --- locking ----------------------------------------------------------------------

    def lock_acquire(self, session: Session, conn: Any, timeout: float) -> None:
        self.call("mg_lock_acquire", session=session, conn=conn, timeout=timeout)

    def lock_release(self, session: Session, conn: Any) -> None:
        self.call("mg_lock_release", session=session, conn=conn)

    def lock_check_sql(self, session: Session, conn: Any) -> str | None:
        result: str | None = self.call("mg_lock_check_sql", session=session, conn=conn)
        return result

    # --- execution --------------------------------------------------------------------

    def execute(self, session: Session, conn: Any, sql: str) -> None:
        self.call("mg_execute", session=session, conn=conn, sql=sql)

    def execute_transaction(self, session: Session, conn: Any, parts: Sequence[str]) -> bool:
        """True when a plugin ran ``parts`` as one transaction; False leaves it to the caller."""
        done = self.call("mg_execute_transaction", session=session, conn=conn, parts=parts)
        return bool(done)

    def execute_each(self, session: Session, conn: Any, batch: StatementBatch) -> bool:
        """True when a plugin ran ``batch`` (or a first part of it: ``batch.committed``)."""
        done = self.call("mg_execute_each", session=session, conn=conn, batch=batch)
        return bool(done)

    def batches_statements(self) -> bool:
        """Whether a no-transaction migration's statements may go through
        ``mg_execute_each``: not while a plugin from outside migretti implements
        ``mg_execute`` (a wrapper included) without it, as that plugin expects to see each
        statement."""
        if self._batching is None:
            own = {id(impl.plugin) for impl in self._relay.mg_execute_each.get_hookimpls()}
            self._batching = all(
                getattr(impl.plugin, "__name__", "").startswith("migretti_plugins.")
                or id(impl.plugin) in own
                for impl in self._relay.mg_execute.get_hookimpls()
            )
        return self._batching

    def transaction(
        self, session: Session, conn: Any, rollback: bool = False
    ) -> AbstractContextManager[Any]:
        result: AbstractContextManager[Any] = self.call(
            "mg_transaction", session=session, conn=conn, rollback=rollback
        )
        return result

    def query(
        self, session: Session, conn: Any, sql: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = self.call(
            "mg_query", session=session, conn=conn, sql=sql, params=params
        )
        return result

    def timeout_sql(
        self, session: Session, lock_timeout: float, statement_timeout: float, local: bool
    ) -> str:
        """The SQL setting a migration's timeouts; "" when no plugin sets any."""
        result: str | None = self.call(
            "mg_timeout_sql",
            session=session,
            lock_timeout=lock_timeout,
            statement_timeout=statement_timeout,
            local=local,
        )
        return result or ""

    def unflushed_commit_sql(self, session: Session) -> str:
        """SQL letting a migration commit before it is on disk; "" when no plugin can."""
        result: str | None = self.call("mg_unflushed_commit_sql", session=session)
        return result or ""

    def wait_flushed(self, session: Session, conn: Any) -> None:
        """Wait until what ``conn`` committed is on disk (or the plugin gives up)."""
        self.call("mg_wait_flushed", session=session, conn=conn)

    def lock_blockers(
        self, session: Session, conn: Any, after: float
    ) -> AbstractContextManager[list[LockHolder]]:
        """A watcher naming who blocks ``conn``; an empty list when no plugin can tell."""
        result: AbstractContextManager[list[LockHolder]] | None = self.call(
            "mg_lock_blockers", session=session, conn=conn, after=after
        )
        return result if result is not None else nullcontext([])

    def invalid_indexes(self, session: Session, conn: Any) -> list[dict[str, str]]:
        """INVALID indexes on the target; none when no plugin can tell."""
        result: list[dict[str, str]] | None = self.call(
            "mg_invalid_indexes", session=session, conn=conn
        )
        return list(result or [])

    def prompt(self, session: Session, message: str, question: str) -> str | None:
        """The line the person typed; None when no plugin can ask one.

        Without a terminal on stdin no plugin is asked: an answer a plugin made up would
        approve a protected run on the user's behalf (SPEC 10: no terminal and no --yes
        refuses; approval needs a person or --yes).
        """
        if not _stdin_is_a_terminal():
            return None
        result: str | None = self.call(
            "mg_prompt", session=session, message=message, question=question
        )
        return result

    def describe_statement(self, sql: str) -> StatementInfo:
        """What the database plugin knows of a failed statement; nothing without one."""
        result: StatementInfo | None = self.call("mg_describe_statement", sql=sql)
        return result if result is not None else StatementInfo()

    def describe_lock_holder(self, holder: LockHolder) -> str:
        """A blocking session in one line; its pid without a plugin that knows more."""
        result: str | None = self.call("mg_describe_lock_holder", holder=holder)
        if result is not None:
            return result
        return f"pid {holder.pid}" if holder.pid is not None else "another session"

    def lock_probe(self, session: Session, conn: Any) -> AbstractContextManager[list[LockReport]]:
        """A probe of the locks and rewrites of the SQL run inside it; none without a plugin."""
        result: AbstractContextManager[list[LockReport]] | None = self.call(
            "mg_lock_probe", session=session, conn=conn
        )
        return result if result is not None else nullcontext([])

    def dry_run(self, session: Session, conn: Any, plan: Plan) -> list[MigrationResult]:
        result: list[MigrationResult] = self.call(
            "mg_dry_run", session=session, conn=conn, plan=plan
        )
        return result

    def lint(self, session: Session, request: LintRequest, conn: Any = None) -> list[LintFinding]:
        """Findings for ``request``; none when no plugin lints (``-p no:lint``)."""
        result: list[LintFinding] | None = self.call(
            "mg_lint", session=session, conn=conn, request=request
        )
        return list(result or [])

    # --- history ----------------------------------------------------------------------

    def history_read(self, session: Session, conn: Any) -> list[HistoryEntry]:
        result: list[HistoryEntry] = self.call("mg_history_read", session=session, conn=conn)
        return result

    def history_prepare(self, session: Session, conn: Any) -> None:
        self.call("mg_history_prepare", session=session, conn=conn)

    def history_sql(self, session: Session, change: HistoryChange) -> str | None:
        result: str | None = self.call("mg_history_sql", session=session, change=change)
        return result

    def history_write(self, session: Session, conn: Any, change: HistoryChange) -> None:
        self.call("mg_history_write", session=session, conn=conn, change=change)

    # --- programs, scratch servers, seeds -----------------------------------------------

    def program_dirs(self, config: Config) -> list[Path]:
        """``mg_program_dirs`` of every plugin, the last registered first."""
        dirs: list[Path] = []
        for found in self.call("mg_program_dirs", config=config):
            dirs.extend(found)
        return dirs

    def program_environment(self, config: Config) -> dict[str, str]:
        """``mg_program_environment`` of every plugin; the last registered wins a name."""
        env: dict[str, str] = {}
        for found in reversed(self.call("mg_program_environment", config=config)):
            env.update(found)
        return env

    def spare_program_dirs(self, config: Config) -> list[Path]:
        """``mg_spare_program_dirs`` of every plugin, the last registered first."""
        dirs: list[Path] = []
        for found in self.call("mg_spare_program_dirs", config=config):
            dirs.extend(found)
        return dirs

    def scratch_server(self, session: Session) -> AbstractContextManager[ScratchServer] | None:
        """A server for scratch databases (to enter); None when no plugin offers one."""
        result: AbstractContextManager[ScratchServer] | None = self.call(
            "mg_scratch_server", session=session
        )
        return result

    def seed(self, session: Session, names: Sequence[str] = (), force: bool = False) -> int | None:
        """Run the seeds; the exit code, or None when no plugin runs seeds."""
        result: int | None = self.call("mg_seed", session=session, names=tuple(names), force=force)
        return result

    # --- lifecycle ----------------------------------------------------------------------

    def before_apply(self, session: Session, plan: Plan) -> None:
        self.call("mg_before_apply", session=session, plan=plan)

    def after_apply(self, session: Session, plan: Plan, results: Sequence[MigrationResult]) -> None:
        self.call("mg_after_apply", session=session, plan=plan, results=results)

    def before_rollback(self, session: Session, plan: Plan) -> None:
        self.call("mg_before_rollback", session=session, plan=plan)

    def after_rollback(
        self, session: Session, plan: Plan, results: Sequence[MigrationResult]
    ) -> None:
        self.call("mg_after_rollback", session=session, plan=plan, results=results)

    def before_migration(
        self, session: Session, migration: Migration, direction: Direction
    ) -> None:
        self.call("mg_before_migration", session=session, migration=migration, direction=direction)

    def after_migration(self, session: Session, result: MigrationResult) -> None:
        self.call("mg_after_migration", session=session, result=result)

    def on_failure(
        self,
        session: Session,
        plan: Plan,
        migration: Migration | None,
        error: str,
        results: Sequence[MigrationResult] = (),
    ) -> None:
        self.call(
            "mg_on_failure",
            session=session,
            plan=plan,
            migration=migration,
            error=error,
            results=tuple(results),
        )

    def after_command(
        self,
        session: Session,
        command: str,
        results: Sequence[MigrationResult] = (),
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Tell plugins a command that changed the database (or the files) succeeded."""
        self.call(
            "mg_after_command",
            session=session,
            command=command,
            results=tuple(results),
            details=dict(details or {}),
        )

    def on_lock_wait(self, session: Session, holder: LockHolder, waited: float) -> None:
        since = holder.since.isoformat(timespec="seconds") if holder.since else "an unknown time"
        who = f"pid {holder.pid}" if holder.pid is not None else "another session"
        app = f" ({holder.application_name})" if holder.application_name else ""
        lock = holder.lock or "the migration lock"
        self.report(
            session.options,
            Event(
                "lock.waiting",
                "warning",
                f"waiting for {lock}, held by {who}{app} since {since}; waited {waited:.0f}s",
                {
                    "env": session.config.env,
                    "dry_run": session.options.dry_run,
                    "lock": holder.lock,
                    "holder_pid": holder.pid,
                    "holder_application": holder.application_name,
                    "holder_since": holder.since.isoformat() if holder.since else None,
                    "waited_s": round(waited, 1),
                },
            ),
        )
        self.call("mg_on_lock_wait", session=session, holder=holder, waited=waited)

    # --- confirmation -------------------------------------------------------------------

    def is_protected(self, session: Session) -> bool:
        return any(self.call("mg_is_protected", session=session))

    def confirm_vetoed(
        self, session: Session, target: Target, plan: Plan | None
    ) -> list[str] | None:
        """None when no plugin vetoed; else the registered names of those that did, as
        ``mg plugins`` shows them (empty when a hook wrapper's answer is the only veto)."""
        self._vetoes = []
        answers = self.call("mg_confirm", session=session, target=target, plan=plan)
        if not any(answer is False for answer in answers):
            return None
        return list(dict.fromkeys(self._vetoes))

    # --- output ---------------------------------------------------------------------------

    def remember_secrets(self, config: Config) -> None:
        """Passwords from the configuration are masked in every event, whatever its source."""
        database = config.database
        # password, and sslpassword (the passphrase of the client key) too
        for key, password in database.items():
            if str(key).lower().endswith("password") and isinstance(password, str) and password:
                self.secrets.add(password)
        from migretti_core.redact import url_passwords

        # the url, and any other value that holds one by mistake (``host: app:secret@db``)
        for value in database.values():
            if isinstance(value, str) and "@" in value:
                self.secrets.update(url_passwords(value))

    def redact(self, text: str) -> str:
        """Hide every known secret and anything that looks like a password in ``text``."""
        from migretti_core.redact import redact

        return redact(text, self.secrets)

    def report(self, options: Options, event: Event) -> bool:
        """Hand an event to every reporter, passwords masked; True when one showed it."""
        name, level, message = event.name, event.level, event.message
        fields = dict(event.fields)  # the reporters' own copy: none can change the caller's
        if self.secrets or not _nothing_to_mask(message, fields):
            message = self.redact(message)
            fields = {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        event = Event(name, level, message, fields)
        if not self._plan("mg_report").impls:
            # no reporter left (output and jsonlog blocked): shown as output shows it, the
            # debug events only with -v
            if level == "debug" and not options.verbose:
                return False
            emit(level, message, fields.get("hint"))
            return True
        answers = self.call("mg_report", options=options, event=event)
        return any(answer is True for answer in answers)

    def format_result(self, options: Options, kind: str, data: Any, fmt: str) -> str:
        result: str = self.call("mg_format_result", options=options, kind=kind, data=data, fmt=fmt)
        return result

    def output_formats(self) -> list[str]:
        names: list[str] = []
        for found in self.call("mg_output_formats"):
            names.extend(name for name in found if name not in names)
        return names

    def register_commands(self, cli: click.Group) -> None:
        self.call("mg_register_commands", cli=cli)

    def command_options(self, command: str) -> list[click.Parameter]:
        params: list[click.Parameter] = []
        for found in self.call("mg_command_options", command=command):
            params.extend(found)
        return params


def _nothing_to_mask(message: str, fields: Mapping[str, Any]) -> bool:
    """Whether ``redact`` with no known password leaves the message and every text field as
    they are: each of its patterns needs ``://`` or the word ``password`` (in any case).
    One search of the texts joined by newlines, which neither contains, answers for all."""
    texts = [value for value in fields.values() if isinstance(value, str)]
    texts.append(message)
    probe = "\n".join(texts)
    return "://" not in probe and "password" not in probe.lower()


def _stdin_is_a_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached
        return False
