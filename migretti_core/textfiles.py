"""Text files the builtins read and write: decoding, checksums, file names, safe creation.

Shared by the ``files`` and ``seeds`` plugins (and anyone writing a file format of their
own), so neither imports the other.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from migretti_core.errors import MigrationFileError, UsageError


def normalize_text(raw: bytes, path: Path | None = None) -> str:
    """Decode a file so that BOM and line-ending differences never change its checksum."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        name = path.name if path is not None else "<input>"
        line = _normalize(raw[: exc.start].decode("utf-8")).count("\n") + 1
        raise MigrationFileError([f"{name}:{line}: not valid UTF-8 ({exc.reason})"]) from None
    return _normalize(text)


def _normalize(text: str) -> str:
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def checksum(text: str) -> str:
    """SHA-256 of the normalised text; equals 0.10's checksum of the raw bytes for LF files."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def slugify(name: str) -> str:
    """The file-name part of a migration name: lower case, safe on every file system.

    Accents are dropped rather than the letters carrying them (``Ünïcode`` gives
    ``unicode``): NFKD splits a letter from its combining marks, which are then removed.
    """
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    slug = re.sub(r"[^a-z0-9]+", "_", plain.lower()).strip("_")
    if not slug:
        raise UsageError(f"migration name {name!r} gives an empty file name; use letters or digits")
    return slug


def write_new_file(path: Path, content: bytes) -> Path:
    """Create ``path`` (and its directory) with ``content``; never replace an existing file.

    ``O_EXCL`` makes the check and the creation one step, so a file appearing at the same
    moment is not overwritten; a partly written file is removed.
    """
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from exc
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting it") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
