"""Shell completion (bash, zsh, fish) through click; see docs/completion.md.

mg's global options are lifted out of the command line before click parses it (see
``argv``), so click does not know them. Only while completing, they are declared on the group
and on every command, so that they are offered and do not stop the completion of what follows
them. Completion never connects to a database: migration ids come from the files.
"""

from __future__ import annotations

from collections.abc import Mapping

import click

from migretti_core.argv import FLAG_OPTIONS


def _complete_envs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Profile names from mg.yaml."""
    from migretti_core.cli import app_of

    try:
        import yaml

        config = app_of(ctx).config()
        from migretti_core.configfile import read_bounded

        raw = read_bounded(config.path, config.label) if config.path else None
        data = yaml.safe_load(raw.decode("utf-8")) if raw is not None else None
    except Exception:
        return []
    envs = data.get("envs") if isinstance(data, dict) else None
    if not isinstance(envs, dict):
        return []
    return sorted(str(name) for name in envs if str(name).startswith(incomplete))


def _complete_fleets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Fleet names from mg.yaml."""
    from migretti_core.cli import app_of

    try:
        fleets = app_of(ctx).config().settings.get("fleets")
    except Exception:
        return []
    if not isinstance(fleets, Mapping):
        return []
    return sorted(str(name) for name in fleets if str(name).startswith(incomplete))


def global_options() -> list[click.Option]:
    """Click declarations of the global options, for completion only."""
    flags: dict[str, list[str]] = {}
    for flag, attr in FLAG_OPTIONS.items():
        flags.setdefault(attr, []).append(flag)
    helps = {
        "json_log": "diagnostics as one JSON object per line on stderr",
        "verbose": "more output, and tracebacks on errors",
        "yes": "confirm protected environments without asking",
        "fail_fast": "with --fleet: start no member after a failure",
    }
    options = [
        click.Option(
            ["--env", "_mg_env"],
            metavar="NAME",
            help="select a profile from mg.yaml",
            shell_complete=_complete_envs,
            expose_value=False,
        ),
        click.Option(
            ["--config", "_mg_config"],
            type=click.Path(dir_okay=False),
            help="configuration file",
            expose_value=False,
        ),
        click.Option(
            ["-p", "_mg_plugins"],
            metavar="MODULE",
            multiple=True,
            help="load a plugin; -p no:NAME blocks one",
            expose_value=False,
        ),
    ]
    options += [
        click.Option(
            ["--fleet", "_mg_fleet"],
            metavar="NAME",
            help="run the command on every database of a fleet from mg.yaml",
            shell_complete=_complete_fleets,
            expose_value=False,
        ),
        click.Option(
            ["--jobs", "_mg_jobs"],
            metavar="N",
            help="with --fleet: members at once",
            expose_value=False,
        ),
        click.Option(
            ["--canary", "_mg_canary"],
            metavar="K",
            help="with --fleet: run K members first",
            expose_value=False,
        ),
    ]
    for attr, names in flags.items():
        options.append(
            click.Option(
                [*names, f"_mg_{attr}"], is_flag=True, help=helps.get(attr), expose_value=False
            )
        )
    return options


def add_global_options(command: click.Command) -> None:
    """Declare the global options on ``command`` and every command below it."""
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    command.params.extend(o for o in global_options() if not set(o.opts) & known)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)
