"""Naming a statement for people: ``CREATE INDEX CONCURRENTLY``, ``ALTER TABLE``, ``VACUUM``.

Used in error messages only, never on the path that runs migrations: sqlparse's lexer is
the right tool to skip comments and find the leading keywords of any statement, and its cost
does not matter once something failed.
"""

from __future__ import annotations

MAX_WORDS = 4


def statement_kind(sql: str) -> str | None:
    """The leading keywords of the first statement in ``sql``, or None when there are none."""
    import sqlparse
    from sqlparse import tokens

    for statement in sqlparse.parse(sql):
        words: list[str] = []
        for token in statement.flatten():  # type: ignore[no-untyped-call]
            if token.is_whitespace or token.ttype in tokens.Comment:
                continue
            if token.ttype in tokens.Keyword and not token.normalized.upper().startswith("IF"):
                words.append(token.normalized.upper())
                if len(words) < MAX_WORDS:
                    continue
            break
        if words:
            return " ".join(words)
    return None
