"""The Python API: ``Migretti`` runs mg's commands from an application and returns results.

An instance is one ``mg`` invocation that stays open: it loads configuration and plugins as
the CLI does (mg.yaml, ``.env``, profiles, ``MG_*`` variables, entry points), then each
method runs one command through the same engine, lock and history. Nothing is printed:
events go to the ``logging`` logger ``migretti``; failures raise the ``MgError`` subclass
whose ``exit_code`` the CLI would have exited with. The guide is docs/python-api.md.
"""

from __future__ import annotations

import builtins
import functools
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from migretti_core import hookimpl
from migretti_core.app import App
from migretti_core.argv import GlobalOptions
from migretti_core.errors import (
    ConfigError,
    ConfirmationRequired,
    Interrupted,
    MgError,
    MigrationFailed,
    MigrationFileError,
    PluginError,
    SqlError,
    StateError,
    UsageError,
)
from migretti_core.plugins import ORIGIN_OPTION
from migretti_core.results import (
    CheckResult,
    FixResult,
    HistoryRow,
    LintResult,
    MigrationOutcome,
    MigrationRow,
    Mismatch,
    MissingFile,
    RunResult,
    SeedResult,
    SeedRun,
    StatusResult,
    VerifyResult,
)
from migretti_core.types import (
    DEFAULT_LOCK_ID,
    Config,
    ConfigRequest,
    Direction,
    Event,
    HistoryEntry,
    LintFinding,
    MigrationResult,
    Plan,
    Session,
    Target,
)

if TYPE_CHECKING:
    from migretti_core.fleets import Fleet

LOGGER_NAME = "migretti"

# A library's logger: silent unless the application configures logging (without it, Python's
# last-resort handler would print warnings such as "waiting for the migration lock").
logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())

#: A plugin for ``plugins=``: a module name or ``.py`` path (as with ``-p``), a plugin object
#: (a module or any object with ``mg_*`` methods), or ``(name, object)``.
PluginSpec = object

# The CLI's human output prints; an application gets the same events through logging.
_BLOCKED_FOR_API = ("no:output",)
_API_PLUGIN = "python-api"
_FROM_URL_PLUGIN = "python-api-config"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# LogRecord attributes an ``extra`` key may not overwrite.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def log_extra(event: Event) -> dict[str, Any]:
    """The JSON log's fields for ``extra=``: ``event`` plus the event's context.

    A field named like a ``LogRecord`` attribute (``name``, ``filename``, ...) is passed as
    ``mg_<field>`` so logging does not refuse it.
    """
    extra: dict[str, Any] = {"event": event.name}
    for key, value in event.fields.items():
        extra[f"mg_{key}" if key in _RECORD_ATTRS or key == "event" else key] = value
    return extra


class _ApiPlugin:
    """The instance's own plugin: sends events to logging and collects what a command did.

    It is registered in this instance's plugin manager only, so instances never share it.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.confirmed = False
        self.events: list[Event] = []
        self.results: list[MigrationResult] = []
        self.dry_results: list[MigrationResult] | None = None
        self.fields: dict[str, object] = {}  # added to every record (a fleet member's target)

    def begin(self, confirmed: bool) -> None:
        self.confirmed = confirmed
        self.events = []
        self.results = []
        self.dry_results = None

    def log(self, event: Event) -> None:
        level = _LEVELS.get(event.level, logging.INFO)
        if self.logger.isEnabledFor(level):
            if self.fields:
                fields = {**self.fields, **event.fields}
                event = Event(event.name, event.level, event.message, fields)
            self.logger.log(level, event.message, extra=log_extra(event))

    @hookimpl
    def mg_report(self, event: Event) -> None:
        self.events.append(event)
        self.log(event)

    @hookimpl
    def mg_after_migration(self, result: MigrationResult) -> None:
        self.results.append(result)

    @hookimpl(wrapper=True)
    def mg_dry_run(
        self, plan: Plan
    ) -> Generator[None, list[MigrationResult] | None, list[MigrationResult] | None]:
        results = yield
        self.dry_results = builtins.list(results or [])
        return results

    @hookimpl
    def mg_confirm(self, session: Session, target: Target) -> bool | None:
        if self.confirmed:
            return None
        env = session.config.env or "(default)"
        command = session.options.command or "this command"
        raise ConfirmationRequired(
            f"environment {env} ({target.describe()}) is protected: "
            f"{command} runs there only with confirm=True",
            hint="pass confirm=True to the method (or to Migretti) once a person has decided",
        )


class _FixedConfig:
    """``Migretti.from_url``: a configuration built from a URL and a directory, no mg.yaml."""

    def __init__(self, url: str, migrations_dir: Path, seeds_dir: Path) -> None:
        self.url = url
        self.migrations_dir = migrations_dir
        self.seeds_dir = seeds_dir

    @hookimpl
    def mg_load_config(self, request: ConfigRequest) -> Config:
        lock_id = DEFAULT_LOCK_ID
        raw = request.environ.get("MG_LOCK_ID", "").strip()
        if raw:
            try:
                lock_id = int(raw)
            except ValueError as exc:
                raise ConfigError(f"MG_LOCK_ID: not an integer: {raw!r}") from exc
        database = MappingProxyType({"url": self.url})
        return Config(
            path=None,
            root=self.migrations_dir.parent,
            env=None,
            # seeds_dir is the seeds plugin's key, read from the settings as from mg.yaml.
            # migrations_dir is named, as when mg.yaml names it: a missing one is an error.
            settings=MappingProxyType(
                {
                    "database": database,
                    "migrations_dir": str(self.migrations_dir),
                    "seeds_dir": str(self.seeds_dir),
                }
            ),
            database=database,
            migrations_dir=self.migrations_dir,
            lock_id=lock_id,
        )


def mask_error(exc: BaseException, redact: Callable[[str], str]) -> None:
    """Mask passwords in an error the API raises, as the CLI masks what it prints: the
    message, the hint, the server's texts of an ``SqlError``, and the exceptions it was
    raised from (an application's ``log.exception`` prints the whole chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        if isinstance(current, MgError):
            current.message = redact(current.message)
            if current.hint:
                current.hint = redact(current.hint)
        if isinstance(current, SqlError):
            for name in ("server_message", "server_hint", "detail", "context"):
                value = getattr(current, name)
                if isinstance(value, str):
                    setattr(current, name, redact(value))
        if isinstance(current, MigrationFileError):
            current.problems = [redact(problem) for problem in current.problems]
        current = current.__cause__ or current.__context__


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _public(
    method: Callable[Concatenate[Migretti, _P], _R],
) -> Callable[Concatenate[Migretti, _P], _R]:
    """A method an application calls: what it raises is masked like the CLI's output, and
    Ctrl-C is a ``KeyboardInterrupt`` however the engine met it."""

    @functools.wraps(method)
    def call(self: Migretti, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except Interrupted as exc:
            # Ctrl-C in a no-transaction migration: the engine says what state it left (for
            # the CLI, exit 130). An application sees Ctrl-C as Python raises it everywhere
            # else, so ``except Exception`` never swallows it; the state is its message.
            mask_error(exc, self._app.hooks.redact)
            raise KeyboardInterrupt(exc.message) from exc
        except MgError as exc:
            mask_error(exc, self._app.hooks.redact)
            raise

    return call


def _plugin_name(plugin: object) -> str:
    name = getattr(plugin, "__name__", None) or getattr(plugin, "name", None)
    if isinstance(name, str) and name:
        return name.rpartition(".")[2]
    return type(plugin).__name__.lower()


def _split_plugins(plugins: Iterable[PluginSpec]) -> tuple[list[str], list[tuple[str, object]]]:
    names: list[str] = []
    objects: list[tuple[str, object]] = []
    if isinstance(plugins, (str, os.PathLike)):
        plugins = [plugins]
    for item in plugins:
        if isinstance(item, os.PathLike):
            names.append(os.fspath(item))
        elif isinstance(item, str):
            names.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            objects.append((item[0], item[1]))
        elif _looks_like_plugin(item):
            objects.append((_plugin_name(item), item))
        else:
            raise UsageError(
                f"plugins: {item!r} is not a plugin (a module name, a .py path, a module, "
                "an object with mg_* hook methods, or a (name, object) pair)"
            )
    return names, objects


def _looks_like_plugin(item: object) -> bool:
    import types

    if isinstance(item, (types.ModuleType, type)):
        return True
    for name in dir(item):
        if name.startswith("mg_"):
            return True
        try:
            if hasattr(getattr(item, name), "migretti_impl"):  # @hookimpl(specname=...)
                return True
        except Exception:  # a property that raises is no hook
            continue
    return False


def _check_arguments(database_url: str | None, seeds: bool) -> dict[str, object]:
    """The check plugin's arguments: a URL given here is named as this method's argument in
    its errors (``check: database_url is not a valid connection URL``)."""
    arguments: dict[str, object] = {"database_url": database_url, "seeds": seeds}
    if database_url is not None:
        arguments["url_label"] = "check: database_url"
    return arguments


def _flags(method: str, **values: object) -> None:
    """Refuse a flag that is not a bool: ``dry_run="no"`` would otherwise count as true."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise UsageError(f"{method}: {name} must be True or False, not {value!r}")


def _migration_name(method: str, what: str, value: object, kind: str = "migration") -> str:
    """A migration (or seed) named by the caller: non-empty text."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{method}: {what} must be a str naming a {kind}, not {value!r}")
    return value


def _names(method: str, value: object, kind: str) -> builtins.list[str]:
    """``names=``: one name, a sequence of names, or None."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_migration_name(method, "names", value, kind)]
    if not isinstance(value, Iterable):
        raise UsageError(f"{method}: names must be a name or a list of names, not {value!r}")
    return [_migration_name(method, "each of names", item, kind) for item in value]


def _rule_names(what: str, value: object) -> tuple[str, ...]:
    """``enable=``/``disable=`` of ``lint``: a rule name (commas allowed, as on the command
    line) or a sequence of them; a str is never taken apart into its characters."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or not all(isinstance(item, str) for item in items):
        raise UsageError(f"lint: {what} must be a rule name or a list of them, not {value!r}")
    return tuple(p.strip() for item in items for p in str(item).split(",") if p.strip())


def _path(what: str, value: object, kind: str = "file") -> str | os.PathLike[str] | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise UsageError(f"{what} must be a path (str or os.PathLike), not {type(value).__name__}")
    if value is not None and not os.fspath(value):
        # as `mg --config ''` refuses it: "" is no path (and would be the current directory)
        raise UsageError(f"{what} needs a {kind} path, not an empty value")
    return value


def _seconds(value: float | str | None) -> float | None:
    if value is None:
        return None
    from migretti_core.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"lock_timeout: {exc}") from exc


def engine_line(finding: LintFinding) -> str:
    from migretti_core.reporting import display_path

    return (
        f"{display_path(finding.path)}:{finding.line}:{finding.column}: "
        f"{finding.rule}: {finding.message}"
    )


def _history_row(entry: HistoryEntry | None) -> HistoryRow | None:
    if entry is None:
        return None
    return HistoryRow(
        entry.id, entry.name, entry.status, entry.applied_at, entry.checksum, entry.baseline
    )


def _outcome(result: MigrationResult) -> MigrationOutcome:
    from migretti_core.reporting import relative_path

    migration = result.migration
    report = result.locks
    return MigrationOutcome(
        id=migration.id,
        name=migration.name,
        file=relative_path(migration.path),
        direction=result.direction,
        duration_ms=result.duration_ms,
        ok=result.ok,
        executed=result.executed,
        error=result.error,
        locks=report.locks if report else (),
        rewrites=report.rewrites if report else (),
        tables=report.tables if report else (),
    )


class Migretti:
    """mg's commands for an application: one project (mg.yaml) and one target database.

    ``config`` is the mg.yaml path (default: ``MG_CONFIG``, else ``./mg.yaml``), ``env`` the
    profile (default ``MG_ENV``), ``database_url`` replaces the configured connection (as
    ``MG_DATABASE_URL`` does), ``plugins`` are loaded for this instance only (where ``-p``
    plugins go), ``lock_timeout`` bounds the wait for the migration lock (seconds or
    ``"30s"``). A protected profile runs SQL only with ``confirm=True`` (here, or on the
    method). An explicit argument wins over the environment.

    Create one per thread; a single instance serialises its own calls.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        env: str | None = None,
        database_url: str | None = None,
        plugins: Iterable[PluginSpec] = (),
        lock_timeout: float | str | None = None,
        *,
        confirm: bool = False,
    ) -> None:
        self._setup(config, env, database_url, plugins, lock_timeout, confirm, None)

    @classmethod
    def from_url(
        cls,
        url: str,
        migrations_dir: str | os.PathLike[str],
        *,
        seeds_dir: str | os.PathLike[str] | None = None,
        plugins: Iterable[PluginSpec] = (),
        lock_timeout: float | str | None = None,
        confirm: bool = False,
    ) -> Migretti:
        """An instance for ``url`` and a migrations directory, reading no mg.yaml.

        ``seeds_dir`` defaults to ``seeds`` beside the migrations directory. Plugins from
        entry points and ``MG_PLUGINS`` still load, as they would for ``mg``.
        """
        if url is not None and not isinstance(url, str):
            raise UsageError(f"from_url: url must be a str, not {type(url).__name__}")
        if not url:
            raise ConfigError("from_url: the database URL is empty")
        _path("from_url: migrations_dir", migrations_dir, "directory")
        _path("from_url: seeds_dir", seeds_dir, "directory")
        migrations = Path(os.path.abspath(os.path.expanduser(migrations_dir)))
        seeds = (
            Path(os.path.abspath(os.path.expanduser(seeds_dir)))
            if seeds_dir is not None
            else migrations.parent / "seeds"
        )
        instance = cls.__new__(cls)
        fixed = _FixedConfig(url, migrations, seeds)
        instance._setup(None, None, None, plugins, lock_timeout, confirm, fixed)
        return instance

    def _setup(
        self,
        config: str | os.PathLike[str] | None,
        env: str | None,
        database_url: str | None,
        plugins: Iterable[PluginSpec],
        lock_timeout: float | str | None,
        confirm: bool,
        fixed: _FixedConfig | None,
    ) -> None:
        _path("config", config)
        if env is not None and not isinstance(env, str):
            raise UsageError(f"env must be a profile name (a str), not {env!r}")
        if env == "":
            # explicit, as `mg --env ''`: taken as "not given", MG_ENV would choose the profile
            raise UsageError("env needs a profile name, not an empty value")
        if database_url is not None and not isinstance(database_url, str):
            raise UsageError(f"database_url must be a str, not {type(database_url).__name__}")
        _flags("Migretti", confirm=confirm)
        if not isinstance(plugins, (str, os.PathLike)):
            if not isinstance(plugins, Iterable):
                raise UsageError(f"plugins must be a list of plugins, not {plugins!r}")
            plugins = builtins.list(plugins)
        # what a fleet member's instance is built from (``fleet``)
        self._spec = (config, env, database_url, plugins, lock_timeout, confirm, fixed)
        self._lock = threading.RLock()
        self._confirm = bool(confirm)
        self._lock_timeout = _seconds(lock_timeout)
        self._api = _ApiPlugin(logging.getLogger(LOGGER_NAME))
        names, objects = _split_plugins(plugins)
        environ = dict(os.environ)
        if database_url is not None:
            if not database_url:
                raise ConfigError("database_url is empty")
            environ["MG_DATABASE_URL"] = database_url
        options = GlobalOptions(
            env=env or None,
            config=os.fspath(config) if config is not None else None,
            plugins=[*names, *_BLOCKED_FOR_API],
        )
        own: list[tuple[str, object]] = [(_API_PLUGIN, self._api)]
        if fixed is not None:
            own.append((_FROM_URL_PLUGIN, fixed))
        try:
            # database_url rides in as MG_DATABASE_URL; an error about it names the argument
            origin = "database_url" if database_url is not None else "MG_DATABASE_URL"
            self._app = App(options, environ, plugins=[*objects, *own], url_origin=origin)
        except MgError as exc:
            from migretti_core.redact import redact_text

            mask_error(exc, redact_text)
            raise
        for info in self._app.loader.infos:
            if info.status == "failed" and info.origin != ORIGIN_OPTION:
                self._api.log(
                    Event(
                        "plugin.failed",
                        "warning",
                        f"plugin {info.name!r} failed to load: {info.error}",
                        {"plugin": info.name},
                    )
                )
        try:
            self._config = self._app.config()
        except MgError as exc:
            mask_error(exc, self._app.hooks.redact)
            raise

    # --- properties -----------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The configuration of the selected profile, as the commands see it."""
        return self._config

    @property
    def migrations_dir(self) -> Path:
        return self._config.migrations_dir

    # --- plumbing ---------------------------------------------------------------------------

    def _session(self, command: str, *, dry_run: bool = False, confirm: bool = False) -> Session:
        confirmed = self._confirm or confirm
        self._api.begin(confirmed)
        return self._app.session(
            command, dry_run=dry_run, lock_timeout=self._lock_timeout, yes=confirmed
        )

    def _run(
        self,
        command: str,
        direction: Direction,
        dry_run: bool,
        confirm: bool,
        call: Callable[[Session], object],
        atomic: bool = False,
    ) -> RunResult:
        with self._lock:
            session = self._session(command, dry_run=dry_run, confirm=confirm)
            try:
                call(session)
            except MgError as exc:
                partial = self._run_result(command, direction, dry_run)
                if atomic and not dry_run:  # one transaction: nothing stayed applied
                    partial = RunResult(command, direction, dry_run)
                exc.result = partial
                raise
            return self._run_result(command, direction, dry_run)

    def _run_result(self, command: str, direction: Direction, dry_run: bool) -> RunResult:
        done = self._api.dry_results if dry_run else self._api.results
        outcomes = tuple(_outcome(r) for r in done or ())
        return RunResult(command, direction, dry_run, outcomes)

    # --- changing the database ------------------------------------------------------------

    @_public
    def apply(
        self,
        to: str | None = None,
        dry_run: bool = False,
        *,
        allow_out_of_order: bool = False,
        verify: bool = True,
        single_transaction: bool = False,
        confirm: bool = False,
    ) -> RunResult:
        """Apply every pending migration (up to and including ``to``), like ``mg apply``."""
        from migretti_core import planning, running

        if to is not None:
            _migration_name("apply", "to", to)
        _flags(
            "apply",
            dry_run=dry_run,
            allow_out_of_order=allow_out_of_order,
            verify=verify,
            single_transaction=single_transaction,
            confirm=confirm,
        )

        request = planning.ApplyRequest(
            to=to,
            allow_out_of_order=allow_out_of_order,
            verify=verify,
            single_transaction=single_transaction,
        )
        return self._run(
            "apply",
            "up",
            dry_run,
            confirm,
            lambda session: running.apply(session, request),
            atomic=single_transaction,
        )

    @_public
    def up(
        self,
        dry_run: bool = False,
        *,
        allow_out_of_order: bool = False,
        verify: bool = True,
        confirm: bool = False,
    ) -> RunResult:
        """Apply the next pending migration, like ``mg up``."""
        from migretti_core import planning, running

        _flags(
            "up",
            dry_run=dry_run,
            allow_out_of_order=allow_out_of_order,
            verify=verify,
            confirm=confirm,
        )

        request = planning.ApplyRequest(
            limit=1, allow_out_of_order=allow_out_of_order, verify=verify
        )
        return self._run(
            "up", "up", dry_run, confirm, lambda session: running.apply(session, request)
        )

    @_public
    def down(
        self,
        dry_run: bool = False,
        *,
        allow_missing_down: bool = False,
        verify: bool = True,
        confirm: bool = False,
    ) -> RunResult:
        """Roll back the last applied migration, like ``mg down``."""
        return self._rollback("down", 1, None, dry_run, allow_missing_down, verify, confirm)

    @_public
    def rollback(
        self,
        n: int = 1,
        to: str | None = None,
        dry_run: bool = False,
        *,
        allow_missing_down: bool = False,
        verify: bool = True,
        confirm: bool = False,
    ) -> RunResult:
        """Roll back the last ``n`` migrations, or everything applied after ``to``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"rollback: n must be an integer of at least 1, not {n!r}")
        return self._rollback("rollback", n, to, dry_run, allow_missing_down, verify, confirm)

    def _rollback(
        self,
        command: str,
        count: int,
        to: str | None,
        dry_run: bool,
        allow_missing_down: bool,
        verify: bool,
        confirm: bool,
    ) -> RunResult:
        from migretti_core import planning, running

        if to is not None:
            _migration_name(command, "to", to)
        _flags(
            command,
            dry_run=dry_run,
            allow_missing_down=allow_missing_down,
            verify=verify,
            confirm=confirm,
        )
        request = planning.RollbackRequest(
            count=count, to=to, allow_missing_down=allow_missing_down, verify=verify
        )
        return self._run(
            command, "down", dry_run, confirm, lambda session: running.rollback(session, request)
        )

    @_public
    def fix(self, id: str, applied: bool = True, *, confirm: bool = False) -> FixResult:
        """Resolve a failed or running migration: ``applied=True`` is ``mg fix ID --applied``
        (you completed it by hand), ``applied=False`` is ``--remove`` (you undid it)."""
        from migretti_core import running

        _migration_name("fix", "id", id)
        _flags("fix", applied=applied, confirm=confirm)
        mode = "applied" if applied else "remove"
        with self._lock:
            session = self._session("fix", confirm=confirm)
            running.fix(session, id, mode)
            fixed = [e for e in self._api.events if e.name == "migration.fixed"]
        ident = str(fixed[-1].fields.get("migration_id", id)) if fixed else id
        return FixResult(ident, "applied" if applied else "removed")

    @_public
    def seed(
        self,
        names: Sequence[str] | str | None = None,
        *,
        all: bool = False,
        dry_run: bool = False,
        confirm: bool = False,
    ) -> SeedResult:
        """Run the seeds that have not run with their current content (``all=True``: every
        one), or only ``names``; like ``mg seed [--all] [NAME...]``."""
        wanted = _names("seed", names, "seed")
        _flags("seed", all=all, dry_run=dry_run, confirm=confirm)
        with self._lock:
            session = self._session("seed", dry_run=dry_run, confirm=confirm)
            try:
                code = session.hooks.seed(session, wanted, force=all)
            except MgError as exc:
                exc.result = self._seed_result(dry_run)
                raise
            if code is None:
                raise PluginError("seeds are not available: the seeds plugin is not loaded")
            result = self._seed_result(dry_run)
            events = builtins.list(self._api.events)
        if code:
            # name the seed and the server's error, as `mg seed --dry-run` prints them
            errors = [str(e.fields.get("error")) for e in events if e.name == "seed.failed"]
            shown = "; ".join(errors) or "a seed failed"
            failed = MigrationFailed(f"seed dry run: would fail: {shown}; nothing was changed")
            failed.result = result
            raise failed
        return result

    def _seed_result(self, dry_run: bool) -> SeedResult:
        ran: builtins.list[SeedRun] = []
        skipped: builtins.list[str] = []
        for event in self._api.events:
            name = str(event.fields.get("seed", ""))
            if event.name == "seed.ran":
                ran.append(SeedRun(name, int(event.fields.get("duration_ms") or 0)))
            elif event.name == "seed.skipped":
                skipped.append(name)
        return SeedResult(tuple(ran), tuple(skipped), dry_run)

    # --- reading ----------------------------------------------------------------------------

    @_public
    def status(self) -> StatusResult:
        """Counts, head and every problem, like ``mg status``; never changes the database."""
        from migretti_core import views

        with self._lock:
            session = self._session("status")
            state, invalid, refused = views.current_status(session)
        counts = views.status_data(state, session.hooks.redact, invalid, refused)
        return StatusResult(
            applied=len(state.applied),
            pending=len(state.pending),
            failed=len(state.failed),
            running=len(state.running),
            head=_history_row(state.head),
            problems=tuple(counts["problems"]),
            ok=bool(counts["ok"]),
            baseline=int(counts.get("baseline", 0)),
            invalid_indexes=tuple(MappingProxyType(dict(index)) for index in invalid),
        )

    @_public
    def list(self) -> tuple[MigrationRow, ...]:
        """Every migration, from files and history together, like ``mg list``."""
        from migretti_core import views

        with self._lock:
            state = views.current_state(self._session("list"))
        return tuple(
            MigrationRow(
                row.id,
                row.name,
                row.status,
                row.applied_at,
                row.migration.filename if row.migration else None,
                bool(row.entry and row.entry.baseline),
            )
            for row in state.rows()
        )

    @_public
    def head(self) -> HistoryRow | None:
        """The last applied migration, like ``mg head``; None before the first."""
        from migretti_core import views

        with self._lock:
            state = views.current_state(self._session("head"))
        return _history_row(state.head)

    @_public
    def verify(self, *, raise_on_mismatch: bool = True) -> VerifyResult:
        """Check every applied migration against its file, like ``mg verify``.

        A mismatch or a missing file raises ``StateError`` (exit code 3, as ``mg verify``
        exits) carrying the result as ``.result``; ``raise_on_mismatch=False`` returns it.
        """
        from migretti_core import views

        _flags("verify", raise_on_mismatch=raise_on_mismatch)
        with self._lock:
            state = views.current_state(self._session("verify"))
        data = views.verify_data(state)
        result = VerifyResult(
            ok=bool(data["ok"]),
            checked=int(data["checked"]),
            mismatches=tuple(Mismatch(m["id"], m["name"], m["file"]) for m in data["mismatches"]),
            missing=tuple(MissingFile(m["id"], m["name"]) for m in data["missing"]),
        )
        if not result.ok and raise_on_mismatch:
            from migretti_core.messages import printable

            # names and paths escaped as the CLI shows them: a message is one line
            parts = [f"changed since it ran: {printable(m.file)}" for m in result.mismatches]
            parts += [f"file is gone: {printable(f'{m.id} ({m.name})')}" for m in result.missing]
            error = StateError(
                "verify: " + "; ".join(parts),
                hint="restore the files from version control",
            )
            error.result = result
            raise error
        return result

    @_public
    def lint(
        self,
        names: Sequence[str] | str | None = None,
        *,
        all: bool = False,
        strict: bool = False,
        enable: Sequence[str] = (),
        disable: Sequence[str] = (),
        server_version: int | None = None,
        raise_on_errors: bool = True,
    ) -> LintResult:
        """Lint the pending migrations (``all=True``: every file; or ``names``), like
        ``mg lint``. An error-level finding (with ``strict``, any) raises ``StateError``
        (exit code 3) carrying the result; ``raise_on_errors=False`` returns it."""
        from migretti_core.types import LintRequest

        if self._app.loader.pm.get_plugin("lint") is None:
            raise PluginError("lint is not available: the lint plugin is not loaded")
        from migretti_plugins.lint.command import plan_to_lint
        from migretti_plugins.lint.settings import check_rule_names, parse_server_version

        wanted = _names("lint", names, "migration")
        _flags("lint", all=all, strict=strict, raise_on_errors=raise_on_errors)
        # checked as `mg lint --enable/--disable/--server-version` checks them: a misspelt
        # rule is an error, not a rule silently left as it was
        enabled = _rule_names("enable", enable)
        disabled = _rule_names("disable", disable)
        check_rule_names(enabled, "lint: enable", UsageError)
        check_rule_names(disabled, "lint: disable", UsageError)
        if server_version is not None:
            server_version = parse_server_version(server_version, "lint: server_version")
        with self._lock:
            session = self._session("lint")
            migrations, plan, version = plan_to_lint(session, all, wanted)
            request = LintRequest(
                tuple(migrations),
                server_version=server_version,
                target_version=version,
                plan=plan,
                enable=enabled,
                disable=disabled,
            )
            findings = session.hooks.lint(session, request)
        result = LintResult(tuple(findings), len(migrations))
        if raise_on_errors and (result.errors or (strict and result.findings)):
            shown = [engine_line(f) for f in result.findings[:5]]
            more = len(result.findings) - len(shown)
            error = StateError(
                f"lint: {result.errors} error{'s' if result.errors != 1 else ''}, "
                f"{result.warnings} warning{'s' if result.warnings != 1 else ''}\n  "
                + "\n  ".join(shown)
                + (f"\n  ... and {more} more" if more > 0 else "")
            )
            error.result = result
            raise error
        return result

    @_public
    def check(
        self,
        *,
        database_url: str | None = None,
        seeds: bool = False,
        raise_on_problems: bool = True,
    ) -> CheckResult:
        """Apply, undo and reapply every migration on a scratch database, like ``mg check``.

        The project's database is never touched. A problem raises ``StateError`` (exit code
        3) and a migration that cannot be applied ``MigrationFailed`` (exit code 1), as
        ``mg check`` exits; the result rides along as ``.result``, or is returned with
        ``raise_on_problems=False``.
        """
        _flags("check", seeds=seeds, raise_on_problems=raise_on_problems)
        if database_url is not None and not isinstance(database_url, str):
            raise UsageError(
                f"check: database_url must be a str, not {type(database_url).__name__}"
            )
        plugin = self._app.loader.pm.get_plugin("check")
        run = getattr(plugin, "check", None)
        if run is None:
            raise PluginError("check is not available: the check plugin is not loaded")
        with self._lock:
            session = self._session("check")
            result = CheckResult.from_report(
                run(session, **_check_arguments(database_url, seeds)), session.hooks.redact
            )
        if result.ok or not raise_on_problems:
            return result
        bad = [m for m in result.migrations if not m.ok]
        from migretti_core.messages import printable

        # the migration named as `mg check` shows it (escaped), its problems as it says them
        parts = [f"{printable(f'{m.id} {m.name}')}: {'; '.join(m.problems)}" for m in bad]
        parts += [f"seeds: {problem}" for problem in result.seeds]
        errors = [f for f in result.lint if f.get("severity", "error") == "error"]
        if errors:
            parts.append(f"{len(errors)} lint error{'s' if len(errors) != 1 else ''}")
        error: MgError = (
            MigrationFailed("check: " + "; ".join(parts))
            if result.failed
            else StateError("check: " + "; ".join(parts))
        )
        error.result = result
        raise error

    # --- fleets -----------------------------------------------------------------------------

    def fleet(
        self,
        name: str,
        *,
        jobs: int | None = None,
        canary: int | None = None,
        fail_fast: bool = False,
        raise_on_failure: bool = True,
    ) -> Fleet:
        """The fleet ``name`` of mg.yaml (``fleets:``): the same methods, run on every member.

        ``jobs`` (default: the fleet's ``jobs``, else 4), ``canary`` and ``fail_fast`` are
        ``--jobs``, ``--canary`` and ``--fail-fast``. Each method returns a ``FleetResult``;
        when a member fails it raises ``FleetFailed`` (exit code of the first failed member,
        the ``FleetResult`` as ``.result``) unless ``raise_on_failure=False``. An unknown
        fleet raises ``ConfigError`` here.
        """
        from migretti_core.fleets import Fleet

        return Fleet(
            self,
            name,
            jobs=jobs,
            canary=canary,
            fail_fast=fail_fast,
            raise_on_failure=raise_on_failure,
        )

    def _for_member(self, plugin: tuple[str, object], target: str) -> Migretti:
        """A new instance like this one, with ``plugin`` (which points it at one member)."""
        config, env, database_url, plugins, lock_timeout, confirm, fixed = self._spec
        instance = Migretti.__new__(Migretti)
        extra = [plugins] if isinstance(plugins, (str, os.PathLike)) else builtins.list(plugins)
        instance._setup(config, env, database_url, [*extra, plugin], lock_timeout, confirm, fixed)
        instance._api.fields = {"target": target}
        return instance

    def __repr__(self) -> str:
        env = f" env={self._config.env!r}" if self._config.env else ""
        return f"<Migretti {self._config.migrations_dir}{env}>"


__all__ = ["LOGGER_NAME", "Migretti", "PluginSpec", "log_extra"]
