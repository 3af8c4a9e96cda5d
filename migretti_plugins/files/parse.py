"""The migration file format of migration files: discovery, parsing, checksums and new files.

Every problem names the file and line so a user can fix a whole directory in one pass.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from migretti_core.errors import MigrationFileError, UsageError
from migretti_core.reporting import display_path
from migretti_core.textfiles import checksum, normalize_text, sha256_hex, slugify, write_new_file
from migretti_core.types import ON_DEMAND_BYTES, FileText, Migration

FILENAME_RE = re.compile(r"(?P<id>[A-Za-z0-9]{1,26})_(?P<name>[^/]+)\.sql")
ID_RE = re.compile(r"[A-Za-z0-9]{1,26}")

FILENAME_PROBLEM = "file name must be <id>_<name>.sql, the id being 1-26 ASCII letters and digits"

_DIRECTIVE_RE = re.compile(r"\s*--\s*migrate\s*:(?P<value>.*)", re.IGNORECASE)
# A header line: a directive (the line is skipped), the `-- id:` or the `-- migration:` title.
# The first alternative that makes the line match wins, as _DIRECTIVE_RE's did before the two.
_HEADER_RE = re.compile(r"\s*--\s*(?P<key>migrate|id|migration)\s*:(?P<value>.*)", re.IGNORECASE)
_KNOWN_DIRECTIVES = ("up", "down", "no-transaction")
_MAX_FILENAME_BYTES = 255

UP = "`-- migrate: up`"
DOWN = "`-- migrate: down`"
NO_TRANSACTION = "`-- migrate: no-transaction`"


class _Directive:
    """A ``-- migrate:`` line (a plain class: a frozen dataclass costs three times as much to
    create, twice per file and 10,000 files at a time)."""

    __slots__ = ("after", "kind", "line", "start")

    def __init__(self, kind: str, line: int, start: int, after: int) -> None:
        self.kind = kind
        self.line = line
        self.start = start  # offset of the directive's line in the text
        self.after = after  # offset just past that line (its newline), or the text's length


# A `-- migrate:` directive anywhere; a match counts only when its line holds nothing but
# blanks before it, as `_DIRECTIVE_RE` on the line would say. Searching the whole text for
# the literal `--` is much faster than splitting a 20 MB migration into 100,000 lines.
_DIRECTIVE_SCAN = re.compile(r"--[^\S\n]*migrate[^\S\n]*:(?P<value>[^\n]*)", re.IGNORECASE)
_NOT_SPACE = re.compile(r"\S")
# The same two for a large ASCII file parsed as its bytes (see ``parse_migration``). A bytes
# pattern's \s is narrower than a str pattern's, which on ASCII text also takes \x1c-\x1f:
# the classes here are the str pattern's, so both read a file alike.
_DIRECTIVE_SCAN_BYTES = re.compile(
    rb"--[\t\x0b\x0c\r\x1c-\x1f ]*migrate[\t\x0b\x0c\r\x1c-\x1f ]*:(?P<value>[^\n]*)", re.IGNORECASE
)
_NOT_SPACE_BYTES = re.compile(rb"[^\t\n\x0b\x0c\r\x1c-\x1f ]")


def _as_str(text: str | bytes) -> str:
    """A part of the text as ``str``: a part of a large ASCII file's bytes decoded."""
    return text if isinstance(text, str) else text.decode("ascii")


def _not_space(text: str | bytes) -> re.Pattern[Any]:
    return _NOT_SPACE_BYTES if isinstance(text, bytes) else _NOT_SPACE


# What `mg create` writes in the up section when given no SQL: a comment, so that the file
# parses and `mg init --embedded && mg create first && mg apply` works (SPEC §13), applying a
# migration that changes nothing but the history (mg warns when it runs one).
UP_PLACEHOLDER = "-- Write the migration's SQL here."


def _scan_directives(
    text: str | bytes, name: str, problems: list[tuple[int, str]]
) -> list[_Directive]:
    found: list[_Directive] = []
    line, counted = 1, 0
    pattern: re.Pattern[Any] = _DIRECTIVE_SCAN
    newline: Any = "\n"
    if isinstance(text, bytes):
        pattern, newline = _DIRECTIVE_SCAN_BYTES, b"\n"
    for match in pattern.finditer(text):
        at = match.start()
        start = text.rfind(newline, 0, at) + 1
        if start != at and not _as_str(text[start:at]).isspace():
            continue
        line += text.count(newline, counted, start)
        counted = start
        value = _as_str(match.group("value")).strip()
        kind = value.lower()
        if kind not in _KNOWN_DIRECTIVES:
            problems.append(
                (
                    line,
                    f"{name}:{line}: unknown directive `-- migrate: {value}`; "
                    "expected up, down or no-transaction",
                )
            )
            continue
        found.append(_Directive(kind, line, start, min(match.end() + 1, len(text))))
    return found


def parse_migration(path: Path, raw: bytes) -> Migration:
    """Parse one file, reporting every problem in it at once rather than the first."""
    name = path.name
    # A large file's SHA-256 (10 ms for 19 MB) is taken beside the decoding and the scan
    # below: hashlib lets go of the GIL while it hashes.
    hashing = _Hashing(raw) if len(raw) >= ON_DEMAND_BYTES else None
    # A large ASCII file with nothing to normalise is parsed as the bytes read: offsets are
    # the same, and decoding it would copy the whole file (19 MB: 8 ms, mostly faulting in
    # fresh pages) only to find its directives. Its sections are read again when needed.
    text: str | bytes = raw if _parsed_as_bytes(raw) else normalize_text(raw, path)
    problems: list[tuple[int, str]] = []

    match = FILENAME_RE.fullmatch(name)
    if match is None:
        problems.append((1, f"{name}:1: {FILENAME_PROBLEM}"))
        file_id, short_name = "", name.removesuffix(".sql")
    else:
        file_id, short_name = match.group("id"), match.group("name")

    nul = text.find(b"\0") if isinstance(text, bytes) else text.find("\0")
    if nul != -1:
        at = _as_str(text[:nul]).count("\n") + 1
        problems.append((at, f"{name}:{at}: NUL character (byte 0); PostgreSQL cannot receive it"))

    directives = _scan_directives(text, name, problems)
    ups: list[int] = []
    downs: list[int] = []
    no_tx: list[int] = []
    # The up and down markers' lines, in order (directives are found in file order, one
    # per line at most).
    markers: list[int] = []
    for directive in directives:
        kind = directive.kind
        if kind == "up":
            ups.append(directive.line)
            markers.append(directive.line)
        elif kind == "down":
            downs.append(directive.line)
            markers.append(directive.line)
        else:
            no_tx.append(directive.line)
    up_marker = ups[0] if ups else None

    if up_marker is None:
        problems.append((1, f"{name}:1: no {UP} marker"))
    for at in ups[1:]:
        problems.append((at, f"{name}:{at}: second {UP} marker (the first is on line {ups[0]})"))
    for at in downs[1:]:
        problems.append(
            (at, f"{name}:{at}: second {DOWN} marker (the first is on line {downs[0]})")
        )
    if up_marker is not None:
        for at in downs:
            if at < up_marker:
                problems.append((at, f"{name}:{at}: {DOWN} before {UP}"))
        for at in no_tx:
            if at > up_marker:
                problems.append(
                    (at, f"{name}:{at}: {NO_TRANSACTION} must come before {UP}, in the header")
                )

    at_line = {d.line: d for d in directives}
    if up_marker is not None:
        # The header: the lines before the up marker (the slice ends with their newline).
        header = _as_str(text[: at_line[up_marker].start]).split("\n")[:-1]
    else:
        header = _as_str(text).split("\n")
    directive_lines = set(at_line)
    title: str | None = None
    sql_reported = False
    for number, line in enumerate(header, start=1):
        if not line.lstrip().startswith("--"):
            # Blank, or SQL: only the latter is a problem (reported once).
            if up_marker is not None and not sql_reported and line.strip():
                sql_reported = True
                problems.append(
                    (
                        number,
                        f"{name}:{number}: SQL before the {UP} marker "
                        "(only blank lines and -- comments may come first)",
                    )
                )
            continue
        if number in directive_lines:
            continue
        found = _HEADER_RE.fullmatch(line)
        if found is None:
            continue
        key = found.group("key").lower()
        if key == "id":
            header_id = found.group("value").strip()
            if file_id and header_id != file_id:
                problems.append(
                    (
                        number,
                        f"{name}:{number}: header id {header_id!r} does not match "
                        f"the file name's id {file_id!r}",
                    )
                )
        elif key == "migration" and title is None:
            title = found.group("value").strip() or None

    up_span: tuple[int, int] = (0, 0)
    up_line = 1
    down_span: tuple[int, int] | None = None
    down_line: int | None = None
    if up_marker is not None:
        up_end = next((m for m in markers if m > up_marker), None)
        up_line = up_marker + 1
        up_span = _span(text, at_line, up_marker, up_end)
        # Searched in place: the section is not copied to be checked. A section of comments
        # only is a migration that changes nothing (a placeholder, like a down section of
        # comments only); a blank one is a file whose SQL was never written.
        if _not_space(text).search(text, *up_span) is None:
            problems.append(
                (
                    up_marker,
                    f"{name}:{up_marker}: empty up section (write the migration's SQL after {UP})",
                )
            )
        down_marker = next((m for m in downs if m > up_marker), None)
        if down_marker is not None:
            down_end = next((m for m in markers if m > down_marker), None)
            down_line = down_marker + 1
            down_span = _span(text, at_line, down_marker, down_end)

    if problems:
        problems.sort(key=lambda item: item[0])
        raise MigrationFileError([message for _, message in problems], migration_id=file_id or None)

    digest = _checksum_of(raw, text, hashing)
    # Migration's fields read as str; a FileText given for them is read when they are.
    kept: tuple[Any, Any, Any]
    if isinstance(text, bytes) or (len(raw) >= ON_DEMAND_BYTES and not _normalised(raw)):
        # A large file is read again when its text is needed: it is not kept in memory for
        # the whole command (twice, as text and as its up section), see docs/design.md.
        kept = cast("tuple[Any, Any, Any]", _on_demand(path, raw, text, digest, up_span, down_span))
    else:
        up_sql = text[up_span[0] : up_span[1]]
        down_sql = None if down_span is None else text[down_span[0] : down_span[1]]
        kept = cast("tuple[Any, Any, Any]", (text, up_sql, down_sql))
    return Migration(
        id=file_id,
        name=short_name,
        path=path,
        text=kept[0],
        checksum=digest,
        up_sql=kept[1],
        up_line=up_line,
        down_sql=kept[2],
        down_line=down_line,
        transactional=not no_tx,
        title=title,
    )


def _parsed_as_bytes(raw: bytes) -> bool:
    """Whether ``parse_migration`` reads ``raw`` as it is, without decoding it: a large file
    of ASCII only, with no CR (an ASCII file has no BOM)."""
    return len(raw) >= ON_DEMAND_BYTES and raw.isascii() and b"\r" not in raw


def _normalised(raw: bytes) -> bool:
    """Whether decoding ``raw`` changes it beyond decoding (a BOM removed, CR line ends)."""
    return raw.startswith(b"\xef\xbb\xbf") or b"\r" in raw


def _on_demand(
    path: Path,
    raw: bytes,
    text: str | bytes,
    digest: str,
    up: tuple[int, int],
    down: tuple[int, int] | None,
) -> tuple[FileText, str | FileText, str | FileText | None]:
    """``FileText``s of the file and its large sections (text offsets turned into byte
    offsets)."""
    ascii_text = text.isascii()

    def at(offset: int) -> int:
        return offset if ascii_text else len(_as_str(text[:offset]).encode("utf-8"))

    def part(begin: int, end: int) -> FileText:
        blank = _blank(text, begin, end)
        return FileText(path, len(raw), digest, at(begin), at(end), end - begin, blank)

    def section(begin: int, end: int) -> str | FileText:
        # A small section of a large file (a down section of one DROP TABLE) is kept: reading
        # the whole file again for it would cost more than it saves.
        return _as_str(text[begin:end]) if end - begin < _KEPT_SECTION else part(begin, end)

    whole = part(0, len(text))
    if up[0] < _KEPT_SECTION:
        whole.head = _as_str(text[: up[0]])
    return whole, section(*up), None if down is None else section(*down)


_KEPT_SECTION = 1 << 16


def _blank(text: str | bytes, begin: int, end: int) -> bool:
    """``not text[begin:end].strip()`` without the copy."""
    return _not_space(text).search(text, begin, end) is None


def _checksum_of(raw: bytes, text: str | bytes, hashing: _Hashing | None = None) -> str:
    """``checksum(text)``, taken of the bytes read when normalising changed nothing, which
    saves encoding a copy of the whole text again."""
    if _normalised(raw):
        return checksum(_as_str(text))
    if hashing is not None:
        return hashing.result()
    return sha256_hex(raw)


class _Hashing:
    """The SHA-256 of some bytes, taken in a thread of its own."""

    def __init__(self, raw: bytes) -> None:
        import threading

        self._raw = raw
        self._digest = ""
        self._thread = threading.Thread(target=self._run, args=(raw,), daemon=True)
        self._thread.start()

    def _run(self, raw: bytes) -> None:
        self._digest = sha256_hex(raw)

    def result(self) -> str:
        self._thread.join()
        # (empty only if the thread failed, out of memory: then taken here, to fail here)
        return self._digest or sha256_hex(self._raw)


def _span(
    text: str | bytes, at_line: dict[int, _Directive], marker: int, end_marker: int | None
) -> tuple[int, int]:
    """Where the exact text after ``marker``'s line up to ``end_marker``'s line (or EOF) is."""
    begin = at_line[marker].after
    end = len(text) if end_marker is None else at_line[end_marker].start
    return begin, end


class Discovered(list[Path]):
    """The migration files of a directory, and the files left out that look meant to be
    migrations: ``ignored`` holds ``(path, reason)`` pairs, which the core warns about."""

    ignored: tuple[tuple[Path, str], ...] = ()


CASE_PROBLEM = "migration files must end in lowercase .sql; rename it to {name}"


def discover(directory: Path) -> Discovered:
    """The migration files of a directory, by file name; subdirectories are not migrations.

    A directory that cannot be listed (permissions, a symbolic-link loop) and ``.sql``
    entries whose type cannot be told, or that are neither a file nor a directory (a dangling
    symbolic link, a device, a FIFO), are migration-file errors, never skipped silently.
    A file ending ``.SQL`` (any case but lowercase) is no migration, as for migretti 0.10;
    it is left out with a warning (``Discovered.ignored``), never silently.
    """
    names: list[str] = []
    problems: list[str] = []
    other_case: list[str] = []
    try:
        with os.scandir(directory) as entries:
            # scandir knows the file type without a stat call per file (thousands of files).
            for entry in entries:
                if not entry.name.endswith(".sql") or entry.name.startswith("."):
                    if entry.name[-4:].lower() == ".sql" and not entry.name.startswith("."):
                        with contextlib.suppress(OSError):
                            if entry.is_file():
                                other_case.append(entry.name)
                    continue
                try:
                    if entry.is_file():
                        names.append(entry.name)
                    elif not entry.is_dir():
                        problems.append(_not_a_file(directory / entry.name))
                except OSError as exc:
                    problems.append(f"{_shown(directory / entry.name)}: {_reason(exc)}")
    except (FileNotFoundError, NotADirectoryError):
        return Discovered()
    except OSError as exc:
        problems.append(f"{_shown(directory)}: cannot list the directory: {_reason(exc)}")
    if problems:
        raise MigrationFileError(problems)
    child = _child_of(directory)
    found = Discovered([child(name) for name in sorted(names)])
    if other_case:
        found.ignored = tuple(
            (child(name), CASE_PROBLEM.format(name=name[:-4] + ".sql"))
            for name in sorted(other_case)
        )
    return found


def _not_a_file(path: Path) -> str:
    """Why a ``.sql`` entry that is neither a file nor a directory is no migration: a dangling
    symbolic link (its file moved) or a device, FIFO or socket, which mg never reads."""
    if path.is_symlink() and not path.exists():
        return f"{_shown(path)}: a dangling symbolic link (to {os.readlink(path)})"
    return f"{_shown(path)}: not a regular file"


def _child_of(directory: Path) -> Callable[[str], Path]:
    """``directory / name`` for a name known to be one plain file name: pathlib's own way of
    making the paths of a directory's entries (``iterdir`` uses it) skips parsing the name,
    a tenth of the cost of ``/`` for 10,000 files; ``/`` where a Python has no such method."""
    make = getattr(directory, "_make_child_relpath", None)
    if make is None:  # pragma: no cover - pathlib of Python 3.10 to 3.13 has it
        return directory.__truediv__
    child: Callable[[str], Path] = make
    return child


def _shown(path: Path) -> str:
    """``path`` relative to the working directory, without resolving symbolic links."""
    relative = os.path.relpath(os.path.abspath(path))
    return relative if not relative.startswith("..") else str(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def render_migration(
    title: str,
    id: str,
    up: str = "",
    down: str | None = "",
    *,
    transactional: bool = True,
    notes: Sequence[str] = (),
) -> str:
    """The text of a migration file; every file mg writes (create, squash, the test harness)
    is rendered here.

    ``notes`` are extra header lines, written as comments (``squashed: ...``). ``down`` None
    writes no down section; an empty one writes the marker, for the user to fill in.
    """
    one_line_title = re.sub(r"[\r\n]+", " ", title)
    header = [f"-- migration: {one_line_title}", f"-- id: {id}", *(f"-- {n}" for n in notes)]
    if not transactional:
        header.append("-- migrate: no-transaction")
    text = "\n".join(header) + "\n\n-- migrate: up\n"
    if up.strip():
        text += up.strip("\n") + "\n"
    if down is not None:
        text += "\n-- migrate: down\n"
        if down.strip():
            text += down.strip("\n") + "\n"
    return text


def file_name(title: str, migration_id: str) -> str:
    """``<id>_<slug>.sql``, refusing an id or a title that cannot give one."""
    slug = slugify(title)
    if ID_RE.fullmatch(migration_id) is None:
        raise UsageError(f"migration id {migration_id!r} must be 1-26 ASCII letters and digits")
    filename = f"{migration_id}_{slug}.sql"
    if len(filename.encode("utf-8")) > _MAX_FILENAME_BYTES or not FILENAME_RE.fullmatch(filename):
        raise UsageError(f"migration name {title!r} is too long for a file name; shorten it")
    return filename


def _lines(sql: str) -> list[str]:
    """The lines of ``sql`` as the parser will see them once written: CRLF and a lone CR
    end a line, as LF does (``normalize_text``)."""
    return sql.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def create_migration_file(
    directory: Path,
    title: str,
    *,
    id: str | None = None,
    up: str = "",
    down: str = "",
    transactional: bool = True,
) -> Path:
    """Write a new migration file, never replacing one and never reusing an id."""
    from ulid import ULID

    slugify(title)  # an empty slug is the first thing to say
    for option, sql in (("--up", up), ("--down", down)):
        for number, line in enumerate(_lines(sql), start=1):
            if _DIRECTIVE_RE.fullmatch(line):
                raise UsageError(
                    f"{option}: line {number} is a `-- migrate:` marker ({line.strip()}); mg "
                    "writes the markers itself, and the file would not parse",
                    hint="give only the SQL of the section; use --up and --down for the two",
                )
    if not up.strip():
        up = UP_PLACEHOLDER
    new_id = str(ULID()) if id is None else id
    filename = file_name(title, new_id)
    for existing in discover(directory):
        match = FILENAME_RE.fullmatch(existing.name)
        if match is not None and match.group("id") == new_id:
            raise UsageError(
                f"{display_path(existing)} already uses id {new_id}; not creating another"
            )

    content = render_migration(title, new_id, up, down, transactional=transactional).encode("utf-8")
    return write_new_file(directory / filename, content)
