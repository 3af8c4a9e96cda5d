"""The ``mg`` command line (click).

Global options are lifted out of argv first (see ``argv``), plugins are loaded, then the click
group is built with the builtin commands plus whatever plugins register. Every ``MgError`` is
printed as a short message with its exit code; a Python traceback only appears with ``-v``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migretti_core import __version__
from migretti_core.app import App
from migretti_core.argv import ArgvError, GlobalOptions, extract_globals
from migretti_core.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConfigError,
    Interrupted,
    MgError,
    NoPluginAnswers,
    PluginError,
    PluginFailed,
    UsageError,
)
from migretti_core.formats import DocumentChoice

if TYPE_CHECKING:
    from pathlib import Path

    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])

HELP_MAX_WIDTH = 100
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": HELP_MAX_WIDTH}


def app_of(ctx: click.Context) -> App:
    app = ctx.find_object(App)
    if app is None:  # pragma: no cover - main() always provides one
        raise UsageError("mg was started without its application context")
    return app


def _shared(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Keep a shared option's value on the run: ``app.session()`` applies it, so a plugin's
    command that uses the shared option gets a session with its value."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        app = ctx.find_object(App)
        if app is not None:
            app.shared_options[name] = value
        return value

    return remember


def lock_timeout_option(func: F) -> F:
    return click.option(
        "--lock-timeout",
        metavar="DURATION",
        callback=_shared("lock_timeout"),
        help="How long to wait for the migration lock (e.g. 30s, 10m). Default: lock_timeout, 10m.",
    )(func)


def dry_run_option(func: F) -> F:
    return click.option(
        "--dry-run",
        is_flag=True,
        callback=_shared("dry_run"),
        help="Show the plan and try the SQL, then undo everything.",
    )(func)


BASE_FORMATS = ("text", "json")


class FormatChoice(DocumentChoice):
    """The ``--format`` choices; ``mg`` adds the names plugins register (mg_output_formats)."""


def format_option(func: F) -> F:
    """``--format text|json|...`` (parameter ``fmt``), with the plugins' formats added."""
    return click.option(
        "--format",
        "fmt",
        type=FormatChoice(list(BASE_FORMATS)),
        default="text",
        show_default=True,
        help="Output format.",
    )(func)


def emit_result(ctx: click.Context, kind: str, data: Any, fmt: str) -> None:
    """Render a command's result through ``mg_format_result`` and print it on stdout."""
    app = app_of(ctx)
    try:
        text = app.hooks.format_result(app.options, kind, data, fmt)
    except NoPluginAnswers as exc:
        if fmt in BASE_FORMATS or exc.hook != "mg_format_result":
            raise
        # A format a plugin added: no builtin was blocked, that plugin renders other kinds.
        raise NoPluginAnswers(
            f"no plugin provides {fmt} output for {kind} (hook mg_format_result): the plugin "
            f"that adds --format {fmt} does not render {kind}; use --format text or json",
            hook=exc.hook,
        ) from None
    click.echo(text, file=app.result_stream or sys.stdout)


def parse_lock_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    from migretti_core.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--lock-timeout: {exc}") from exc


class MgGroup(click.Group):
    """Lists commands in the order they were added, builtins first, each with its whole
    first sentence (click cuts summaries at 45 characters)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            # `mg audit` with the plugin `audit` blocked or broken: say so, not "did you
            # mean 'drift'?".
            why = ctx.obj.missing_plugin(args[0]) if isinstance(ctx.obj, App) and args else None
            if why is None:
                raise
            raise click.UsageError(f"No such command {args[0]!r}: {why}.", ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        if not (isinstance(ctx.obj, App) and ctx.obj.options.json_log) and _stderr_is_terminal():
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # click would write a blank line to stderr (closing the terminal's ^C echo)
            # before run() sees it: only a terminal shows a ^C, and under --json-log stderr
            # holds JSON lines only.
            raise _Stopped from exc


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


class _Stopped(Exception):
    """Ctrl-C or SIGTERM where click's blank line does not belong, carried past click."""


GLOBAL_OPTIONS_EPILOG = (
    "Global options (--env, --config, -p, --json-log, -y, -v) go before or after the "
    "command; `mg --help` lists them."
)


def _add_epilogs(command: click.Command) -> None:
    """Every command's help says where the global options are (they are not click's), and a
    group's help (``mg db``, ``mg schema``) lists its commands with their whole first
    sentence, as ``mg --help`` does, where click would cut it at 45 characters."""
    if command.epilog is None:
        command.epilog = GLOBAL_OPTIONS_EPILOG
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            if sub.short_help is None:
                sub.short_help = sub.get_short_help_str(limit=1000)
            _add_epilogs(sub)


def complete_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of migration ids, from the files alone (no database)."""
    from click.shell_completion import CompletionItem

    from migretti_core.textfiles import read_bytes

    try:
        app = app_of(ctx)
        config = app.config()
        items = []
        for path in app.hooks.discover_migrations(config):
            try:
                migration = app.hooks.parse_migration(path, read_bytes(path))
                ident, name = migration.id, migration.name
            except Exception:  # a file being written: its name still says which it is
                ident, _, name = path.stem.partition("_")
            if ident.startswith(incomplete):
                items.append(CompletionItem(ident, help=name))
        return items
    except Exception:
        return []


GLOBAL_HELP = """SQL-first PostgreSQL schema migrations.

\b
Global options (before or after the command):
  --env NAME        select a profile from mg.yaml (env: MG_ENV)
  --config PATH     configuration file (env: MG_CONFIG; default ./mg.yaml)
  -p MODULE         load a plugin; -p no:NAME blocks one (env: MG_PLUGINS,
                    MG_DISABLE_PLUGINS)
  --json-log        diagnostics as one JSON object per line on stderr
  -y, --yes         confirm protected environments without asking
  -v, --verbose     more output, and tracebacks on errors
  --fleet NAME      run the command on every database of a fleet from mg.yaml
                    (env: MG_FLEET); with --jobs N, --canary K, --fail-fast

\b
Exit codes: 0 ok, 1 migration/database/hook failure, 2 usage or configuration error,
3 state blocks the operation, 4 lock wait timed out, 5 aborted, 130 interrupted.
"""


COMPLETE_VAR = "_MG_COMPLETE"


def help_width(max_width: int) -> int:
    """The width click's help formatter picks (``shutil.get_terminal_size``'s columns, at
    most ``max_width``, less 2, at least 50), found without importing ``shutil``: click
    imports it to format any help, and ``bz2``, ``lzma`` and ``zlib`` come along."""
    from click import formatting

    if formatting.FORCED_WIDTH is not None:
        return formatting.FORCED_WIDTH
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            stdout = sys.__stdout__
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
        except (ValueError, OSError):
            columns = 0
        columns = columns or 80
    return max(min(columns, max_width) - 2, 50)


def build_cli(app: App) -> click.Group:
    # obj: shell completion builds contexts without running the group's callback.
    settings = {**CONTEXT_SETTINGS, "obj": app}
    settings["terminal_width"] = help_width(HELP_MAX_WIDTH)

    @click.group(cls=MgGroup, help=GLOBAL_HELP, context_settings=settings)
    @click.version_option(__version__, "--version", prog_name="mg", message="%(prog)s %(version)s")
    @click.pass_context
    def cli(ctx: click.Context) -> None:
        ctx.obj = app

    from migretti_core import commands

    commands.register(cli)
    _register_plugin_commands(app, cli)
    try:
        _extend_commands(app, cli)
    except MgError as exc:
        # A plugin's options or formats cannot be added: the commands stay as they are for
        # `mg --help` and `mg plugins`, and any command that reads the configuration stops.
        app.command_line_error = exc
        if app.shows_plugins:  # where people look for what is wrong: tell them
            app.warn_plugin(
                f"{exc.message} (every command but mg --help, mg plugins and mg init stops)"
            )
    for command in cli.commands.values():
        _add_epilogs(command)
    if app.environ.get(COMPLETE_VAR):
        from migretti_core.completion import add_global_options

        add_global_options(cli)
    return cli


def _register_plugin_commands(app: App, cli: click.Group) -> None:
    """``mg_register_commands``; a command a plugin adds names that plugin when it crashes."""
    from migretti_core.plugins import ORIGIN_BUILTIN

    builtins = {info.name for info in app.loader.infos if info.origin == ORIGIN_BUILTIN}
    owners: dict[str, str] = {}  # the commands plugins (not builtins) added, by name
    added: dict[str, str] = {}  # every command added here: the plugin that added it
    add_command = cli.add_command

    def recording(command: click.Command, name: str | None = None) -> None:
        key = name or command.name or ""
        plugin = app.hooks.registering
        mine = plugin is not None and plugin not in builtins
        if key in cli.commands:
            # A command name belongs to mg, a builtin or the first plugin to take it; a plugin
            # replaces a builtin's only where that builtin is blocked (never silently,
            # whichever of the two pluggy happens to call last).
            holder = added.get(key)
            if mine or key in owners:
                loser = str(plugin) if mine else owners[key]
                _command_taken(app, loser, key, None if mine else plugin, holder if mine else "")
                if mine:
                    return
                del owners[key]
        add_command(command, name)
        if plugin is not None:
            added[key] = plugin
        if mine:
            owners[key] = str(plugin)

    cli.add_command = recording  # type: ignore[method-assign,assignment]
    try:
        app.hooks.register_commands(cli)
    finally:
        del cli.add_command
    for name, plugin in owners.items():
        command = cli.commands.get(name)
        if command is not None:
            _name_the_plugin(command, plugin, f"mg {name}")


def _command_taken(
    app: App, loser: str, name: str, builtin: str | None, holder: str | None
) -> None:
    """Warn that plugin ``loser``'s command ``name`` is left out: a builtin's took the name
    (``builtin``), or it was taken before (by ``holder``, a plugin; None: mg's own)."""
    if builtin is not None or holder:
        owner = f"plugin {builtin or holder!r}"
        how = f"block {owner} (-p no:{builtin or holder}) to replace it"
    else:
        owner, how = "mg itself", "mg's own commands cannot be replaced: give it another name"
    app.hooks.plugin_warning(
        loser,
        "mg_register_commands",
        RuntimeError(name),
        text=f"plugin {loser!r} adds a command {name!r}, which {owner} has: it is left out ({how})",
    )


def _name_the_plugin(command: click.Command, plugin: str, path: str) -> None:
    """Turn an unexpected exception of a plugin's command into ``PluginFailed`` (exit 1)."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _name_the_plugin(sub, plugin, f"{path} {name}")
    original = command.callback
    if original is None or getattr(original, "mg_named", False):
        return

    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except (MgError, click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            raise PluginFailed(plugin, path, exc, EXIT_FAILURE) from exc

    callback.mg_named = True  # type: ignore[attr-defined]
    command.callback = callback


def _traceback() -> str:
    import traceback

    return traceback.format_exc()


def _extend_commands(app: App, cli: click.Group) -> None:
    """Plugins' options on existing commands and their ``--format`` names.

    Commands are module-level objects shared by every run in a process, so a command that
    changes is copied for this run rather than changed in place.
    """
    formats = [name for name in app.hooks.output_formats() if name not in BASE_FORMATS]
    _extend_group(app, cli, "", formats)


def _extend_group(app: App, group: click.Group, prefix: str, formats: list[str]) -> bool:
    """Extend every command of ``group`` (recursively); True when one was replaced."""
    changed = False
    for name, command in list(group.commands.items()):
        path = f"{prefix}{name}"
        new = _extended(app, path, command, formats)
        if isinstance(command, click.Group):
            sub = new if new is not command else copy.copy(command)
            assert isinstance(sub, click.Group)
            sub.commands = dict(command.commands)
            if _extend_group(app, sub, f"{path} ", formats) or new is not command:
                new = sub
        if new is not command:
            group.commands[name] = new
            changed = True
    return changed


def _extended(app: App, path: str, command: click.Command, formats: list[str]) -> click.Command:
    # A hidden command that runs its group's own work (`mg seed NAME...` is `seed run`) says
    # what plugins know it as: the options they add to `seed` must work where `mg seed
    # --help` shows them.
    path = getattr(command, "options_of", None) or path
    added = app.hooks.command_options(path)
    claims = any(isinstance(p.type, DocumentChoice) for p in command.params)
    if not added and not claims:
        return command
    clone = copy.copy(command)
    clone.params = []
    for param in command.params:
        kind = param.type
        if isinstance(kind, FormatChoice) and formats:
            param = copy.copy(param)
            param.type = FormatChoice([*kind.choices, *formats])
        clone.params.append(param)
    callback = command.callback
    if callback is None:
        return clone
    if added:
        callback = _with_options(app, path, clone, added, callback)
    if claims:
        callback = _claiming_stdout(app, callback)
    clone.callback = callback
    return clone


def _option_owner(app: App, path: str, param: click.Parameter) -> str | None:
    """The plugin whose ``mg_command_options`` gave ``param`` (asked again: an error path)."""
    for impl in app.hooks.pm.hook.mg_command_options.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue
        try:
            answer: Any = impl.function(*({"command": path}[name] for name in impl.argnames))
        except Exception:
            continue
        if any(getattr(p, "name", None) == param.name for p in answer or ()):
            return str(impl.plugin_name)
    return None


def _with_options(
    app: App,
    path: str,
    command: click.Command,
    params: list[click.Parameter],
    original: Callable[..., Any],
) -> Callable[..., Any]:
    taken = {p.name for p in command.params}
    names: list[str] = []
    for param in params:
        if param.name is None or param.name in taken:
            owner = _option_owner(app, path, param)
            raise PluginError(
                f"{f'plugin {owner!r}' if owner else 'a plugin'} adds option {param.name!r} "
                f"to mg {path}, which already has one by that name",
                hint=f"fix the plugin or disable it with -p no:{owner}" if owner else None,
            )
        taken.add(param.name)
        names.append(param.name)
        command.params.append(param)

    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        for name in names:
            app.extra[name] = kwargs.pop(name, None)
        app.set_extra(app.extra)
        return original(*args, **kwargs)

    return callback


def _claiming_stdout(app: App, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        import threading

        fmt = kwargs.get("fmt") or click.get_current_context().meta.get("output_format")
        # sys.stdout is process-wide: only the main thread may swap it (a fleet runs its
        # members' commands in threads, behind stream routers of its own).
        if (
            fmt in (None, "text")
            or app.result_stream is not None
            or threading.current_thread() is not threading.main_thread()
        ):
            return original(*args, **kwargs)
        app.result_stream = sys.stdout
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return original(*args, **kwargs)
        finally:
            app.result_stream = None

    return callback


def _print_error(app: App | None, exc: MgError, trace: str | None = None) -> None:
    """Report the error; with ``-v`` the traceback goes along (a field under --json-log).

    When no plugin showed it (the output plugin blocked, say), the core prints it itself:
    a fatal error is never silent.
    """
    from migretti_core.messages import emit, printable

    if exc.reported and trace is None:
        return
    if app is not None:
        fields: dict[str, object] = {"error": exc.message, "exit_code": exc.exit_code}
        if exc.hint:
            fields["hint"] = exc.hint
        if exc.plugin:
            fields["plugin"] = exc.plugin
        if trace is not None:
            if app.options.json_log:
                fields["traceback"] = trace
            else:
                print(printable(app.hooks.redact(trace), lines=True), file=sys.stderr, end="")
        try:
            shown = app.report("command.failed", "error", exc.message, **fields)
        except Exception:
            shown = False
        if not shown:
            redact = app.hooks.redact
            emit("error", redact(exc.message), redact(exc.hint) if exc.hint else None)
    else:
        from migretti_core.redact import redact as redact_text

        if trace is not None:
            print(printable(redact_text(trace), lines=True), file=sys.stderr, end="")
        emit("error", redact_text(exc.message), redact_text(exc.hint) if exc.hint else None)


def _traceback_wanted(app: App | None, exc: BaseException, verbose: bool) -> str | None:
    """The traceback with ``-v``, and for a plugin's failure with MG_TRACE_PLUGINS too."""
    tracing = app is not None and app.hooks.trace_plugins and isinstance(exc, PluginFailed)
    return _traceback() if verbose or tracing else None


def run(argv: list[str] | None = None) -> int:
    """Run ``mg`` and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if sys.stdout is None:  # started with stdout closed (`mg list >&-`)
        sys.stdout = _ClosedOutput()
    if sys.stderr is None:
        # started with stderr closed (`2>&-`): diagnostics have nowhere to go, and must not
        # land on stdout (printing to None prints there) among the results; the exit code
        # still tells what happened
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    app: App | None = None
    verbose = "-v" in args or "--verbose" in args
    json_log = "--json-log" in args  # until the options are read
    try:
        _check_utf8(args)
        options, rest = extract_globals(args)
        verbose, json_log = options.verbose, options.json_log
        # Plugins are imported and asked for commands and options here: while the command
        # will write a document, what they print on the way goes to stderr too.
        with _stdout_to_stderr(_writes_document(rest)):
            app = App(options, shows_plugins=_shows_plugins(rest))
            _refuse_fleet_without_plugin(app)
            cli = build_cli(app)
        result = cli.main(args=rest, prog_name=_prog_name(argv), standalone_mode=False)
        sys.stdout.flush()  # a full disk or closed pipe shows here, not at interpreter exit
        code = result if isinstance(result, int) else 0
        if code == 0 and app.hooks.output_error is not None:
            raise app.hooks.output_error  # the report of what was done could not be written
        return code
    except ArgvError as exc:
        _print_error(_reporting_app(app, json_log), UsageError(str(exc)))
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        if app is not None and app.options.json_log:
            ctx = exc.ctx if isinstance(exc, click.UsageError) else None
            hint = f"see '{ctx.command_path} --help'" if ctx is not None else None
            _print_error(app, UsageError(exc.format_message(), hint=hint))
        else:
            exc.show()
        return EXIT_USAGE
    except (KeyboardInterrupt, click.exceptions.Abort, _Stopped):
        if json_log:
            _print_error(_reporting_app(app, json_log), Interrupted("interrupted"))
        else:
            print("mg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MgError as exc:
        app = _reporting_app(app, json_log)
        _print_error(app, exc, _traceback_wanted(app, exc, verbose))
        return exc.exit_code
    except OSError as exc:
        # Not a file mg reads (those are reported where they are read): its own output or
        # a file it writes, such as stdout redirected to a full disk.
        _discard_stdout()
        if isinstance(exc, BrokenPipeError):
            return EXIT_FAILURE  # whoever read the output has gone; nobody to tell
        _print_error(app, output_error(exc), _traceback() if verbose else None)
        return EXIT_FAILURE
    except Exception as exc:
        error = MgError(
            f"unexpected error: {type(exc).__name__}: {exc}",
            hint=None if verbose else "rerun with -v to see the traceback",
        )
        _print_error(app, error, _traceback_wanted(app, exc, verbose))
        return EXIT_FAILURE


def output_error(exc: OSError) -> MgError:
    """An ``OSError`` that is not a file mg reads (those are reported where they are read):
    its own output or a file it writes, such as stdout redirected to a full disk."""
    where = f"{exc.filename}: " if exc.filename else "writing the output: "
    return MgError(f"{where}{exc.strerror or exc}")


def _shows_plugins(args: list[str]) -> bool:
    """Whether the command only shows what is installed: ``mg --help`` (or ``mg`` alone) and
    ``mg plugins``, which work even when a plugin is broken, strict mode included (SPEC 14)."""
    return not args or args[0] in ("-h", "--help", "plugins")


def _writes_document(args: list[str]) -> bool:
    """Whether the command line asks for ``--format`` other than ``text`` (and no help)."""
    wanted = False
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            return False
        if arg == "--format" and index + 1 < len(args):
            wanted = args[index + 1] != "text"
        elif arg.startswith("--format="):
            wanted = arg.partition("=")[2] != "text"
    return wanted


def _stdout_to_stderr(wanted: bool) -> contextlib.AbstractContextManager[object]:
    if not wanted:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(sys.stderr)


def _prog_name(argv: list[str] | None) -> str:
    """The name usage lines show: ``migretti`` when run under that name, else ``mg``."""
    if argv is None and os.path.basename(sys.argv[0]) == "migretti":
        return "migretti"
    return "mg"


def _reporting_app(app: App | None, json_log: bool) -> App | None:
    """``app``; or, when the command stopped before it had one (a bad global option, Ctrl-C
    while plugins load) and ``--json-log`` was asked for, one that only reports, so the
    error is a JSON line too."""
    if app is None and json_log:
        with contextlib.suppress(Exception, KeyboardInterrupt):
            return App(GlobalOptions(json_log=True), plugins=[])
    return app


def _refuse_fleet_without_plugin(app: App) -> None:
    """``--fleet`` with the fleet plugin blocked must not quietly run on the profile's own
    database instead of the fleet's."""
    wanted = app.globals.fleet or app.environ.get("MG_FLEET", "").strip()
    fleet_options = app.globals.jobs or app.globals.canary or app.globals.fail_fast
    if (wanted or fleet_options) and app.loader.pm.get_plugin("fleet") is None:
        raise UsageError(
            "--fleet, MG_FLEET, --jobs, --canary and --fail-fast need the fleet plugin, "
            "which is not loaded",
            hint="remove -p no:fleet (or fleet from MG_DISABLE_PLUGINS), or unset MG_FLEET",
        )


def _check_utf8(args: list[str]) -> None:
    """Refuse an argument that is not valid UTF-8 (Python keeps such bytes as surrogates,
    which fail much later, when the text is written to a file or sent to the server)."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = arg.encode("utf-8", "surrogateescape")
            shown = repr(raw)[2:-1]
            raise UsageError(
                f"argument '{shown}' is not valid UTF-8 (byte {raw[exc.start]:#04x})"
            ) from None


class _ClosedOutput(io.TextIOBase):
    """Standard output when mg was started without one: Python leaves ``sys.stdout`` None,
    and printing to None prints nothing. Writing fails as writing to a closed descriptor
    does, so mg reports it as it reports a full disk: one line, exit 1."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        import errno

        raise OSError(errno.EBADF, "standard output is closed")


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the final flush at exit cannot fail a second time."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a Kubernetes rollout, a CI timeout) and SIGHUP (the terminal or SSH session
    closed) unwind like Ctrl-C.

    The open transaction is rolled back and the lock released instead of the process
    vanishing mid-statement.
    """
    import signal

    from migretti_core.errors import Terminated

    raise Terminated(signal.Signals(signum).name)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is signal.SIG_DFL:
        signal.signal(hangup, _terminate)  # (left alone when ignored, as under nohup)
    code = run()
    # The interpreter's last collection walks every object still alive (pglast's classes, the
    # plugins' modules) to free what the process is about to give back anyway: 15-20 ms of a
    # command's time (docs/performance.md). Frozen objects are left out of it; files and
    # connections are closed by then, and reference counting still finalizes the rest.
    import gc

    gc.freeze()
    sys.exit(code)


def init_project(config: Path, embedded: bool) -> list[tuple[Path, bool]]:
    """Write the configuration file ``config`` (mg.yaml, or the file ``--config`` names; never
    overwriting it) and migrations/ beside it.

    Returns each path written, with True when it was created and False when an existing
    file was extended (``.gitignore``).
    """
    from migretti_core.messages import printable
    from migretti_core.reporting import display_path
    from migretti_core.templates import embedded_config, server_config
    from migretti_core.textfiles import read_bytes, write_new_file

    if config.exists():
        raise ConfigError(f"{display_path(config)} already exists; not overwriting it")
    directory = config.parent
    if not directory.is_dir():
        raise ConfigError(
            f"{display_path(directory)} does not exist or is not a directory; "
            f"mg init writes {printable(config.name)} into an existing directory",
            hint=f"create it first: mkdir -p {display_path(directory)}",
        )
    migrations = directory / "migrations"
    if (migrations.exists() or migrations.is_symlink()) and not migrations.is_dir():
        # Checked before mg.yaml is written: a project without its migrations directory
        # would fail on every later command.
        raise ConfigError(
            f"{display_path(migrations)} exists and is not a directory; mg init needs a "
            "migrations/ directory"
        )
    gitignore = directory / ".gitignore"
    gitignore_existed = gitignore.exists()
    existing = b""
    if embedded and gitignore_existed:
        # Bytes: git reads .gitignore as bytes, and a comment in another encoding (Latin-1)
        # must not stop mg init half way. Read before mg.yaml is written, for the same reason.
        if not gitignore.is_file():  # a FIFO or a device: never opened (a FIFO would block)
            kind = "a directory" if gitignore.is_dir() else "not a regular file"
            raise ConfigError(f"{display_path(gitignore)} is {kind}; nothing was written")
        try:
            existing = read_bytes(gitignore)
        except OSError as exc:
            raise ConfigError(f"{display_path(gitignore)} cannot be read: {exc.strerror}") from exc
    text = embedded_config() if embedded else server_config()
    written: list[tuple[Path, bool]] = []
    try:
        try:
            # all of it or nothing: a full disk or Ctrl-C half way leaves no truncated mg.yaml
            write_new_file(config, text.encode("utf-8"))
        except UsageError as exc:
            raise ConfigError(exc.message, hint=exc.hint) from exc
        written.append((config, True))
        if not migrations.exists():
            migrations.mkdir()
            written.append((migrations, True))
        # Any of the lines that ignore .mg at the top (.mg, .mg/, /.mg, /.mg/) is enough.
        if embedded and not {b".mg", b".mg/", b"/.mg", b"/.mg/"} & set(existing.split()):
            prefix = b"" if not existing or existing.endswith(b"\n") else b"\n"
            _append_whole(
                gitignore, prefix + b".mg/\n", len(existing) if gitignore_existed else None
            )
            written.append((gitignore, not gitignore_existed))
    except BaseException:
        # What this run created goes again, so `mg init` can simply be run once more: a
        # half-made project (mg.yaml without its .gitignore entry) would refuse it.
        for path, _ in reversed(written):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        raise
    return written


def _append_whole(path: Path, data: bytes, size: int | None) -> None:
    """Append ``data`` to ``path`` (of ``size`` bytes; None: new), all of it or none: a write
    that fails half way (a full disk) cuts the file back to what it was, never leaving a
    partial line that would join the next one the user adds."""
    try:
        with path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            if size is None:
                path.unlink()
            else:
                os.truncate(path, size)
        if isinstance(exc, OSError):
            from migretti_core.reporting import display_path

            raise MgError(
                f"cannot write {display_path(path)}: {exc.strerror or exc}; mg init changed nothing"
            ) from exc
        raise
