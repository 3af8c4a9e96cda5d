"""Lint migrations: parse with PostgreSQL's grammar (pglast), run the checks, apply ignores.

Only the up section is linted: it is what ``apply`` runs. A section PostgreSQL's parser
rejects is split into statements (hook ``mg_split_statements``) and each is parsed on its
own, so one bad statement is a ``syntax-error`` finding and the others are still checked.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pglast import parser

from migretti_core.reporting import display_path
from migretti_core.textfiles import release_mapped_file
from migretti_core.types import (
    ON_DEMAND_BYTES,
    FileText,
    LintFinding,
    LintRequest,
    Migration,
    Session,
    Statement,
)
from migretti_plugins.lint import rules
from migretti_plugins.lint.catalogue import RULES
from migretti_plugins.lint.settings import DEFAULT_SERVER_VERSION, LintSettings, load

MAX_IDENTIFIER_BYTES = 63
# Word starts only: a plain [\w$]{64,} would retry at every character of every word.
_LONG_WORD = re.compile(r'(?<![\w$])[\w$]{64}|"[^"]{64}')
_LONG_WIDE_WORD = re.compile(r'(?<![\w$])[\w$]{22}|"[^"]{22}')
# A quoted identifier with escaped quotes ("a""b"), whose runs between quotes are shorter.
_LONG_ESCAPED_WORD = re.compile(r'"(?:[^"]|""){22}')
_IGNORE_RE = re.compile(
    r"(?:--|/\*)\s*(?P<kind>mg:lint-ignore-file|mg:lint-ignore|squawk-ignore-file|squawk-ignore)(?![\w-])"
    r"(?P<rules>\s+[A-Za-z0-9_-]+(?:\s*,\s*[A-Za-z0-9_-]+)*)?"
)


@dataclass
class Ignore:
    """One ignore comment: the rules it names (empty: every rule) and those it silenced."""

    line: int
    rules: frozenset[str]
    whole_file: bool
    used: set[str] = field(default_factory=set)

    def covers(self, rule: str) -> bool:
        return not self.rules or rule in self.rules

    def unused(self) -> list[str]:
        """The rules named that silenced nothing (``["every rule"]`` for an unused bare
        ignore): each is reported, so ``A,B`` where only A matched still flags B."""
        if not self.rules:
            return [] if self.used else ["every rule"]
        return sorted(self.rules - self.used)


@dataclass
class Parsed:
    """One parsed piece of a section: its statements, with where that text starts."""

    text: str
    base: int
    statements: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    # For a data statement parsed once per shape (see ``_parse_bulk``): whether the shape
    # holds a word long enough to be an over-long identifier; None when parsed on its own.
    long_words: bool | None = None

    def char_offset(self, byte_offset: int) -> int:
        if self.text.isascii():
            return self.base + byte_offset
        return self.base + len(self.text.encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))


def settings_of(session: Session) -> LintSettings:
    return load(session.config)


class _Cached:
    """One lint's findings; its lock makes a second asker wait for the first to finish."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.findings: list[LintFinding] | None = None


# The findings of the last few lints of this process, by everything they depend on. The
# members of a fleet (threads of one process, each with its own session) usually apply the
# same plan to databases of the same version: the first lints it, the others wait for its
# answer instead of each parsing the plan again under the GIL.
_CACHE: OrderedDict[tuple[Any, ...], _Cached] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def lint(session: Session, request: LintRequest) -> list[LintFinding]:
    """The findings of ``request``, worked out now."""
    return lint_cached(session, request, cache=False)


def lint_cached(session: Session, request: LintRequest, cache: bool = True) -> list[LintFinding]:
    """The findings of ``request``, from the cache when the same lint ran in this process
    (the ``mg_lint`` hook answers through here)."""
    settings = settings_of(session)
    enabled = settings.enabled(request.enable, request.disable)
    version = (
        request.server_version
        or settings.server_version
        or request.target_version
        or DEFAULT_SERVER_VERSION
    )
    mg_lock_timeout = mg_sets_lock_timeout(session)
    if not cache:
        return _lint(session, request, settings, enabled, version, mg_lock_timeout)
    key = _cache_key(session, request, settings, enabled, version, mg_lock_timeout)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = _CACHE[key] = _Cached()
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
    with cached.lock:
        if cached.findings is None:
            cached.findings = _lint(session, request, settings, enabled, version, mg_lock_timeout)
        return list(cached.findings)


def _cache_key(
    session: Session,
    request: LintRequest,
    settings: LintSettings,
    enabled: set[str],
    version: int,
    mg_lock_timeout: bool,
) -> tuple[Any, ...]:
    """Everything the findings depend on. A migration counts by its path, id, text and
    sections (its text is compared, not only its checksum, so an edited copy never reuses a
    stale answer; a text read from its file on demand counts by the file's path, size and
    checksum, which every read is checked against, and is not kept here); the statement
    splitter by the plugins implementing it (a builtin is its module, the same for every
    member of a fleet)."""
    hooks = getattr(getattr(session.hooks, "pm", None), "hook", None)
    caller = getattr(hooks, "mg_split_statements", None)
    splitters = tuple(_Identity(impl.plugin) for impl in caller.get_hookimpls()) if caller else None
    return (
        tuple(_migration_key(m) for m in request.migrations),
        request.plan,
        version,
        mg_lock_timeout,
        frozenset(enabled),
        tuple(sorted(settings.severity.items())),
        splitters,
    )


# Texts at least this long are hashed by their checksum in the cache key (see _Texts).
_HASHED_WHOLE = 1 << 16


def _migration_key(m: Migration) -> tuple[Any, ...]:
    text = m.kept("text")  # never ``m.text``: a large file's text would be read again
    if isinstance(text, str) and len(text) < _HASHED_WHOLE:
        return (str(m.path), m.id, text, m.kept("up_sql"), m.up_line, m.transactional)
    return (str(m.path), m.id, _Texts(m), "", m.up_line, m.transactional)


class _Texts:
    """A large migration's text and up section as a cache-key part, hashed by its checksum:
    hashing the texts themselves would read a 19 MB migration twice more (some 40 ms) in
    every lint, for a cache that answers only the members of a fleet. Equal means the same
    texts. (An empty string then stands in the key for the up section.)"""

    __slots__ = ("hash", "text", "up_sql")

    def __init__(self, migration: Migration) -> None:
        # As kept: a large file's texts are FileTexts (path, size, checksum, offsets), not
        # read for the key nor held by the cache.
        self.text = migration.kept("text")
        self.up_sql = migration.kept("up_sql")
        self.hash = hash((migration.checksum, len(self.text or ""), len(self.up_sql or "")))

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Texts):
            return False
        return (self.text is other.text or self.text == other.text) and (
            self.up_sql is other.up_sql or self.up_sql == other.up_sql
        )


class _Identity:
    """A plugin as a cache-key part: plugins need not be hashable (a namespace object
    serves), and holding the object keeps its identity from being reused while cached."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


def _lint(
    session: Session,
    request: LintRequest,
    settings: LintSettings,
    enabled: set[str],
    version: int,
    mg_lock_timeout: bool,
) -> list[LintFinding]:
    created: set[str] = set()
    findings: list[LintFinding] = []
    for migration in request.migrations:
        if not request.plan:
            created = set()
        findings.extend(
            lint_migration(session, migration, settings, enabled, version, mg_lock_timeout, created)
        )
    if any(isinstance(m.kept("up_sql"), FileText) for m in request.migrations):
        # A large migration is about to run: what parsing touched of pglast's library is
        # not kept resident under its query (docs/performance.md, "W2 memory").
        release_mapped_file(str(getattr(parser, "__file__", "") or ""))
    return findings


def mg_sets_lock_timeout(session: Session) -> bool:
    """Whether mg itself sets ``lock_timeout`` for the migrations (it satisfies
    require-timeout-settings): ``--table-lock-timeout`` of the command, else
    ``table_lock_timeout`` in mg.yaml (on by default); ``off`` or 0 is not."""
    wait = getattr(session.options, "table_lock_timeout", None)
    if wait is None:
        wait = session.config.table_lock_timeout
    return bool(wait and wait > 0)


def lint_migration(
    session: Session,
    migration: Migration,
    settings: LintSettings,
    enabled: set[str],
    server_version: int,
    mg_lock_timeout: bool,
    created: set[str],
) -> list[LintFinding]:
    sql = migration.up_sql
    raw: list[tuple[str, str, int, int]] = []  # rule, message, section offset, statement index
    current = [0, 0]  # statement start (section offset), statement index

    recording: list[tuple[str, str, int | None]] | None = None

    def flag(rule: str, message: str, location: int | None) -> None:
        offset = current[0] if location is None or location < 0 else piece.char_offset(location)
        raw.append((rule, message, offset, current[1]))
        if recording is not None:
            recording.append((rule, message, location))

    ctx = rules.Context(
        transactional=migration.transactional,
        server_version=server_version,
        mg_lock_timeout=mg_lock_timeout,
        created=created,
        flag=flag,
    )
    # What runs is linted: a no-transaction migration's statements as the splitter cuts them
    # (a transactional one is sent whole, as PostgreSQL's parser reads it here).
    by_statement = not migration.transactional and splitter_replaced(session)
    pieces, syntax, no_comments = parse_section(session, sql, by_statement)
    grammar = _grammar_version()
    for offset, message in syntax:
        if server_version > grammar:
            message += (
                f" (by PostgreSQL {grammar}'s grammar; PostgreSQL {server_version} may accept it)"
            )
        raw.append(("syntax-error", message, offset, -1))
    starts: list[int] = []
    index = 0
    checks = rules.CHECKS
    # Data statements sharing a parse (see _parse_bulk) get the findings of the first of
    # their shape: their checks only look at names, which the shape keeps.
    replays: dict[int, list[tuple[str, str, int | None]]] = {}
    for piece in pieces:
        shared = piece.long_words is not None
        replay = replays.get(id(piece.statements)) if shared else None
        recording = [] if shared and replay is None else None
        for node_type, node, location in piece.statements:
            start = piece.char_offset(location)
            current[0] = start
            current[1] = index
            ctx.current = start
            starts.append(start)
            index += 1
            if replay is not None:
                continue
            rules.timeout_settings(ctx, node_type, node)
            for func in checks.get(node_type, ()):
                func(ctx, node)
        if replay is not None:
            for rule, message, at in replay:
                flag(rule, message, at)
        elif recording is not None:
            replays[id(piece.statements)] = recording
    recording = None
    if _may_hold_long_identifier(sql):
        for offset, name in long_identifiers(pieces):
            raw.append(
                (
                    "identifier-too-long",
                    f"identifier {name!r} is {len(name.encode('utf-8'))} bytes; PostgreSQL "
                    f"truncates it to {MAX_IDENTIFIER_BYTES}",
                    offset,
                    max(0, bisect.bisect_right(starts, offset) - 1),
                )
            )
    if ctx.in_block and ctx.block_start is not None:
        raw.append(
            (
                "ban-uncommitted-transaction",
                "BEGIN without COMMIT: the migration's changes are never committed",
                ctx.block_start,
                -1,
            )
        )
    text = _text_to_up_end(migration, sql, no_comments)
    if not raw and "ignore" not in text:
        return []
    ignores = find_ignores(migration, text, sql)
    statement_ignores = _statement_ignores(migration, sql, starts, ignores) if ignores else {}
    inner_ignores = _inner_ignores(migration, sql, starts, ignores) if ignores else {}
    # squawk's reading too: an ignore comment covers the findings on its own line and on the
    # line after it, so one inside a statement (above a column) or after it on its line works.
    line_ignores: dict[int, list[Ignore]] = {}
    for ignore in ignores:
        if not ignore.whole_file:
            line_ignores.setdefault(ignore.line, []).append(ignore)
            line_ignores.setdefault(ignore.line + 1, []).append(ignore)
    findings: list[LintFinding] = []
    for rule, message, offset, statement in raw:
        if rule not in enabled:
            continue
        line, column = position(sql, offset, migration.up_line)
        ignored = False
        for ignore in itertools.chain(
            statement_ignores.get(statement, ()), line_ignores.get(line, ())
        ):
            if ignore.covers(rule):
                ignore.used.add(rule)
                ignored = True
        for ignore in ignores:
            if ignore.whole_file and ignore.covers(rule):
                ignore.used.add(rule)
                ignored = True
        if not ignored and statement in inner_ignores and offset == starts[statement]:
            # a finding of the whole statement, as for DROP COLUMN inside an ALTER TABLE
            # whose ignore comment sits above that line
            for ignore in inner_ignores[statement]:
                if ignore.covers(rule):
                    ignore.used.add(rule)
                    ignored = True
        if ignored:
            continue
        findings.append(_finding(migration, settings, rule, message, line, column))
    if "unused-ignore" in enabled:
        # A rule switched off (lint.disable, --disable, off by default), or one that cannot
        # fire in this migration because of what mg does for it, could not be matched: its
        # ignore is kept for when it is on (or for squawk), not unused.
        active = set(enabled)
        if mg_lock_timeout:
            active.discard("require-timeout-settings")
        if migration.transactional:
            active.difference_update(("prefer-robust-stmts", "ban-uncommitted-transaction"))
        for ignore in ignores:
            unused = [r for r in ignore.unused() if r in active or r not in RULES]
            if unused:
                names = ", ".join(unused)
                why = _unknown(unused) if ignore.rules else ""
                findings.append(
                    _finding(
                        migration,
                        settings,
                        "unused-ignore",
                        f"ignore comment for {names} matched no finding{why}",
                        ignore.line,
                        1,
                    )
                )
    if syntax and server_version > grammar and "syntax-error" not in settings.severity:
        # Syntax newer than the parser's (REPACK on 19) is no error for a newer target.
        findings = [
            dataclasses.replace(f, severity="warning") if f.rule == "syntax-error" else f
            for f in findings
        ]
    findings.sort(key=lambda f: (f.line, f.column))
    return findings


@lru_cache(maxsize=1)
def _grammar_version() -> int:
    """The PostgreSQL major version whose grammar pglast parses with."""
    return int(parser.get_postgresql_version()[0])


def _unknown(names: Sequence[str]) -> str:
    """Why an ignore naming a rule that does not exist can match nothing: ``; X is no lint rule
    (did you mean Y?)``, or nothing when every name is a rule."""
    import difflib

    said = []
    for name in names:
        if name in RULES:
            continue
        close = difflib.get_close_matches(name.lower(), sorted(RULES), n=1)
        said.append(f"{name} is no lint rule" + (f" (did you mean {close[0]}?)" if close else ""))
    return "; " + "; ".join(said) if said else ""


def _finding(
    migration: Migration,
    settings: LintSettings,
    rule: str,
    message: str,
    line: int,
    column: int,
) -> LintFinding:
    known = RULES.get(rule)
    return LintFinding(
        path=migration.path,
        line=line,
        column=column,
        rule=rule,
        severity=settings.severity_of(rule),
        message=message,
        help=known.help if known else "",
        migration=migration.id,
    )


def position(sql: str, offset: int, first_line: int) -> tuple[int, int]:
    """File line and column (1-based) of ``offset`` in a section starting at ``first_line``."""
    offset = max(0, min(offset, len(sql)))
    line = first_line + sql.count("\n", 0, offset)
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return line, column


def long_identifiers(pieces: Sequence[Parsed]) -> list[tuple[int, str]]:
    """Identifiers over 63 bytes, from the scanner: the parser has truncated them already.
    (The scanner's offsets count characters, unlike the parser's, which count bytes.)"""
    found: list[tuple[int, str]] = []
    for piece in pieces:
        if piece.long_words is False:
            continue
        text = piece.text
        try:
            tokens = parser.scan(text)
        except Exception:
            continue
        for token in tokens:
            if token.name != "IDENT" or token.end - token.start < MAX_IDENTIFIER_BYTES // 4:
                continue
            word = text[token.start : token.end + 1]
            if word.startswith('"') and word.endswith('"'):
                word = word[1:-1].replace('""', '"')
            if len(word.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
                found.append((piece.base + token.start, word))
    return found


# --- parsing --------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _parse_json(text: str) -> str:
    return str(parser.parse_sql_json(text))


def _statements(text: str) -> list[tuple[str, dict[str, Any], int]]:
    # A large text is not kept in the cache, nor its (several times larger) parse tree.
    try:
        tree = json.loads(
            _parse_json(text) if len(text) < _BULK_SECTION else parser.parse_sql_json(text)
        )
    except RecursionError:
        return _shallow_statements(text)
    found: list[tuple[str, dict[str, Any], int]] = []
    for raw in tree.get("stmts") or ():
        stmt = raw.get("stmt") or {}
        for node_type, node in stmt.items():
            found.append((node_type, node, int(raw.get("stmt_location", 0))))
    return found


def _shallow_statements(text: str) -> list[tuple[str, dict[str, Any], int]]:
    """The statements of ``text`` whose parse tree Python can read: one nested too deeply for
    the JSON decoder (an expression of hundreds of terms, ``1 + 2 + ...``), which PostgreSQL
    runs all the same, is left unchecked instead of failing the lint. Each statement is parsed
    alone, behind as many spaces as bytes came before it, so its locations stay the same."""
    found: list[tuple[str, dict[str, Any], int]] = []
    for part in parser.split(text, with_parser=True, only_slices=True):
        before = len(text[: part.start].encode("utf-8"))
        try:
            tree = json.loads(parser.parse_sql_json(" " * before + text[part]))
        except RecursionError:
            continue
        for raw in tree.get("stmts") or ():
            for node_type, node in (raw.get("stmt") or {}).items():
                found.append((node_type, node, before))
    return found


# Sections larger than this are parsed statement by statement, and data statements (INSERT,
# UPDATE, DELETE) once per shape: a 20 MB migration of 100,000 INSERTs would otherwise turn
# into a parse tree of several hundred megabytes, and a minute of decoding it.
_BULK_SECTION = 1 << 20
_DATA_HEADS = frozenset({"insert", "update", "delete"})
# Quoted strings and numbers, which a shape leaves out; a statement with anything that could
# make this naive reading wrong (backslashes, dollar quotes, comments) is parsed on its own.
# Quoted identifiers are matched too, and kept, so a quote inside one is not misread.
_LITERAL = re.compile(
    r'"[^"]*(?:""[^"]*)*"|' r"'[^']*(?:''[^']*)*'|(?<![\w$.])\d+(?:\.\d+)?(?![\w$.])"
)
# Node types whose checks only flag (no state carried to later statements), by their names.
_PURE_CHECKS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt"}) - rules.LOCKING
_STRING_OR_NUMBER = re.compile(r"'[^']*(?:''[^']*)*'|(?<![\w$.])\d+(?:\.\d+)?(?![\w$.])")


def _is_data_statement(text: str) -> bool:
    """Whether ``text`` starts with INSERT, UPDATE or DELETE (statements start with their
    first keyword)."""
    after = text[6:7]
    return text[:6].lower() in _DATA_HEADS and not (after.isalnum() or after in ("_", "$"))


def _shape_of(match: re.Match[str]) -> str:
    word = match.group()
    return word if word.startswith('"') else "?"


_NUMBER = re.compile(r"(?<![\w$.])\d+(?:\.\d+)?(?![\w$.])")


# Bytes that can be part of an unquoted identifier (any byte of a non-ASCII character is).
_WORD_BYTES = bytes(
    ord("w") if chr(b).isalnum() or chr(b) in "_$" or b >= 0x80 else ord(" ") for b in range(256)
)


def _has_long_word(text: str) -> bool:
    """Whether ``text`` holds a run of identifier characters longer than PostgreSQL's
    identifier limit in UTF-8 bytes: one translation and one substring search in C, about
    ten times faster than a regular expression over a large section.

    A large text goes in pieces that overlap by the run looked for, small enough for the
    allocator to reuse one piece's memory for the next (see ``_SPLIT_CHUNK``)."""
    run = b"w" * (MAX_IDENTIFIER_BYTES + 1)
    step = _SPLIT_CHUNK
    for at in range(0, max(len(text), 1), step):
        # A character is at least one byte: a run of the limit's bytes that crosses into
        # the next piece starts within the limit's characters before it.
        piece = text[max(at - MAX_IDENTIFIER_BYTES, 0) : at + step]
        if run in piece.encode("utf-8", "surrogatepass").translate(_WORD_BYTES):
            return True
    return False


_FIRST_LINES = 1 << 16


def _may_hold_long_identifier(sql: str) -> bool:
    """False when ``sql`` cannot hold an identifier over the limit, so none is looked for:
    no long run of identifier characters, and no long quoted text. The regular expressions
    run over the whole text only when a double quote is there: over 10 MB of rows they took
    0.3 s. (A long word in the first lines, as a long string of test data, answers at once.)"""
    if _LONG_WORD.search(sql, 0, _FIRST_LINES) or _has_long_word(sql):
        return True
    return '"' in sql and bool(
        _LONG_WORD.search(sql)
        or (not sql.isascii() and _LONG_WIDE_WORD.search(sql))
        or ('""' in sql and _LONG_ESCAPED_WORD.search(sql))
    )


def _flags(parsed: Sequence[tuple[str, dict[str, Any], int]]) -> bool:
    """Whether the checks of these data statements flag anything (they keep no state)."""
    found: list[str] = []
    ctx = rules.Context(
        transactional=True,
        server_version=DEFAULT_SERVER_VERSION,
        mg_lock_timeout=True,
        created=set(),
        flag=lambda rule, message, location: found.append(rule),
    )
    for node_type, node, _ in parsed:
        for func in rules.CHECKS.get(node_type, ()):
            func(ctx, node)
    return bool(found)


# An INSERT longer than this is parsed without its rows (``_data_statements``).
_LARGE_STATEMENT = 1 << 16


def _data_statements(text: str) -> list[tuple[str, dict[str, Any], int]]:
    """The parse of a data statement; a large INSERT ... VALUES is parsed without its rows.

    The only check of an INSERT reads its column list, and the parse tree of 600,000 rows
    in one statement is some 200 MB of JSON, seconds of decoding. So the statement is only
    checked for syntax errors by PostgreSQL's parser (``split``, which builds no tree: the
    same error at the same place as a full parse), and the text before VALUES, ended with
    an empty SELECT, is what gets parsed: its table and columns at the same offsets. A cut
    that does not parse (VALUES inside a subquery, say) falls back to the whole statement.
    """
    if len(text) >= _LARGE_STATEMENT and _is_data_statement(text) and text[0] in "Ii":
        at = _values_at(text)
        if at > 0:
            parser.split(text, with_parser=True)  # ParseError as the full parse raises it
            try:
                return _statements(text[:at] + "SELECT")
            except parser.ParseError:
                pass
    return _statements(text)


def _values_at(text: str) -> int:
    """Where the first word VALUES is in ``text`` (any case), or -1."""
    lower = text if "VALUES" in text else text.lower()
    at = lower.find("VALUES" if lower is text else "values")
    while at != -1:
        before, after = lower[at - 1 : at], lower[at + 6 : at + 7]
        if not (before.isalnum() or before in ("_", "$")) and not (
            after.isalnum() or after in ("_", "$")
        ):
            return at
        at = lower.find("VALUES" if lower is text else "values", at + 6)
    return -1


def _fast_bulk(sql: str) -> list[Parsed] | None:
    """The statements of a large ``sql`` whose only quoting is plain ``'...'`` strings, found
    without a lexer; None when the section has anything else, or a statement does not parse.

    With no comments, dollar quotes, backslashes or quoted identifiers, a character is inside
    a string exactly when an odd number of quotes precede it (``''`` counts twice), so
    ``sql.split("'")`` separates the strings from the rest in one pass of C: the rest, with
    each string replaced by NUL (which PostgreSQL never accepts in SQL), splits into
    statements at its semicolons.

    The prefilter: an INSERT's only check is on its column list (duplicates), so INSERTs
    whose text up to the keyword VALUES is the same share the parse of the first of them:
    100,000 rows of one table cost one parse. Identifier lengths are read from the text
    outside strings (the pieces for which no long word appears are not scanned). UPDATE and
    DELETE share a parse when equal up to their strings and numbers; anything else is parsed
    on its own. A syntax error inside the VALUES of an INSERT after the first of its kind is
    therefore left to the server, which reports it when the migration runs.

    Repeats of an INSERT its checks found nothing in are skipped (see ``_past_repeats``): a
    run of them is recognised by counting in C, not statement by statement.
    """
    if "\\" in sql or "\x00" in sql:
        return None
    split = _skeleton(sql)
    if split is None:
        return None  # an unterminated string
    skeleton, sums = split
    # A comment, dollar quote or quoted identifier starts outside any string, so it shows in
    # the skeleton even when a quote inside it has misled the split.
    # (A one-character search is a memchr: the two-character ones only run when it hits.)
    if any(mark[0] in skeleton and mark in skeleton for mark in ("--", "/*", "$", '"')):
        return None
    any_long = _has_long_word(skeleton)
    ascii_text = sql.isascii()
    # Characters in the strings before the k-th: inside(k); with its quotes, the k-th string
    # is len + 2 characters of ``sql`` that stand as one NUL in the skeleton.
    inside = sums
    shared: dict[str, tuple[list[tuple[str, dict[str, Any], int]], bool | None]] = {}
    silent: dict[str, bool] = {}
    result: list[Parsed] = []
    # A segment at skeleton offset P starts at P + k + inside(k) in ``sql``, k being the
    # strings before it; k is counted only for the segments that are not skipped.
    position = counted_to = strings = 0
    size = len(skeleton)
    # The exact text, leading white space included, up to and with the VALUES of the last
    # INSERT found silent: a segment starting with it (then not a word character) is a
    # repeat of it, skipped with a prefix comparison alone.
    repeat: str | None = None
    # Whether the run of repeats the next one belongs to is still to be passed in one go.
    passing = False
    try:
        while position <= size:
            stop = skeleton.find(";", position)
            if stop == -1:
                stop = size
            segment_at, position = position, stop + 1
            segment = skeleton[segment_at:stop]
            if repeat is not None and segment.startswith(repeat):
                following = segment[len(repeat) : len(repeat) + 1]
                if following and not (following.isalnum() or following in ("_", "$")):
                    if passing:
                        position = _past_repeats(skeleton, stop, repeat + following)
                        # After a run, one of another character after VALUES may follow.
                        passing = position > stop + 1
                    continue
            body = segment.lstrip()
            if not body or body.isspace():
                continue
            head = body[:6].lower()
            after = body[6:7]
            data = head in _DATA_HEADS and not (after.isalnum() or after in ("_", "$"))
            if data:
                values = -1
                if head == "insert":
                    values = _values_at(body)
                    key = body[:values] if values > 0 else _NUMBER.sub("?", body)
                else:
                    key = _NUMBER.sub("?", body)
                known = shared.get(key)
                reuse = known is not None and known[1] is False and not any_long
                if reuse and silent.get(key):
                    if values > 0:
                        repeat = segment[: len(segment) - len(body) + values + 6]
                        passing = True
                    # A repeat of a statement its checks found nothing in, with no word
                    # long enough to scan: it cannot add a finding. With no comments in
                    # the section there is no ignore comment to match statements to.
                    continue
            passing = True
            strings += skeleton.count("\x00", counted_to, segment_at)
            counted_to = segment_at
            start = segment_at + strings + inside(strings)
            count = segment.count("\x00")
            length = len(segment) + count + inside(strings + count) - inside(strings)
            base = start + len(segment) - len(body)
            if data:
                if reuse and ascii_text and known is not None:  # ASCII offsets need no text
                    result.append(Parsed("", base, known[0], False))
                    continue
                text = sql[base : start + length]
                if known is None:
                    parsed = _data_statements(text)
                    long_words: bool | None = None
                    if all(node_type in _PURE_CHECKS for node_type, _, _ in parsed):
                        long_words = any_long and bool(
                            _LONG_WORD.search(body)
                            or (not body.isascii() and _LONG_WIDE_WORD.search(body))
                        )
                        silent[key] = not _flags(parsed)
                    known = shared[key] = (parsed, long_words)
                elif known[1] is False and any_long:
                    known = (
                        known[0],
                        bool(
                            _LONG_WORD.search(body)
                            or (not body.isascii() and _LONG_WIDE_WORD.search(body))
                        ),
                    )
                result.append(Parsed(text, base, known[0], known[1]))
            else:
                text = sql[base : start + length]
                result.append(Parsed(text, base, _statements(text)))
    except parser.ParseError:
        return None
    return result


def _past_repeats(skeleton: str, stop: int, start: str) -> int:
    """Where the first statement after ``stop`` (a semicolon, or the end) that does not start
    with ``start`` starts, found in C instead of a Python step per statement. ``start`` is a
    repeat's exact text up to and with VALUES and the character after that, so every
    statement passed is a repeat.

    Usually the run goes on to the last statement starting with ``start`` in the section:
    then every semicolon up to the end of that statement is followed by ``start``, which two
    counts tell. Otherwise a regular expression finds the first semicolon that is not."""
    if stop >= len(skeleton):
        return stop + 1
    unit = ";" + start
    last = skeleton.rfind(unit, stop)
    if last == -1:
        return stop + 1
    end = skeleton.find(";", last + len(unit))
    if end == -1:
        end = len(skeleton)
    if skeleton.count(";", stop, end) == skeleton.count(unit, stop, end):
        return end + 1
    found = _run_end(start).search(skeleton, stop)
    return (found.start() if found is not None else len(skeleton)) + 1


@lru_cache(maxsize=64)
def _run_end(start: str) -> re.Pattern[str]:
    return re.compile(";(?!" + re.escape(start) + ")")


# The split into strings and the rest goes this many characters at a time: the pieces of a
# 20 MB section at once (600,000 strings) took 70 MB, twice the section as text.
_SPLIT_CHUNK = 1 << 16


def _skeleton(sql: str) -> tuple[str, _Inside] | None:
    """``sql`` with each quoted string (an even number of quotes) replaced by one NUL, and
    ``inside(k)``, the characters in the strings before the k-th: with its quotes, the k-th
    string is ``inside(k + 1) - inside(k) + 2`` characters of ``sql``.

    Done a chunk at a time, each chunk ending after an even number of quotes (so outside
    any string): the same result as splitting the whole at its quotes, without holding
    every piece at once. None when a string is never closed (an odd number of quotes).
    """
    outside: list[str] = []
    inside = _Inside(sql)
    start = 0
    while start < len(sql):
        end = min(start + _SPLIT_CHUNK, len(sql))
        pieces = sql[start:end].split("'")
        if len(pieces) % 2 == 0:  # the chunk ends inside a string: take it to its end
            close = sql.find("'", end)
            if close == -1:
                return None  # it never closes
            pieces[-1] += sql[end:close]
            pieces.append("")
            end = close + 1
        rest = "\x00".join(pieces[0::2])
        outside.append(rest)
        inside.add_chunk(start, end, len(pieces) // 2, len(rest))
        start = end
    return "".join(outside), inside


class _Inside:
    """``inside(k)`` of ``_skeleton``, worked out only for the chunks asked about: a chunk's
    running string lengths come from splitting it again, which for a large section of
    repeats (W2: the statements looked at fall in two chunks of nineteen) costs less than
    keeping a running total for each of its strings (200,000 numbers for W2)."""

    __slots__ = ("_bases", "_chunks", "_firsts", "_next", "_sql", "_sums")

    def __init__(self, sql: str) -> None:
        self._sql = sql
        self._firsts: list[int] = []  # the index of each chunk's first string
        self._bases: list[int] = []  # the characters in the strings before each chunk
        self._chunks: list[tuple[int, int]] = []
        self._sums: dict[int, list[int]] = {}
        self._next = (0, 0)  # the next chunk's first string and base

    def add_chunk(self, start: int, end: int, strings: int, outside: int) -> None:
        """A chunk ``sql[start:end]`` holding ``strings`` strings, ``outside`` characters
        long in the skeleton (each string one NUL there)."""
        first, base = self._next
        self._firsts.append(first)
        self._bases.append(base)
        self._chunks.append((start, end))
        # The chunk's characters are the skeleton's without its NULs, and each string's
        # with its two quotes.
        chars = (end - start) - (outside - strings) - 2 * strings
        self._next = (first + strings, base + chars)

    def __call__(self, k: int) -> int:
        if not self._chunks:
            return 0  # an empty section: no strings
        chunk = bisect.bisect_right(self._firsts, k) - 1
        sums = self._sums.get(chunk)
        if sums is None:
            start, end = self._chunks[chunk]
            pieces = self._sql[start:end].split("'")
            sums = self._sums[chunk] = list(
                itertools.accumulate(map(len, pieces[1::2]), initial=self._bases[chunk])
            )
        return sums[k - self._firsts[chunk]]


def _parse_bulk(session: Session, sql: str) -> list[Parsed] | None:
    """The statements of a large ``sql``, or None when one does not parse (the caller then
    reports syntax errors the usual way).

    Data statements that differ only in their quoted strings and numbers share one parse:
    no check looks at those values, and their node types, names and column lists are the
    same. Each still counts as a statement of its own, at its own offset.
    """
    try:
        split = session.hooks.split_statements(sql)
    except Exception:
        return None
    shapes: dict[str, tuple[list[tuple[str, dict[str, Any], int]], bool | None]] = {}
    pieces: list[Parsed] = []
    for statement, base in _with_offsets(sql, split):
        text = statement.text
        try:
            if _is_data_statement(text) and not (
                "\\" in text or "$" in text or "--" in text or "/*" in text
            ):
                if '"' in text:
                    shape = _LITERAL.sub(_shape_of, text)
                else:
                    shape = _STRING_OR_NUMBER.sub("?", text)
                known = shapes.get(shape)
                if known is None:
                    parsed = _data_statements(text)
                    long_words: bool | None = None  # None: checked like any statement
                    if all(node_type in _PURE_CHECKS for node_type, _, _ in parsed):
                        long_words = bool(
                            _LONG_WORD.search(shape)
                            or (not shape.isascii() and _LONG_WIDE_WORD.search(shape))
                        )
                    known = shapes[shape] = (parsed, long_words)
                pieces.append(Parsed(text, base, known[0], known[1]))
            else:
                pieces.append(Parsed(text, base, _statements(text)))
        except parser.ParseError:
            return None
    return pieces


def splitter_replaced(session: Session) -> bool:
    """Whether a plugin from outside migretti implements ``mg_split_statements``: then a
    no-transaction migration runs as the statements it returns, which need not be what
    PostgreSQL's parser makes of the whole section (a splitter cutting at ``GO`` lines)."""
    hooks = getattr(getattr(session.hooks, "pm", None), "hook", None)
    caller = getattr(hooks, "mg_split_statements", None)
    if caller is None:
        return False
    return not all(
        getattr(impl.plugin, "__name__", "").startswith("migretti_plugins.")
        for impl in caller.get_hookimpls()
    )


def parse_section(
    session: Session, sql: str, by_statement: bool = False
) -> tuple[list[Parsed], list[tuple[int, str]], bool]:
    """The statements of ``sql``, its syntax errors as ``(offset, message)``, and whether
    it is known to hold no comment outside its strings (then it holds no ignore comment).

    With ``by_statement`` (a no-transaction migration under a replaced splitter), each
    statement ``mg_split_statements`` returns is parsed on its own, as each runs on its own;
    the whole section is parsed only when the splitter fails."""
    if by_statement:
        split = _split_parsed(session, sql)
        if split is not None:
            return split[0], split[1], False
    if len(sql) >= _BULK_SECTION:
        fast = _fast_bulk(sql)
        if fast is not None:
            return fast, [], True
        bulk = _parse_bulk(session, sql)
        if bulk is not None:
            return bulk, [], False
    whole = Parsed(sql, 0)
    try:
        whole.statements = _statements(sql)
        return [whole], [], False
    except parser.ParseError as exc:
        first_error = _error_offset(whole, exc)
    split = _split_parsed(session, sql)
    if split is None:
        return [], [first_error], False
    pieces, errors = split
    return pieces, errors or [first_error], False


def _split_parsed(session: Session, sql: str) -> tuple[list[Parsed], list[tuple[int, str]]] | None:
    """Each statement ``mg_split_statements`` cuts from ``sql``, parsed on its own, and the
    syntax errors among them; None when the splitter fails."""
    try:
        split = session.hooks.split_statements(sql)
    except Exception:
        return None
    pieces: list[Parsed] = []
    errors: list[tuple[int, str]] = []
    for statement, base in _with_offsets(sql, split):
        piece = Parsed(statement.text, base)
        try:
            piece.statements = _statements(statement.text)
        except parser.ParseError as exc:
            errors.append(_error_offset(piece, exc))
            continue
        pieces.append(piece)
    return pieces, errors


def _error_offset(piece: Parsed, exc: Exception) -> tuple[int, str]:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    message = str(args[0]) if args else str(exc)
    location = args[1] if len(args) > 1 and isinstance(args[1], int) else 0
    return piece.char_offset(location), message


def _with_offsets(sql: str, split: Sequence[Statement]) -> Iterator[tuple[Statement, int]]:
    """Each statement with its offset in ``sql``, found in one pass (statements in order)."""
    line, line_start, cursor = 1, 0, 0
    for statement in split:
        while line < statement.line:
            newline = sql.find("\n", line_start)
            if newline == -1:
                break
            line, line_start = line + 1, newline + 1
        start = max(cursor, line_start)
        found = sql.find(statement.text[:64], start)
        base = found if found != -1 else start
        cursor = base + len(statement.text)
        yield statement, base


# --- ignore comments ------------------------------------------------------------------------


def _text_to_up_end(migration: Migration, sql: str, no_comments: bool = False) -> str:
    """What ignore comments are looked for in: the file's text, or for a file read on
    demand its header and its up section ``sql`` (the lines after it are never looked at),
    so that the whole text is not read while ``sql`` is held; only the header when ``sql``
    is known to hold no comment (a line of a string that starts with ``--`` is none)."""
    text, up = migration.kept("text"), migration.kept("up_sql")
    if not isinstance(text, FileText) or not isinstance(up, FileText):
        return migration.text
    header = text.head
    if header is None:  # a header of 64 KiB or more: read it
        data = text.file_bytes()
        with memoryview(data) as view:
            header = str(view[: up.start], "utf-8")
        del data
    if no_comments:
        return header
    return header + sql if "ignore" in header or "ignore" in sql else header


def find_ignores(
    migration: Migration, text: str | None = None, sql: str | None = None
) -> list[Ignore]:
    """Ignore comments in the header (whole file) and the up section (next statement);
    ``text`` is ``migration.text``, or its part up to the end of the up section, when the
    caller has it (a large file's text is read from the file each time it is asked for), and
    ``sql`` the up section.

    A comment starts its line (``--`` or ``/* ... */``), or follows SQL on its line: in the
    up section it counts when PostgreSQL's scanner reads a comment there (not a string). A
    section of ``ON_DEMAND_BYTES`` or more is scanned only for comments that follow SQL; a
    line of it that starts with one counts as it is (lint knows such a section holds no
    comment at all when it read it without a lexer, and then looks at its header only)."""
    if text is None:
        text = migration.text
    if "ignore" not in text:
        return []
    header_end = migration.up_line - 1  # the `-- migrate: up` marker's line
    up_sql = migration.up_sql if sql is None else sql
    up_end = migration.up_line + up_sql.count("\n")
    scan_leading = len(up_sql) < ON_DEMAND_BYTES
    found: list[Ignore] = []
    trailing: list[tuple[Ignore, int]] = []  # with the comment's column on its line
    for number, line in enumerate(text.split("\n"), start=1):
        if number > up_end:
            break
        if "ignore" not in line:
            continue
        match = _IGNORE_RE.search(line)
        if match is None:
            continue
        leading = not line[: match.start()].strip()
        if not leading and number < migration.up_line:
            continue  # the header holds comment lines only
        names = frozenset(
            part.strip() for part in (match.group("rules") or "").split(",") if part.strip()
        )
        whole_file = number < header_end or match.group("kind").endswith("-file")
        ignore = Ignore(number, names, whole_file)
        if leading and (number < migration.up_line or not scan_leading):
            found.append(ignore)
        else:
            trailing.append((ignore, match.start()))
    if trailing:
        comments = _comment_starts(up_sql)
        lines = up_sql.split("\n")
        starts = list(itertools.accumulate((len(line) + 1 for line in lines), initial=0))
        for ignore, column in trailing:
            index = ignore.line - migration.up_line
            if 0 <= index < len(lines) and starts[index] + column in comments:
                found.append(ignore)
        found.sort(key=lambda ignore: ignore.line)
    return found


def _comment_starts(sql: str) -> set[int]:
    """The offsets in ``sql`` where PostgreSQL's scanner reads a comment (the scanner counts
    characters)."""
    try:
        tokens = parser.scan(sql)
    except Exception:
        return set()
    return {token.start for token in tokens if token.name in ("SQL_COMMENT", "C_COMMENT")}


def _statement_ignores(
    migration: Migration, sql: str, starts: Sequence[int], ignores: Sequence[Ignore]
) -> dict[int, list[Ignore]]:
    """For each statement, the ignore comments on the comment lines just above it."""
    by_line = {ignore.line: ignore for ignore in ignores if not ignore.whole_file}
    if not by_line:
        return {}
    lines = migration.text.split("\n")
    result: dict[int, list[Ignore]] = {}
    for index, start in enumerate(starts):
        line, _ = position(sql, start, migration.up_line)
        number = line - 1
        while number >= 1 and lines[number - 1].lstrip().startswith(("--", "/*")):
            ignore = by_line.get(number)
            if ignore is not None:
                result.setdefault(index, []).append(ignore)
            number -= 1
    return result


def _inner_ignores(
    migration: Migration, sql: str, starts: Sequence[int], ignores: Sequence[Ignore]
) -> dict[int, list[Ignore]]:
    """For each statement, the ignore comments inside it, below its first line: squawk reports
    an ALTER TABLE's DROP COLUMN at that line, mg at the statement's start."""
    first_lines = [position(sql, start, migration.up_line)[0] for start in starts]
    result: dict[int, list[Ignore]] = {}
    for ignore in ignores:
        index = bisect.bisect_left(first_lines, ignore.line) - 1
        if ignore.whole_file or index < 0:
            continue
        start = starts[index]
        end = starts[index + 1] if index + 1 < len(starts) else len(sql)
        try:
            pieces = parser.split(sql[start:end], with_parser=False, only_slices=True)
        except Exception:
            continue
        last = start + pieces[0].stop if pieces else start
        if ignore.line <= position(sql, last, migration.up_line)[0]:
            result.setdefault(index, []).append(ignore)
    return result


def display(finding: LintFinding) -> str:
    return display_path(finding.path)
