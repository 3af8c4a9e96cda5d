"""Finding mg.yaml (the current directory, then its parents, as git finds ``.git``) and
reading it within bounds, so a hostile or mistaken file cannot make mg hang.

Kept in the core and free of heavy imports: the startup look for ``plugins:`` (``App``) and
the ``config`` builtin must agree on which file is meant and how much of it is read.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from migretti_core.errors import ConfigError, ConfigRefused

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_FILE = "mg.yaml"
# A configuration file, and a .env file, must be smaller than this.
MAX_BYTES = 1024 * 1024


def find_config(cwd: Path | str, given: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
    """The configuration file and its name for messages.

    ``given`` (``--config`` or ``MG_CONFIG``) is taken as is, relative to ``cwd``. Otherwise
    ``mg.yaml`` is looked for in ``cwd`` and then in each parent directory; the path is None
    when there is none anywhere. The name is ``mg.yaml`` in ``cwd``, else the relative path
    (``../mg.yaml``), so messages point at the file that was read; its control characters are
    escaped (``\\x1b``).
    """
    from migretti_core.messages import printable

    if given is not None:
        label = str(given)
        return absolute(os.path.join(cwd, os.path.expanduser(label))), printable(label)
    # Walked as text: with no file anywhere (`mg --help` in a new directory) pathlib is
    # not imported at all.
    start = os.path.abspath(cwd)
    directory = start
    while True:
        candidate = os.path.join(directory, DEFAULT_FILE)
        if os.path.lexists(candidate):
            label = DEFAULT_FILE if directory == start else os.path.relpath(candidate, start)
            return absolute(candidate), printable(label)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None, DEFAULT_FILE
        directory = parent


def absolute(path: Path | str) -> Path:
    from pathlib import Path

    return Path(os.path.abspath(path))


def read_bounded(
    path: Path, label: str, *, what: str = "config file", limit: int = MAX_BYTES
) -> bytes:
    """The bytes of ``path``: a regular file under ``limit`` bytes, or a one-line error.

    A device (``/dev/zero``), a FIFO or a directory is refused without reading, and a file
    that grows past the limit while it is read is refused too.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ConfigError(f"{what} {label} is a dangling symbolic link") from None
        raise ConfigError(f"{what} {label} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ConfigRefused(f"{what} {label} is {kind}")
    if info.st_size >= limit:
        raise ConfigRefused(_too_large(what, label, limit))
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if len(data) >= limit:
        raise ConfigRefused(_too_large(what, label, limit))
    return data


def _too_large(what: str, label: str, limit: int) -> str:
    return f"{what} {label} is too large: it must be under {limit >> 20} MiB"
