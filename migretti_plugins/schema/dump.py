"""A deterministic ``pg_dump --schema-only`` of the target, followed by its applied migrations.

``pg_dump`` must have the server's major version (a newer one prints differently, an older one
refuses). Which one runs:

1. when the target has client programs of its own (``mg_program_dirs``: the embedded
   server's, from the embedded wheel), its ``pg_dump``;
2. else ``PG_DUMP`` (environment) or ``schema.pg_dump`` (mg.yaml), which must match;
3. else the first of ``pg_dump`` on ``PATH`` and in ``mg_spare_program_dirs`` (the embedded
   wheel's) whose major version matches the server's.

A mismatch is an error naming both versions. The output is the same bytes for the same
schema: pg_dump's per-run ``\\restrict`` key and its version comments are removed, and the
applied migrations come as one ``INSERT`` in application order with no timestamps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migretti_core.errors import ConfigError, DatabaseError
from migretti_core.types import Session

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_DROP_LINE = re.compile(
    r"^(?:\\restrict .*|\\unrestrict .*|-- Dumped from database version .*"
    r"|-- Dumped by pg_dump version .*)\n",
    re.MULTILINE,
)
_BLANK_RUNS = re.compile(r"\n{3,}")
_TIMEOUT = 600


@dataclass(frozen=True)
class PgDump:
    """A pg_dump program and its major version."""

    path: Path
    major: int
    version: str


def probe(path: Path) -> PgDump | None:
    """The version of the pg_dump at ``path``; None when it does not run."""
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(done.stdout)
    if done.returncode != 0 or match is None:
        return None
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return PgDump(path, int(match.group(1)), version)


def find_pg_dump(session: Session, server_major: int, explicit: str | None) -> PgDump:
    """A pg_dump of the server's major version, or a ``ConfigError`` naming both versions."""
    own = session.hooks.program_dirs(session.config)
    if own:  # the target's own client programs (the embedded server's)
        path = next((d / "pg_dump" for d in own if (d / "pg_dump").exists()), None)
        if path is None:
            raise ConfigError(
                f"the target's pg_dump is missing from {own[0]}; reinstall what provides it "
                "(migretti[embedded] for the embedded server)"
            )
        found = probe(path)
        if found is None:
            raise ConfigError(f"the target's pg_dump at {path} does not run")
        return found
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute() and os.sep not in explicit:
            located = shutil.which(explicit)
            path = Path(located) if located else path
        elif not path.is_absolute():
            path = session.config.root / path
        found = probe(path)
        if found is None:
            raise ConfigError(f"pg_dump {path} (PG_DUMP or schema.pg_dump) does not run")
        if found.major != server_major:
            raise ConfigError(
                f"pg_dump {found.version} at {path} does not match the server's PostgreSQL "
                f"{server_major}; point PG_DUMP or schema.pg_dump at a pg_dump {server_major}"
            )
        return found
    seen: list[PgDump] = []
    spare = session.hooks.spare_program_dirs(session.config)
    candidates = [shutil.which("pg_dump"), *(d / "pg_dump" for d in spare)]
    for candidate in candidates:
        if candidate is None:
            continue
        found = probe(Path(candidate))
        if found is None:
            continue
        if found.major == server_major:
            return found
        seen.append(found)
    if not seen:
        raise ConfigError(
            f"no pg_dump found for the server's PostgreSQL {server_major}: install it, or set "
            "PG_DUMP or schema.pg_dump to its path"
        )
    versions = ", ".join(f"pg_dump {d.version} at {d.path}" for d in seen)
    raise ConfigError(
        f"no pg_dump of the server's major version: the server runs PostgreSQL {server_major}, "
        f"found {versions}; set PG_DUMP or schema.pg_dump to a pg_dump {server_major}"
    )


def clean(text: str) -> str:
    """pg_dump's output without what changes from run to run."""
    text = _DROP_LINE.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"


def _lock_wait(session: Session) -> list[str]:
    """pg_dump's wait for each table's lock, bounded as a migration's is (table_lock_timeout):
    a table another session keeps locked ends the dump instead of holding it."""
    from migretti_core.running import table_lock_settings

    wait = table_lock_settings(session)[0]
    return [f"--lock-wait-timeout={max(1, round(wait * 1000))}"] if wait > 0 else []


def run_pg_dump(session: Session, pg_dump: PgDump) -> str:
    """The cleaned schema-only dump of the target."""
    from psycopg.conninfo import make_conninfo

    params = dict(session.hooks.connection_params(session))
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    args = [
        str(pg_dump.path),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--format=plain",
        "--encoding=UTF8",
        *_lock_wait(session),
        "--dbname",
        make_conninfo("", **params),
    ]
    try:
        done = subprocess.run(args, capture_output=True, env=env, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatabaseError(f"pg_dump could not run: {exc}") from None
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = session.hooks.redact(error[0] if error else f"exit code {done.returncode}")
        hint = None
        if "canceling statement due to" in reason and _lock_wait(session):
            # pg_dump bounds its lock waits with statement_timeout, hence that message.
            from migretti_core.running import table_lock_settings

            wait = table_lock_settings(session)[0]
            shown = f"{wait * 1000:.0f}ms" if wait < 1 else f"{wait:g}s"
            hint = (
                f"pg_dump waited longer than table_lock_timeout ({shown}) for the lock of a "
                "table another session keeps locked; run it again once that lock is released, "
                "or raise table_lock_timeout"
            )
        raise DatabaseError(f"pg_dump failed: {reason.removeprefix('pg_dump: error: ')}", hint=hint)
    return clean(done.stdout.decode("utf-8"))


_HISTORY = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
               AND a.attname = 'apply_seq' AND NOT a.attisdropped),
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
               AND a.attname = 'baseline' AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass('_migrations')
"""


def _literal(value: str | None) -> str:
    if value is None:
        return "NULL"
    text = value.replace("'", "''")
    return ("E'" + text.replace("\\", "\\\\") + "'") if "\\" in text else f"'{text}'"


def applied_section(session: Session, conn: Any) -> str:
    """The applied migrations as an INSERT into the history table, in application order."""
    from migretti_core.state import order_history

    rows = session.hooks.query(session, conn, _HISTORY)
    lines = ["--", "-- Applied migrations (migretti)", "--", ""]
    if not rows:
        return "\n".join([*lines, "-- none", ""])
    table, has_seq, has_baseline = str(rows[0][0]), bool(rows[0][1]), bool(rows[0][2])
    applied = [
        e for e in order_history(session.hooks.history_read(session, conn)) if e.status == "applied"
    ]
    if not applied:
        return "\n".join([*lines, "-- none", ""])
    columns = "id, name, checksum, status" + (", apply_seq" if has_seq else "")
    # Recorded by `mg baseline`: loaded, the rows say so as they did (status, list).
    columns += ", baseline" if has_baseline else ""
    values = []
    for index, entry in enumerate(applied, start=1):
        parts = [_literal(entry.id), _literal(entry.name), _literal(entry.checksum), "'applied'"]
        if has_seq:
            parts.append(str(index))
        if has_baseline:
            parts.append("true" if entry.baseline else "NULL")
        values.append("    (" + ", ".join(parts) + ")")
    lines.append(f"INSERT INTO {table} ({columns}) VALUES")
    lines.append(",\n".join(values) + ";")
    return "\n".join(lines) + "\n"


def server_major(session: Session, conn: Any) -> int:
    rows = session.hooks.query(session, conn, "SHOW server_version_num")
    return int(rows[0][0]) // 10000


def dump(session: Session, conn: Any, explicit_pg_dump: str | None) -> str:
    """Schema followed by the applied migrations, as text."""
    pg_dump = find_pg_dump(session, server_major(session, conn), explicit_pg_dump)
    return run_pg_dump(session, pg_dump) + "\n" + applied_section(session, conn)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader never sees half a file.

    A path that is not a regular file (``/dev/stdout``, ``/dev/full``, a FIFO, or a symbolic
    link to one) is written into instead: replacing it would destroy the device or the pipe,
    and hide a failure to write (``/dev/full``) behind a new regular file. A symbolic link to
    a regular file keeps pointing at it: the file it points to is replaced.
    """
    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        return
    if path.is_symlink():
        # A link to a file kept elsewhere: the file is replaced, the link stays a link.
        path = path.resolve()
    _make_directory(path.parent)
    # A name of its own per writer: the members of a fleet rewrite the same file at once, and
    # a shared temporary file was replaced away under another writer.
    import threading

    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.mg-tmp")
    try:
        # The file it replaces keeps its permissions (a schema kept private with mode 0600
        # stays private, a group-writable one group-writable), from before the text is in it.
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = None
    from migretti_core.textfiles import fsync_directory

    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with open(fd, "w", encoding="utf-8", newline="\n") as fh:
            if mode is not None:
                os.chmod(temporary, mode)
            fh.write(text)
            fh.flush()
            # on disk before it replaces the old file: a power cut just after the rename
            # must leave the old dump or the new one, not an empty file
            os.fsync(fd)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    fsync_directory(path.parent)


def _make_directory(directory: Path) -> None:
    """Create ``directory`` and its parents; a file in the way is named (mkdir's own error
    would be a bare "File exists")."""
    import errno

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        in_the_way = next(
            (p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()),
            directory,
        )
        raise NotADirectoryError(
            errno.ENOTDIR, f"{in_the_way} is a file, not a directory"
        ) from None
