"""Global options, accepted before or after the subcommand (``mg --env prod apply`` ==
``mg apply --env prod``).

They are lifted out of the argument list before click sees it. That keeps one definition for
every command, including commands added by plugins, and lets ``-p`` load plugins before the
command line (which plugins may extend) is built.
"""

from __future__ import annotations

from dataclasses import field

from migretti_core.records import record

VALUE_OPTIONS = {
    "--env": "env",
    "--config": "config",
    "-p": "plugins",
    "--fleet": "fleet",
    "--jobs": "jobs",
    "--canary": "canary",
}
_WHAT = {
    "--env": "a profile name",
    "--config": "a file path",
    "-p": "a plugin name",
    "--fleet": "a fleet name",
    "--jobs": "a number",
    "--canary": "a number",
}
FLAG_OPTIONS = {
    "--json-log": "json_log",
    "-v": "verbose",
    "--verbose": "verbose",
    "-y": "yes",
    "--yes": "yes",
    "--fail-fast": "fail_fast",
}


# Commands whose arguments belong to another program (psql's -v, -p, ...): global options
# are only taken before them.
PASSTHROUGH = frozenset({("db", "psql")})


@record
class GlobalOptions:
    """What the user said on the command line that applies to every command."""

    env: str | None = None
    config: str | None = None
    json_log: bool = False
    verbose: bool = False
    yes: bool = False
    plugins: list[str] = field(default_factory=list)
    # Fleets (the ``fleet`` plugin): run the command on every member of a named fleet.
    fleet: str | None = None
    jobs: str | None = None
    canary: str | None = None
    fail_fast: bool = False


class ArgvError(Exception):
    """A global option is missing its value."""


def _is_empty(name: str, value: str) -> bool:
    """Whether an option's value names nothing: blank, or for ``-p``, ``no:`` and a blank."""
    if name == "-p" and value.startswith("no:"):
        value = value[3:]
    return not value.strip()


def extract_globals(argv: list[str]) -> tuple[GlobalOptions, list[str]]:
    """Split ``argv`` into the global options and what remains for click."""
    options = GlobalOptions()
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if tuple(rest) in PASSTHROUGH:
            rest.extend(argv[i:])
            break
        if token == "--":
            rest.extend(argv[i:])
            break
        name, eq, inline = token.partition("=")
        if name in VALUE_OPTIONS:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise ArgvError(f"option {name} needs a value")
            if _is_empty(name, value):
                raise ArgvError(f"option {name} needs {_WHAT[name]}, not an empty value")
            _set(options, VALUE_OPTIONS[name], value)
        elif token.startswith("-p") and len(token) > 2 and not token.startswith("--"):
            value = token[2:].removeprefix("=")
            if _is_empty("-p", value):
                raise ArgvError("option -p needs a plugin name, not an empty value")
            options.plugins.append(value)
        elif token in FLAG_OPTIONS:
            setattr(options, FLAG_OPTIONS[token], True)
        elif token == "-vv":
            options.verbose = True
        else:
            rest.append(token)
        i += 1
    return options, rest


def _set(options: GlobalOptions, attr: str, value: str) -> None:
    if attr == "plugins":
        options.plugins.append(value)
    else:
        setattr(options, attr, value)
