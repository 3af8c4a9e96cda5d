"""Run one command on every member of a fleet: threads in this process, at most ``jobs``
at once, each member with its own ``App`` (plugins, configuration, session), connection,
advisory lock and history, exactly as if ``mg`` had been run against it alone.

Ctrl-C stops starting members, cancels the running members' statements (their transaction
rolls back) and unwinds each of them at its next safe point, so every lock is released.

A member's thread is not interrupted while a change it sent may be committing and is not yet
counted (from the query that records a migration to ``mg_after_migration``): an interruption
landing there would leave a committed migration out of the summary. The cancel still stops
the statement; the interruption is raised once the change is counted, or once the query
failed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from migretti_core import hookimpl
from migretti_core.app import App
from migretti_core.argv import GlobalOptions
from migretti_core.errors import EXIT_FAILURE, EXIT_INTERRUPTED, MgError
from migretti_core.types import (
    Config,
    ConfigRequest,
    Direction,
    Event,
    HistoryChange,
    LockHolder,
    Migration,
    MigrationResult,
    Options,
    Plan,
    Session,
)
from migretti_core.workers import Worker
from migretti_plugins.fleet.members import Member
from migretti_plugins.fleet.streams import Sink, member_output

MEMBER_PLUGIN = "fleet-member"


@dataclass
class Outcome:
    """What happened on one member (``result``: ok, failed, interrupted, skipped)."""

    member: Member
    result: str = "skipped"
    exit_code: int | None = None
    applied: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    error: str | None = None
    duration_ms: int = 0
    stdout: str = ""
    index: int = 0  # the member's place in the fleet
    started: float | None = None  # time.monotonic() when it started

    @property
    def ok(self) -> bool:
        return self.result == "ok"


def member_config(config: Config, member: Member) -> Config:
    """The profile's configuration with this member's connection.

    A URL member stands alone, as ``MG_DATABASE_URL`` makes a URL stand for the whole
    ``database`` section: it is given as that variable's URL, which an error calls by
    ``url_origin``, here the member and where it was written (``member
    postgresql://app:****@db7/x (mg.yaml: fleets.shards.databases[2]): port ...``), never
    the profile's ``database.url``, which it replaces."""
    database = member.database(config.database)
    settings = dict(config.settings)
    settings["database"] = database
    if not member.is_url:
        return dataclasses.replace(config, database=database, settings=settings)
    return dataclasses.replace(
        config,
        database=database,
        settings=settings,
        environ={**config.environ, "MG_DATABASE_URL": member.spec},
        url_origin=member.described,
    )


def member_environment(member: Member) -> dict[str, str]:
    """What programs run against the member (shell hooks) see: its name as ``MG_TARGET``."""
    return {"MG_TARGET": member.name}


class MemberPlugin:
    """Registered in one member's ``App``: points it at the member, records what it did and
    stops it at the next safe point once the fleet is interrupted."""

    def __init__(self, member: Member, stop: threading.Event) -> None:
        self.member = member
        self.stop = stop
        self.conns: list[Any] = []
        self.applied: list[str] = []
        self.rolled_back: list[str] = []
        self.guard = threading.Lock()
        self.recording = False  # a change that may have committed is not counted yet
        self.deferred = False  # Ctrl-C came meanwhile
        self.whole_plan = False  # --single-transaction: counted once the plan committed
        self.in_plan: list[MigrationResult] = []
        # Why the command exits non-zero without an error (verify, status --exit-code, lint,
        # drift): the first thing its own result names, for the summary's error.
        self.reason: str | None = None

    @hookimpl(wrapper=True)
    def mg_load_config(self, request: ConfigRequest) -> Generator[None, Config, Config]:
        config = yield
        return member_config(config, self.member)

    @hookimpl
    def mg_program_environment(self) -> dict[str, str]:
        return member_environment(self.member)

    @hookimpl(tryfirst=True)
    def mg_format_result(self, kind: str, data: Any) -> None:
        if self.reason is None:
            self.reason = _reason_of(kind, data)

    def note(self, event: Event) -> None:
        """An event of this member: ``drift.found`` says why drift exits 3."""
        if event.name == "drift.found" and self.reason is None:
            self.reason = event.message

    @hookimpl(wrapper=True)
    def mg_connect(self, session: Session) -> Generator[None, Any, Any]:
        conn = yield
        self.conns.append(conn)
        if self.stop.is_set():
            raise KeyboardInterrupt
        return conn

    @hookimpl(tryfirst=True)
    def mg_before_migration(
        self, session: Session, migration: Migration, direction: Direction
    ) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt

    @hookimpl
    def mg_on_lock_wait(self, session: Session, holder: LockHolder, waited: float) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt

    @hookimpl(wrapper=True)
    def mg_execute_transaction(
        self, session: Session, conn: Any, parts: Sequence[str]
    ) -> Generator[None, bool | None, bool | None]:
        self._recording()
        try:
            return (yield)
        except BaseException:
            self._counted()
            raise

    @hookimpl(wrapper=True)
    def mg_history_write(
        self, session: Session, conn: Any, change: HistoryChange
    ) -> Generator[None, bool | None, bool | None]:
        self._recording()
        try:
            handled = yield
        except BaseException:
            self._counted()
            raise
        completes = change.action in ("UP", "DOWN") and change.status in ("applied", None)
        if not completes:  # not the write that completes a migration
            self._counted()
        return handled

    @hookimpl
    def mg_before_apply(self, session: Session, plan: Plan) -> None:
        self.whole_plan = plan.single_transaction

    @hookimpl
    def mg_before_rollback(self, session: Session, plan: Plan) -> None:
        self.whole_plan = plan.single_transaction

    @hookimpl(tryfirst=True)
    def mg_after_migration(self, session: Session, result: MigrationResult) -> None:
        if not result.ok or not result.executed or result.dry_run or session.options.dry_run:
            self._counted()
            return
        if self.whole_plan:  # not committed until the plan is: counted in mg_after_apply
            self._recording()
            self.in_plan.append(result)
            return
        self._count([result])

    @hookimpl(tryfirst=True)
    def mg_after_apply(self, session: Session, plan: Plan) -> None:
        self._count_plan()

    @hookimpl(tryfirst=True)
    def mg_after_rollback(self, session: Session, plan: Plan) -> None:
        self._count_plan()

    def _count_plan(self) -> None:
        done, self.in_plan = self.in_plan, []
        self._count(done)

    def _count(self, results: Sequence[MigrationResult]) -> None:
        for result in results:
            done = self.applied if result.direction == "up" else self.rolled_back
            done.append(result.migration.id)
        self._counted()

    def _recording(self) -> None:
        with self.guard:
            self.recording = True

    def _counted(self) -> None:
        """The change is counted (or did not happen): a Ctrl-C held back is raised now."""
        with self.guard:
            self.recording = False
            deferred, self.deferred = self.deferred, False
        if deferred:
            raise KeyboardInterrupt

    def interrupt(self, thread: threading.Thread) -> None:
        """From the fleet's thread: Ctrl-C, raised in the member's ``thread`` now, or held
        back while a change that may be committing is not yet counted."""
        with self.guard:
            if self.recording:
                self.deferred = True
            else:
                _raise_in(thread)

    def cancel(self) -> None:
        """From another thread: cancel the statement running on each open connection."""
        for conn in list(self.conns):
            try:
                if not conn.closed:
                    conn.cancel()
            except Exception:
                pass

    def close(self) -> None:
        for conn in self.conns:
            try:
                if not conn.closed:
                    conn.close()
            except Exception:
                pass


def _reason_of(kind: str, data: Any) -> str | None:
    """The first problem a failing result names, in the words of its text output."""
    if not isinstance(data, Mapping) or (data.get("ok", True) and kind != "lint"):
        return None
    if kind == "verify":
        for item in data.get("mismatches") or ():
            return f"mismatch: {item['file']} changed since it was applied"
        for item in data.get("missing") or ():
            return f"missing: {item['id']} {item['name']} is applied but its file is gone"
        for problem in data.get("problems") or ():
            return str(problem)
    elif kind == "status":
        for problem in data.get("problems") or ():
            return str(problem)
        for index in data.get("invalid_indexes") or ():
            return f"invalid index {index['index']} on {index['table']}"
        counts = data.get("counts") or {}
        parts = [f"{counts[k]} {k}" for k in ("pending", "failed", "running") if counts.get(k)]
        if parts:
            return "not up to date: " + ", ".join(parts)
    elif kind == "drift":  # as the text output's event says it
        count = len(data.get("differences") or ())
        if count:
            return f"drift: {count} object{'s' if count != 1 else ''} differ" + (
                "s" if count == 1 else ""
            )
    elif kind == "lint":
        findings = data.get("findings") or ()
        ordered = [f for f in findings if f.get("severity") == "error"] + list(findings)
        for f in ordered:
            return f"{f['path']}:{f['line']}:{f['column']}: {f['rule']}: {f['message']}"
    return None


def _tag_events(app: App, target: str, observe: Callable[[Event], None] | None) -> None:
    """Every event of this member carries ``target`` (JSON log lines, the Python API);
    ``observe`` sees each one first (the live lines follow what the member does)."""
    original = app.hooks.report

    def report(options: Options, event: Event) -> bool:
        if observe is not None:
            observe(event)
        fields = {"target": target, **event.fields}
        return original(options, Event(event.name, event.level, event.message, fields))

    app.hooks.report = report  # type: ignore[method-assign]


@dataclass
class Invocation:
    """The command to repeat on each member, as click parsed it for the fleet."""

    path: Sequence[str]
    params: Mapping[str, Any]
    meta: Mapping[str, Any]


def _member_globals(parent: GlobalOptions, confirmed: bool) -> GlobalOptions:
    return GlobalOptions(
        env=parent.env,
        config=parent.config,
        json_log=parent.json_log,
        verbose=parent.verbose,
        yes=parent.yes or confirmed,
        plugins=list(parent.plugins),
    )


def run_member(
    parent: App,
    member: Member,
    invocation: Invocation,
    stop: threading.Event,
    confirmed: bool,
    register: Callable[[MemberPlugin], None],
    observe: Callable[[Event], None] | None = None,
) -> tuple[int, str | None, MemberPlugin]:
    """Run the command on one member; returns its exit code and first error line."""
    from migretti_core.cli import _print_error, build_cli, output_error

    plugin = MemberPlugin(member, stop)
    register(plugin)
    environ = dict(parent.environ)
    environ.pop("MG_FLEET", None)
    verbose = parent.globals.verbose
    app: App | None = None
    try:
        app = App(
            _member_globals(parent.globals, confirmed),
            environ,
            cwd=parent.cwd,
            plugins=[(MEMBER_PLUGIN, plugin)],
        )

        def noted(event: Event) -> None:
            plugin.note(event)
            if observe is not None:
                observe(event)

        _tag_events(app, member.name, noted)
        cli = build_cli(app)
        command: click.Command = cli
        for name in invocation.path:
            assert isinstance(command, click.Group)
            found = command.commands.get(name)
            if found is None:
                raise MgError(f"command {name} is not available on this member")
            command = found
        ctx = click.Context(command, info_name=invocation.path[-1], obj=app)
        ctx.params = dict(invocation.params)
        ctx.meta.update(invocation.meta)
        assert command.callback is not None
        with ctx:
            result = ctx.invoke(command.callback, **invocation.params)
        code = result if isinstance(result, int) else 0
        return code, (None if code == 0 else plugin.reason or f"exit code {code}"), plugin
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, "interrupted", plugin
    except MgError as exc:
        if stop.is_set():
            return EXIT_INTERRUPTED, "interrupted", plugin
        _print_error(app, exc, _traceback() if verbose else None)
        redact = app.hooks.redact if app is not None else _redact
        return exc.exit_code, _first_line(redact(exc.message), exc.exit_code), plugin
    except OSError as exc:
        # Its output could not be written (a full disk, a closed pipe): said as ``mg``
        # alone says it, and for a closed pipe not at all (whoever read it has gone).
        if stop.is_set():
            return EXIT_INTERRUPTED, "interrupted", plugin
        error = output_error(exc)
        if not isinstance(exc, BrokenPipeError):
            _print_error(app, error, _traceback() if verbose else None)
        return EXIT_FAILURE, error.message, plugin
    except Exception as exc:
        if stop.is_set():
            return EXIT_INTERRUPTED, "interrupted", plugin
        error = MgError(
            f"unexpected error: {type(exc).__name__}: {exc}",
            hint="rerun with -v to see the traceback",
        )
        _print_error(app, error, _traceback() if verbose else None)
        redact = app.hooks.redact if app is not None else _redact
        return EXIT_FAILURE, _first_line(redact(error.message), EXIT_FAILURE), plugin
    finally:
        plugin.close()


def _first_line(message: str, code: int) -> str:
    """The summary's error: the message's first line (a plugin's error may have none)."""
    return next((line for line in message.splitlines() if line.strip()), f"exit code {code}")


def _redact(text: str) -> str:
    from migretti_core.redact import redact

    return redact(text)


def _traceback() -> str:
    import traceback

    return traceback.format_exc()


def _this_worker() -> Worker:
    worker = threading.current_thread()
    assert isinstance(worker, Worker), worker
    return worker


def _raise_in(thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in ``thread`` at its next Python instruction."""
    ident = thread.ident
    if ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
    )


@dataclass
class Schedule:
    jobs: int
    canary: int
    fail_fast: bool
    keep_stdout: bool


class FleetRun:
    """Start members in fleet order, at most ``jobs`` at once; canary first."""

    def __init__(
        self,
        parent: App,
        members: Sequence[Member],
        invocation: Invocation,
        schedule: Schedule,
        streams: dict[str, TextIO],
        confirmed: bool,
        on_event: Callable[[str, Outcome], None],
        observe: Callable[[int, Event], None] | None = None,
    ) -> None:
        self.parent = parent
        self.outcomes = [Outcome(member, index=n) for n, member in enumerate(members)]
        self.observe = observe
        self.invocation = invocation
        self.schedule = schedule
        self.streams = streams
        self.confirmed = confirmed
        self.on_event = on_event
        self.stop = threading.Event()  # interrupted: unwind the running members
        self.no_more = threading.Event()  # start no new member
        self.interrupted = False
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Worker, list[MemberPlugin]]] = {}

    def run(self) -> list[Outcome]:
        canary = min(self.schedule.canary, len(self.outcomes))
        try:
            if canary:
                self._batch(list(range(canary)))
                if not all(o.ok for o in self.outcomes[:canary]):
                    self.no_more.set()
                    for outcome in self.outcomes[canary:]:
                        outcome.error = "not started: a canary failed"
            if not self.no_more.is_set():
                self._batch(list(range(canary, len(self.outcomes))))
        except KeyboardInterrupt:
            self._interrupt()
        return self.outcomes

    def _batch(self, indexes: list[int]) -> None:
        queue = list(indexes)
        workers = [
            Worker(self._work, (queue,), name=f"mg-fleet-{n}")
            for n in range(min(self.schedule.jobs, len(queue)))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            while not worker.wait(0.1):
                pass

    def _next(self, queue: list[int]) -> int | None:
        with self._lock:
            if not queue or self.no_more.is_set():
                return None
            return queue.pop(0)

    def _work(self, queue: list[int]) -> None:
        try:
            while True:
                index = self._next(queue)
                if index is None:
                    return
                self._run_one(index)
        except KeyboardInterrupt:  # Ctrl-C's interrupt landed after the member's own unwinding
            return

    def _run_one(self, index: int) -> None:
        outcome = self.outcomes[index]
        plugins: list[MemberPlugin] = []
        with self._lock:
            self._running[index] = (_this_worker(), plugins)
        outcome.result = "running"
        outcome.started = time.monotonic()
        self.on_event("started", outcome)
        json_log = self.parent.globals.json_log
        sink = Sink(f"{outcome.member.name}: ", self.schedule.keep_stdout, "" if json_log else None)
        started = outcome.started
        code: int = EXIT_INTERRUPTED
        error: str | None = "interrupted"
        plugin: MemberPlugin | None = None
        observe = self.observe
        try:
            with member_output(sink, self.streams):
                code, error, plugin = run_member(
                    self.parent,
                    outcome.member,
                    self.invocation,
                    self.stop,
                    self.confirmed,
                    plugins.append,
                    (lambda event: observe(index, event)) if observe is not None else None,
                )
        except KeyboardInterrupt:
            code, error = EXIT_INTERRUPTED, "interrupted"
        finally:
            with self._lock:
                self._running.pop(index, None)
            for leftover in plugins:
                leftover.close()
        if sink.output_error is not None and code == 0:
            # What it printed could not be written: done, but not a success (as on one
            # database, where mg exits 1 after the work).
            from migretti_core.cli import output_error

            code, error = EXIT_FAILURE, output_error(sink.output_error).message
        if self.stop.is_set() and code != 0:
            code, error = EXIT_INTERRUPTED, "interrupted"
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        outcome.exit_code = code
        outcome.error = error
        outcome.stdout = "".join(sink.stdout)
        if error == f"exit code {code}" and outcome.stdout.lstrip().startswith("{"):
            # A document printed by the command itself (drift --format json): its reason.
            try:
                reason = _reason_of(self.invocation.path[-1], json.loads(outcome.stdout))
            except ValueError:
                reason = None
            outcome.error = reason or error
        if plugin is not None:
            outcome.applied = list(plugin.applied)
            outcome.rolled_back = list(plugin.rolled_back)
        outcome.result = (
            "ok" if code == 0 else "interrupted" if code == EXIT_INTERRUPTED else "failed"
        )
        if code != 0 and self.schedule.fail_fast:
            self.no_more.set()
        self.on_event("finished", outcome)

    def _interrupt(self) -> None:
        """Ctrl-C: start nothing new, unwind every running member, wait for them."""
        self.interrupted = True
        self.no_more.set()
        self.stop.set()
        with self._lock:
            running = list(self._running.values())
            threads = {index: thread for index, (thread, _) in self._running.items()}
        for thread, plugins in running:
            if not plugins:
                _raise_in(thread)
            for plugin in plugins:
                plugin.interrupt(thread)
                plugin.cancel()
        deadline = time.monotonic() + 30
        for thread, plugins in running:
            while thread.running() and time.monotonic() < deadline:
                try:
                    thread.wait(0.1)
                except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
                    deadline = 0
            for plugin in plugins:
                plugin.close()
        for outcome in self.outcomes:
            if outcome.result == "running":
                # Ctrl-C landed in the member's thread outside its own unwinding: it is
                # over (or given up on), so it is reported as every other member is.
                outcome.result = "interrupted"
                outcome.exit_code = EXIT_INTERRUPTED
                outcome.error = "interrupted"
                if outcome.started is not None:
                    outcome.duration_ms = int((time.monotonic() - outcome.started) * 1000)
                worker = threads.get(outcome.index)
                if worker is None or not worker.running():
                    self.on_event("finished", outcome)
            elif outcome.result == "skipped" and outcome.error is None:
                outcome.error = "not started: interrupted"
