"""Text files the builtins read and write: decoding, checksums, file names, safe creation.

Shared by the ``files`` and ``seeds`` plugins (and anyone writing a file format of their
own), so neither imports the other.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from pathlib import Path
from typing import Any

from migretti_core.errors import ConfigError, MgError, MigrationFileError, UsageError


def normalize_text(raw: bytes, path: Path | None = None) -> str:
    """Decode a file so that BOM and line-ending differences never change its checksum."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        name = path.name if path is not None else "<input>"
        line = _normalize(raw[: exc.start].decode("utf-8")).count("\n") + 1
        raise MigrationFileError([f"{name}:{line}: not valid UTF-8 ({exc.reason})"]) from None
    if not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw:
        return text  # nothing to normalise: not searched again as text
    return _normalize(text)


def _normalize(text: str) -> str:
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# A line that is neither blank nor a `--` comment.
_SQL_LINE = re.compile(r"^[^\S\n]*(?!--)\S", re.MULTILINE)


def has_sql(text: str) -> bool:
    """Whether ``text`` holds anything but blank lines and ``--`` comments: a section or seed
    of comments only (``mg create``'s placeholder, a fresh seed) sends nothing that changes
    anything."""
    return _SQL_LINE.search(text) is not None


def checksum(text: str) -> str:
    """SHA-256 of the normalised text; equals 0.10's checksum of the raw bytes for LF files."""
    return sha256_hex(text.encode("utf-8"))


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex.

    ``import hashlib`` maps the system's OpenSSL beside the copy psycopg's libpq brings:
    about 12 ms of CPU, more than `mg status` spends hashing 1000 migration files. The
    interpreter's own SHA-256 is slower per byte (2x on a small file, 6x on 19 MB), so it
    hashes small inputs only.
    """
    if len(data) < _OPENSSL_FROM:
        digest: str = _builtin_sha256()(data).hexdigest()
        return digest
    import hashlib

    return hashlib.sha256(data).hexdigest()


_OPENSSL_FROM = 1 << 16


@functools.cache
def _builtin_sha256() -> Any:
    """``_sha2.sha256`` (Python 3.12 on), ``_sha256.sha256`` before; hashlib's where the
    interpreter was built without either."""
    import importlib

    for name in ("_sha2", "_sha256"):
        with contextlib.suppress(ImportError, AttributeError):
            return importlib.import_module(name).sha256
    import hashlib

    return hashlib.sha256


class ChangedWhileReading(OSError):
    """A file held more (or fewer) bytes than it did when opened: something was writing to
    it while mg read it. An ``OSError``, so every reader of files reports it as a file that
    cannot be read; ``strerror`` says what happened."""

    def __init__(self, size: int, grew: bool) -> None:
        problem = (
            f"changed while mg was reading it (it held {size} bytes when opened, then "
            f"{'more' if grew else 'fewer'}): run the command again once nothing writes to it"
        )
        super().__init__(problem)
        self.strerror = problem


def read_bytes(path: Path) -> bytes:
    """A file's bytes with plain system calls (with 10,000 files, buffered IO objects and
    ``Path.read_bytes`` cost more than the reading itself), read into one buffer of the
    file's size: reading in chunks and joining them held a large file twice.

    At most one byte more than the size the file had when opened is read: a file that keeps
    growing (``yes >> 0005_x.sql``) is never read without end. ``ChangedWhileReading`` when
    the file grew or shrank meanwhile. A file of the same size read whole costs what it did:
    one ``fstat`` and one ``read``.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size >= _LARGE:
            _return_large_frees()
        data = os.read(fd, size + 1)
        if len(data) != size:  # a short read, or the file changed since the fstat
            data = _read_rest(fd, data, size)
        return data
    finally:
        os.close(fd)


def _read_rest(fd: int, data: bytes, size: int) -> bytes:
    """``data``, the first read of a file of ``size`` bytes, with the rest of the file up to
    one byte past ``size``; ``ChangedWhileReading`` if there is that byte (the file grew) or
    the file ends before ``size``."""
    chunks = [data]
    got = len(data)
    while got <= size:
        chunk = os.read(fd, size + 1 - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got != size:
        raise ChangedWhileReading(size, grew=got > size)
    return b"".join(chunks) if len(chunks) > 1 else data


_LARGE = 1 << 20
_fixed_threshold = False


def _return_large_frees() -> None:
    """Keep glibc giving large blocks back to the system when they are freed.

    glibc serves a block of 128 KiB or more with its own mapping, unmapped when freed, but
    after such a block is freed it raises that threshold to the block's size (up to 32 MiB):
    the copies of a 20 MB migration made after the first one is freed (its text, a section,
    the query) then come from the heap, whose freed space is not returned, and every one of
    them stays in the process's memory. Setting the threshold (to its default) turns that
    adjustment off. Done once, when a large file is read; nothing elsewhere than glibc.
    """
    global _fixed_threshold
    if _fixed_threshold:
        return
    _fixed_threshold = True
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return  # musl and others: no such adjustment
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def return_free_memory() -> None:
    """Ask glibc to give its free heap pages back to the system (``malloc_trim``), before a
    large query is built: the many small objects the checks of a large migration (and,
    with ``PYTHONDONTWRITEBYTECODE``, the compiling of modules) allocated and freed leave
    pages in the heap that glibc keeps, resident under the three copies of the query (W2:
    about 1 MiB). Under a millisecond; called when the pre-flight checks and lint of a
    large file are done (``types.read_once``). A cyclic collection first would cost some
    20 ms on W2 and give back nothing more.
    """
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def release_mapped_file(path: str) -> None:
    """Drop the resident pages of ``path`` (a loaded library) that hold nothing but the
    file's own content, as the kernel does under memory pressure: they are read again from
    the file (the page cache) if they are used again, so nothing changes but what is
    resident. A mapping with a page written to (relocations, data) or swapped is left alone.

    Lint calls it for pglast's parser after linting a large file: the parts of
    libpg_query's code and tables a parse touched (about 2 MiB) would otherwise stay
    resident under the three copies of the query. Linux and glibc only; a no-op elsewhere.
    """
    madvise = _libc_function("madvise")
    if madvise is None or not path:
        return
    import ctypes

    path = os.path.realpath(path)
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return
    clean: list[tuple[int, int]] = []
    span: tuple[int, int] | None = None
    dirty = 0
    for line in lines:
        first, _, rest = line.partition(" ")
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            if span is not None and dirty == 0:
                clean.append(span)
            span = None
            fields = rest.split(maxsplit=4)
            if len(fields) == 5 and fields[4] == path and "w" not in fields[0]:
                start, _, end = first.partition("-")
                span = (int(start, 16), int(end, 16))
                dirty = 0
        elif span is not None and first in (
            "Private_Dirty:",
            "Shared_Dirty:",
            "Swap:",
            "Anonymous:",
        ):
            dirty += int(rest.split()[0])
    if span is not None and dirty == 0:
        clean.append(span)
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for start_at, end_at in clean:
        madvise(start_at, end_at - start_at, 4)  # MADV_DONTNEED


_functions: dict[str, Any] = {}


def _libc_function(name: str) -> Any:
    """A function of glibc on Linux, or None (another system or C library)."""
    if name not in _functions:
        _functions[name] = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version"):
                    _functions[name] = getattr(libc, name)
            except (OSError, AttributeError):
                pass
    return _functions[name]


def read_checked(path: Path, size: int, sha256: str) -> bytes:
    """The bytes of a file read before, which must still be the same: ``MigrationFileError``
    when the file is gone, or its size or SHA-256 has changed since."""
    from migretti_core.reporting import display_path

    changed = "changed while mg was running; run the command again"
    try:
        data = read_bytes(path)
    except ChangedWhileReading:
        raise MigrationFileError([f"{display_path(path)}: {changed}"]) from None
    except OSError as exc:
        problem = f"cannot read it again: {exc.strerror or exc}"
        raise MigrationFileError([f"{display_path(path)}: {problem}"]) from None
    if len(data) != size or sha256_hex(data) != sha256:
        raise MigrationFileError([f"{display_path(path)}: {changed}"])
    return data


def slugify(name: str, kind: str = "migration") -> str:
    """The file-name part of a migration (or ``kind``) name: lower case, safe on every file
    system.

    Accents are dropped rather than the letters carrying them (``Ünïcode`` gives
    ``unicode``): NFKD splits a letter from its combining marks, which are then removed.
    """
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    slug = re.sub(r"[^a-z0-9]+", "_", plain.lower()).strip("_")
    if not slug:
        if not any(c.isalnum() for c in name):
            raise UsageError(
                f"{kind} name {name!r} gives an empty file name; use letters or digits"
            )
        # letters, only none of a-z (用户表, данные): "use letters or digits" would read as
        # nonsense there
        raise UsageError(
            f"{kind} name {name!r} gives an empty file name: file names keep only the letters "
            "a-z and the digits 0-9 of a name",
            hint="give a name with some of them, such as "
            + ("demo_data" if kind == "seed" else "add_users"),
        )
    return slug


def write_new_file(path: Path, content: bytes) -> Path:
    """Create ``path`` (and its directory) with ``content``, all of it or nothing; never
    replace an existing file.

    The content goes to a hidden temporary file beside ``path`` (``.NAME.PID.mg-tmp``), is
    flushed to disk, and only then gets its name with ``link``, which fails when the name is
    taken: a file appearing at the same moment is not overwritten, and a full disk, Ctrl-C
    or a crash half-way never leaves a partial file under the name (an empty or truncated
    mg.yaml or migration would break every later command).

    A directory or file the file system refuses (permissions, a read-only file system, a
    full disk) is an ``MgError`` (exit 1); a file standing where a directory must be is the
    configuration's mistake, a ``ConfigError`` (exit 2), as is a name already taken
    (``UsageError``). Paths are shown as the rest of mg shows them (``display_path``).
    """
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _not_a_directory(directory)
        if blocker is not None:
            raise ConfigError(
                f"cannot create {_shown(directory)}: {_shown(blocker)} is not a "
                "directory; nothing was written"
            ) from exc
        raise MgError(
            f"cannot create {_shown(directory)}: {exc.strerror or exc}; nothing was written"
        ) from exc
    if path.exists() or path.is_symlink():
        raise UsageError(f"{_shown(path)} already exists; not overwriting it")
    # a name as long as file names can be leaves no room around it: then only its start
    base = path.name if len(path.name.encode("utf-8")) <= 200 else path.name[:50]
    temporary = directory / f".{base}.{os.getpid()}.mg-tmp"
    try:
        try:
            create_durably(temporary, content)
            _publish(temporary, path)
        except OSError as exc:
            raise MgError(
                f"cannot write {_shown(path)}: {exc.strerror or exc}; nothing was written"
            ) from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    fsync_directory(directory)
    return path


def _not_a_directory(directory: Path) -> Path | None:
    """The nearest existing path at or above ``directory`` when it is no directory (a file, a
    broken symbolic link): what stops ``directory`` from being created."""
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            return None if candidate.is_dir() else candidate
    return None


def _publish(temporary: Path, path: Path) -> None:
    """Give the written file its name, refusing to replace one that exists."""
    try:
        os.link(temporary, path)
        return
    except FileExistsError:
        raise UsageError(f"{_shown(path)} already exists; not overwriting it") from None
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    # no hard links on this file system: the check and the rename are two steps there
    if path.exists() or path.is_symlink():
        raise UsageError(f"{_shown(path)} already exists; not overwriting it")
    os.rename(temporary, path)


def _shown(path: Path) -> str:
    """``path`` as the rest of mg shows it: relative to the working directory when inside it."""
    from migretti_core.reporting import display_path

    return display_path(path)


def create_durably(path: Path, content: bytes) -> None:
    """Create ``path`` (never over an existing file) holding ``content``, on disk before this
    returns: what a later rename or link publishes is whole even after a power cut. A file
    it could not fill is removed again."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def fsync_directory(directory: Path) -> None:
    """Make a new name (or a removed one) in ``directory`` survive a power cut; platforms that
    cannot open a directory (Windows) go without."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
