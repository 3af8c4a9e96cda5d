"""Builtin ``schema``: ``mg schema dump`` and the ``schema_file`` kept up to date.

``mg schema dump [-o FILE]`` prints the target's schema (a version-matched ``pg_dump
--schema-only``, made deterministic) followed by the applied migrations, as dbmate's
``schema.sql``. With ``schema_file: db/schema.sql`` in mg.yaml, every apply, up, down,
rollback and fix that changed something rewrites that file after its changes are committed;
if writing fails the command exits 1 saying so, and the migrations stay applied.

mg.yaml keys: ``schema_file`` (a path relative to mg.yaml) and the section ``schema`` with
``pg_dump`` (the program to run; ``PG_DUMP`` in the environment wins).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from migretti_core import hookimpl
from migretti_core.types import Key, Session

if TYPE_CHECKING:
    from pathlib import Path

    from migretti_core.types import Config

__all__ = ["schema_dump"]

SCHEMA_FILE = Key("schema_file", "text", None, "rewritten after every change, relative to mg.yaml")


def _pg_dump_setting(session: Session) -> str | None:
    given = os.environ.get("PG_DUMP")
    if given:
        return given
    return _pg_dump_of(session.config)


def _pg_dump_of(config: Config) -> str | None:
    """``schema.pg_dump`` of mg.yaml; an error for any other key or a value that is no text."""
    from migretti_core.settings import plugin_settings

    section = plugin_settings(config, "schema")
    section.check_keys(["pg_dump"])
    return section.text("pg_dump") or None


def schema_file(session: Session) -> Path | None:
    """The configured ``schema_file``, absolute; None when not set."""
    return _schema_file(session.config)


def _schema_file(config: Config) -> Path | None:
    from migretti_core.errors import ConfigError
    from migretti_core.settings import top_level_setting

    value = config.settings.get(SCHEMA_FILE.name)
    label = config.label
    if isinstance(value, dict | list):
        kind = "a mapping" if isinstance(value, dict) else "a list"
        raise ConfigError(f"{label}: schema_file: expected a file path, got {kind}")
    text = top_level_setting(config, SCHEMA_FILE)
    if not text:
        return None
    from pathlib import Path

    path = Path(str(text)).expanduser()
    path = path if path.is_absolute() else config.root / path
    if path.is_dir():
        raise ConfigError(
            f"{label}: schema_file: {text} is a directory, not a file",
            hint="name the file mg writes the schema to, such as db/schema.sql",
        )
    why = _project_file(config, path)
    if why is not None:
        raise ConfigError(
            f"{label}: schema_file: {text} {why}; mg would replace it with the schema",
            hint="name a file of its own, such as db/schema.sql",
        )
    return path


def _project_file(config: Config, path: Path) -> str | None:
    """Why ``path`` is a file of the project that a schema dump must never replace (mg.yaml,
    the .env beside it, a migration or seed), or None."""
    from pathlib import Path

    real = Path(os.path.realpath(path))
    if config.path is not None:
        settings = Path(os.path.realpath(config.path))
        if real == settings:
            return "is the configuration file"
        if real == settings.parent / ".env":
            return "is the .env file beside the configuration"
    if real.suffix.lower() != ".sql":
        return None
    seeds = config.settings.get("seeds_dir")
    directories = {
        "migration": config.migrations_dir,
        "seed": config.root / (seeds if isinstance(seeds, str) and seeds else "seeds"),
    }
    for kind, directory in directories.items():
        if real.parent == Path(os.path.realpath(os.path.expanduser(directory))):
            return f"is in the {kind}s directory, where mg reads it as a {kind}"
    return None


def schema_dump(session: Session) -> str:
    """The target's schema and applied migrations, as ``mg schema dump`` prints them."""
    from migretti_core import running
    from migretti_plugins.schema.dump import dump

    with running.connected(session) as conn:
        return dump(session, conn, _pg_dump_setting(session))


def _rewrite(session: Session, what: str) -> None:
    from migretti_core import reporting
    from migretti_core.errors import HookFailed, Interrupted, MgError, Terminated

    path = schema_file(session)
    if path is None:
        return
    from migretti_plugins.schema.dump import write_atomically

    shown = reporting.display_path(path)
    try:
        write_atomically(path, schema_dump(session))
    except (MgError, OSError, KeyboardInterrupt) as exc:
        failed: MgError
        if isinstance(exc, KeyboardInterrupt):
            # Stopped after the changes were committed: the file still shows the schema
            # before them, which "mg: interrupted" alone would leave unsaid (exit 130).
            reason = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
            failed = Interrupted(
                f"mg {what} is committed, but {reason} stopped the rewrite of the schema file "
                f"{shown}: it still shows the schema from before",
                hint="run `mg schema dump -o " + shown + "`",
            )
        else:
            reason = exc.message if isinstance(exc, MgError) else f"{exc.strerror or exc}"
            failed = HookFailed(
                f"mg {what} is committed, but the schema file {shown} was not rewritten: {reason}",
                hint="fix the cause and run `mg schema dump -o " + shown + "`",
            )
        # The migrations stay committed, but the command did not do all it was asked: it
        # fails (exit 1, `command.failed` last), its error saying that nothing is lost.
        reporting.report(
            session,
            "schema.not_written",
            "error",
            failed.message,
            path=str(path),
            hint=failed.hint,
        )
        raise failed from None
    reporting.report(session, "schema.written", "debug", f"wrote {shown}", path=str(path))


@hookimpl
def mg_config_sections() -> list[str]:
    return ["schema", SCHEMA_FILE.name]


@hookimpl
def mg_configure(config: Config) -> None:
    # A wrong value stops every command before it changes anything, not after an apply.
    _schema_file(config)
    _pg_dump_of(config)


# Commands that change the schema or the history; seed changes data, squash only files.
_FOLLOWED = frozenset({"apply", "migrate", "up", "down", "rollback", "fix", "baseline"})


@hookimpl
def mg_after_command(session: Session, command: str) -> None:
    if command in _FOLLOWED:
        _rewrite(session, command)


@hookimpl
def mg_register_commands(cli: click.Group) -> None:
    cli.add_command(schema_group)


def _check_output(output: str, config: Config) -> None:
    """Refuse an ``-o`` that can name no file before the dump is made (exit 2)."""
    from pathlib import Path

    from migretti_core.errors import UsageError

    if not output.strip():
        raise UsageError("-o needs a file path, not an empty value")
    if Path(output).is_dir():
        example = str(Path(output) / "schema.sql")
        raise UsageError(
            f"-o {output}: is a directory, not a file", hint=f"name a file, such as {example}"
        )
    why = _project_file(config, Path(output).absolute())
    if why is not None:
        raise UsageError(
            f"-o {output}: {why}; mg would replace it with the schema",
            hint="name a file of its own, such as db/schema.sql",
        )


@click.group("schema")
def schema_group() -> None:
    """The database's schema as SQL (pg_dump of the server's version)."""


@schema_group.command("dump")
@click.option(
    "-o", "--output", "output", metavar="FILE", help="Write to FILE instead of standard output."
)
@click.pass_context
def dump_command(ctx: click.Context, output: str | None) -> Any:
    """Print the schema (pg_dump --schema-only) followed by the applied migrations.

    The same database gives the same bytes. pg_dump must match the server's major version:
    the embedded server's own, else PG_DUMP / schema.pg_dump, else one on PATH.
    """
    from migretti_core.cli import app_of
    from migretti_plugins.schema.dump import write_atomically

    session = app_of(ctx).session("schema dump")
    if output is not None and output != "-":
        _check_output(output, session.config)
    text = schema_dump(session)
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from pathlib import Path

        path = Path(output)
        try:
            write_atomically(path, text)
        except OSError as exc:
            from migretti_core.errors import MgError

            raise MgError(f"cannot write {output}: {exc.strerror or exc}") from None
    return 0
