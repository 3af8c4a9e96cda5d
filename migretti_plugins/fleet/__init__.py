"""Builtin ``fleet``: one command on many databases (``--fleet NAME`` or ``MG_FLEET``).

The fleet's members come from the ``fleets:`` section of mg.yaml (see ``members``). Each
member runs the very command the user typed, through its own ``App``, in a thread of this
process: at most ``--jobs`` at once, ``--canary`` members first, ``--fail-fast`` optional.
Then one summary (a table, or ``--format json``) and one exit code: 0 when every member
succeeded, else the exit code of the first failed member in fleet order. See
docs/scaling.md.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from migretti_core import hookimpl
from migretti_core.types import Config, Key

if TYPE_CHECKING:
    import click

# Commands that run per member (when their plugin is loaded), and those that change the
# database (a protected profile asks once for the whole fleet).
FLEET_COMMANDS = (
    "apply",
    "migrate",
    "up",
    "down",
    "rollback",
    "status",
    "verify",
    "list",
    "head",
    "fix",
    "seed",
    "baseline",
    "lint",
    "drift",
)
CHANGING = frozenset({"apply", "migrate", "up", "down", "rollback", "fix", "seed", "baseline"})


@hookimpl
def mg_config_sections() -> list[str | Key]:
    # As written: only the fleet in use is interpolated, so a variable another fleet needs
    # never breaks a command.
    return [
        Key("fleets", "mapping", None, "named groups of targets (docs/scaling.md)", as_written=True)
    ]


@hookimpl
def mg_configure(config: Config) -> None:
    if config.settings.get("fleets") in (None, ""):
        return  # nothing to check: most projects have no fleets, and this runs at every start
    from migretti_plugins.fleet.members import all_fleets

    all_fleets(config)


@hookimpl(trylast=True)
def mg_register_commands(cli: click.Group) -> None:
    """Wrap the commands that can run on a fleet; without ``--fleet`` they run as before."""
    import click

    for name, command in list(cli.commands.items()):
        if isinstance(command, click.Group):
            # A group's own callback runs before its subcommand: wrap the subcommands
            # (``mg seed`` is the group's hidden ``run``).
            for sub_name, sub in list(command.commands.items()):
                run = sub_name == "run"
                shown = name if run else f"{name} {sub_name}"  # mg seed create, mg db start
                _wrap_command(shown, sub, name in FLEET_COMMANDS and run)
        else:
            _wrap_command(name, command, name in FLEET_COMMANDS)


def _wrap_command(name: str, command: click.Command, supported: bool) -> None:
    if command.callback is None or getattr(command.callback, "_mg_fleet", False):
        return
    command.callback = _wrap(name, command.callback, supported)
    if supported and not any("--format" in getattr(p, "opts", ()) for p in command.params):
        command.params.append(_format_option())


def _remember_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["fleet_format"] = value


def _format_option() -> click.Option:
    """``--format`` for a command that has none of its own: the fleet summary's format."""
    import click

    return click.Option(
        ["--format", "fleet_format"],
        type=click.Choice(["text", "json"]),
        expose_value=False,
        callback=_remember_format,
        help="With --fleet: json prints the fleet's summary as one JSON document.",
    )


def _wrap(name: str, callback: Any, supported: bool) -> Any:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        import click

        from migretti_core.cli import app_of

        ctx = click.get_current_context()
        app = app_of(ctx)
        fleet = app.globals.fleet
        if not fleet and supported:
            fleet = app.environ.get("MG_FLEET", "").strip() or None
        if fleet is None:
            from migretti_core.errors import UsageError

            if app.globals.jobs or app.globals.canary or app.globals.fail_fast:
                raise UsageError("--jobs, --canary and --fail-fast need --fleet NAME")
            if ctx.meta.get("fleet_format") == "json":
                raise UsageError(f"mg {name} --format json needs --fleet NAME")
            return callback(*args, **kwargs)
        if not supported:
            from migretti_core.errors import UsageError

            raise UsageError(
                f"mg {name} does not run on a fleet",
                hint=f"--fleet works with {', '.join(FLEET_COMMANDS)}",
            )
        if name == "lint" and (ctx.params.get("use_all") or ctx.params.get("names")):
            # Files only (every one, or those named): no member's database is read, so the
            # answer is the same on each; lint them once and print lint's own document.
            from migretti_plugins.fleet.members import fleet_named

            fleet_named(app.config(), fleet, app.environ)
            app.report(
                "fleet.lint_once",
                "info",
                f"mg lint {'--all' if ctx.params.get('use_all') else 'MIGRATION...'} reads no "
                f"database: linted once for fleet {fleet}",
                fleet=fleet,
            )
            return callback(*args, **kwargs)
        from migretti_plugins.fleet.command import run_fleet

        return run_fleet(ctx, app, fleet, name)

    run._mg_fleet = True  # type: ignore[attr-defined]
    return run
