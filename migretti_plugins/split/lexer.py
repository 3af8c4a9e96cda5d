"""Split PostgreSQL SQL into statements and spot those refused inside a transaction block.

The scanner follows PostgreSQL's lexer closely enough to find statement boundaries: quoted
strings (``E''`` with backslash escapes), quoted identifiers, dollar quotes, ``--`` and
nested ``/* */`` comments, and SQL-standard ``BEGIN ATOMIC ... END`` function bodies. It
assumes ``standard_conforming_strings`` is on (the default since PostgreSQL 9.1). Ordinary
statements are matched whole by one compiled pattern and the rest are scanned from one
interesting token to the next, never character by character in Python, so data files of
many megabytes split quickly.

A ``Statement``'s text runs from its first to its last significant character: comments and
whitespace before and after it, and the terminating semicolon, are left out. The text can be
sent to the server as it is, and appending ``;`` to it is always safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from migretti_core.transactions import transaction_control as control_named
from migretti_core.types import Statement

__all__ = ["find_transaction_problems", "split_sql", "transaction_refusal"]

_WHITESPACE = " \t\n\r\f\v"


def _with_non_ascii(ascii_chars: str) -> str:
    """A character class of ``ascii_chars`` and every non-ASCII character.

    Written as the negation of the other ASCII characters: a class spelling out the range
    ``\\x80-\\U0010ffff`` takes the regex compiler tens of milliseconds to optimise, every
    time mg starts; its negation, well under one.
    """
    others = [c for c in range(128) if chr(c) not in ascii_chars]
    ranges: list[list[int]] = []
    for code in others:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(
        f"\\x{low:02x}" if low == high else f"\\x{low:02x}-\\x{high:02x}" for low, high in ranges
    )
    return f"[^{body}]"


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
# Identifier characters as PostgreSQL's lexer sees them: ASCII letters, '_', any non-ASCII
# character, then also digits and '$'; dollar-quote tags take no '$'.
_IDENT_START = _with_non_ascii(_LETTERS + "_")
_IDENT_CONT = _with_non_ascii(_LETTERS + _DIGITS + "_$")
_TAG_CONT = _with_non_ascii(_LETTERS + _DIGITS + "_")
_DOLLAR = rf"\$(?<!{_IDENT_CONT}\$)(?:{_IDENT_START}{_TAG_CONT}*)?\$"

# The scan patterns open with a plain character class so the regex engine skips
# uninteresting text at C speed; lookbehinds then pick what follows the character found:
# the rest of a string, identifier, line comment or dollar-quote opening. A lone '-', '/'
# or '$' matches just itself. In CREATE statements parentheses are tracked too, as
# PostgreSQL accepts semicolons inside them there (CREATE RULE ... DO (a; b)); routines
# may hold a BEGIN ATOMIC body, so their words are looked at as well.
_AFTER_LEAD = (
    r"(?:(?<=')[^']*(?:''[^']*)*'?"
    r'|(?<=")[^"]*(?:""[^"]*)*"?'
    r"|(?<=-)-[^\n]*"
    rf"|(?<=\$)(?<!{_IDENT_CONT}\$)(?:{_IDENT_START}{_TAG_CONT}*)?\$"
)
_FAST = re.compile(rf"[;'\"$/\-]{_AFTER_LEAD}|)")
_CREATE = re.compile(rf"[;'\"$/()\-]{_AFTER_LEAD}|)")
_ROUTINE_LEAD = _with_non_ascii(_LETTERS + "_;'\"$/()-")
_ROUTINE = re.compile(rf"{_ROUTINE_LEAD}{_AFTER_LEAD}|(?<={_IDENT_START}){_IDENT_CONT}*|)")

# A statement made only of words, numbers, operators, quoted strings and identifiers, the
# common case by far, is matched whole; anything else (a comment, a dollar quote, an E''
# string, an unterminated quote, CREATE FUNCTION) is left to the token-by-token scan. The
# body is captured in a lookahead and consumed by backreference so the engine never
# backtracks into it (an atomic group that Python 3.10 can express).
_PLAIN_BODY = (
    r"(?:[^;'\"$/\-]+"
    rf"|(?:(?<![eE])|(?<={_IDENT_CONT}[eE]))'[^']*(?:''[^']*)*'"
    r'|"[^"]*(?:""[^"]*)*"'
    r"|-(?!-)|/(?!\*)"
    rf"|(?<={_IDENT_CONT})\$|\$(?=[0-9])"
    r")*"
)
_PLAIN_STATEMENT = re.compile(rf"[ \t\n\r\f\v]*(?=[^;cC \t\n\r\f\v])(?=({_PLAIN_BODY}))\1;")
_PLAIN_RUN = re.compile(rf"(?=({_PLAIN_BODY}))\1")
_WORD = re.compile(rf"{_IDENT_START}{_IDENT_CONT}*")
_IDENT_CHAR = re.compile(_IDENT_CONT)
_E_STRING_REST = re.compile(r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?", re.S)
_SPACE = re.compile(r"(?:[ \t\n\r\f\v]+|--[^\n]*)*")
_COMMENT_MARK = re.compile(r"/\*|\*/")


def _block_comment_end(text: str, pos: int) -> int:
    """Return the end of the block comment opening at ``pos``; PostgreSQL nests them."""
    close = text.find("*/", pos + 2)
    if close >= 0 and text.find("/*", pos + 2, close + 1) < 0:
        return close + 2
    depth = 0
    while True:
        m = _COMMENT_MARK.search(text, pos)
        if m is None:
            return len(text)
        depth += 1 if m.group() == "/*" else -1
        pos = m.end()
        if depth == 0:
            return pos


def _skip_space(text: str, pos: int) -> int:
    """Return the first position at or after ``pos`` that is not whitespace or comment."""
    while True:
        m = _SPACE.match(text, pos)
        pos = m.end() if m else pos
        if not text.startswith("/*", pos):
            return pos
        pos = _block_comment_end(text, pos)


def _is_e_string(text: str, quote: int) -> bool:
    """Tell whether the quote at ``quote`` opens an ``E'...'`` string (backslash escapes)."""
    return (
        quote >= 1
        and text[quote - 1] in "eE"
        and (quote < 2 or _IDENT_CHAR.match(text, quote - 2) is None)
    )


def _scan_pattern(text: str, pos: int) -> re.Pattern[str]:
    """Choose how closely to look at the statement starting at ``pos``."""
    if text[pos] not in "cC":
        return _FAST
    words: list[str] = []
    while len(words) < 4:
        m = _WORD.match(text, pos)
        if m is None:
            break
        words.append(m.group().lower())
        pos = _skip_space(text, m.end())
    if words[:1] != ["create"]:
        return _FAST
    if words[1:3] == ["or", "replace"]:
        del words[1:3]
    return _ROUTINE if words[1:2] in (["function"], ["procedure"]) else _CREATE


def _statement_end(text: str, start: int) -> tuple[int, int]:
    """Scan the statement beginning at ``start``.

    Returns where its significant text ends and where scanning resumes (after its
    semicolon, or the end of the text).
    """
    n = len(text)
    pattern = _scan_pattern(text, start)
    search = pattern.search
    # Outside CREATE statements nothing but the tokens the plain pattern refuses matters,
    # so runs of plain text are passed over in one step.
    skip = _PLAIN_RUN.match if pattern is _FAST else None
    comments: list[tuple[int, int]] = []
    atomic_depth = 0
    paren_depth = 0
    pos = start
    while True:
        run = skip(text, pos) if skip is not None else None
        if run is not None:
            pos = run.end()
        m = search(text, pos)
        if m is None:
            end = resume = n
            break
        found = m.start()
        lead = text[found]
        pos = m.end()
        if lead == "'":
            if _is_e_string(text, found):
                rest = _E_STRING_REST.match(text, found + 1)
                pos = rest.end() if rest else n
        elif lead == ";":
            if atomic_depth == 0 and paren_depth == 0:
                end = found
                resume = pos
                break
        elif lead == "-":
            if pos - found > 1:
                comments.append((found, pos))
        elif lead == "/":
            if text.startswith("*", pos):
                pos = _block_comment_end(text, found)
                comments.append((found, pos))
        elif lead == "$":
            if pos - found > 1:
                close = text.find(m.group(), pos)
                pos = n if close < 0 else close + pos - found
        elif lead == "(":
            paren_depth += 1
        elif lead == ")":
            if paren_depth:
                paren_depth -= 1
        elif lead != '"':
            word = m.group().lower()
            if atomic_depth:
                if word == "case":
                    atomic_depth += 1
                elif word == "end":
                    atomic_depth -= 1
            elif word == "begin":
                after = _WORD.match(text, _skip_space(text, pos))
                if after is not None and after.group().lower() == "atomic":
                    atomic_depth = 1
                    pos = after.end()
    while True:
        while end > start and text[end - 1] in _WHITESPACE:
            end -= 1
        if comments and comments[-1][1] >= end:
            end = comments.pop()[0]
            continue
        return end, resume


def split_sql(text: str) -> list[Statement]:
    """Cut ``text`` into statements at top-level semicolons, dropping empty ones.

    Each statement's ``line`` is the 1-based line (counted by LF) of ``text`` where its first
    significant character is; its text has no surrounding comments and no final semicolon.
    """
    statements: list[Statement] = []
    append = statements.append
    plain = _PLAIN_STATEMENT.match
    n = len(text)
    pos = 0
    line = 1
    counted = 0
    while True:
        m = plain(text, pos)
        if m is not None:
            start = m.start(1)
            body = m.group(1).rstrip(_WHITESPACE)
            pos = m.end()
        else:
            start = _skip_space(text, pos)
            if start >= n:
                return statements
            if text[start] == ";":
                pos = start + 1
                continue
            end, pos = _statement_end(text, start)
            body = text[start:end]
        line += text.count("\n", counted, start)
        counted = start
        append(Statement(body, line))


_HEAD_TOKEN = re.compile(
    rf"({_IDENT_START}{_IDENT_CONT}*)"  # 1: word
    r'|("[^"]*(?:""[^"]*)*"?)'  # 2: quoted identifier
    r"|('[^']*(?:''[^']*)*'?)"  # 3: string
    rf"|({_DOLLAR})"  # 4: dollar quote
    r"|(\d+)"  # 5: number
    r"|(.)",  # 6: anything else, one character at a time
    re.S,
)
# Statements from split_sql start with their first keyword, so most can be passed over
# without tokenising them.
_REFUSABLE_HEAD = re.compile(
    rf"(?i:alter|cluster|commit|create|discard|drop|reindex|rollback|vacuum)(?!{_IDENT_CONT})"
)
_FALSE_WORDS = frozenset({"false", "off", "0", "'false'", "'off'", "'0'"})


def _tokens(text: str, pos: int = 0) -> Iterator[str]:
    """Yield the tokens of ``text`` from ``pos``: words lower-cased, comments skipped, quotes
    whole."""
    n = len(text)
    while True:
        pos = _skip_space(text, pos)
        if pos >= n:
            return
        m = _HEAD_TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the last branch matches any character
            return
        kind = m.lastindex
        pos = m.end()
        if kind == 1:
            word = m.group().lower()
            if word == "e" and text.startswith("'", pos):
                rest = _E_STRING_REST.match(text, pos + 1)
                end = rest.end() if rest else n
                yield text[pos:end].lower()
                pos = end
                continue
            yield word
        elif kind == 3:
            yield m.group().lower()
        elif kind == 4:
            close = text.find(m.group(), pos)
            end = n if close < 0 else close + len(m.group())
            yield text[m.start() : end]
            pos = end
        else:
            yield m.group()


def _skip_parenthesised(tokens: Iterator[str]) -> list[str]:
    """Consume tokens through the ``)`` closing an already consumed ``(``; return them."""
    inside: list[str] = []
    depth = 1
    for token in tokens:
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth == 0:
                break
        inside.append(token)
    return inside


def _option_enabled(options: list[str], name: str, default: bool) -> bool:
    """Read a boolean option from a token list such as ``refresh = false``."""
    for i, token in enumerate(options):
        if token != name:
            continue
        value = options[i + 1 : i + 3]
        if value[:1] == ["="]:
            value = value[1:]
        if not value or value[0] in (",", ")"):
            return True
        return value[0] not in _FALSE_WORDS
    return default


def _with_options(tokens: Iterator[str]) -> list[str]:
    """Return the tokens inside the statement's ``WITH (...)``, if it has one."""
    for token in tokens:
        if token == "with" and next(tokens, "") == "(":
            return _skip_parenthesised(tokens)
    return []


def _creates_slot(tokens: Iterator[str]) -> bool:
    """Tell whether CREATE SUBSCRIPTION will create a replication slot (the default)."""
    options = _with_options(tokens)
    connect = _option_enabled(options, "connect", True)
    return _option_enabled(options, "create_slot", connect)


def _reindex_refusal(tokens: Iterator[str]) -> str | None:
    token = next(tokens, "")
    concurrently = False
    if token == "(":
        concurrently = _option_enabled(_skip_parenthesised(tokens), "concurrently", False)
        token = next(tokens, "")
    if token in ("schema", "database", "system"):
        return f"REINDEX {token.upper()}"
    if concurrently or next(tokens, "") == "concurrently":
        return "REINDEX CONCURRENTLY"
    return None


def _alter_refusal(tokens: Iterator[str]) -> str | None:
    kind = next(tokens, "")
    if kind == "system":
        return "ALTER SYSTEM"
    if kind == "database":
        next(tokens, "")
        if next(tokens, "") == "set" and next(tokens, "") == "tablespace":
            return "ALTER DATABASE SET TABLESPACE"
        return None
    if kind == "subscription":
        next(tokens, "")
        action = next(tokens, "")
        if action == "refresh":
            return "ALTER SUBSCRIPTION ... REFRESH"
        if (
            action in ("set", "add", "drop")
            and next(tokens, "") == "publication"
            and _option_enabled(_with_options(tokens), "refresh", True)
        ):
            return "ALTER SUBSCRIPTION ... PUBLICATION with refresh"
        return None
    if kind == "table":
        rest = list(tokens)
        for i in range(len(rest) - 2):
            if rest[i : i + 2] == ["detach", "partition"]:
                j = i + 3
                while rest[j : j + 1] == ["."]:
                    j += 2
                if rest[j : j + 1] == ["concurrently"]:
                    return "DETACH PARTITION CONCURRENTLY"
        return None
    return None


def transaction_refusal(statement_text: str) -> str | None:
    """Name the statement if PostgreSQL refuses to run it inside a transaction block.

    Only the leading keywords decide, after comments are removed; words inside strings,
    quoted identifiers and comments never count.
    """
    tokens = _tokens(statement_text)
    first = next(tokens, "")
    if first in ("create", "drop"):
        kind = next(tokens, "")
        if first == "create" and kind == "unique":
            kind = next(tokens, "")
        if kind == "index":
            if next(tokens, "") == "concurrently":
                return f"{first.upper()} INDEX CONCURRENTLY"
            return None
        if kind in ("database", "tablespace"):
            return f"{first.upper()} {kind.upper()}"
        if kind == "subscription" and (first == "drop" or _creates_slot(tokens)):
            return f"{first.upper()} SUBSCRIPTION"
        return None
    if first == "vacuum":
        return "VACUUM"
    if first == "reindex":
        return _reindex_refusal(tokens)
    if first == "alter":
        return _alter_refusal(tokens)
    if first == "cluster":
        token = next(tokens, "")
        if token == "(":
            _skip_parenthesised(tokens)
            token = next(tokens, "")
        elif token == "verbose":
            token = next(tokens, "")
        return "CLUSTER" if token in ("", ";") else None
    if first in ("commit", "rollback"):
        if next(tokens, "") == "prepared":
            return f"{first.upper()} PREPARED"
        return None
    if first == "discard":
        return "DISCARD ALL" if next(tokens, "") == "all" else None
    return None


_CONTROL_HEAD = re.compile(rf"(?i:abort|begin|commit|end|prepare|rollback|start)(?!{_IDENT_CONT})")


def transaction_control(statement_text: str) -> str | None:
    """Name a statement that would end or nest the transaction a migration runs in.

    ``COMMIT`` inside a transactional migration would commit half of it apart from its
    history row; ``BEGIN`` is at best a warning. ``ROLLBACK TO SAVEPOINT`` is fine.
    """
    if _CONTROL_HEAD.match(statement_text) is None:
        return None
    tokens = _tokens(statement_text)
    first = next(tokens, "")
    return control_named(first, next(tokens, ""))


# Every statement either check below reports starts with one of these words, and every
# statement starts at the beginning of the text or after a semicolon (plus space and
# comments). A semicolon followed by a word that no reported statement starts with is
# skipped by the regular expression at C speed: a 20 MB migration of INSERTs is cleared
# without the lexer. A semicolon inside a string or comment is a false start that can only
# make the check look closer.
_CONTROL_HEADS = frozenset(
    ("abort", "begin", "cluster", "commit", "discard", "end", "prepare", "reindex", "rollback",
     "start", "vacuum")
)  # fmt: skip
_DDL_HEADS = frozenset(("alter", "create", "drop"))
# CREATE, DROP and ALTER statements are reported only with one of these words among their
# tokens (CREATE INDEX CONCURRENTLY, DROP DATABASE, ALTER TABLE ... DETACH PARTITION ...
# CONCURRENTLY, ...).
_PROBLEM_WORDS = frozenset(("concurrently", "database", "subscription", "system", "tablespace"))
_HARMLESS = "insert|update|delete|select|values|with|set|comment|grant|revoke"
_NEXT_STATEMENT = re.compile(rf";[ \t\n\r\f\v]*+(?!(?i:{_HARMLESS})(?!{_IDENT_CONT}))")


# Every statement either check reports holds one of these words as a token, and a token is
# its text lower-cased (``_tokens``), so it shows in the lower-cased text: a text where none
# shows, even inside another word, is cleared in one search. Most sections are such texts.
_TRIGGER_WORDS = re.compile("|".join(sorted(_CONTROL_HEADS | _PROBLEM_WORDS)))
_TRIGGER_SCAN_LIMIT = 1 << 16  # past this, lower-casing a copy costs more than it saves


def may_have_transaction_problems(sql: str) -> bool:
    """False when no statement of ``sql`` can be one that the checks below report."""
    if len(sql) <= _TRIGGER_SCAN_LIMIT and _TRIGGER_WORDS.search(sql.lower()) is None:
        return False
    if _may_start_a_problem(sql, 0):
        return True
    return any(_may_start_a_problem(sql, m.end()) for m in _NEXT_STATEMENT.finditer(sql))


# A statement that starts plainly: spaces, then an ASCII word ending before anything that
# could continue it (a letter or digit, ``_``, ``$``, any non-ASCII character) or make it
# an E'' string. Its head is that word, without the tokenizer; anything else (a comment
# first, ...) is read by ``_tokens``.
_PLAIN_HEAD = re.compile(r"[ \t\n\r\f\v]*+([A-Za-z_][A-Za-z0-9_]*+)(?![A-Za-z0-9_$']|[^\x00-\x7f])")
_ONLY_SPACE = re.compile(r"[ \t\n\r\f\v]*+\Z")


def _may_start_a_problem(sql: str, pos: int) -> bool:
    """Whether the statement that may start at ``pos`` could be reported."""
    plain = _PLAIN_HEAD.match(sql, pos)
    tokens: Iterator[str] | None = None
    if plain is not None:
        head = plain.group(1).lower()
    elif _ONLY_SPACE.match(sql, pos) is not None:
        return False  # the end of the text
    else:
        tokens = _tokens(sql, pos)
        head = next(tokens, "")
    if head in _CONTROL_HEADS:
        return True
    if head in _DDL_HEADS:
        if _plainly_harmless(sql, pos):
            return False
        if tokens is None:
            tokens = _tokens(sql, plain.end() if plain is not None else pos)
        for token in tokens:
            if token == ";":
                return False
            if token in _PROBLEM_WORDS:
                return True
        return False
    # A word starts a statement reported by neither check; anything else (a parenthesis, a
    # stray quote) is left to the lexer.
    return head != "" and _WORD.fullmatch(head) is None


def _plainly_harmless(sql: str, pos: int) -> bool:
    """True when the statement at ``pos`` runs plainly to the next semicolon (no quote,
    dollar sign or comment before it) without a problem word: then its tokens up to the
    semicolon, which the loop in ``_may_start_a_problem`` reads, hold none. CREATE TABLE and
    CREATE INDEX statements mostly look like this, and are cleared without the tokenizer.

    The words are looked for in the lower-cased text, where every token lower-cased to one
    of them shows (lower-casing goes character by character). A statement of more than 4 kB
    is left to the tokenizer, so no large copy is made."""
    end = sql.find(";", pos)
    if end == -1:
        end = len(sql)
    if end - pos > 4096:
        return False
    text = sql[pos:end]
    if "'" in text or '"' in text or "$" in text or "--" in text or "/*" in text:
        return False
    text = text.lower()
    return not (
        "concurrently" in text
        or "database" in text
        or "subscription" in text
        or "system" in text
        or "tablespace" in text
    )


def find_transaction_problems(sql: str) -> list[tuple[int, str, str]]:
    """``(line, name, kind)`` for statements a transactional migration must not contain.

    ``kind`` is ``refused`` (PostgreSQL refuses it in a transaction block) or ``control``
    (it would end or nest the migration's own transaction).
    """
    if not may_have_transaction_problems(sql):
        return []
    return statement_problems(sql)


def open_transaction_block(sql: str) -> tuple[int, str] | None:
    """``(line, name)`` of a ``BEGIN`` (or ``START TRANSACTION``, ``COMMIT AND CHAIN``) that
    no later statement of ``sql`` ends, for a no-transaction migration.

    Its history row would be written inside that block, and the end of the session would
    roll back the block and the row together, after mg had said the migration was applied.
    """
    if not may_have_transaction_problems(sql):
        return None
    opened: tuple[int, str] | None = None
    for statement in split_sql(sql):
        control = transaction_control(statement.text)
        if control is None:
            continue
        if control in ("BEGIN", "START TRANSACTION"):
            opened = opened or (statement.line, control)  # a second BEGIN changes nothing
        elif control != "PREPARE TRANSACTION" and _chains(statement.text):
            opened = (statement.line, f"{control} AND CHAIN")
        else:
            opened = None
    return opened


def _chains(statement_text: str) -> bool:
    """Whether a COMMIT, END, ROLLBACK or ABORT ends with ``AND CHAIN`` (a new transaction
    starts at once), not ``AND NO CHAIN``."""
    words = list(_tokens(statement_text))
    return words[-2:] == ["and", "chain"]


def statement_problems(sql: str) -> list[tuple[int, str, str]]:
    """What ``find_transaction_problems`` reports, without the prefilter: every statement
    is split and looked at."""
    found: list[tuple[int, str, str]] = []
    for statement in split_sql(sql):
        text = statement.text
        if _REFUSABLE_HEAD.match(text) is not None:
            name = transaction_refusal(text)
            if name is not None:
                found.append((statement.line, name, "refused"))
                continue
        control = transaction_control(text)
        if control is not None:
            found.append((statement.line, control, "control"))
    return found
