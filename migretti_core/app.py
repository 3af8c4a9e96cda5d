"""One ``mg`` run: the loaded plugins, the configuration (read lazily) and the options."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

from migretti_core.argv import GlobalOptions
from migretti_core.errors import ConfigError, ConfigRefused, MgError
from migretti_core.hooks import Hooks
from migretti_core.plugins import (
    BUILTIN_KEYS,
    ORIGIN_BUILTIN,
    ORIGIN_CONFIG,
    ORIGIN_OPTION,
    PluginLoader,
    parse_name_list,
    plugin_name,
)
from migretti_core.types import Config, ConfigRequest, Event, Level, Options, Session

if TYPE_CHECKING:
    from pathlib import Path

TRUTHY = ("1", "true", "yes", "on")

# The "section ignored" warnings already given in this process: a fleet builds one App per
# member from the same mg.yaml, and the warning is about the file, not the member.
_IGNORED_SECTIONS_SAID: set[tuple[str, str, str]] = set()
_IGNORED_SECTIONS_LOCK = threading.Lock()


class App:
    """Loads plugins in the documented order and hands out sessions to commands."""

    def __init__(
        self,
        options: GlobalOptions,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        plugins: Sequence[tuple[str, object]] = (),
        url_origin: str = "MG_DATABASE_URL",
        shows_plugins: bool = False,
    ) -> None:
        """``plugins`` are objects registered where ``-p`` modules go (the Python API's own);
        ``url_origin`` is what messages call a URL from ``MG_DATABASE_URL`` (``ConfigRequest``).
        ``shows_plugins``: the command only shows what is installed (``mg --help``,
        ``mg plugins``), so a package that failed to load under ``MG_STRICT_PLUGINS`` is a
        warning for it rather than the error that stops every other command.
        """
        self.globals = options
        self.shows_plugins = shows_plugins
        self._url_origin = url_origin
        self.environ = dict(os.environ if environ is None else environ)
        # pathlib is imported when a path is first needed: `mg --help` needs none
        self._cwd = cwd
        self._cwd_text = os.getcwd() if cwd is None else ""
        requested = [p for p in options.plugins if not p.startswith("no:")]
        # MG_PLUGINS is -p in the environment: no:NAME blocks there too
        from_env = parse_name_list(self.environ.get("MG_PLUGINS"))
        requested += [p for p in from_env if not p.startswith("no:")]
        given = [p for p in options.plugins if p.startswith("no:")]
        blocked = [plugin_name(p[3:]) for p in given]
        self._blocked_by = {plugin_name(p[3:]): f"-p {p}" for p in given}
        for spec in (p for p in from_env if p.startswith("no:")):
            blocked.append(plugin_name(spec[3:]))
            self._blocked_by.setdefault(plugin_name(spec[3:]), f"MG_PLUGINS={spec}")
        disabled = [plugin_name(p) for p in parse_name_list(self.environ.get("MG_DISABLE_PLUGINS"))]
        for name in disabled:
            self._blocked_by.setdefault(name, "MG_DISABLE_PLUGINS")
        blocked += disabled
        self.options = Options(verbose=options.verbose, json_log=options.json_log, yes=options.yes)
        self._config: Config | None = None
        self.extra: dict[str, Any] = {}
        # values of the shared --dry-run and --lock-timeout (cli.dry_run_option, ...)
        self.shared_options: dict[str, Any] = {}
        self.result_stream: TextIO | None = None
        self._config_error: MgError | None = None
        # A plugin that broke building the command line (its options or formats): raised by
        # the first command that reads the configuration, so `mg --help` and `mg plugins`
        # still work (SPEC 14).
        self.command_line_error: MgError | None = None
        self.loader = PluginLoader(
            blocked=blocked,
            strict=self.environ.get("MG_STRICT_PLUGINS", "").lower() in TRUTHY,
            warn=self._warn,
            trace=self.environ.get("MG_TRACE_PLUGINS", "").lower() in TRUTHY,
        )
        self.hooks = Hooks(self.loader.pm)
        self.hooks.options = self.options
        self.hooks.env = self._selected_env()
        self.loader.load_builtins()
        self.loader.load_entry_points()
        for error in self.loader.strict_errors:
            if not shows_plugins:
                raise error
            self._warn(f"{error.message} (MG_STRICT_PLUGINS is set: every other command stops)")
        if requested:
            self.loader.load_modules(requested, ORIGIN_OPTION, self.cwd)
        self.loader.register_objects(plugins, ORIGIN_OPTION)
        self._load_config_plugins()
        self._warn_blocking_nothing()

    def _warn_blocking_nothing(self) -> None:
        """``-p no:postgress`` (a typo) would block nothing without a word. Only for ``-p``:
        ``MG_DISABLE_PLUGINS`` may be set once for projects that do not all have the plugin."""
        if self._config_error is not None:
            return  # mg.yaml's own plugins are unknown; the command reports why
        known = {info.name for info in self.loader.infos}
        for name, given in self._blocked_by.items():
            if not given.startswith("-p ") or name in known:
                continue
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=1)
            also = f" (did you mean {close[0]}?)" if close else ""
            self.report(
                "plugin.not_found",
                "warning",
                f"{given} blocks nothing: no plugin is named {name!r}{also}",
                plugin=name,
            )

    def missing_plugin(self, name: str) -> str | None:
        """Why there is no command ``name``: its plugin is blocked or failed to load, or a
        plugin named on the command line or in mg.yaml did not load; else None."""
        for info in self.loader.infos:
            if info.name == name and info.status == "failed":
                return f"plugin {name!r} failed to load: {info.error}"
        if name in self._blocked_by:
            return f"plugin {name!r} is blocked ({self._blocked_by[name]})"
        # The command may come from a plugin that did not load (named after something
        # else), or from one mg.yaml names but could not be read for: the reason, not a typo.
        if self._config_error is not None:
            return f"the plugins mg.yaml names are not loaded: {self._config_error.message}"
        if self.loader.deferred_errors:
            return self.loader.deferred_errors[0].message
        return None

    def warn_plugin(self, text: str) -> None:
        """A warning about a plugin (``plugin 'NAME' ...``), as the ``plugin.failed`` event."""
        self._warn(text)

    def _warn(self, text: str) -> None:
        # The loader's warnings all start "plugin 'NAME'": the event names it (docs/logging.md)
        fields = {"plugin": text[8:].split("'", 1)[0]} if text.startswith("plugin '") else {}
        self.report("plugin.failed", "warning", text, **fields)

    def set_extra(self, values: dict[str, Any]) -> None:
        """Values of options plugins added to the command, for hooks without a session too."""
        import dataclasses

        self.extra = values
        self.options = dataclasses.replace(self.options, extra=MappingProxyType(dict(values)))
        self.hooks.options = self.options

    def report(self, name: str, level: Level, message: str, **fields: object) -> bool:
        """Emit an event with the common context every JSON log line carries."""
        context: dict[str, object] = {
            "env": self._config.env if self._config is not None else self._selected_env(),
            "dry_run": self.options.dry_run,
        }
        context.update(fields)
        return self.hooks.report(self.options, Event(name, level, message, context))

    def _selected_env(self) -> str | None:
        return self.globals.env or self.environ.get("MG_ENV") or None

    @property
    def cwd(self) -> Path:
        """The directory mg was started in (taken when the ``App`` was made)."""
        if self._cwd is None:
            from pathlib import Path

            self._cwd = Path(self._cwd_text)
        return self._cwd

    def _given_config(self) -> str | None:
        return self.globals.config or self.environ.get("MG_CONFIG") or None

    def new_config_path(self) -> Path:
        """Where ``mg init`` writes the configuration: the file named by ``--config`` or
        ``MG_CONFIG`` (relative to the working directory), else ``./mg.yaml``."""
        from migretti_core.configfile import DEFAULT_FILE, find_config

        given = self._given_config()
        path = find_config(self.cwd, given)[0] if given is not None else None
        return path if path is not None else self.cwd / DEFAULT_FILE

    def _request(self, check_unknown: bool) -> ConfigRequest:
        from pathlib import Path

        config = self._given_config()
        known = self.hooks.config_sections() if check_unknown else frozenset()
        return ConfigRequest(
            cwd=self.cwd,
            config_path=Path(config) if config else None,
            env_name=self._selected_env(),
            environ=self.environ,
            known_sections=known | frozenset(self._orphan_sections(known)),
            check_unknown=check_unknown,
            written_sections=self.hooks.written_sections(),
            url_origin=self._url_origin,
        )

    def _orphan_sections(self, known: frozenset[str]) -> dict[str, str]:
        """Sections of plugins that are blocked or failed to load, and why they are ignored.

        Blocking a plugin (or losing it to an import error) must not turn its mg.yaml
        section into an "unknown key" that stops every command.
        """
        orphans: dict[str, str] = {}
        for info in self.loader.infos:
            if info.status not in ("blocked", "failed"):
                continue
            why = "is blocked" if info.status == "blocked" else "failed to load"
            module = info.source.partition(":")[0]
            names: tuple[str, ...] = (info.name,)
            if info.origin != ORIGIN_BUILTIN:  # builtins share their package, migretti_plugins
                names += (module, module.partition(".")[0], module.rpartition(".")[2])
            for name in (*names, *BUILTIN_KEYS.get(info.name, ())):
                if name and name not in known:
                    orphans.setdefault(name, f"plugin {info.name!r} {why}")
        for name in sorted(self.loader.blocked):
            for section in (name, *BUILTIN_KEYS.get(name, ())):
                if section not in known:
                    orphans.setdefault(section, f"plugin {name!r} is blocked")
        return orphans

    def _warn_orphans(self, config: Config) -> None:
        orphans = self._orphan_sections(self.hooks.config_sections())
        label = config.label
        for key in config.settings:
            if key in orphans:
                said = (str(config.path), key, orphans[key])
                with _IGNORED_SECTIONS_LOCK:
                    if said in _IGNORED_SECTIONS_SAID:
                        continue
                    _IGNORED_SECTIONS_SAID.add(said)
                self.report(
                    "config.section_ignored",
                    "warning",
                    f"{label}: section '{key}' is ignored: {orphans[key]}",
                    section=key,
                )

    def _config_may_name_plugins(self) -> bool:
        """A cheap look at the file, so startup (``mg --help``) skips YAML when it can.

        A file mg refuses to read at all (``ConfigRefused``) is fatal here already.
        """
        from migretti_core.configfile import find_config, read_bounded

        given = self._given_config()
        path, label = find_config(self._cwd or self._cwd_text, given)
        if path is None:
            return False
        try:
            return b"plugins" in read_bounded(path, label)
        except ConfigRefused:
            raise
        except MgError:
            return bool(given)  # let the real load report a missing --config file

    def _load_config_plugins(self) -> None:
        """Register ``plugins:`` from mg.yaml, so they can add commands and config sections."""
        if not self._config_may_name_plugins():
            return
        try:
            preview = self.hooks.load_config(self._request(check_unknown=False))
        except ConfigRefused:
            raise
        except MgError as exc:
            self._config_error = exc
            return
        if preview.plugins:
            # A plugin's import error may quote the configured password: masked like any
            # later message, in the command's error and in `mg plugins`.
            self._remember_secrets(preview)
            self.loader.load_modules(preview.plugins, ORIGIN_CONFIG, preview.root)
            redact = self.hooks.redact
            for info in self.loader.infos:
                info.error = redact(info.error) if info.error else info.error
            for error in self.loader.deferred_errors:
                error.message = redact(error.message)
                error.args = (error.message,)

    @property
    def config_problem(self) -> MgError | None:
        """Why the configuration could not be read while plugins were loaded (its
        ``plugins:`` are then unknown), or None; ``config()`` raises it."""
        return self._config_error

    def config(self) -> Config:
        """The configuration of the selected profile; raises the first startup problem."""
        if self._config is not None:
            return self._config
        if self._config_error is not None:
            raise self._config_error
        if self.loader.deferred_errors:
            raise self.loader.deferred_errors[0]
        if self.command_line_error is not None:
            raise self.command_line_error
        self._config = self.hooks.load_config(self._request(check_unknown=True))
        self.hooks.env = self._config.env
        self._remember_secrets(self._config)
        self._warn_orphans(self._config)
        try:
            self.hooks.configure(self._config)
        except ConfigError as exc:
            from migretti_core.settings import name_the_profile

            name_the_profile(exc, self._config.label, self._config.env, self._config.source)
            raise
        return self._config

    def _remember_secrets(self, config: Config) -> None:
        """Passwords from the configuration are masked in every event, whatever its source."""
        self.hooks.remember_secrets(config)
        password = self.environ.get("PGPASSWORD")
        if password:
            self.hooks.secrets.add(password)

    def session(
        self,
        command: str,
        *,
        dry_run: bool = False,
        lock_timeout: float | None = None,
        yes: bool = False,
        lint: bool = True,
        table_lock_timeout: float | None = None,
        statement_timeout: float | None = None,
        output_format: str = "text",
        read_only: bool = False,
        light_connection: bool = False,
    ) -> Session:
        # A command with the shared --dry-run and --lock-timeout (a plugin's too) runs with
        # their values, whether or not it passes them here.
        dry_run = dry_run or bool(self.shared_options.get("dry_run"))
        given_timeout = self.shared_options.get("lock_timeout")
        if lock_timeout is None and given_timeout is not None:
            from migretti_core.cli import parse_lock_timeout

            lock_timeout = parse_lock_timeout(given_timeout)
        self.options = Options(
            verbose=self.globals.verbose,
            json_log=self.globals.json_log,
            yes=self.globals.yes or yes,
            dry_run=dry_run,
            command=command,
            lock_timeout=lock_timeout,
            lint=lint,
            table_lock_timeout=table_lock_timeout,
            statement_timeout=statement_timeout,
            output_format=output_format,
            extra=MappingProxyType(dict(self.extra)),
            read_only=read_only,
            light_connection=light_connection,
        )
        self.hooks.options = self.options
        return Session(self.config(), self.options, self.hooks)
