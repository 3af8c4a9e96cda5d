"""Builtin ``files``: SQL migration files with ``-- migrate:`` directives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from migretti_core import hookimpl
from migretti_core.types import Config, Migration


@hookimpl(trylast=True)
def mg_discover_migrations(config: Config) -> list[Path]:
    from migretti_plugins.sqlfile import discover

    return discover(config.migrations_dir)


@hookimpl(trylast=True)
def mg_parse_migration(path: Path, raw: bytes) -> Migration | None:
    if path.suffix != ".sql":
        return None
    from migretti_plugins.sqlfile import parse_migration

    migration = parse_migration(path, raw)
    if raw.startswith(b"\xef\xbb\xbf") or b"\r" in raw:
        # Rows written by migretti 0.10 hold the checksum of the raw bytes.
        import hashlib

        migration = dataclasses.replace(migration, raw_checksum=hashlib.sha256(raw).hexdigest())
    return migration


@hookimpl(trylast=True)
def mg_create_migration(
    config: Config, title: str, up_sql: str, down_sql: str, transactional: bool
) -> Path:
    from migretti_plugins.sqlfile import create_migration_file

    return create_migration_file(
        config.migrations_dir, title, up=up_sql, down=down_sql, transactional=transactional
    )
