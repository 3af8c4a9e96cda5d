"""Builtin ``files``: SQL migration files with ``-- migrate:`` directives."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from migretti_core import hookimpl, reporting
from migretti_core.errors import ConfigError
from migretti_core.types import Config, Migration

if TYPE_CHECKING:
    from pathlib import Path


@hookimpl(trylast=True)
def mg_discover_migrations(config: Config) -> list[Path]:
    from migretti_plugins.files.parse import discover

    directory = config.migrations_dir
    if (
        not directory.is_dir()
        # the default directory may be missing (no migration yet); anything else in its
        # place (a file, a dangling link) is never "no migrations"
        and ("migrations_dir" in config.settings or os.path.lexists(directory))
        and not _symlink_loop(directory)  # discover says so, in one line
    ):
        in_the_way = directory.exists() and not directory.is_dir()
        raise ConfigError(
            _missing_directory(config, directory),
            hint=_in_the_way_hint(config)
            if in_the_way
            else "create it (mg create does), or correct migrations_dir",
        )
    return discover(directory)


def _symlink_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _in_the_way_hint(config: Config) -> str:
    if "migrations_dir" in config.settings:
        return "move it out of the way, or correct migrations_dir"
    return "move it out of the way, or set migrations_dir in mg.yaml"


def _missing_directory(config: Config, directory: Path) -> str:
    """A migrations_dir the user named but that is not there: an error, never an empty list
    (which would say "nothing to apply" about the wrong directory)."""
    if "migrations_dir" not in config.settings:
        name = f"the migrations directory {reporting.display_path(directory)}"
    else:
        where = f" in {config.label}" if config.path is not None else ""
        shown = reporting.display_path(directory)
        name = f"migrations_dir {config.settings['migrations_dir']!r}{where}: {shown}"
    if directory.is_symlink():
        target = os.readlink(directory)
        problem = f"is a symlink to {target}, which does not exist"
    elif directory.exists():
        problem = "is not a directory"
    else:
        problem = "does not exist"
    return f"{name} {problem}"


@hookimpl(trylast=True)
def mg_parse_migration(path: Path, raw: bytes) -> Migration | None:
    if path.suffix != ".sql":
        return None
    from migretti_plugins.files.parse import parse_migration

    migration = parse_migration(path, raw)
    if raw.startswith(b"\xef\xbb\xbf") or b"\r" in raw:
        # Rows written by migretti 0.10 hold the checksum of the raw bytes.
        from migretti_core.textfiles import sha256_hex

        migration = dataclasses.replace(migration, raw_checksum=sha256_hex(raw))
    return migration


@hookimpl(trylast=True)
def mg_render_migration(
    migration_id: str,
    title: str,
    up_sql: str,
    down_sql: str | None,
    transactional: bool,
    notes: Sequence[str],
) -> tuple[str, str]:
    from migretti_plugins.files.parse import file_name, render_migration

    text = render_migration(
        title, migration_id, up_sql, down_sql, transactional=transactional, notes=notes
    )
    return file_name(title, migration_id), text


@hookimpl(trylast=True)
def mg_create_migration(
    config: Config, title: str, up_sql: str, down_sql: str, transactional: bool
) -> Path:
    from migretti_plugins.files.parse import create_migration_file

    directory = config.migrations_dir
    if os.path.lexists(directory) and not directory.is_dir():
        # mkdir's own "File exists" would not say what is in the way
        raise ConfigError(_missing_directory(config, directory), hint=_in_the_way_hint(config))
    try:
        return create_migration_file(
            config.migrations_dir, title, up=up_sql, down=down_sql, transactional=transactional
        )
    except OSError as exc:  # a read-only directory, a full disk: the user's to fix, not ours
        raise reporting.cannot_write(exc) from exc
